"""TransFER: Learning Relation-aware Facial Expression Representations with Transformers.

Xue, Wang, Guo, ICCV 2021 (arXiv:2108.11116). An IR-50 stem (first three stages) feeds local CNNs (B LANets whose
maps are guided by Multi-Attention Dropping, MAD, and max-aggregated into the features), a 1x1 projection to
tokens, and an 8-block ViT encoder whose self-attention drops whole heads in training (MSAD).

Where the paper is silent, sizes follow the authors' released code. One deliberate difference from that code:
its head-dropping line indexes the token axis of the qkv tensor (zeroing q, k and v of one of the first
``num_heads`` tokens); here MSAD drops a head, as the paper describes.
"""
import logging
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import _assert, calculate_drop_path_rates, resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block
from torch import nn

from ..constants import AFFECTNET7_LABELS, FERPLUS_LABELS, RAFDB_LABELS
from ..layers import LocalCNN, apply_msad
from ..utils.deprecation import renamed_kwarg
from ._pretrained import (
    adaptable_prefixes,
    build_fer_model,
    check_state_dict_fits,
    published_hub_id,
    shipped_weights,
    unwrap_state_dict,
)
from .irnet import (
    IR_STAGE_CHANNELS,
    convert_face_evolve_state_dict,
    create_ir_stages,
    create_ir_stem,
    is_face_evolve_state_dict,
)

__all__ = ['LUMA_WEIGHTS', 'TransFER', 'checkpoint_filter_fn', 'convert_timm_legacy_vit_state_dict',
           'fold_grayscale_input', 'is_timm_vit_state_dict']

_logger = logging.getLogger(__name__)

