"""Properties of MSAD attention (fused and explicit paths) and of apply_msad."""
import pytest
import timm
import timm.layers.config
import torch
from helpers import TINY
from hypothesis import given
from hypothesis import strategies as st
from timm.layers import Attention
from timm.utils import AttentionExtract

from timm_fer.layers import MultiHeadSelfAttentionDropping, apply_msad

# Fused and explicit attention agree to rounding; bf16 rounds its probabilities to 8 bits.
PATH_TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12),
            torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


@st.composite
def attention_cases(draw):
    num_heads = draw(st.integers(2, 6))
    head_dim = draw(st.integers(1, 8))
    tokens = draw(st.integers(1, 9))
    batch = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return num_heads, head_dim, tokens, batch, dtype, seed


def _msad(
        num_heads: int, head_dim: int, dtype: torch.dtype, qk_norm: bool = False, **kwargs,
) -> MultiHeadSelfAttentionDropping:
    """An MSAD attention with biases (and optional LayerNorm on q and k) on ``num_heads * head_dim`` channels."""
    return MultiHeadSelfAttentionDropping(
        num_heads * head_dim, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm, norm_layer=torch.nn.LayerNorm,
        dtype=dtype, **kwargs)


def _count_attn_drop_calls(module: MultiHeadSelfAttentionDropping) -> list[None]:
    """A list that grows by one each time ``module.attn_drop`` runs, i.e. each time the explicit path runs."""
    calls = []
    module.attn_drop.register_forward_hook(lambda *_: calls.append(None))
    return calls


def _head_outputs(module: MultiHeadSelfAttentionDropping, x: torch.Tensor) -> torch.Tensor:
    """The per-head attention output (B, heads, N, head_dim) that ``proj`` receives, captured by a hook."""
    captured = []
    handle = module.proj.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    module(x)
    handle.remove()
    batch, tokens, _ = x.shape
    return captured[0].reshape(batch, tokens, module.num_heads, module.head_dim).transpose(1, 2)


@given(attention_cases(), st.floats(0., 1.), st.booleans())
def test_eval_and_p0_match_timm_attention(case, p, fused_attn):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    reference = Attention(dim, num_heads=num_heads, qkv_bias=True, dtype=dtype).eval()
    msad = MultiHeadSelfAttentionDropping(dim, num_heads=num_heads, qkv_bias=True, attn_head_drop_prob=p, dtype=dtype)
    msad.load_state_dict(reference.state_dict())
    reference.fused_attn = msad.fused_attn = fused_attn
    x = torch.randn(batch, tokens, dim, dtype=dtype)
    expected = reference(x)
    assert torch.equal(msad.eval()(x), expected)
    msad.attn_head_drop.drop_prob = 0.
    assert torch.equal(msad.train()(x), expected)


@given(attention_cases())
def test_p1_zeroes_exactly_one_head_per_sample(case):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    msad = MultiHeadSelfAttentionDropping(dim, num_heads=num_heads, attn_head_drop_prob=1., dtype=dtype).train()
    x = torch.randn(batch, tokens, dim, dtype=dtype)
    heads = _head_outputs(msad, x)
    msad.eval()
    reference = _head_outputs(msad, x)
    zero = heads.flatten(2).eq(0).all(dim=-1)
    assert zero.sum(dim=1).eq(1).all()
    assert torch.equal(heads[~zero], reference[~zero])
    assert heads.shape == (batch, num_heads, tokens, head_dim)


@given(attention_cases())
def test_dropped_head_passes_no_gradient(case):
    num_heads, head_dim, tokens, batch, _, seed = case
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    msad = MultiHeadSelfAttentionDropping(dim, num_heads=num_heads, attn_head_drop_prob=1.).train()
    captured = {}

    def keep_head_tensors(module, args, output):
        args[0].retain_grad()
        captured.update(heads=args[0], dropped=output)

    msad.attn_head_drop.register_forward_hook(keep_head_tensors)
    msad(torch.randn(batch, tokens, dim)).square().sum().backward()
    dropped = captured['dropped'].flatten(2).eq(0).all(dim=-1)
    grad = captured['heads'].grad.flatten(2)
    assert dropped.sum(dim=1).eq(1).all()
    assert grad[dropped].eq(0).all()


