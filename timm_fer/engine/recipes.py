"""The paper's training recipe for each dataset (TransFER, section 4.2), the defaults of ``timm-fer train``."""
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ['RECIPES', 'Recipe']


@dataclass(frozen=True)
class Recipe:
    """Model, optimiser and schedule of one dataset.

    Args:
        lr: Initial learning rate of SGD.
        milestones: Steps of the schedule (epochs, or iterations when ``iterations`` is set) where lr is x0.1.
        epochs: Training length in epochs of the class-balanced sampler.
        iterations: Training length in optimiser steps, instead of epochs.
        batch_size: Global batch size.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        model: The model the paper trains on the dataset; its name sets the architecture (local CNN branches,
            MAD and MSAD probabilities), as in timm.
        metric: Evaluation metric that selects the best checkpoint: 'accuracy' or 'mean_class_accuracy'.
    """
    lr: float
    milestones: Tuple[int, ...]
    epochs: Optional[int] = None
    iterations: Optional[int] = None
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.
    model: str = 'transfer_fer_ir50'
    metric: str = 'accuracy'


_EPOCH_RECIPE = Recipe(lr=1e-3, epochs=40, milestones=(15, 30))  # 2 LANets, p1 0.6, p2 0.3
_AFFECTNET_RECIPE = Recipe(  # 4 LANets, p1 0.2, p2 0.6
    lr=3e-4, iterations=20_000, milestones=(9_600, 19_200), model='transfer_fer_ir50_b4', metric='mean_class_accuracy')

RECIPES = {
    'rafdb': _EPOCH_RECIPE,
    'ferplus': _EPOCH_RECIPE,
    'affectnet7': _AFFECTNET_RECIPE,
    'affectnet8': _AFFECTNET_RECIPE,
    'folder': _EPOCH_RECIPE,
}
"""Dataset name -> recipe; 'folder' (a class-per-folder dataset) follows RAF-DB's."""
