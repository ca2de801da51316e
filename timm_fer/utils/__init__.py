"""Helpers below every other part of timm-fer: atomic writes, output plans, model size counts, the fast runtime path."""
from .atomic import write_atomic, write_text_atomic
from .complexity import count_macs, count_params, first_conv_channels
from .deprecation import renamed_kwarg
from .outputs import FaceNames, OutputPlan, output_name
from .runtime import autocast, bf16_is_fast, prepare_model, resolve_amp_dtype, to_input

__all__ = ['FaceNames', 'OutputPlan', 'autocast', 'bf16_is_fast', 'count_macs', 'count_params', 'first_conv_channels',
           'output_name', 'prepare_model', 'renamed_kwarg', 'resolve_amp_dtype', 'to_input', 'write_atomic',
           'write_text_atomic']
