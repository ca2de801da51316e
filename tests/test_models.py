"""The timm model contract for every registered timm-fer model, in the spirit of timm's tests/test_models.py."""
import itertools
from typing import Any, Dict, List, Tuple, Union

import pytest
import timm
import torch
from helpers import TINY
from hypothesis import given
from hypothesis import strategies as st
from timm.layers import create_feature_extractor, get_graph_node_names
from timm.models import group_parameters
from timm.models._features import feature_take_indices

import timm_fer
from timm_fer.layers import LocalCNN, MultiHeadSelfAttentionDropping
from timm_fer.models import IRNet, TransFER, registered_models
from timm_fer.models.irnet import Subsample2d

MODELS = registered_models()
TRANSFER_MODELS = [name for name in MODELS if 'fer' in name]
IR_MODELS = [name for name in MODELS if name.startswith('ir_')]
# Small members of each family for the slow checks (TorchScript, FX, compile).
SCRIPT_MODELS = ['ir_18', 'ir_se_50', 'transfer_fer_compact', 'transfer_fer_ir50', 'vit_fer_ir50']
# Models built for other faces than 112x112 RGB crops.
INPUT_SIZES = {'transfer_fer_compact': (3, 48, 48)}
# Models of every family for the grad checkpointing / features_only / forward_intermediates contract, built tiny:
# 4 IR stages, or 3 encoder blocks, on 32x32 faces.
CONTRACT_MODELS = ['ir_18', 'ir_se_50', 'transfer_fer_compact', 'transfer_fer_ir50', 'transfer_fer_ir50_b4',
                   'vit_fer_ir50']
TINY_IR = dict(layers=(1, 1, 1, 1), channels=(16, 16, 16, 32))
TINY_TRANSFER_32 = dict(
    stem_layers=(1, 1, 1), stem_channels=(8, 8, 16), embed_dim=16, depth=3, num_heads=2, img_size=32, mad_drop_prob=0.,
    msad_drop_prob=0.)
# forward_intermediates' indices: all, the last n, and a list with a negative index that leaves the last block or
# stage out (so that stop_early has something to stop).
INDICES = [None, 2, [0, -2]]
# Outputs match a plain forward to float precision; gradients to the order in which autograd sums them.
OUTPUT_TOL = dict(rtol=0, atol=1e-6)
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)
# Switch combinations run on the tiny models that differ (one IR, TransFER with 2, 4 and no LANets), in the output
# formats each supports, with and without TransFER's cls token (return_prefix_tokens).
SWITCH_MODELS = ['ir_se_50', 'transfer_fer_compact', 'transfer_fer_ir50_b4', 'vit_fer_ir50']
FORMAT_CASES = [
    (name, output_fmt, prefix_tokens) for name in SWITCH_MODELS
    for output_fmt, prefix_tokens in ([('NCHW', False)] if name.startswith('ir_') else
                                      itertools.product(('NCHW', 'NLC'), (False, True)))]


def _input(model: torch.nn.Module, batch_size: int = 2) -> torch.Tensor:
    return torch.randn(batch_size, *model.pretrained_cfg['input_size'])


def _tiny_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """A tiny ``name`` in train mode; every dropout, drop path, MAD and MSAD probability is 0 unless given."""
    return timm.create_model(name, **dict(TINY_IR if name.startswith('ir_') else TINY_TRANSFER_32, **kwargs)).train()


def _tiny_input(model: torch.nn.Module) -> torch.Tensor:
    return torch.randn(2, model.stem.conv.in_channels, 32, 32)


