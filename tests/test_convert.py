"""Converters from face.evoLVe IR and timm legacy ViT-S checkpoints, checked against independent forward passes."""
import pytest
import timm
import torch
from source_layouts import (
    IR50_UNITS,
    face_evolve_forward,
    face_evolve_ir_state_dict,
    legacy_vit_encoder_forward,
    legacy_vit_small_state_dict,
)

import timm_fer  # noqa: F401
from timm_fer.errors import CheckpointMismatchError
from timm_fer.hub import convert_to_model
from timm_fer.models.irnet import checkpoint_filter_fn as ir_filter
from timm_fer.models.transfer import checkpoint_filter_fn as transfer_filter


@pytest.fixture(scope='module')
def ir50_source():
    return face_evolve_ir_state_dict(seed=1)


@pytest.fixture(scope='module')
def vit_source():
    return legacy_vit_small_state_dict(seed=2)


def _assert_every_tensor_lands(source, model, expected_names):
    state = model.state_dict()
    for source_key, model_key in expected_names.items():
        assert torch.equal(state[model_key], source[source_key]), (source_key, model_key)


@pytest.mark.parametrize('se', [False, True])
def test_face_evolve_ir50_converts_to_ir_50_with_identical_features(ir50_source, se, tmp_path):
    source = face_evolve_ir_state_dict(se=True, seed=3) if se else ir50_source
    path = tmp_path / 'backbone.pth'
    torch.save(source, path)
    model = convert_to_model('ir_se_50' if se else 'ir_50.ms1m', face_evolve=path)
    _assert_every_tensor_lands(source, model, {
        'input_layer.0.weight': 'stem.conv.weight', 'input_layer.1.running_var': 'stem.bn.running_var',
        'input_layer.2.weight': 'stem.act.weight', 'body.0.res_layer.1.weight': 'stages.0.0.conv1.weight',
        'body.3.shortcut_layer.0.weight': 'stages.1.0.shortcut.0.weight',
        'body.3.shortcut_layer.1.bias': 'stages.1.0.shortcut.1.bias',
        'body.7.res_layer.4.weight': 'stages.2.0.bn2.weight',
        'body.20.res_layer.0.running_mean': 'stages.2.13.bn1.running_mean',
        'body.23.res_layer.3.weight': 'stages.3.2.conv2.weight', 'body.23.res_layer.2.weight': 'stages.3.2.act1.weight',
        **({'body.5.res_layer.5.fc1.weight': 'stages.1.2.se.fc1.weight'} if se else {}),
    })
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        expected = face_evolve_forward(source, x, se=se)
        assert torch.allclose(model.forward_features(x), expected, atol=1e-4, rtol=1e-4)


def test_face_evolve_ir50_converts_to_the_transfer_stem(ir50_source, tmp_path):
    path = tmp_path / 'backbone.pth'
    torch.save(ir50_source, path)
    model = convert_to_model('transfer_fer_ir50', face_evolve=path)
    assert len(model.stages) == 3
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(model.forward_stem(x), face_evolve_forward(ir50_source, x, num_stages=3), atol=1e-4)


def test_legacy_vit_small_converts_to_the_transfer_encoder(vit_source, tmp_path):
    path = tmp_path / 'vit_small_p16_224-15ec54c9.pth'
    torch.save(vit_source, path)
    model = convert_to_model('transfer_fer_ir50', vit=path)
    _assert_every_tensor_lands(vit_source, model, {
        'cls_token': 'cls_token', 'pos_embed': 'pos_embed', 'blocks.0.attn.qkv.weight': 'blocks.0.attn.qkv.weight',
        'blocks.7.mlp.fc2.bias': 'blocks.7.mlp.fc2.bias', 'norm.weight': 'norm.weight'})
    assert not any(k.startswith('patch_embed') for k in model.state_dict())
    tokens = torch.randn(2, 197, 768)
    with torch.no_grad():
        expected = legacy_vit_encoder_forward(vit_source, tokens)
        assert torch.allclose(model.norm(model.blocks(tokens)), expected, atol=1e-4)


@pytest.mark.slow
def test_both_sources_make_the_paper_initialisation(ir50_source, vit_source, tmp_path):
    torch.save(ir50_source, tmp_path / 'ir.pth')
    torch.save(vit_source, tmp_path / 'vit.pth')
    model = convert_to_model('transfer_fer_ir50.ms1m_in1k', face_evolve=tmp_path / 'ir.pth', vit=tmp_path / 'vit.pth')
    assert model.num_classes == 0
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        stem = model.forward_stem(x)
        assert torch.allclose(stem, face_evolve_forward(ir50_source, x, num_stages=3), atol=1e-4)
        tokens = model.embed_tokens(model.local_cnn(stem))
        assert torch.allclose(model.forward_features(x), legacy_vit_encoder_forward(vit_source, tokens), atol=1e-4)
    again = convert_to_model('transfer_fer_ir50.ms1m_in1k', face_evolve=tmp_path / 'ir.pth', vit=tmp_path / 'vit.pth')
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_position_embedding_is_resampled_for_other_stem_depths(vit_source):
    model = timm.create_model('transfer_fer_ir50', stem_depth=4)
    state = transfer_filter(dict(vit_source), model)
    assert state['pos_embed'].shape == (1, 50, 768)
    assert torch.equal(state['pos_embed'][:, 0], vit_source['pos_embed'][:, 0])


def test_filters_take_the_source_layouts_directly(ir50_source, vit_source):
    ir = timm.create_model('ir_50')
    ir.load_state_dict(ir_filter({'state_dict': {f'module.{k}': v for k, v in ir50_source.items()}}, ir))
    assert torch.equal(ir.stem.conv.weight, ir50_source['input_layer.0.weight'])
    transfer = timm.create_model('transfer_fer_ir50')
    transfer.load_state_dict(transfer_filter({**ir50_source, **vit_source}, transfer))
    assert torch.equal(transfer.stages[2][13].conv2.weight, ir50_source['body.20.res_layer.3.weight'])
    assert torch.equal(transfer.blocks[3].attn.proj.weight, vit_source['blocks.3.attn.proj.weight'])


def test_mismatched_checkpoints_list_what_does_not_fit(ir50_source):
    resnet = timm.create_model('resnet18').state_dict()
    with pytest.raises(CheckpointMismatchError, match=r'unexpected keys: .*missing keys: stages'):
        ir_filter(resnet, timm.create_model('ir_50'))
    ir100 = face_evolve_ir_state_dict(units=(3, 13, 30, 3))
    with pytest.raises(CheckpointMismatchError, match='more IR units'):
        ir_filter(ir100, timm.create_model('ir_50'))
    se_into_plain = face_evolve_ir_state_dict(units=(2, 2, 2, 2), se=True)
    with pytest.raises(CheckpointMismatchError, match=r'unexpected keys: .*se\.fc'):
        ir_filter(se_into_plain, timm.create_model('ir_18'))
    wrong_width = dict(legacy_vit_small_state_dict(depth=1, dim=384, tokens=197))
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatches: .*blocks\.0\.attn\.qkv\.weight'):
        transfer_filter(wrong_width, timm.create_model('transfer_fer_ir50'))
    assert IR50_UNITS == (3, 4, 14, 3)
