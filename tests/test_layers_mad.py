"""Properties of Multi-Attention Dropping (MAD)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from timm_fer.layers import MultiAttentionDropping, multi_attention_dropping

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@st.composite
def branched_tensors(draw, min_branches: int = 2):
    """A strictly positive tensor (so a zero can only come from dropping) and a branch axis of it."""
    ndim = draw(st.integers(2, 5))
    shape = [draw(st.integers(1, 4)) for _ in range(ndim)]
    dim = draw(st.integers(1, ndim - 1))
    shape[dim] = draw(st.integers(min_branches, 6))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=generator) + 0.5).to(dtype)
    negative_dim = draw(st.booleans())
    return x, dim - ndim if negative_dim else dim, dim, seed


def _branch_zero(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, branches) bool: whether each branch of each sample is entirely zero."""
    return x.movedim(dim, 1).reshape(x.shape[0], x.shape[dim], -1).eq(0).all(dim=-1)


@given(branched_tensors(), st.floats(0., 1.))
def test_shape_and_dtype_kept(case, p):
    x, dim, _, seed = case
    torch.manual_seed(seed)
    y = MultiAttentionDropping(p, dim).train()(x)
    assert y.shape == x.shape and y.dtype == x.dtype


@given(branched_tensors(min_branches=1), st.floats(0., 1.))
def test_eval_is_identity(case, p):
    x, dim, _, _ = case
    module = MultiAttentionDropping(p, dim).eval()
    assert module(x) is x


@given(branched_tensors(min_branches=1))
def test_zero_probability_is_identity_in_training(case):
    x, dim, _, _ = case
    assert MultiAttentionDropping(0., dim).train()(x) is x


@given(branched_tensors())
def test_p1_zeroes_exactly_one_branch_per_sample_and_keeps_the_rest(case):
    x, dim, pos_dim, seed = case
    torch.manual_seed(seed)
    y = MultiAttentionDropping(1., dim).train()(x)
    zero = _branch_zero(y, pos_dim)
    assert zero.sum(dim=1).eq(1).all()
    kept = ~zero
    assert torch.equal(y.movedim(pos_dim, 1)[kept], x.movedim(pos_dim, 1)[kept])


@given(branched_tensors(), st.floats(0.05, 1.))
def test_dropped_branches_get_zero_gradient_and_kept_ones_get_ones(case, p):
    x, dim, pos_dim, seed = case
    x = x.float().requires_grad_()
    torch.manual_seed(seed)
    y = MultiAttentionDropping(p, dim).train()(x)
    y.sum().backward()
    zero = _branch_zero(y.detach(), pos_dim)
    grad = x.grad.movedim(pos_dim, 1)
    assert grad[zero].eq(0).all()
    assert grad[~zero].eq(1).all()


def test_drop_rate_and_branch_choice_match_p_and_are_uniform():
    """With a fixed seed: drop rate within 0.01 of p (about 5 sigma) and a chi-square test of uniform branches."""
    torch.manual_seed(1234)
    batch, branches, p = 40_000, 4, 0.3
    x = torch.ones(batch, branches, 3)
    y = MultiAttentionDropping(p).train()(x)
    zero = _branch_zero(y, 1)
    dropped = zero.any(dim=1)
    assert zero.sum(dim=1).le(1).all()
    assert abs(dropped.float().mean().item() - p) < 0.01
    counts = zero[dropped].sum(dim=0).double()
    expected = counts.sum() / branches
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_samples_are_dropped_independently():
    torch.manual_seed(0)
    y = MultiAttentionDropping(1.).train()(torch.ones(256, 8))
    assert len({tuple(row.tolist()) for row in y}) == 8


@pytest.mark.parametrize('p', [-0.1, 1.5, float('nan')])
def test_probability_outside_unit_interval_is_rejected(p):
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        MultiAttentionDropping(p)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        multi_attention_dropping(torch.ones(2, 2), p, training=True)


def test_single_branch_is_rejected_when_dropping():
    with pytest.raises(ValueError, match='at least 2 branches'):
        MultiAttentionDropping(0.5, dim=1).train()(torch.ones(4, 1, 3))


@pytest.mark.parametrize('dim', [0, -3, 3])
def test_batch_or_missing_axis_is_rejected(dim):
    with pytest.raises(ValueError, match='non-batch axis'):
        MultiAttentionDropping(0.5, dim=dim).train()(torch.ones(4, 2, 3))


def test_extra_repr_and_script():
    module = MultiAttentionDropping(0.25, dim=2)
    assert 'drop_prob=0.25, dim=2' in repr(module)
    scripted = torch.jit.script(module.eval())
    x = torch.rand(2, 3, 4)
    assert torch.equal(scripted(x), x)
