"""timm-fer model families; importing this registers every model with timm."""
from typing import List

import timm

from ._pretrained import tagged_name
from .irnet import BottleneckIR, IRNet, create_ir_stages, create_ir_stem
from .transfer import TransFER

__all__ = ['BottleneckIR', 'IRNet', 'TransFER', 'create_ir_stages', 'create_ir_stem', 'registered_models',
           'tagged_name']


def registered_models() -> List[str]:
    """Names of the models that timm-fer registers with timm."""
    return timm.list_models(module=['irnet', 'transfer'])
