"""LANet and the MAD-guided local CNNs."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from timm_fer.layers import LANet, LocalCNN


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.integers(0, 2 ** 31 - 1))
def test_lanet_map_is_one_channel_in_unit_interval(reduction, batch, size, seed):
    torch.manual_seed(seed)
    in_chs = 4 * reduction
    lanet = LANet(in_chs, reduction=reduction).eval()
    maps = lanet(torch.randn(batch, in_chs, size, size + 1))
    assert maps.shape == (batch, 1, size, size + 1)
    assert maps.gt(0).all() and maps.lt(1).all()
    assert lanet.conv1.out_channels == in_chs // reduction
    assert lanet.conv1.bias is not None and lanet.conv2.bias is not None


def test_lanet_rejects_reduction_above_channels():
    with pytest.raises(ValueError, match='reduction'):
        LANet(8, reduction=16)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2 ** 31 - 1))
def test_eval_output_is_input_times_max_of_branch_maps(num_branches, batch, seed):
    torch.manual_seed(seed)
    local_cnn = LocalCNN(32, num_branches=num_branches, drop_prob=0.6 if num_branches > 1 else 0.).eval()
    x = torch.randn(batch, 32, 5, 5)
    out, maps = local_cnn.forward_with_maps(x)
    expected_maps = torch.cat([branch(x) for branch in local_cnn.branches], dim=1)
    assert maps.shape == (batch, num_branches, 5, 5)
    assert torch.equal(maps, expected_maps)
    assert torch.equal(out, x * expected_maps.amax(dim=1, keepdim=True))
    assert torch.equal(local_cnn(x), out)


@given(st.integers(2, 5), st.integers(0, 2 ** 31 - 1))
def test_training_drops_exactly_one_map_per_sample_at_p1(num_branches, seed):
    torch.manual_seed(seed)
    local_cnn = LocalCNN(32, num_branches=num_branches, drop_prob=1.).train()
    x = torch.randn(6, 32, 4, 4)
    out, maps = local_cnn.forward_with_maps(x)
    zero = maps.flatten(2).eq(0).all(dim=-1)
    assert zero.sum(dim=1).eq(1).all()
    assert torch.equal(out, x * maps.amax(dim=1, keepdim=True))


def test_every_parameter_gets_a_gradient_with_dropping():
    torch.manual_seed(0)
    local_cnn = LocalCNN(32, num_branches=2, drop_prob=0.6).train()
    local_cnn(torch.randn(8, 32, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in local_cnn.parameters())


def test_bad_branch_settings_are_rejected():
    with pytest.raises(ValueError, match='num_branches >= 1'):
        LocalCNN(32, num_branches=0)
    with pytest.raises(ValueError, match='at least 2 branches'):
        LocalCNN(32, num_branches=1, drop_prob=0.6)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        LocalCNN(32, num_branches=2, drop_prob=-1.)
