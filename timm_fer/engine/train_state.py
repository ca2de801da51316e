"""Random generator states of a training process, saved in checkpoints so that ``--resume`` continues exactly."""
import random
from typing import Any, Dict

import torch

__all__ = ['capture_rng_state', 'restore_rng_state']


def capture_rng_state() -> Dict[str, Any]:
    """States of the torch (CPU and CUDA) and Python random generators of this process."""
    state = {'torch': torch.get_rng_state(), 'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Restore the generators saved by ``capture_rng_state``."""
    torch.set_rng_state(state['torch'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
