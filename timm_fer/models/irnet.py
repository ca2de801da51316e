"""IR ("improved residual") face backbones: the ArcFace / face.evoLVe IR and IR-SE networks.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition" (CVPR 2019). The networks take
112x112 aligned faces: a stride-1 3x3 input layer, then four stages of ``bottleneck_IR`` units whose first unit
halves the resolution (56, 28, 14, 7). Parameter layout follows face.evoLVe's ``model_irse.py``; its
face-embedding output layer (BN, dropout, flatten, linear 512*7*7 -> 512, BN) is replaced here by timm's usual
global pool + linear classifier, so the models can be fine-tuned like any timm CNN.
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import ClassifierHead, DropPath, SEModule
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..errors import CheckpointMismatchError
from ._pretrained import adaptable_prefixes, build_fer_model, check_state_dict_fits, published_hub_id, unwrap_state_dict

__all__ = ['BottleneckIR', 'IRNet', 'Subsample2d', 'checkpoint_filter_fn', 'convert_face_evolve_state_dict',
           'create_ir_stages', 'create_ir_stem', 'is_face_evolve_state_dict']

_logger = logging.getLogger(__name__)

IR_STAGE_CHANNELS = (64, 128, 256, 512)


class Subsample2d(nn.Module):
    """Keep every ``stride``-th row and column: face.evoLVe's ``MaxPool2d(1, stride)`` shortcut as a strided view.

    A 1x1 max pool is a subsample; as a view it gives the same values and gradients without computing and
    storing pooling indices in training.
    """

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride]

    def extra_repr(self) -> str:
        return f'stride={self.stride}'


class BottleneckIR(nn.Module):
    """ArcFace's ``bottleneck_IR`` unit, optionally with squeeze-excitation (``bottleneck_IR_SE``).

    Residual: BN -> conv3x3 (s1) -> PReLU -> conv3x3 (stride) -> BN [-> SE]. Shortcut: a strided subsample
    (face.evoLVe's ``MaxPool2d(1, stride)``) when the channels match, else conv1x1 (stride) + BN.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the second conv and of the shortcut.
        use_se: Add a squeeze-excitation module (reduction 16, no bias) at the end of the residual.
        drop_path: Stochastic depth rate of the residual.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            use_se: bool = False,
            drop_path: float = 0.,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.act1 = nn.PReLU(out_chs, **dd)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.se = SEModule(out_chs, rd_channels=out_chs // 16, bias=False, **dd) if use_se else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        if in_chs == out_chs:
            self.shortcut = Subsample2d(stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd),
                nn.BatchNorm2d(out_chs, **dd),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act1(self.conv1(self.bn1(x)))
        x = self.se(self.bn2(self.conv2(x)))
        return self.drop_path(x) + shortcut


def create_ir_stem(
        in_chans: int = 3,
        out_chs: int = IR_STAGE_CHANNELS[0],
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
) -> nn.Sequential:
    """The IR input layer: conv3x3 (stride 1, no bias) -> BN -> PReLU, at full input resolution."""
    dd = {'device': device, 'dtype': dtype}
    stem = nn.Sequential()
    stem.add_module('conv', nn.Conv2d(in_chans, out_chs, 3, stride=1, padding=1, bias=False, **dd))
    stem.add_module('bn', nn.BatchNorm2d(out_chs, **dd))
    stem.add_module('act', nn.PReLU(out_chs, **dd))
    return stem


def create_ir_stages(
        layers: Sequence[int],
        channels: Sequence[int] = IR_STAGE_CHANNELS,
        in_chs: int = IR_STAGE_CHANNELS[0],
        use_se: bool = False,
        drop_path_rate: float = 0.,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
) -> nn.Sequential:
    """IR stages, each a ``nn.Sequential`` of ``BottleneckIR`` units whose first unit has stride 2.

    Args:
        layers: Number of units per stage, e.g. ``(3, 4, 14, 3)`` for IR-50; may be shorter than ``channels``.
        channels: Output channels per stage.
        in_chs: Channels entering the first stage.
        use_se: Use ``bottleneck_IR_SE`` units.
        drop_path_rate: Stochastic depth rate, growing linearly to this value over all units.
    """
    if len(layers) > len(channels):
        raise ValueError(f'got {len(layers)} stage depths for {len(channels)} stage widths; give one width per stage.')
    total = sum(layers)
    stages = nn.Sequential()
    unit_idx = 0
    for depth, out_chs in zip(layers, channels):
        units = []
        for i in range(depth):
            units.append(BottleneckIR(
                in_chs if i == 0 else out_chs,
                out_chs,
                stride=2 if i == 0 else 1,
                use_se=use_se,
                drop_path=drop_path_rate * unit_idx / max(total - 1, 1),
                device=device,
                dtype=dtype,
            ))
            unit_idx += 1
        stages.append(nn.Sequential(*units))
        in_chs = out_chs
    return stages


class IRNet(nn.Module):
    """ArcFace IR / IR-SE backbone with a timm classifier head.

    Args:
        layers: Number of ``bottleneck_IR`` units in each of the four stages.
        channels: Output channels of each stage.
        use_se: Use squeeze-excitation units (IR-SE).
        in_chans: Input image channels.
        num_classes: Classifier outputs; 0 gives pooled features.
        global_pool: Global pooling type of the head ('avg', 'max', 'avgmax', ... or '' for none).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate of the residual units.
    """

    def __init__(
            self,
            layers: Sequence[int] = (3, 4, 14, 3),
            channels: Sequence[int] = IR_STAGE_CHANNELS,
            use_se: bool = False,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = create_ir_stem(in_chans, channels[0], **dd)
        self.stages = create_ir_stages(layers, channels, channels[0], use_se, drop_path_rate, **dd)
        self.feature_info = [
            dict(num_chs=chs, reduction=2 ** (i + 1), module=f'stages.{i}') for i, chs in enumerate(channels)]
        self.num_features = self.head_hidden_size = channels[-1]
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward pass that also returns the outputs of the stages selected by ``indices``.

        Args:
            x: Input images.
            indices: Last n stages if an int, all if None, else the stage indices to return.
            norm: Unused (IR nets have no final norm); kept for timm's interface.
            stop_early: Stop after the last stage needed.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediate features.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"IRNet intermediates are NCHW only, got output_fmt='{output_fmt}'.")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self.stem(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last one that ``indices`` needs, and optionally the head."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# face.evoLVe's ``res_layer`` indices -> BottleneckIR names.
_FACE_EVOLVE_RESIDUAL = {'0': 'bn1', '1': 'conv1', '2': 'act1', '3': 'conv2', '4': 'bn2', '5': 'se'}
_FACE_EVOLVE_INPUT = {'0': 'conv', '1': 'bn', '2': 'act'}


def is_face_evolve_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` uses face.evoLVe's IR layout (``input_layer.*``, flat ``body.N.*``)."""
    return any(k.startswith(('input_layer.', 'body.')) for k in state_dict)


def convert_face_evolve_state_dict(
        state_dict: Dict[str, torch.Tensor],
        stage_depths: Sequence[int],
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename face.evoLVe IR / IR-SE tensors to timm-fer's IR layout.

    face.evoLVe numbers its units flat across stages (``body.0`` ... ``body.23`` for IR-50); they are mapped in
    order onto stages of ``stage_depths`` units. Units past those stages (e.g. IR-50's stage 4 for a TransFER
    stem of three stages) and the face-embedding ``output_layer`` are dropped.

    Args:
        state_dict: face.evoLVe tensors (keys of other layouts pass through unchanged).
        stage_depths: Units per stage of the target, e.g. ``(3, 4, 14, 3)``.

    Returns:
        The renamed tensors, and the source keys that were dropped.
    """
    unit_positions = [(stage, unit) for stage, depth in enumerate(stage_depths) for unit in range(depth)]
    converted, dropped = {}, []
    for key, value in state_dict.items():
        parts = key.split('.')
        if parts[0] == 'input_layer' and parts[1] in _FACE_EVOLVE_INPUT:
            converted['.'.join(['stem', _FACE_EVOLVE_INPUT[parts[1]], *parts[2:]])] = value
        elif parts[0] == 'body' and len(parts) > 4:
            index = int(parts[1])
            if index >= len(unit_positions):
                dropped.append(key)
                continue
            stage, unit = unit_positions[index]
            if parts[2] == 'res_layer' and parts[3] in _FACE_EVOLVE_RESIDUAL:
                name = [_FACE_EVOLVE_RESIDUAL[parts[3]]]
            elif parts[2] == 'shortcut_layer':
                name = ['shortcut', parts[3]]
            else:
                raise CheckpointMismatchError(f'unknown face.evoLVe unit tensor {key}')
            converted['.'.join(['stages', str(stage), str(unit), *name, *parts[4:]])] = value
        elif parts[0] == 'output_layer':
            dropped.append(key)
        else:
            converted[key] = value
    return converted, dropped


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: 'IRNet') -> Dict[str, torch.Tensor]:
    """Accept timm-fer IR checkpoints and face.evoLVe IR / IR-SE checkpoints (converted on the fly)."""
    state_dict = unwrap_state_dict(state_dict)
    source = 'checkpoint'
    if is_face_evolve_state_dict(state_dict):
        source = 'face.evoLVe checkpoint'
        state_dict, dropped = convert_face_evolve_state_dict(state_dict, [len(stage) for stage in model.stages])
        extra_units = [k for k in dropped if k.startswith('body.')]
        if extra_units:
            raise CheckpointMismatchError(
                f'{source} has more IR units than the model ({sum(len(s) for s in model.stages)}): '
                f'{extra_units[0]} ...; pick the matching architecture (ir_50, ir_100, ir_se_50, ...).')
        _logger.info(f'Converted {source}; dropped its face-embedding output layer ({len(dropped)} tensors).')
    check_state_dict_fits(state_dict, model, source, adaptable=adaptable_prefixes(model))
    return state_dict


def _create_irnet(variant: str, pretrained: bool = False, **kwargs: Any) -> IRNet:
    return build_fer_model(
        IRNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 0,
        'input_size': (3, 112, 112),
        'pool_size': (7, 7),
        'crop_pct': 1.0,
        'interpolation': 'bilinear',
        'fixed_input_size': False,
        'mean': IMAGENET_INCEPTION_MEAN,
        'std': IMAGENET_INCEPTION_STD,
        'first_conv': 'stem.conv',
        'classifier': 'head.fc',
        'paper_ids': 'arXiv:1801.07698',
        'paper_name': 'ArcFace: Additive Angular Margin Loss for Deep Face Recognition',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'ir_18': _cfg(),
    'ir_34': _cfg(),
    'ir_50.ms1m': _cfg(
        hf_hub_id=published_hub_id('ir_50.ms1m'),
        license='mit',
        origin_url='https://github.com/ZhaoJ9014/face.evoLVe',
        description='face.evoLVe IR-50 trained on MS-Celeb-1M (backbone_ir50_ms1m_epoch120.pth), converted; '
                    'the stem initialisation of TransFER.',
    ),
    'ir_100': _cfg(),
    'ir_se_50': _cfg(),
    'ir_se_100': _cfg(),
})


@register_model
def ir_18(pretrained: bool = False, **kwargs: Any) -> IRNet:
    """IR-18: ``bottleneck_IR`` units (2, 2, 2, 2)."""
    model_args = dict(layers=(2, 2, 2, 2))
    return _create_irnet('ir_18', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ir_34(pretrained: bool = False, **kwargs: Any) -> IRNet:
    """IR-34: ``bottleneck_IR`` units (3, 4, 6, 3)."""
    model_args = dict(layers=(3, 4, 6, 3))
    return _create_irnet('ir_34', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ir_50(pretrained: bool = False, **kwargs: Any) -> IRNet:
    """IR-50 (face.evoLVe / ArcFace): ``bottleneck_IR`` units (3, 4, 14, 3)."""
    model_args = dict(layers=(3, 4, 14, 3))
    return _create_irnet('ir_50', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ir_100(pretrained: bool = False, **kwargs: Any) -> IRNet:
    """IR-100 (face.evoLVe / ArcFace): ``bottleneck_IR`` units (3, 13, 30, 3)."""
    model_args = dict(layers=(3, 13, 30, 3))
    return _create_irnet('ir_100', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ir_se_50(pretrained: bool = False, **kwargs: Any) -> IRNet:
    """IR-SE-50: IR-50 with squeeze-excitation units."""
    model_args = dict(layers=(3, 4, 14, 3), use_se=True)
    return _create_irnet('ir_se_50', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ir_se_100(pretrained: bool = False, **kwargs: Any) -> IRNet:
    """IR-SE-100: IR-100 with squeeze-excitation units."""
    model_args = dict(layers=(3, 13, 30, 3), use_se=True)
    return _create_irnet('ir_se_100', pretrained=pretrained, **dict(model_args, **kwargs))
