"""Export to ONNX and torch.export: plain deterministic graphs, dynamic batch, eager outputs within 1e-4."""
import json

import numpy as np
import pytest
import timm
import torch
from helpers import TINY
from huggingface_hub import constants as hf_constants

from timm_fer.cli import main
from timm_fer.constants import RAFDB_LABELS
from timm_fer.errors import ConfigError
from timm_fer.inference.export import METADATA_KEY, check_export, export_model

ATOL = 1e-4
RANDOM_ONNX_OPS = {'RandomUniform', 'RandomUniformLike', 'RandomNormal', 'RandomNormalLike', 'Multinomial',
                   'Bernoulli', 'Dropout'}


@pytest.fixture(scope='module')
def onnx_file(model, tmp_path_factory):
    pytest.importorskip('onnxscript', reason='the export extra (onnxscript) is not installed')
    return export_model(model, tmp_path_factory.mktemp('onnx') / 'tiny.onnx', 'onnx')


@pytest.fixture(scope='module')
def pt2_file(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp('pt2') / 'tiny.pt2', 'torch-export')


def test_onnx_runtime_gives_the_eager_outputs_at_two_batch_sizes(model, onnx_file):
    onnxruntime = pytest.importorskip('onnxruntime', reason='the export extra (onnxruntime) is not installed')
    session = onnxruntime.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['faces'] and session.get_inputs()[0].shape[1:] == [3, 112, 112]
    for batch_size in (1, 5):
        faces = torch.randn(batch_size, 3, 112, 112)
        with torch.inference_mode():
            expected = model(faces).numpy()
        logits, = session.run(['logits'], {'faces': faces.numpy()})
        np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
    assert check_export(model, onnx_file, 'onnx') < ATOL


def test_onnx_graph_is_plain_and_carries_labels_and_preprocessing(onnx_file):
    onnx = pytest.importorskip('onnx', reason='the export extra (onnx) is not installed')
    proto = onnx.load(str(onnx_file))
    assert not {node.op_type for node in proto.graph.node} & RANDOM_ONNX_OPS
    assert isinstance(proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param, str)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert metadata['model'] == 'transfer_fer_ir50.rafdb' and metadata['label_names'] == list(RAFDB_LABELS)
    assert metadata['input_size'] == [3, 112, 112] and metadata['mean'] == pytest.approx([0.485, 0.456, 0.406])


def test_exported_program_gives_the_eager_outputs_and_has_no_random_ops(model, pt2_file):
    extra_files = {METADATA_KEY: ''}
    program = torch.export.load(pt2_file, extra_files=extra_files)
    assert json.loads(extra_files[METADATA_KEY])['label_names'] == list(RAFDB_LABELS)
    for node in program.graph.nodes:
        if node.op == 'call_function':
            name = str(node.target)
            assert not any(op in name for op in ('rand', 'bernoulli', 'native_dropout')), name
            if 'dropout' in name:
                assert node.args[2] is False, node  # train=False: the identity
    exported = program.module()
    for batch_size in (1, 5):
        faces = torch.randn(batch_size, 3, 112, 112)
        with torch.inference_mode():
            np.testing.assert_allclose(exported(faces).numpy(), model(faces).numpy(), atol=ATOL, rtol=0)
    assert check_export(model, pt2_file, 'torch-export') < ATOL


def test_export_puts_the_model_in_eval_and_rejects_unknown_formats(tmp_path):
    model = timm.create_model('vit_fer_ir50', **TINY).train()
    with pytest.raises(ConfigError, match='onnx, torch-export'):
        export_model(model, tmp_path / 'm.tflite', 'tflite')
    export_model(model, tmp_path / 'm.pt2', 'torch-export')
    assert not model.training


def test_cli_export_needs_weights_or_random_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hub-cache'))
    assert main(['export', '--model', 'vit_fer_ir50', '--format', 'onnx', '--out', str(tmp_path / 'm.onnx')]) == 2
    error = capsys.readouterr().err
    assert 'no weights have been published for vit_fer_ir50 yet' in error and '--checkpoint' in error
    assert not (tmp_path / 'm.onnx').exists()
