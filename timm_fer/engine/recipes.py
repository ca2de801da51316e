"""The paper's training recipe for each dataset (TransFER, section 4.2), the defaults of ``timm-fer train``."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ['RECIPES', 'Recipe']


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule and TransFER hyper-parameters of one dataset.

    Args:
        lr: Initial learning rate of SGD.
        milestones: Steps of the schedule (epochs, or iterations when ``iterations`` is set) where lr is x0.1.
        epochs: Training length in epochs of the class-balanced sampler.
        iterations: Training length in optimiser steps, instead of epochs.
        batch_size: Global batch size.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        model_kwargs: TransFER arguments of the recipe (local CNN branches, MAD and MSAD probabilities).
        metric: Evaluation metric that selects the best checkpoint: 'accuracy' or 'mean_class_accuracy'.
    """
    lr: float
    milestones: Tuple[int, ...]
    epochs: Optional[int] = None
    iterations: Optional[int] = None
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    metric: str = 'accuracy'


_EPOCH_RECIPE = Recipe(
    lr=1e-3, epochs=40, milestones=(15, 30), model_kwargs=dict(num_branches=2, mad_prob=0.6, msad_prob=0.3))
_AFFECTNET_RECIPE = Recipe(
    lr=3e-4, iterations=20_000, milestones=(9_600, 19_200),
    model_kwargs=dict(num_branches=4, mad_prob=0.2, msad_prob=0.6), metric='mean_class_accuracy')

RECIPES = {
    'rafdb': _EPOCH_RECIPE,
    'ferplus': _EPOCH_RECIPE,
    'affectnet7': _AFFECTNET_RECIPE,
    'affectnet8': _AFFECTNET_RECIPE,
    'folder': _EPOCH_RECIPE,
}
"""Dataset name -> recipe; 'folder' (a class-per-folder dataset) follows RAF-DB's."""