def test_fused_attn_follows_timm_and_is_set_per_instance(monkeypatch):
    assert MultiHeadSelfAttentionDropping(8, num_heads=2).fused_attn is timm.layers.use_fused_attn()
    monkeypatch.setattr(timm.layers.config, '_USE_FUSED_ATTN', 0)  # what TIMM_FUSED_ATTN=0 sets at import
    first, second = MultiHeadSelfAttentionDropping(8, num_heads=2), MultiHeadSelfAttentionDropping(8, num_heads=2)
    assert not first.fused_attn
    first.fused_attn = True
    assert first.fused_attn and not second.fused_attn


@given(attention_cases(), st.booleans())
def test_fused_and_explicit_paths_agree_in_eval(case, qk_norm):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    msad = _msad(num_heads, head_dim, dtype, qk_norm=qk_norm, attn_head_drop_prob=1.).eval()
    x = torch.randn(batch, tokens, num_heads * head_dim, dtype=dtype)
    calls = _count_attn_drop_calls(msad)
    msad.fused_attn = True
    fused = msad(x)
    assert not calls
    msad.fused_attn = False
    torch.testing.assert_close(msad(x), fused, **PATH_TOL[dtype])
    assert len(calls) == 1


@pytest.mark.parametrize('mask', ['causal', 'bool', 'float'])
def test_fused_and_explicit_paths_agree_with_masks(mask):
    msad = _msad(2, 4, torch.float32).eval()
    x = torch.randn(3, 6, 8)
    kwargs = {
        'causal': {'is_causal': True},
        'bool': {'attn_mask': (torch.rand(3, 1, 6, 6) < 0.5) | torch.eye(6, dtype=torch.bool)},  # keeps the diagonal
        'float': {'attn_mask': torch.randn(3, 1, 6, 6)},
    }[mask]
    fused = msad(x, **kwargs)
    msad.fused_attn = False
    torch.testing.assert_close(msad(x, **kwargs), fused)


@given(attention_cases(), st.floats(0., 1.))
def test_fused_and_explicit_paths_drop_the_same_heads_in_training(case, p):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    msad = _msad(num_heads, head_dim, dtype, attn_head_drop_prob=p).train()
    x = torch.randn(batch, tokens, num_heads * head_dim, dtype=dtype)
    calls = _count_attn_drop_calls(msad)
    heads, grads = [], []
    for fused_attn in (True, False):
        msad.fused_attn = fused_attn
        torch.manual_seed(seed)
        heads.append(_head_outputs(msad, x))
        torch.manual_seed(seed)
        inp = x.detach().requires_grad_()
        msad(inp).square().sum().backward()
        grads.append(inp.grad)
    assert len(calls) == 2  # the explicit path ran twice, the fused one never
    zero = [h.flatten(2).eq(0).all(dim=-1) for h in heads]
    assert torch.equal(zero[0], zero[1])
    torch.testing.assert_close(heads[1], heads[0], **PATH_TOL[dtype])
    if dtype != torch.bfloat16:  # bf16 gradients sum many rounded terms
        torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


@given(attention_cases(), st.sampled_from([0., 0.5]), st.booleans())
def test_attn_drop_sees_the_softmax_of_the_explicit_path(case, attn_drop, training):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    msad = _msad(num_heads, head_dim, dtype, attn_drop=attn_drop).train(training)
    msad.fused_attn = False
    seen = []
    msad.attn_drop.register_forward_hook(lambda _, args, output: seen.append((args[0], output)))
    msad(torch.randn(batch, tokens, num_heads * head_dim, dtype=dtype))
    assert len(seen) == 1
    probs, dropped = seen[0]
    assert probs.shape == (batch, num_heads, tokens, tokens) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones_like(probs[..., 0]), **PATH_TOL[dtype])
    kept = dropped != 0
    scale = 1 / (1 - attn_drop) if training else 1.
    torch.testing.assert_close(dropped[kept], probs[kept] * scale)


@pytest.mark.parametrize('fused_attn', [True, False])
def test_fx_traces_both_paths(fused_attn):
    x = torch.randn(2, 5, 16)
    msad = _msad(4, 4, torch.float32, attn_head_drop_prob=0.5).eval()
    msad.fused_attn = fused_attn
    traced = torch.fx.symbolic_trace(msad, concrete_args=dict(attn_mask=None, is_causal=False))
    assert torch.equal(traced(x), msad(x))
    targets = {node.target for node in traced.graph.nodes}
    assert (torch.nn.functional.scaled_dot_product_attention in targets) is fused_attn
    assert ('softmax' in targets) is not fused_attn
    model = timm.create_model('transfer_fer_ir50', img_size=32, **TINY).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(torch.fx.symbolic_trace(model)(images), model(images))