class TransFER(nn.Module):
    """TransFER and its ablations (ViT-FER baseline, no MAD, no MSAD, other stem depths and branch counts).

    Args:
        img_size: Input face size, an int for a square face or (height, width).
        in_chans: Input image channels.
        num_classes: Number of expression classes; 0 gives pre-logits features.
        global_pool: Pooling of the encoder output for the head: 'token' (cls token, the paper's), 'avg' or ''.
        stem_layers: ``bottleneck_IR`` units per IR stage; the stem uses the first ``stem_depth`` stages.
        stem_channels: Output channels of each IR stage.
        stem_depth: Number of IR stages in the stem (2, 3 or 4 in the paper's ablation; 3 is TransFER).
        use_se: Use IR-SE units in the stem.
        num_branches: Number B of LANet branches in the local CNNs; 0 removes the local CNNs (ViT-FER).
        lanet_reduction: Channel reduction ratio r of each LANet.
        mad_drop_prob: MAD probability p1 over the LANet maps.
        msad_drop_prob: MSAD probability p2 over the attention heads of every block.
        embed_dim: Token dimension of the encoder.
        depth: Number of encoder blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden size as a multiple of ``embed_dim``.
        qkv_bias: Add a bias to the qkv projections.
        drop_rate: Dropout before the classifier.
        pos_drop_rate: Dropout after adding the position embedding.
        proj_drop_rate: Dropout after the attention and MLP projections.
        attn_drop_rate: Dropout on the attention weights.
        drop_path_rate: Stochastic depth rate of the encoder blocks, growing linearly with depth.
        mad_prob: Former name of ``mad_drop_prob`` (deprecated).
        msad_prob: Former name of ``msad_drop_prob`` (deprecated).
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 112,
            in_chans: int = 3,
            num_classes: int = 7,
            global_pool: str = 'token',
            stem_layers: Sequence[int] = (3, 4, 14, 3),
            stem_channels: Sequence[int] = IR_STAGE_CHANNELS,
            stem_depth: int = 3,
            use_se: bool = False,
            num_branches: int = 2,
            lanet_reduction: int = 16,
            mad_drop_prob: float = 0.6,
            msad_drop_prob: float = 0.3,
            embed_dim: int = 768,
            depth: int = 8,
            num_heads: int = 8,
            mlp_ratio: float = 3.,
            qkv_bias: bool = False,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            mad_prob: Optional[float] = None,
            msad_prob: Optional[float] = None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        mad_drop_prob = renamed_kwarg('mad_prob', mad_prob, 'mad_drop_prob', mad_drop_prob)
        msad_drop_prob = renamed_kwarg('msad_prob', msad_prob, 'msad_drop_prob', msad_drop_prob)
        if global_pool not in ('token', 'avg', ''):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got '{global_pool}'.")
        if not 1 <= stem_depth <= min(len(stem_layers), len(stem_channels)):
            raise ValueError(
                f'stem_depth must be between 1 and the {len(stem_layers)} IR stages, got {stem_depth}.')
        reduction = 2 ** stem_depth
        img_size = to_2tuple(img_size)
        if img_size[0] % reduction or img_size[1] % reduction:
            raise ValueError(f'img_size must be a multiple of {reduction} for stem_depth={stem_depth}, got {img_size}.')
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.img_size = img_size
        self.grid_size = (img_size[0] // reduction, img_size[1] // reduction)
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        stem_chs = stem_channels[stem_depth - 1]

        self.stem = create_ir_stem(in_chans, stem_channels[0], **dd)
        self.stages = create_ir_stages(stem_layers[:stem_depth], stem_channels, stem_channels[0], use_se, **dd)
        self.local_cnn = LocalCNN(
            stem_chs, num_branches, lanet_reduction, mad_drop_prob, **dd) if num_branches > 0 else nn.Identity()
        self.proj = nn.Conv2d(stem_chs, embed_dim, kernel_size=1, **dd)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim, **dd))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
                norm_layer=norm_layer,
                **dd,
            ) for i in range(depth)])
        apply_msad(self.blocks, msad_drop_prob)
        self.norm = norm_layer(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=reduction) for i in range(depth)]
        if device != torch.device('meta'):
            self.init_weights()

    def init_weights(self) -> None:
        """ViT initialisation for the encoder, head and tokens; the CNN parts keep PyTorch's defaults."""
        trunc_normal_(self.pos_embed, std=.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in (self.blocks, self.head):
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, std=.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_embed', 'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^cls_token|^pos_embed|^stem|^stages|^local_cnn|^proj',
            blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ('token', 'avg', ''):
                raise ValueError(f"global_pool must be 'token', 'avg' or '', got '{global_pool}'.")
            self.global_pool = global_pool
        device, dtype = self.cls_token.device, self.cls_token.dtype
        self.head = nn.Linear(self.embed_dim, num_classes, device=device, dtype=dtype) if num_classes > 0 \
            else nn.Identity()

    def _check_input_size(self, x: torch.Tensor) -> None:
        fix = 'resize the aligned face (timm.data.resolve_data_config gives the transform) or set img_size'
        height, width = self.img_size
        _assert(x.shape[-2] == height, f'TransFER expects faces of height {height}, got {x.shape[-2]}: {fix}.')
        _assert(x.shape[-1] == width, f'TransFER expects faces of width {width}, got {x.shape[-1]}: {fix}.')

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """IR stem: input layer and the first ``stem_depth`` IR stages."""
        self._check_input_size(x)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Project the re-weighted stem features to tokens, prepend the cls token, add position embeddings."""
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward pass that also returns the outputs of the encoder blocks selected by ``indices``.

        Args:
            x: Input faces.
            indices: Last n blocks if an int, all if None, else the block indices to return.
            return_prefix_tokens: Return (spatial, cls token) pairs instead of spatial tokens only.
            norm: Apply the final norm to the intermediates.
            stop_early: Stop after the last block needed.
            output_fmt: 'NCHW' (tokens reshaped to the ``grid_size`` grid: the input size over ``2 ** stem_depth``,
                e.g. 14x14 at 112x112 and 6x6 at 48x48) or 'NLC'.
            intermediates_only: Return only the intermediate features.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got '{output_fmt}'.")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = self.embed_tokens(self.local_cnn(self.forward_stem(x)))
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)

        prefix_tokens = [y[:, :self.num_prefix_tokens] for y in intermediates]
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == 'NCHW':
            height, width = self.grid_size
            intermediates = [y.reshape(y.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if not torch.jit.is_scripting() and return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last one that ``indices`` needs, and optionally the norm and head."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(self.local_cnn(self.forward_stem(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'token':
            x = x[:, 0]
        elif self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def is_timm_vit_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is a timm ViT checkpoint (patch embedding + blocks), e.g. the legacy ViT-S."""
    return 'patch_embed.proj.weight' in state_dict and any(k.startswith('blocks.') for k in state_dict)


def convert_timm_legacy_vit_state_dict(
        state_dict: Dict[str, torch.Tensor],
        model: 'TransFER',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Take the TransFER encoder from a timm ViT checkpoint (``vit_small_p16_224-15ec54c9.pth`` layout).

    Keeps the cls token, the position embedding (resampled when the token grid differs from 14x14), the first
    ``len(model.blocks)`` blocks and the final norm; drops the patch embedding and the ImageNet head.

    Returns:
        The encoder tensors, named as in ``model``, and the source keys that were dropped.
    """
    converted, dropped = {}, []
    for key, value in state_dict.items():
        if key.startswith('blocks.') and int(key.split('.')[1]) < len(model.blocks) or \
                key.startswith('norm.') or key == 'cls_token':
            converted[key] = value
        elif key == 'pos_embed':
            converted[key] = resample_abs_pos_embed(value, new_size=model.grid_size, num_prefix_tokens=1)
        else:
            dropped.append(key)
    return converted, dropped


LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G and B: Pillow's RGB-to-grayscale conversion."""


def fold_grayscale_input(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Fit grayscale-trained weights (a one-channel first conv) to an RGB model by folding in the luma weights.

    Each input channel gets the gray kernel times that channel's luma weight, so the RGB model computes what the
    grayscale one did on Pillow's grayscale conversion (exactly, with the same mean and std on every channel). Other
    weights, and state dicts whose first conv is not one-channel, pass unchanged.
    """
    first_conv = model.pretrained_cfg.get('first_conv', 'stem.conv')
    key = f'{first_conv}.weight'
    weight = state_dict.get(key)
    if weight is None or weight.dim() != 4 or weight.shape[1] != 1 or model.get_submodule(first_conv).in_channels != 3:
        return state_dict
    return {**state_dict, key: weight * weight.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)}


_BLOCK_OUTPUTS = ('attn.proj.weight', 'attn.proj.bias', 'mlp.fc2.weight', 'mlp.fc2.bias')
"""The weights through which an encoder block adds to its residual stream: zero, and the block is the identity."""


def grow_encoder_depth(state_dict: Dict[str, torch.Tensor], model: 'TransFER') -> Dict[str, torch.Tensor]:
    """Fit the weights of a shallower encoder to ``model``'s deeper one by appending identity blocks.

    Blocks the state dict lacks take ``model``'s initialisation with their attention and MLP output projections
    zeroed, so each adds nothing to the residual stream: the grown model computes what the checkpoint did, and
    training it (``--initial-checkpoint`` with ``--model-kwargs depth=N``) starts from there rather than from an
    untrained tail. State dicts with no encoder blocks, or as many as ``model``, pass unchanged.
    """
    have = {int(k.split('.')[1]) for k in state_dict if k.startswith('blocks.')}
    depth = len(model.blocks)
    if not have or len(have) >= depth or have != set(range(len(have))):
        return state_dict
    grown = dict(state_dict)
    for key, value in model.state_dict().items():
        if key.startswith('blocks.') and int(key.split('.')[1]) >= len(have):
            grown[key] = torch.zeros_like(value) if key.endswith(_BLOCK_OUTPUTS) else value.clone()
    _logger.info(f'Grew the encoder from {len(have)} to {depth} blocks: blocks {len(have)}-{depth - 1} start as the '
                 f'identity (zero output projections).')
    return grown


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: 'TransFER') -> Dict[str, torch.Tensor]:
    """Accept TransFER checkpoints, and the paper's initialisation sources converted on the fly.

    Besides timm-fer's own layout this takes a face.evoLVe IR-50 checkpoint (for the stem), a timm legacy ViT-S
    checkpoint (for the encoder), or one dict holding both. Parts that such a source does not cover (local CNNs,
    projection, head, and the stem or the encoder when only one source is given) keep the model's
    initialisation, as in the paper, and are logged.
    """
    state_dict = unwrap_state_dict(state_dict)
    face_evolve = {k: v for k, v in state_dict.items() if k.startswith(('input_layer.', 'body.', 'output_layer.'))}
    vit = {k: v for k, v in state_dict.items() if k not in face_evolve}
    sources, converted = [], {}
    if is_face_evolve_state_dict(face_evolve):
        stem, _ = convert_face_evolve_state_dict(face_evolve, [len(stage) for stage in model.stages])
        converted.update(stem)
        sources.append('face.evoLVe IR stem')
    if is_timm_vit_state_dict(vit):
        encoder, _ = convert_timm_legacy_vit_state_dict(vit, model)
        converted.update(encoder)
        sources.append('timm ViT encoder')
    if not sources:
        state_dict = grow_encoder_depth(fold_grayscale_input(state_dict, model), model)
        check_state_dict_fits(state_dict, model, 'checkpoint', adaptable=adaptable_prefixes(model))
        return state_dict
    source = ' + '.join(sources)
    check_state_dict_fits(converted, model, source, allow_missing=True)
    initialised = {k: v for k, v in model.state_dict().items() if k not in converted}
    _logger.info(f'Loaded {len(converted)} tensors from {source}; {len(initialised)} keep their initialisation '
                 f'({", ".join(sorted({k.split(".")[0] for k in initialised}))}).')
    return {**initialised, **converted}


def _create_transfer(variant: str, pretrained: bool = False, **kwargs: Any) -> TransFER:
    out_indices = kwargs.pop('out_indices', min(3, kwargs.get('depth', 8)))  # the last 3 blocks
    return build_fer_model(
        TransFER,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


def _cfg(label_names: Sequence[str] = RAFDB_LABELS, **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '',
        'num_classes': len(label_names),
        'label_names': tuple(label_names) or None,
        'input_size': (3, 112, 112),
        'fixed_input_size': True,
        'pool_size': None,
        'crop_pct': 1.0,
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv',
        'classifier': 'head',
        'paper_ids': 'arXiv:2108.11116',
        'paper_name': 'TransFER: Learning Relation-aware Facial Expression Representations with Transformers',
        **kwargs,
    }


def _finetuned_cfg(name: str, label_names: Sequence[str], dataset: str, paper_accuracy: str) -> Dict[str, Any]:
    """The cfg of a tag fine-tuned with the paper's protocol; ``paper_accuracy``: what the paper (Table 5) reports."""
    return _cfg(
        label_names,
        hf_hub_id=published_hub_id(name),
        license='cc-by-nc-4.0',
        description=f'TransFER fine-tuned on {dataset} with the paper\'s protocol.',
        notes=(f'paper: {paper_accuracy}', f'dataset terms: {dataset} is for non-commercial research only'),
    )


def _compact_cfg(name: str, description: str, terms: str) -> Dict[str, Any]:
    """The cfg of a compact tag whose weights ship inside the package: 8 FERPlus classes, 48x48 faces."""
    return _cfg(
        FERPLUS_LABELS,
        hf_hub_id=published_hub_id(name),
        file=str(shipped_weights(name)),
        input_size=(3, 48, 48),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        license='cc-by-nc-4.0',
        description=description,
        notes=(terms,),
    )


default_cfgs = generate_default_cfgs({
    'transfer_fer_ir50.rafdb': _finetuned_cfg(
        'transfer_fer_ir50.rafdb', RAFDB_LABELS, 'RAF-DB basic (7 classes)',
        'RAF-DB basic test, overall accuracy 90.91 %'),
    'transfer_fer_ir50.ferplus': _finetuned_cfg(
        'transfer_fer_ir50.ferplus', FERPLUS_LABELS, 'FERPlus (8 classes, majority vote)',
        'FERPlus test, overall accuracy 90.83 %'),
    'transfer_fer_ir50.ms1m_in1k': _cfg(
        (),
        hf_hub_id=published_hub_id('transfer_fer_ir50.ms1m_in1k'),
        license='apache-2.0',
        description='The paper\'s initialisation, no classifier: stem from face.evoLVe IR-50 (MS-Celeb-1M), '
                    'encoder from timm\'s legacy ViT-S (ImageNet-1k), local CNNs and projection freshly '
                    'initialised (seed 0).',
    ),
    'transfer_fer_ir50_b4.affectnet7': _finetuned_cfg(
        'transfer_fer_ir50_b4.affectnet7', AFFECTNET7_LABELS, 'AffectNet (7 classes)',
        'AffectNet-7 validation, mean class accuracy 66.23 %'),
    'vit_fer_ir50': _cfg(RAFDB_LABELS, description='ViT-FER baseline; paper: RAF-DB 89.93 %, AffectNet-7 65.63 %'),
    'transfer_fer_compact.ferplus': _compact_cfg(
        'transfer_fer_compact.ferplus',
        'Reads the perceived expression: what ten annotators saw on each face (the FERPlus votes). Compact TransFER '
        'trained from scratch on FERPlus with timm-fer train, then fine-tuned toward other framings, '
        'cameras and posed faces (a weight-space ensemble with the from-scratch weights), with a logit adjustment and '
        'a temperature folded into the classifier; the weights ship inside the package, so pretrained=True needs no '
        'network. Trained on grayscale faces; its first conv folds the RGB-to-gray conversion in (ITU-R 601 luma), '
        'so it takes RGB faces through timm\'s own transforms, and in_chans=1 gives back the grayscale conv.',
        'dataset terms: FERPlus labels are MIT-licensed; FER2013 images are for non-commercial research only',
    ),
    'transfer_fer_compact.fer2013': _compact_cfg(
        'transfer_fer_compact.fer2013',
        'Reads the intended expression: what each face was collected and labelled as (FER2013\'s original labels). '
        'Compact TransFER: transfer_fer_compact.ferplus fine-tuned on those labels (contempt from the FERPlus votes), '
        'with a logit adjustment folded into the classifier; the weights ship inside the package. Same classes and '
        'input as transfer_fer_compact.ferplus, which reads the perceived expression.',
        "dataset terms: FERPlus labels are MIT-licensed; FER2013's images and labels are for non-commercial research "
        'only',
    ),
})


@register_model
def transfer_fer_ir50(pretrained: bool = False, **kwargs: Any) -> TransFER:
    """TransFER: IR-50 stem (3 stages), 2 LANets with MAD p1=0.6, 8-block ViT-S-like encoder with MSAD p2=0.3."""
    model_args = dict(stem_depth=3, num_branches=2, mad_drop_prob=0.6, msad_drop_prob=0.3)
    return _create_transfer('transfer_fer_ir50', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def transfer_fer_ir50_b4(pretrained: bool = False, **kwargs: Any) -> TransFER:
    """TransFER in the paper's AffectNet setting: ``transfer_fer_ir50`` with B=4 LANets, MAD p1=0.2, MSAD p2=0.6."""
    model_args = dict(stem_depth=3, num_branches=4, mad_drop_prob=0.2, msad_drop_prob=0.6)
    return _create_transfer('transfer_fer_ir50_b4', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def transfer_fer_compact(pretrained: bool = False, **kwargs: Any) -> TransFER:
    """Compact TransFER for 48x48 faces (FERPlus' size): a narrow 3-stage IR stem (1, 2, 3 units; 32, 64, 128
    channels), 2 LANets with MAD p1=0.6, a 4-block 192-wide encoder with 4 heads and MSAD p2=0.3. 2.2 M parameters;
    trains on a CPU. RGB input like every timm model; ``in_chans=1`` for grayscale faces.
    """
    model_args = dict(
        img_size=48, stem_layers=(1, 2, 3), stem_channels=(32, 64, 128), stem_depth=3, num_branches=2,
        mad_drop_prob=0.6, embed_dim=192, depth=4, num_heads=4, mlp_ratio=2., msad_drop_prob=0.3)
    return _create_transfer('transfer_fer_compact', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_fer_ir50(pretrained: bool = False, **kwargs: Any) -> TransFER:
    """ViT-FER, the paper's baseline: IR-50 stem (3 stages) and encoder; no local CNNs, no MAD, no MSAD."""
    model_args = dict(stem_depth=3, num_branches=0, mad_drop_prob=0., msad_drop_prob=0.)
    return _create_transfer('vit_fer_ir50', pretrained=pretrained, **dict(model_args, **kwargs))
