"""Where the model looked: LANet attention maps and transformer relevance maps, drawn like TransFER's Figure 4.

TransFER visualises its attention with the method of Chefer, Gur and Wolf (CVPR 2021): gradient-weighted
attention rollout. For each encoder block the attention probabilities A (one map per head) are weighted by their
gradient with respect to the explained class score, and ``A_bar = mean over heads of ReLU(grad(A) * A)``;
starting from the identity, ``R = R + A_bar @ R`` block after block, and the cls token's row of R over the
spatial tokens is the relevance of each 14x14 location. The LANet map is the element-wise max of the local CNNs'
attention maps, the map that re-weights the stem features.

The encoder's fused attention kernel returns no attention weights, so :func:`recorded_attention` switches every
:class:`~timm_fer.layers.MultiHeadSelfAttentionDropping` to its explicit path (``fused_attn = False``) and records
the attention probabilities with forward hooks on the modules' ``attn_drop``, the convention of timm's
``AttentionExtract``; the modules' code is left as it is.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..layers import LocalCNN, MultiHeadSelfAttentionDropping
from ..models import TransFER

__all__ = ['explain', 'gradient_weighted_rollout', 'jet_colormap', 'overlay_heatmap', 'recorded_attention',
           'render_explanation']

PANEL_SIZE = 224
"""Side in pixels of each panel of a rendered explanation."""


@contextmanager
def recorded_attention(model: nn.Module) -> Iterator[List[torch.Tensor]]:
    """Record the attention probabilities (B, heads, N, N) of every MSAD attention module of ``model``.

    Inside the ``with`` block each :class:`MultiHeadSelfAttentionDropping` takes its explicit path
    (``fused_attn = False``: the same outputs up to rounding), and a forward hook on its ``attn_drop`` module
    appends that module's input, ``softmax(q k^T * scale)`` before any attention dropout, to the yielded list in
    call order. The recorded tensors stay in the autograd graph: pass them to ``torch.autograd.grad`` to get their
    gradients. On exit, even through an exception, the hooks are removed and every module's ``fused_attn`` is
    restored.

    Raises:
        ValueError: ``model`` has no MSAD attention module.
    """
    modules = [m for m in model.modules() if isinstance(m, MultiHeadSelfAttentionDropping)]
    if not modules:
        raise ValueError(f'{type(model).__name__} has no MultiHeadSelfAttentionDropping module to record.')
    attentions: List[torch.Tensor] = []

    def record(module: nn.Module, args: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        attentions.append(args[0])

    fused = [m.fused_attn for m in modules]
    handles: List[RemovableHandle] = []
    try:
        for module in modules:
            module.fused_attn = False
        # A dropout module shared by several attention modules is hooked once, so each call is recorded once.
        for attn_drop in dict.fromkeys(m.attn_drop for m in modules):
            handles.append(attn_drop.register_forward_hook(record))
        yield attentions
    finally:
        for handle in handles:
            handle.remove()
        for module, fused_attn in zip(modules, fused, strict=True):
            module.fused_attn = fused_attn


def gradient_weighted_rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance (B, N, N) from each block's attention (B, heads, N, N) and its gradient."""
    batch_size, _, num_tokens, _ = attentions[0].shape
    rollout = torch.eye(num_tokens, dtype=attentions[0].dtype, device=attentions[0].device)
    rollout = rollout.expand(batch_size, num_tokens, num_tokens)
    for attn, grad in zip(attentions, gradients):
        weighted = (grad * attn).clamp(min=0).mean(dim=1)
        rollout = rollout + weighted @ rollout
    return rollout


