"""Properties of MSAD attention and of apply_msad."""
import pytest
import timm
import torch
from hypothesis import given
from hypothesis import strategies as st
from timm.layers import Attention

from timm_fer.layers import MultiHeadSelfAttentionDropping, apply_msad


@st.composite
def attention_cases(draw):
    num_heads = draw(st.integers(2, 6))
    head_dim = draw(st.integers(1, 8))
    tokens = draw(st.integers(1, 9))
    batch = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return num_heads, head_dim, tokens, batch, dtype, seed


def _head_outputs(module: MultiHeadSelfAttentionDropping, x: torch.Tensor) -> torch.Tensor:
    """The per-head attention output (B, heads, N, head_dim) that ``proj`` receives, captured by a hook."""
    captured = []
    handle = module.proj.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    module(x)
    handle.remove()
    batch, tokens, _ = x.shape
    return captured[0].reshape(batch, tokens, module.num_heads, module.head_dim).transpose(1, 2)


@given(attention_cases(), st.floats(0., 1.))
def test_eval_and_p0_match_timm_attention(case, p):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    reference = Attention(dim, num_heads=num_heads, qkv_bias=True, dtype=dtype).eval()
    msad = MultiHeadSelfAttentionDropping(dim, num_heads=num_heads, qkv_bias=True, head_drop_prob=p, dtype=dtype)
    msad.load_state_dict(reference.state_dict())
    x = torch.randn(batch, tokens, dim, dtype=dtype)
    expected = reference(x)
    assert torch.equal(msad.eval()(x), expected)
    msad.head_drop.p = 0.
    assert torch.equal(msad.train()(x), expected)


@given(attention_cases())
def test_p1_zeroes_exactly_one_head_per_sample(case):
    num_heads, head_dim, tokens, batch, dtype, seed = case
    torch.manual_seed(seed)
    dim = num_heads * head_dim
    msad = MultiHeadSelfAttentionDropping(dim, num_heads=num_heads, head_drop_prob=1., dtype=dtype).train()
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
    msad = MultiHeadSelfAttentionDropping(dim, num_heads=num_heads, head_drop_prob=1.).train()
    captured = {}

    def keep_head_tensors(module, args, output):
        args[0].retain_grad()
        captured.update(heads=args[0], dropped=output)

    msad.head_drop.register_forward_hook(keep_head_tensors)
    msad(torch.randn(batch, tokens, dim)).square().sum().backward()
    dropped = captured['dropped'].flatten(2).eq(0).all(dim=-1)
    grad = captured['heads'].grad.flatten(2)
    assert dropped.sum(dim=1).eq(1).all()
    assert grad[dropped].eq(0).all()


def test_head_drop_rate_and_uniform_head_choice():
    torch.manual_seed(7)
    batch, num_heads, p = 20_000, 8, 0.3
    msad = MultiHeadSelfAttentionDropping(16, num_heads=num_heads, head_drop_prob=p).train()
    heads = _head_outputs(msad, torch.randn(batch, 2, 16))
    zero = heads.flatten(2).eq(0).all(dim=-1)
    dropped = zero.any(dim=1)
    assert abs(dropped.float().mean().item() - p) < 0.015  # about 5 sigma
    counts = zero[dropped].sum(dim=0).double()
    expected = counts.sum() / num_heads
    assert ((counts - expected) ** 2 / expected).sum().item() < 24.32  # chi-square, 7 dof, p = 0.001


def test_invalid_probability_is_rejected():
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        MultiHeadSelfAttentionDropping(16, num_heads=2, head_drop_prob=1.5)


@pytest.mark.parametrize('name', ['vit_small_patch16_224', 'deit_tiny_patch16_224'])
def test_apply_msad_keeps_weights_and_eval_outputs(name):
    model = timm.create_model(name, img_size=32, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_msad(model, 0.3) is model
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadSelfAttentionDropping)]
    assert len(attentions) == 2 and all(m.head_drop.p == 0.3 for m in attentions)
    assert not any(type(m) is Attention for m in model.modules())
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(model(x), expected)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_apply_msad_updates_existing_msad_and_rejects_models_without_attention():
    model = apply_msad(timm.create_model('deit_tiny_patch16_224', img_size=32, depth=1), 0.3)
    apply_msad(model, 0.5)
    assert model.blocks[0].attn.head_drop.p == 0.5
    with pytest.raises(ValueError, match='no timm Attention'):
        apply_msad(torch.nn.Linear(2, 2), 0.3)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        apply_msad(model, 2.)
    assert model.blocks[0].attn.head_drop.p == 0.5
