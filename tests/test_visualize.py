"""Where the model looked: recorded attention, gradient-weighted rollout, LANet maps, JET overlays."""
import math

import numpy as np
import pytest
import timm
import torch
from helpers import TINY
from PIL import Image

import timm_fer  # noqa: F401  (registers the models)
from timm_fer.inference.visualize import (
    PANEL_SIZE,
    explain,
    gradient_weighted_rollout,
    jet_colormap,
    overlay_heatmap,
    recorded_attention,
    render_explanation,
)
from timm_fer.layers import MultiHeadSelfAttentionDropping


@pytest.fixture(scope='module')
def faces():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def _hooked_modules(model: torch.nn.Module) -> list[str]:
    """Names of the submodules of ``model`` that hold forward hooks."""
    return [name for name, module in model.named_modules() if module._forward_hooks]


def test_recorded_attention_hooks_attn_drop_of_the_explicit_path_and_restores_the_switch(model, faces):
    with torch.inference_mode():
        expected = model(faces)
    model.blocks[1].attn.fused_attn = False  # the switch is restored per module, not reset to one value
    try:
        with torch.inference_mode(), recorded_attention(model) as attentions:
            assert [block.attn.fused_attn for block in model.blocks] == [False, False]
            assert _hooked_modules(model) == ['blocks.0.attn.attn_drop', 'blocks.1.attn.attn_drop']
            assert all('forward' not in block.attn.__dict__ for block in model.blocks)
            logits = model(faces)
        assert [block.attn.fused_attn for block in model.blocks] == [timm.layers.use_fused_attn(), False]
        assert _hooked_modules(model) == []
        with pytest.raises(RuntimeError, match='inside'), recorded_attention(model):
            raise RuntimeError('inside')
        assert [block.attn.fused_attn for block in model.blocks] == [timm.layers.use_fused_attn(), False]
        assert _hooked_modules(model) == []
    finally:
        model.blocks[1].attn.fused_attn = timm.layers.use_fused_attn()
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert [a.shape for a in attentions] == [(3, 2, 197, 197)] * 2
    torch.testing.assert_close(attentions[0].sum(dim=-1), torch.ones(3, 2, 197))
    with pytest.raises(ValueError, match='no MultiHeadSelfAttentionDropping'):
        with recorded_attention(torch.nn.Linear(2, 2)):
            pass


def test_recorded_attention_is_the_softmax_of_q_and_k_and_keeps_the_graph(model, faces):
    qkv = []
    handles = [block.attn.qkv.register_forward_hook(lambda _, args, output: qkv.append(output))
               for block in model.blocks]
    try:
        with recorded_attention(model) as attentions:
            logits = model(faces[:2])
    finally:
        for handle in handles:
            handle.remove()
    assert len(attentions) == len(qkv) == 2
    for block, attn, projected in zip(model.blocks, attentions, qkv):
        heads, head_dim = block.attn.num_heads, block.attn.head_dim
        q, k, _ = projected.detach().reshape(2, 197, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k = block.attn.q_norm(q), block.attn.k_norm(k)
        scores = torch.einsum('bhnd,bhmd->bhnm', q, k) / math.sqrt(head_dim)
        torch.testing.assert_close(attn.detach(), scores.softmax(dim=-1))
    gradients = torch.autograd.grad(logits[:, 0].sum(), attentions)
    assert all(g.shape == a.shape and g.abs().sum() > 0 for g, a in zip(gradients, attentions))


def test_recorded_attention_records_a_shared_attn_drop_once_per_call():
    first = MultiHeadSelfAttentionDropping(8, num_heads=2)
    second = MultiHeadSelfAttentionDropping(8, num_heads=2)
    second.attn_drop = first.attn_drop
    both = torch.nn.Sequential(first, second)
    with recorded_attention(both) as attentions:
        both(torch.randn(1, 3, 8))
    assert len(attentions) == 2


def test_rollout_is_chefers_rule():
    torch.manual_seed(0)
    attentions = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(2)]
    gradients = [torch.randn(2, 3, 5, 5) for _ in range(2)]
    expected = torch.eye(5).expand(2, 5, 5)
    for attn, grad in zip(attentions, gradients):
        weighted = torch.relu(grad * attn).mean(dim=1)
        expected = expected + torch.bmm(weighted, expected)
    torch.testing.assert_close(gradient_weighted_rollout(attentions, gradients), expected)
    zero = [torch.zeros(2, 3, 5, 5)] * 2
    torch.testing.assert_close(gradient_weighted_rollout(attentions, zero), torch.eye(5).expand(2, 5, 5))