def explain(
        model: TransFER,
        images: torch.Tensor,
        target: Optional[Union[int, torch.Tensor]] = None,
) -> Dict[str, Optional[torch.Tensor]]:
    """Classify ``images`` and say where the model looked, as tensors.

    The model runs in eval mode (MAD and MSAD off; its mode is restored afterwards). Parameter gradients are
    neither computed into ``.grad`` nor changed.

    Args:
        model: A TransFER model with a classifier (``vit_fer_ir50`` too).
        images: Normalised aligned faces (N, C, H, W), as the model takes them.
        target: Class to explain: an index for all images, one per image (N,), or None for each top class.

    Returns:
        ``logits`` (N, classes); ``target`` (N,); ``relevance`` (N, h, w), the gradient-weighted attention rollout
        of the cls token over the token grid (14x14 for 112x112 faces), non-negative; ``lanet_map`` (N, h, w),
        the max over the LANet maps in (0, 1), or None for models without local CNNs.
    """
    if not isinstance(model, TransFER):
        raise TypeError(
            f'explain needs a TransFER model (transfer_fer_ir50, vit_fer_ir50), got {type(model).__name__}.')
    if model.num_classes == 0:
        raise ValueError('explain needs a model with a classifier (num_classes > 0) to explain a class score.')
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), recorded_attention(model.blocks) as attentions:
            # The input takes part in the graph, so gradients exist even when every weight is frozen.
            x = model.forward_stem(images.detach().requires_grad_(True))
            lanet_map = None
            if isinstance(model.local_cnn, LocalCNN):
                x, maps = model.local_cnn.forward_with_maps(x)
                lanet_map = maps.amax(dim=1).detach()
            logits = model.forward_head(model.norm(model.blocks(model.embed_tokens(x))))
            if target is None:
                target = logits.argmax(dim=-1)
            target = torch.as_tensor(target, device=logits.device).expand(logits.shape[0])
            score = logits.gather(1, target[:, None]).sum()
            gradients = torch.autograd.grad(score, attentions)
    finally:
        model.train(was_training)
    rollout = gradient_weighted_rollout([a.detach() for a in attentions], gradients)
    relevance = rollout[:, 0, model.num_prefix_tokens:].reshape(-1, *model.grid_size)
    return dict(logits=logits.detach(), target=target, relevance=relevance, lanet_map=lanet_map)


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """The JET colour map (dark blue, cyan, yellow, dark red) of values in [0, 1], as uint8 RGB (..., 3)."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0., 1.)[..., None]
    rgb = np.clip(1.5 - np.abs(4. * values - np.array([3., 2., 1.])), 0., 1.)
    return (rgb * 255.).round().astype(np.uint8)


def overlay_heatmap(face: Image.Image, heatmap: Union[np.ndarray, torch.Tensor], alpha: float = 0.5) -> Image.Image:
    """Blend a heatmap (h, w), min-max normalised and resized to the face, in JET colours over the face."""
    heatmap = torch.as_tensor(heatmap).detach().float().cpu().numpy()
    span = heatmap.max() - heatmap.min()
    normalised = (heatmap - heatmap.min()) / span if span > 1e-12 else np.zeros_like(heatmap)
    resized = np.asarray(Image.fromarray(normalised.astype(np.float32), mode='F').resize(
        face.size, Image.Resampling.BILINEAR))
    return Image.blend(face.convert('RGB'), Image.fromarray(jet_colormap(resized)), alpha)


def render_explanation(
        face: Image.Image,
        relevance: Union[np.ndarray, torch.Tensor],
        lanet_map: Optional[Union[np.ndarray, torch.Tensor]] = None,
        title: str = '',
) -> Image.Image:
    """One picture like TransFER's Figure 4: the aligned face, its LANet map (when given) and its relevance map.

    Args:
        face: The aligned face the model saw (before normalisation).
        relevance: Transformer relevance (h, w) from :func:`explain`.
        lanet_map: Max-aggregated LANet map (h, w); None leaves out that panel.
        title: Text above the panels, e.g. the predicted expression.
    """
    face = face.convert('RGB').resize((PANEL_SIZE, PANEL_SIZE), Image.Resampling.BICUBIC)
    panels = [('aligned face', face)]
    if lanet_map is not None:
        panels.append(('LANet attention (max)', overlay_heatmap(face, lanet_map)))
    panels.append(('transformer relevance', overlay_heatmap(face, relevance)))
    title_height, caption_height = 26, 22
    canvas = Image.new('RGB', (PANEL_SIZE * len(panels), title_height + PANEL_SIZE + caption_height), 'white')
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 5), title, fill='black', font=ImageFont.load_default(size=15))
    caption_font = ImageFont.load_default(size=13)
    for i, (caption, panel) in enumerate(panels):
        canvas.paste(panel, (i * PANEL_SIZE, title_height))
        draw.text((i * PANEL_SIZE + 6, title_height + PANEL_SIZE + 4), caption, fill='black', font=caption_font)
    return canvas