def _plain_forward(model: torch.nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``forward_features`` without grad checkpointing, and the outputs of every ``feature_info`` module on the way."""
    outputs = []
    hooks = [model.get_submodule(info['module']).register_forward_hook(lambda module, args, out: outputs.append(out))
             for info in model.feature_info]
    model.set_grad_checkpointing(False)
    try:
        return model.forward_features(x), outputs
    finally:
        for hook in hooks:
            hook.remove()


def _as_intermediate(
        model: torch.nn.Module,
        output: torch.Tensor,
        norm: bool = False,
        output_fmt: str = 'NCHW',
        prefix_tokens: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """What ``forward_intermediates`` returns for one block (tokens) or stage (map) output of a plain forward."""
    if isinstance(model, IRNet):
        return output
    tokens = model.norm(output) if norm else output
    spatial = tokens[:, model.num_prefix_tokens:]
    if output_fmt == 'NCHW':
        spatial = spatial.reshape(spatial.shape[0], *model.grid_size, -1).permute(0, 3, 1, 2)
    return (spatial, tokens[:, :model.num_prefix_tokens]) if prefix_tokens else spatial


def _as_final(model: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
    """What ``forward_intermediates`` returns as its final output when it stops after this block or stage."""
    return model.norm(output) if isinstance(model, TransFER) else output


def _flatten(outputs: Any) -> List[torch.Tensor]:
    """The tensors of nested lists and tuples, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for out in outputs for t in _flatten(out)]


def _probe_loss(outputs: Any) -> torch.Tensor:
    """A fixed random projection of nested outputs to a scalar (a plain sum of normed tokens has no gradient)."""
    generator = torch.Generator().manual_seed(0)
    return sum((t * torch.randn(t.shape, generator=generator)).sum() for t in _flatten(outputs))