def test_explain_gives_finite_non_negative_maps_of_the_token_grid(model, faces):
    with torch.inference_mode():
        expected = model(faces)
    model.train()
    out = explain(model, faces)
    assert model.training  # its mode is restored
    model.eval()
    torch.testing.assert_close(out['logits'], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out['target'], expected.argmax(-1))
    for key in ('relevance', 'lanet_map'):
        assert out[key].shape == (3, 14, 14)
        assert torch.isfinite(out[key]).all() and (out[key] >= 0).all()
    assert (out['lanet_map'] <= 1).all() and out['relevance'].sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_explain_takes_a_target_and_frozen_weights(model, faces):
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        by_int = explain(model, faces, target=2)
        by_tensor = explain(model, faces, target=torch.tensor([2, 2, 2]))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    assert by_int['target'].tolist() == [2, 2, 2]
    torch.testing.assert_close(by_int['relevance'], by_tensor['relevance'])


def test_explain_without_local_cnns_has_no_lanet_map(faces):
    vit = timm.create_model('vit_fer_ir50', **TINY).eval()
    out = explain(vit, faces[:1])
    assert out['lanet_map'] is None and out['relevance'].shape == (1, 14, 14)
    with pytest.raises(TypeError, match='TransFER'):
        explain(torch.nn.Linear(3, 3), faces)
    with pytest.raises(ValueError, match='classifier'):
        explain(timm.create_model('vit_fer_ir50', num_classes=0, **TINY), faces)


def test_jet_colormap_runs_from_dark_blue_through_green_to_dark_red():
    colours = jet_colormap(np.array([0., 0.5, 1., -1., 2.]))
    assert colours.dtype == np.uint8
    assert colours.tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0], [0, 0, 128], [128, 0, 0]]
    assert jet_colormap(np.zeros((4, 5))).shape == (4, 5, 3)


def test_overlay_and_figure(model, faces):
    face = Image.new('RGB', (112, 112), (200, 150, 120))
    hot_corner = np.zeros((14, 14))
    hot_corner[0, 0] = 1.
    overlay = np.asarray(overlay_heatmap(face, hot_corner, alpha=1.))
    assert overlay.shape == (112, 112, 3)
    assert overlay[0, 0].tolist() == [128, 0, 0] and overlay[-1, -1].tolist() == [0, 0, 128]
    assert np.asarray(overlay_heatmap(face, np.ones((14, 14)))).shape == (112, 112, 3)  # flat map: no division by 0
    out = explain(model, faces[:1])
    figure = render_explanation(face, out['relevance'][0], out['lanet_map'][0], 'happiness 0.90')
    assert figure.width == 3 * PANEL_SIZE and figure.height > PANEL_SIZE
    assert render_explanation(face, out['relevance'][0]).width == 2 * PANEL_SIZE


def test_title_and_captions_keep_the_spaces_between_words():
    picture = render_explanation(Image.new('RGB', (112, 112), 'white'), np.zeros((14, 14)), np.zeros((14, 14)),
                                 'happiness 0.91')
    title = np.asarray(picture.convert('L'))[:24, :PANEL_SIZE]
    columns = np.flatnonzero((title < 128).any(axis=0))
    assert (np.diff(columns) - 1).max() >= 4  # the space between the words, not letter spacing (the old font: 2)


def test_a_grayscale_model_is_explained_on_the_grayscale_face_it_saw(tmp_path):
    from timm_fer.inference import predict

    compact = timm.create_model('transfer_fer_compact', num_classes=3, in_chans=1).eval()
    Image.new('RGB', (64, 64), (200, 40, 40)).save(tmp_path / 'red.png')
    face = predict([tmp_path / 'red.png'], model=compact, aligned=True, save_viz=tmp_path / 'viz',
                   save_crops=tmp_path / 'crops').faces[0]
    crop = Image.open(face.crop)
    assert crop.mode == 'L' and crop.size == (48, 48)
    panel = np.asarray(Image.open(face.visualization).convert('RGB'))[40:200, 20:200].astype(int)
    assert np.abs(panel[..., 0] - panel[..., 1]).max() <= 1  # the face panel is gray, not red
