"""Atomic checkpoint files, random generator states, and loading weights from any checkpoint a user may have."""
import os
import random
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from timm.models import clean_state_dict

from .hub import read_checkpoint_file
from .models._pretrained import unwrap_state_dict

__all__ = ['TRAIN_CHECKPOINT_FORMAT', 'capture_rng_state', 'load_weights', 'restore_rng_state', 'write_atomic',
           'write_text_atomic']

TRAIN_CHECKPOINT_FORMAT = 'timm-fer-train-v1'
"""Value of the 'format' key of the checkpoints that ``timm-fer train`` writes."""


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)`` on a file in ``path``'s folder, then move it over ``path`` in one step.

    A process killed while writing leaves the previous ``path`` intact (and at worst a stray temporary file).
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary_path = os.path.join(folder, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        write(temporary_path)
        os.replace(temporary_path, path)
    except BaseException:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) atomically."""
    def write(temporary_path: str) -> None:
        with open(temporary_path, 'w', encoding='utf-8') as f:
            f.write(text)
    write_atomic(path, write)


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


def load_weights(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """Model weights of a checkpoint, and the run config when ``timm-fer train`` wrote it.

    Reads training checkpoints, plain state dicts, dicts holding one under 'state_dict' or 'model', and
    ``.safetensors`` files; strips DDP and torch.compile prefixes.
    """
    checkpoint = read_checkpoint_file(path)
    config = checkpoint['config'] if checkpoint.get('format') == TRAIN_CHECKPOINT_FORMAT else None
    return clean_state_dict(unwrap_state_dict(checkpoint)), config
