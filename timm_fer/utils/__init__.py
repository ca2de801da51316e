"""Helpers below every other part of timm-fer: atomic writes, output plans, model size counts, the fast runtime path.

Each name is imported from its module on first use: some of them import torch, and the command line reads
:mod:`timm_fer.utils.options` before any command does, so that an argument error answers at once.
"""
from importlib import import_module
from typing import Any

_HOMES = {'write_atomic': 'atomic', 'write_text_atomic': 'atomic', 'count_macs': 'complexity',
          'count_params': 'complexity', 'first_conv_channels': 'complexity', 'renamed_kwarg': 'deprecation',
          'FaceNames': 'outputs', 'OutputPlan': 'outputs', 'output_name': 'outputs', 'autocast': 'runtime',
          'bf16_is_fast': 'runtime', 'prepare_model': 'runtime', 'resolve_amp_dtype': 'runtime', 'to_input': 'runtime'}
"""Each public name and the module that holds it."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """The public ``name``, imported from its module now (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(import_module(f'.{_HOMES[name]}', __name__), name)