def _gradients(model: torch.nn.Module, loss: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Backward ``loss``; the parameter gradients (None for parameters it does not depend on), then zero them."""
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def test_importing_timm_fer_registers_every_model():
    assert set(timm.list_models('*fer*')) == {
        'transfer_fer_compact', 'transfer_fer_ir50', 'transfer_fer_ir50_b4', 'vit_fer_ir50'}
    assert {'ir_18', 'ir_34', 'ir_50', 'ir_100', 'ir_se_50'} <= set(MODELS)
    assert timm.is_model('transfer_fer_ir50') and timm_fer.TransFER is timm_fer.models.TransFER


@pytest.mark.parametrize('name', MODELS)
def test_forward_and_default_cfg(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    input_size = INPUT_SIZES.get(name, (3, 112, 112))
    channels = input_size[0]
    assert cfg['input_size'] == input_size
    assert len(cfg['mean']) == len(cfg['std']) == channels and cfg['crop_pct'] == 1.0
    assert cfg['interpolation'] in ('bilinear', 'bicubic')
    first_conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == channels
    if cfg.get('label_names'):
        assert len(cfg['label_names']) == cfg['num_classes'] == model.num_classes
    x = _input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert torch.equal(model(x), logits)
    assert pre_logits.shape == (2, model.num_features) == (2, model.head_hidden_size)
    if model.num_classes:
        assert logits.shape == (2, model.num_classes)
        assert model.get_classifier() is model.get_submodule(cfg['classifier'])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize('name', MODELS)
def test_reset_classifier_and_in_chans(name):
    channels, height, width = INPUT_SIZES.get(name, (3, 112, 112))
    other_chans = 3 if channels == 1 else 1
    model = timm.create_model(name, num_classes=5, in_chans=other_chans).eval()
    x = torch.randn(2, other_chans, height, width)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        assert model.get_classifier().out_features == 3


@pytest.mark.parametrize('name', MODELS)
def test_every_parameter_gets_a_gradient_in_training(name):
    kwargs = dict(mad_drop_prob=1., msad_drop_prob=1.) if name.startswith('transfer_fer_ir50') else {}
    model = timm.create_model(name, num_classes=4, drop_rate=0.1, drop_path_rate=0.1, **kwargs).train()
    loss = model(_input(model, 4)).logsumexp(dim=-1).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize('name', MODELS)
def test_group_matcher_and_no_weight_decay_cover_real_parameters(name):
    model = timm.create_model(name)
    names = {n for n, _ in model.named_parameters()}
    for coarse in (True, False):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        assert sorted(n for group in groups.values() for n in group) == sorted(names)
        assert len(groups) > 2
    assert model.no_weight_decay() <= names


@pytest.mark.parametrize('name', MODELS)
def test_grad_checkpointing_gives_the_same_output(name):
    model = timm.create_model(name, num_classes=3)
    x = _input(model)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        model.set_grad_checkpointing()
        assert torch.allclose(model(x), expected, atol=1e-5)
    model.train()
    outputs = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        torch.manual_seed(0)
        out = model(x)
        out.sum().backward()
        outputs.append((out.detach(), model.get_classifier().weight.grad.clone()))
        model.zero_grad()
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-4)


@pytest.mark.parametrize('name', MODELS)
def test_features_only_and_forward_intermediates_match_feature_info(name):
    model = timm.create_model(name).eval()
    x = _input(model, 1)
    size = x.shape[-1]
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-5)
        assert len(intermediates) == len(model.feature_info)
        for feature, info in zip(intermediates, model.feature_info):
            assert feature.shape == (1, info['num_chs'], size // info['reduction'], size // info['reduction'])
        last = model.forward_intermediates(x, indices=1, intermediates_only=True, stop_early=True)
        assert len(last) == 1 and torch.allclose(last[0], intermediates[-1], atol=1e-5)

        extractor = timm.create_model(name, features_only=True).eval()
        features = extractor(x)
        assert [f.shape[1] for f in features] == extractor.feature_info.channels()
        assert [size // f.shape[-1] for f in features] == extractor.feature_info.reduction()
        if name in IR_MODELS:
            assert extractor.feature_info.channels() == [64, 128, 256, 512]
            assert extractor.feature_info.reduction() == [2, 4, 8, 16]


@pytest.mark.parametrize('norm', [False, True])
@pytest.mark.parametrize('intermediates_only', [False, True])
@pytest.mark.parametrize('stop_early', [False, True])
@pytest.mark.parametrize('indices', INDICES, ids=str)
@pytest.mark.parametrize('grad_checkpointing', [False, True], ids=['no_ckpt', 'ckpt'])
@pytest.mark.parametrize('name, output_fmt, prefix_tokens', FORMAT_CASES)
@pytest.mark.usefixtures('one_torch_thread')
def test_forward_intermediates_switches_match_a_plain_forward(
        name, output_fmt, prefix_tokens, grad_checkpointing, indices, stop_early, intermediates_only, norm):
    """Every combination of timm's switches returns the block / stage outputs of a plain forward, and backpropagates
    the same gradients, with or without grad checkpointing (train mode, every drop probability 0)."""
    model = _tiny_model(name)
    x = _tiny_input(model)
    take_indices, max_index = feature_take_indices(len(model.feature_info), indices)
    features, outputs = _plain_forward(model, x)
    expected = [_as_intermediate(model, outputs[i], norm, output_fmt, prefix_tokens) for i in take_indices]
    if not intermediates_only:
        expected = (_as_final(model, outputs[max_index]) if stop_early else features, expected)
    expected_grads = _gradients(model, _probe_loss(expected))

    model.set_grad_checkpointing(grad_checkpointing)
    switches = dict(return_prefix_tokens=True) if prefix_tokens else {}
    out = model.forward_intermediates(
        x, indices=indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
        intermediates_only=intermediates_only, **switches)
    assert isinstance(out, list) if intermediates_only else isinstance(out, tuple) and isinstance(out[1], list)
    torch.testing.assert_close(out, expected, **OUTPUT_TOL)
    torch.testing.assert_close(_gradients(model, _probe_loss(out)), expected_grads, **GRAD_TOL)


@pytest.mark.usefixtures('one_torch_thread')
@given(name=st.sampled_from(CONTRACT_MODELS), grad_checkpointing=st.booleans(), p=st.floats(0., 0.9),
       seed=st.integers(0, 2 ** 32 - 1))
def test_seeded_forward_intermediates_with_drops_reproduce_a_plain_forward(name, grad_checkpointing, p, seed):
    """With the same seed, dropout, drop path, MAD and MSAD drop the same things in ``forward_intermediates`` as in
    a plain forward, with or without grad checkpointing (which replays the random draws in backward)."""
    drops = dict(drop_path_rate=p) if name.startswith('ir_') else dict(
        drop_path_rate=p, pos_drop_rate=p, proj_drop_rate=p, attn_drop_rate=p, mad_drop_prob=p, msad_drop_prob=p)
    model = _tiny_model(name, **drops)
    x = _tiny_input(model)
    torch.manual_seed(seed)
    features, outputs = _plain_forward(model, x)
    expected = (features, [_as_intermediate(model, y) for y in outputs])
    expected_grads = _gradients(model, _probe_loss(expected))
    model.set_grad_checkpointing(grad_checkpointing)
    torch.manual_seed(seed)
    out = model.forward_intermediates(x)
    torch.testing.assert_close(out, expected, **OUTPUT_TOL)
    torch.testing.assert_close(_gradients(model, _probe_loss(out)), expected_grads, **GRAD_TOL)


@pytest.mark.parametrize('grad_checkpointing', [False, True], ids=['no_ckpt', 'ckpt'])
@pytest.mark.parametrize('name', CONTRACT_MODELS)
@pytest.mark.usefixtures('one_torch_thread')
def test_features_only_forward_and_backward_with_and_without_grad_checkpointing(name, grad_checkpointing):
    """A features_only extractor gives the stage / block maps of the plain model and their input gradients, and every
    parameter it keeps gets a gradient."""
    torch.manual_seed(0)
    model = _tiny_model(name)
    torch.manual_seed(0)
    extractor = _tiny_model(name, features_only=True)
    x = _tiny_input(model).requires_grad_()
    _, outputs = _plain_forward(model, x)
    expected = [_as_intermediate(model, outputs[i]) for i in extractor.feature_info.out_indices]
    _probe_loss(expected).backward()
    expected_input_grad, x.grad = x.grad, None

    # timm's FeatureGetterNet (TransFER) has no set_grad_checkpointing: the model it wraps has.
    getattr(extractor, 'model', extractor).set_grad_checkpointing(grad_checkpointing)
    features = extractor(x)
    assert [f.shape[1] for f in features] == extractor.feature_info.channels()
    torch.testing.assert_close(features, expected, **OUTPUT_TOL)
    _probe_loss(features).backward()
    torch.testing.assert_close(x.grad, expected_input_grad, **GRAD_TOL)
    assert not [n for n, p in extractor.named_parameters() if p.grad is None]


@pytest.mark.parametrize('name', IR_MODELS[:1] + TRANSFER_MODELS[:1])
def test_prune_intermediate_layers_keeps_requested_features(name):
    model = timm.create_model(name).eval()
    x = _input(model, 1)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        model.prune_intermediate_layers([1])
        assert model.num_classes == 0
        assert torch.allclose(model.forward_intermediates(x, indices=[1], intermediates_only=True)[0], expected[0])


@pytest.mark.parametrize('name', SCRIPT_MODELS)
def test_torchscript_and_fx_match_eager_in_eval(name):
    model = timm.create_model(name).eval()
    x = _input(model, 1)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(torch.jit.script(model)(x), expected, atol=1e-5)
        _, eval_nodes = get_graph_node_names(model)
        traced = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
        assert torch.allclose(next(iter(traced(x).values())), expected, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager_in_eval():
    model = timm.create_model('transfer_fer_ir50', **TINY).eval()
    x = _input(model)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model, fullgraph=True)(x), model(x), atol=1e-4)


@pytest.mark.parametrize('name, params, macs, local_cnn', [
    ('transfer_fer_ir50', 65.22, 15.28, 0.008),
    ('transfer_fer_ir50_b4', 65.23, 15.28, 0.017),
])
def test_transfer_fer_ir50_size_matches_the_paper(name, params, macs, local_cnn):
    """65.22 M parameters and 15.28 G MACs per 112x112 face (facts file), with the split by part; the two more
    LANets of the AffectNet setting add 8.3 k parameters and 1.6 M MACs."""
    model = timm.create_model(name)

    def millions(*prefixes: str) -> float:
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes)) / 1e6

    assert abs(timm_fer.count_params(model) / 1e6 - params) <= 0.005
    assert abs(timm_fer.count_macs(model) / 1e9 - macs) <= 0.1
    assert abs(millions('stem', 'stages') - 17.61) <= 0.01
    assert abs(millions('cls_token', 'pos_embed', 'blocks', 'norm') - 47.40) <= 0.01
    assert abs(millions('proj') - 0.197) <= 0.001
    assert abs(millions('local_cnn') - local_cnn) <= 0.001
    assert abs(millions('head') - 0.005) <= 0.001
    assert model.pos_embed.shape == (1, 197, 768) and len(model.blocks) == 8
    attn = model.blocks[0].attn
    assert isinstance(attn, MultiHeadSelfAttentionDropping) and attn.num_heads == 8 and attn.head_dim == 96
    assert attn.qkv.bias is None and model.blocks[0].mlp.fc1.out_features == 2304
    assert model.norm.eps == 1e-6 and model.blocks[0].norm1.eps == 1e-6


@pytest.mark.parametrize('name', ['transfer_fer_compact', 'ir_18'])
def test_count_macs_takes_the_channels_of_a_grayscale_model(name):
    """timm leaves ``input_size`` at 3 channels for ``in_chans=1``; the count is the RGB one less the first conv's
    two other input channels (3x3 kernels, stride 1, over the whole face)."""
    rgb, gray = timm.create_model(name), timm.create_model(name, in_chans=1)
    assert gray.pretrained_cfg['input_size'][0] == 3
    _, height, width = rgb.pretrained_cfg['input_size']
    first_conv = gray.stem.conv
    assert first_conv.stride == (1, 1)
    extra = 2 * 9 * first_conv.out_channels * height * width
    assert timm_fer.count_macs(rgb) - timm_fer.count_macs(gray) == extra


def test_registered_variants_set_the_paper_defaults():
    transfer = timm.create_model('transfer_fer_ir50')
    assert isinstance(transfer.local_cnn, LocalCNN) and len(transfer.local_cnn.branches) == 2
    assert transfer.local_cnn.branch_drop.drop_prob == 0.6
    assert all(block.attn.attn_head_drop.drop_prob == 0.3 for block in transfer.blocks)
    affectnet = timm.create_model('transfer_fer_ir50_b4')
    assert isinstance(affectnet.local_cnn, LocalCNN) and len(affectnet.local_cnn.branches) == 4
    assert affectnet.local_cnn.branch_drop.drop_prob == 0.2
    assert all(block.attn.attn_head_drop.drop_prob == 0.6 for block in affectnet.blocks)
    baseline = timm.create_model('vit_fer_ir50')
    assert isinstance(baseline.local_cnn, torch.nn.Identity)
    assert all(block.attn.attn_head_drop.drop_prob == 0. for block in baseline.blocks)


def test_pretrained_tags_pick_weights_not_the_architecture():
    """As in timm, ``arch.tag`` builds the same model as ``arch``: a tag only picks weights (and their labels)."""
    for name in timm.list_pretrained('*fer*') + timm.list_pretrained('ir_*'):
        architecture = name.partition('.')[0]
        tagged, bare = (timm.create_model(n, num_classes=0, device='meta') for n in (name, architecture))
        assert repr(tagged) == repr(bare), name
    assert 'transfer_fer_ir50.affectnet7' not in timm.list_pretrained()


@pytest.mark.parametrize('num_branches', [0, 1, 2, 4, 8])
def test_branch_count_ablation(num_branches):
    model = timm.create_model(
        'transfer_fer_ir50', num_branches=num_branches, mad_drop_prob=0.6 if num_branches > 1 else 0., **TINY)
    branches = 0 if num_branches == 0 else len(model.local_cnn.branches)
    assert branches == num_branches
    assert model.train()(torch.randn(2, 3, 112, 112)).shape == (2, 7)


@pytest.mark.parametrize('stem_depth, tokens, channels', [(2, 28 * 28, 128), (3, 14 * 14, 256), (4, 7 * 7, 512)])
def test_stem_depth_ablation(stem_depth, tokens, channels):
    model = timm.create_model('transfer_fer_ir50', stem_depth=stem_depth, embed_dim=32, depth=1, num_heads=2).eval()
    assert len(model.stages) == stem_depth and model.proj.in_channels == channels
    assert model.pos_embed.shape == (1, tokens + 1, 32)
    assert model.feature_info[0]['reduction'] == 2 ** stem_depth
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 112, 112)).shape == (1, tokens + 1, 32)


def test_global_pool_options():
    model = timm.create_model('transfer_fer_ir50', global_pool='avg', **TINY).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features, pre_logits=True), features[:, 1:].mean(1))
        model.reset_classifier(0, global_pool='')
        assert model(x).shape == features.shape
    ir = timm.create_model('ir_18', global_pool='max', num_classes=0).eval()
    with torch.no_grad():
        assert torch.allclose(ir(x), ir.forward_features(x).amax(dim=(2, 3)))
    with pytest.raises(ValueError, match='global_pool'):
        timm.create_model('transfer_fer_ir50', global_pool='mean', **TINY)


def test_wrong_image_size_names_the_size_and_the_fix():
    model = timm.create_model('transfer_fer_ir50', **TINY).eval()
    with pytest.raises(AssertionError, match=r'height 112, got 96.*resize'):
        model(torch.randn(1, 3, 96, 112))
    with pytest.raises(AssertionError, match=r'width 112, got 128'):
        model(torch.randn(1, 3, 112, 128))
    resized = timm.create_model('transfer_fer_ir50', img_size=64, **TINY).eval()
    assert resized(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match='stem_depth'):
        timm.create_model('transfer_fer_ir50', stem_depth=5)
    with pytest.raises(ValueError, match='multiple of 8'):
        timm.create_model('transfer_fer_ir50', img_size=100, **TINY)


def test_ir_shortcut_subsample_equals_face_evolve_max_pool():
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    subsampled = Subsample2d(2)(x)
    assert torch.equal(subsampled, torch.nn.MaxPool2d(1, 2)(x))
    subsampled.sum().backward()
    expected_grad = torch.zeros_like(x)
    expected_grad[:, :, ::2, ::2] = 1
    assert torch.equal(x.grad, expected_grad)


@pytest.mark.usefixtures('one_torch_thread')
@given(shallow=st.integers(1, 3), extra=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_a_shallower_encoder_grows_into_a_deeper_one_that_computes_the_same(shallow, extra, seed, tmp_path_factory):
    """Loading the weights of a ``depth``-block encoder into a deeper model appends identity blocks: the same outputs
    in eval mode, and in training every new block's output projections get a gradient (so the blocks can learn)."""
    torch.manual_seed(seed)
    kwargs = dict(TINY, depth=shallow)
    small = timm.create_model('transfer_fer_ir50', **kwargs).eval()
    path = tmp_path_factory.mktemp('grow') / 'shallow.pth'
    torch.save(small.state_dict(), path)
    deep = timm.create_model('transfer_fer_ir50', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **dict(kwargs, depth=shallow + extra)).eval()
    assert len(deep.blocks) == shallow + extra
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(deep(x), small(x))
    grown = deep.blocks[shallow:]
    assert all(torch.count_nonzero(block.attn.qkv.weight) > 0 for block in grown)
    deep.train()
    deep(x).square().sum().backward()
    assert all(torch.count_nonzero(block.mlp.fc2.weight.grad) > 0 for block in grown)


def test_a_deeper_checkpoint_does_not_load_into_a_shallower_encoder(tmp_path):
    torch.save(timm.create_model('transfer_fer_ir50', **dict(TINY, depth=3)).state_dict(), tmp_path / 'deep.pth')
    with pytest.raises(Exception, match='unexpected keys: blocks.2'):
        timm.create_model('transfer_fer_ir50', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'deep.pth')), **TINY)
