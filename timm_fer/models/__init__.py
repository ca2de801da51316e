"""timm-fer model families; importing this registers every model with timm."""
from .irnet import BottleneckIR, IRNet, create_ir_stages, create_ir_stem
from .transfer import TransFER

__all__ = ['BottleneckIR', 'IRNet', 'TransFER', 'create_ir_stages', 'create_ir_stem']