@pytest.mark.parametrize('fused_attn', [True, False])
def test_torch_compile_runs_both_paths_without_graph_breaks(fused_attn):
    torch._dynamo.reset()
    msad = _msad(4, 4, torch.float32, attn_head_drop_prob=0.5)
    msad.fused_attn = fused_attn
    compiled = torch.compile(msad, backend='aot_eager', fullgraph=True)  # dynamo and AOT autograd, no codegen
    x = torch.randn(8, 5, 16)
    torch.testing.assert_close(compiled.eval()(x), msad(x))
    msad.train()
    torch.manual_seed(3)
    expected = msad(x)
    torch.manual_seed(3)
    torch.testing.assert_close(compiled(x), expected)
    model = timm.create_model('transfer_fer_ir50', mad_drop_prob=0.6, msad_drop_prob=0.3, img_size=32, **TINY).train()
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    torch._dynamo.reset()


def test_timm_attention_extract_reads_the_explicit_path():
    model = apply_msad(timm.create_model('vit_tiny_patch16_224', img_size=32, depth=2), 0.5).eval()
    for block in model.blocks:
        block.attn.fused_attn = False
    images = torch.randn(2, 3, 32, 32)
    by_fx = AttentionExtract(model, method='fx')(images)
    by_hook = AttentionExtract(model, method='hook')(images)
    assert list(by_fx) == ['blocks.0.attn.softmax', 'blocks.1.attn.softmax']
    assert list(by_hook) == ['blocks.0.attn.attn_drop', 'blocks.1.attn.attn_drop']
    for fx_map, hook_map in zip(by_fx.values(), by_hook.values()):
        assert fx_map.shape == (2, 3, 5, 5)
        torch.testing.assert_close(fx_map, hook_map)
        torch.testing.assert_close(fx_map.sum(dim=-1), torch.ones(2, 3, 5))


def test_head_drop_rate_and_uniform_head_choice():
    torch.manual_seed(7)
    batch, num_heads, p = 20_000, 8, 0.3
    msad = MultiHeadSelfAttentionDropping(16, num_heads=num_heads, attn_head_drop_prob=p).train()
    heads = _head_outputs(msad, torch.randn(batch, 2, 16))
    zero = heads.flatten(2).eq(0).all(dim=-1)
    dropped = zero.any(dim=1)
    assert abs(dropped.float().mean().item() - p) < 0.015  # about 5 sigma
    counts = zero[dropped].sum(dim=0).double()
    expected = counts.sum() / num_heads
    assert ((counts - expected) ** 2 / expected).sum().item() < 24.32  # chi-square, 7 dof, p = 0.001


def test_invalid_probability_is_rejected():
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        MultiHeadSelfAttentionDropping(16, num_heads=2, attn_head_drop_prob=1.5)


@pytest.mark.parametrize('name', ['vit_small_patch16_224', 'deit_tiny_patch16_224'])
def test_apply_msad_keeps_weights_and_eval_outputs(name):
    model = timm.create_model(name, img_size=32, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_msad(model, 0.3) is model
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadSelfAttentionDropping)]
    assert len(attentions) == 2 and all(m.attn_head_drop.drop_prob == 0.3 for m in attentions)
    assert not any(type(m) is Attention for m in model.modules())
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(model(x), expected)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_apply_msad_takes_over_fused_attn():
    model = timm.create_model('deit_tiny_patch16_224', img_size=32, depth=2).eval()
    model.blocks[1].attn.fused_attn = False
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    apply_msad(model, 0.3)
    assert [block.attn.fused_attn for block in model.blocks] == [timm.layers.use_fused_attn(), False]
    assert torch.equal(model(x), expected)


def test_apply_msad_updates_existing_msad_and_rejects_models_without_attention():
    model = apply_msad(timm.create_model('deit_tiny_patch16_224', img_size=32, depth=1), 0.3)
    apply_msad(model, 0.5)
    assert model.blocks[0].attn.attn_head_drop.drop_prob == 0.5
    with pytest.raises(ValueError, match='no timm Attention'):
        apply_msad(torch.nn.Linear(2, 2), 0.3)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        apply_msad(model, 2.)
    assert model.blocks[0].attn.attn_head_drop.drop_prob == 0.5
