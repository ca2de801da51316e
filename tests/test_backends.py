"""Backends, int8 and threads of ``predict``: each gives the eager model's answers, and the automatic choices follow
the kernels torch will actually run."""
import copy
import errno
import importlib

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from drawn_faces import generated_faces
from helpers import TINY
from PIL import Image

import timm_fer  # noqa: F401
from timm_fer.cli import main
from timm_fer.errors import ConfigError, ExportUnavailableError
from timm_fer.inference import backends
from timm_fer.inference import export as export_module
from timm_fer.inference.classifier import FaceClassifier, FaceCrop, load_classifier
from timm_fer.inference.predict import predict
from timm_fer.utils import runtime

classifier_module = importlib.import_module('timm_fer.inference.classifier')

CPU = torch.device('cpu')

pytestmark = pytest.mark.usefixtures('offline_hub')


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    """Exported files go to a fresh folder, not the user's cache."""
    monkeypatch.setenv('TIMM_FER_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache' / 'onnx'


@pytest.fixture(scope='module')
def trained():
    """A tiny TransFER trained a few steps on generated faces whose class is their brightness, and held-out faces:
    its margins mean something, so agreement between two ways of running it is a real check."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = timm.create_model('transfer_fer_ir50', img_size=32, **dict(TINY, num_heads=4))  # learns in 20 steps
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, 32, 32))  # the export's example input
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(20):
        images, labels = generated_faces(32, generator)
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    images, labels = generated_faces(256, generator)
    return model.eval(), images, labels


@pytest.mark.parametrize('flags, capability, fast', [
    (True, 'AVX512', True), (True, 'AVX2', False), (False, 'AVX512', False), (False, 'AVX2', False)])
def test_bf16_is_fast_only_where_torch_runs_avx512_kernels(monkeypatch, flags, capability, fast):
    monkeypatch.setattr(runtime, '_cpu_has_bf16_instructions', lambda: flags)
    monkeypatch.setattr(runtime, 'cpu_capability', lambda: capability)
    assert runtime.bf16_is_fast(CPU) is fast
    assert runtime.resolve_amp_dtype('auto', CPU) == (torch.bfloat16 if fast else None)


def test_cpu_flags_and_capability_are_reported():
    assert set(runtime.cpu_flags()) <= set(runtime.CPU_FLAGS)
    assert runtime.cpu_capability() == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize('device, amp_dtype, cacheable, eager_only, expected', [
    ('cpu', None, True, False, 'onnxruntime'),  # fp32 on the CPU (AVX2 class): ONNX Runtime
    ('cpu', torch.bfloat16, True, False, 'torch'),  # bf16 runs fast (AVX512-BF16 class): torch
    ('cuda', None, True, False, 'torch'),
    ('cpu', None, False, False, 'torch'),  # a model passed in, or random weights: not worth an export per run
    ('cpu', None, True, True, 'torch'),  # explanations and torch.compile need the eager model
])
def test_auto_backend_per_device_precision_and_model(monkeypatch, device, amp_dtype, cacheable, eager_only,
                                                      expected):
    monkeypatch.setattr(backends, '_onnxruntime_installed', lambda: True)
    assert backends.resolve_backend('auto', torch.device(device), amp_dtype, cacheable, eager_only) == expected


def test_auto_backend_on_each_cpu_class(monkeypatch):
    monkeypatch.setattr(backends, '_onnxruntime_installed', lambda: True)
    monkeypatch.setattr(runtime, '_cpu_has_bf16_instructions', lambda: True)
    for capability, expected in (('AVX512', 'torch'), ('AVX2', 'onnxruntime')):
        monkeypatch.setattr(runtime, 'cpu_capability', lambda: capability)
        amp_dtype = runtime.resolve_amp_dtype('auto', CPU)
        assert backends.resolve_backend('auto', CPU, amp_dtype, True, False) == expected


def test_auto_backend_falls_back_to_torch_and_onnxruntime_says_how_to_install(monkeypatch):
    monkeypatch.setattr(backends, '_onnxruntime_installed', lambda: False)
    assert backends.resolve_backend('auto', CPU, None, True, False) == 'torch'
    with pytest.raises(ExportUnavailableError, match=r'pip install "timm-fer\[export\]"'):
        backends.resolve_backend('onnxruntime', CPU, None, True, False)


@pytest.mark.parametrize('device, amp_dtype, eager_only, message', [
    ('cuda', None, False, 'runs on the CPU'), ('cpu', torch.bfloat16, False, 'fp32'),
    ('cpu', None, True, 'eager model')])
def test_onnxruntime_backend_refuses_what_it_cannot_run(device, amp_dtype, eager_only, message):
    with pytest.raises(ConfigError, match=message):
        backends.resolve_backend('onnxruntime', torch.device(device), amp_dtype, True, eager_only)
    with pytest.raises(ConfigError, match='unknown backend'):
        backends.resolve_backend('tensorrt', CPU, None, True, False)


def test_cli_without_onnxruntime_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(backends, '_onnxruntime_installed', lambda: False)
    Image.new('RGB', (48, 48), 'gray').save(tmp_path / 'face.png')
    argv = ['predict', str(tmp_path / 'face.png'), '--aligned', '--model', 'transfer_fer_compact.ferplus']
    assert main([*argv, '--backend', 'onnxruntime', '--amp', 'none']) == 2
    assert 'pip install "timm-fer[export]"' in capsys.readouterr().err
    assert main([*argv, '--backend', 'torch', '--threads', '1']) == 0


def test_threads_follow_busy_cores_and_are_restored(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, '_usable_cores', lambda: 2)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    monkeypatch.setattr(runtime, 'busy_cores', lambda: 1)
    assert runtime.resolve_threads(None, CPU) == 1
    monkeypatch.setattr(runtime, 'busy_cores', lambda: 2)
    assert runtime.resolve_threads(None, CPU) == 1
    monkeypatch.setattr(runtime, 'busy_cores', lambda: 0)
    assert runtime.resolve_threads(None, CPU) == 2
    assert runtime.resolve_threads(3, CPU) == 3
    with pytest.raises(ValueError):
        runtime.resolve_threads(0, CPU)
    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        with runtime.num_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before


def test_busy_cores_counts_within_the_cores_this_process_may_use():
    assert 0 <= runtime.busy_cores(0.01) <= runtime._usable_cores()


def test_predict_restores_the_thread_setting(model, tmp_path):
    Image.new('RGB', (40, 40), 'gray').save(tmp_path / 'face.png')
    before = torch.get_num_threads()
    report = predict([tmp_path / 'face.png'], model=model, aligned=True, threads=1, backend='torch')
    assert len(report.faces) == 1 and torch.get_num_threads() == before


def test_bulk_batch_is_the_transform_of_each_face(model):
    classifier = load_classifier(model=model, device='cpu', amp='none', channels_last=False, backend='torch')
    assert isinstance(classifier, FaceClassifier)
    rng = np.random.default_rng(0)
    size = (classifier.size[1], classifier.size[0])
    faces = [Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)) for _ in range(3)]
    crops = [FaceCrop(tmp, 0, (0, 0, 1, 1), None, face) for tmp, face in zip('abc', faces)]
    expected = torch.stack([classifier.transform(face) for face in faces])
    assert torch.equal(classifier.batch(crops), expected)
    odd = crops + [FaceCrop('d', 0, (0, 0, 1, 1), None, faces[0].resize((7, 9)))]  # a size the model does not take
    assert torch.equal(classifier.batch(odd)[:3], expected)


def test_torch_int8_linear_agrees_with_fp32_on_generated_faces(trained):
    model, images, labels = trained
    quantized = backends.quantize_linear(model)
    assert any(type(m).__module__.startswith('torch.ao.nn.quantized') for m in quantized.modules())
    with torch.inference_mode():
        fp32, int8 = model(images).argmax(-1), quantized(images).argmax(-1)
    assert (fp32 == labels).float().mean() > 0.5  # the model learned the task
    assert (int8 == fp32).float().mean() >= 0.99


def test_weights_digest_follows_the_weights(model):
    other = copy.deepcopy(model)
    assert backends.weights_digest(other) == backends.weights_digest(model)
    with torch.no_grad():
        other.head.bias[0] += 1e-3
    assert backends.weights_digest(model) != backends.weights_digest(other)


@pytest.mark.slow
def test_onnxruntime_backend_matches_eager_and_is_cached(trained, onnx_cache, monkeypatch):
    model, images, _ = trained
    path = backends.cached_onnx(model, 'tiny')
    assert path.parent == onnx_cache and path.is_file()
    session = backends.OnnxRuntimeModel(path, threads=1)
    with torch.inference_mode():
        expected = model(images)
    assert torch.allclose(session(images), expected, atol=1e-4)
    monkeypatch.setattr(backends, 'export_checked', lambda *a, **k: pytest.fail('exported again'))
    assert backends.cached_onnx(model, 'tiny') == path
    quantized = backends.OnnxRuntimeModel(backends.cached_onnx(model, 'tiny', int8=True), threads=1)
    assert (quantized(images).argmax(-1) == expected.argmax(-1)).float().mean() >= 0.99


@pytest.mark.slow
def test_predict_on_onnxruntime_gives_the_torch_probabilities(onnx_cache, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f'face{i}.png')
    options = dict(model='transfer_fer_compact.ferplus', aligned=True, amp='none', batch_size=2)
    eager = predict([tmp_path], backend='torch', **options)
    auto = predict([tmp_path], backend='auto', **options)  # fp32 on the CPU, a named model: ONNX Runtime
    assert list(onnx_cache.glob('transfer_fer_compact.ferplus-*.onnx'))
    assert [f.expression for f in auto.faces] == [f.expression for f in eager.faces]
    for a, e in zip(auto.faces, eager.faces):
        assert max(abs(a.probabilities[k] - e.probabilities[k]) for k in e.probabilities) < 1e-4


def test_onnxruntime_backend_takes_amp_auto_as_fp32_where_bf16_is_fast(model, monkeypatch, tmp_path):
    """``--backend onnxruntime`` alone must just work: the default ``--amp auto`` means fp32 there; ``--amp bf16``
    stays an error."""
    monkeypatch.setattr(runtime, 'bf16_is_fast', lambda device: True)  # the AVX512-BF16 class on any machine
    monkeypatch.setattr(backends, '_onnxruntime_installed', lambda: True)
    exported = []
    monkeypatch.setattr(classifier_module, 'cached_onnx', lambda *a, **k: exported.append(a) or tmp_path / 'm.onnx')
    monkeypatch.setattr(classifier_module, 'OnnxRuntimeModel', lambda path, threads: object())
    classifier = load_classifier(model=model, device='cpu', backend='onnxruntime')
    assert (classifier.backend, classifier.amp_dtype, len(exported)) == ('onnxruntime', None, 1)
    assert load_classifier(model=model, device='cpu', backend='torch').amp_dtype == torch.bfloat16
    with pytest.raises(ConfigError, match='runs in fp32: use --amp none'):
        load_classifier(model=model, device='cpu', backend='onnxruntime', amp='bf16')


def fake_exporter(calls: list, content: bytes):
    """A stand-in for export_checked that writes ``content`` whole, as the real one does, and counts its calls."""
    def export(model, out, export_format):
        calls.append(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
        return out, 0.
    return export


def test_a_damaged_cached_file_is_made_again_and_said_so(model, onnx_cache, monkeypatch):
    calls, notes = [], []
    monkeypatch.setattr(backends, 'export_checked', fake_exporter(calls, b'graph' * 400))
    path = backends.cached_onnx(model, 'tiny', log=notes.append)
    assert path.read_bytes() == b'graph' * 400 and len(calls) == 1
    assert backends.cached_onnx(model, 'tiny', log=notes.append) == path and len(calls) == 1 and not notes
    with open(path, 'r+b') as f:
        f.truncate(1000)  # as a full disk or a kill leaves it
    assert backends.cached_onnx(model, 'tiny', log=notes.append) == path
    assert len(calls) == 2 and path.read_bytes() == b'graph' * 400
    assert notes == [f'the cached ONNX file {path} was damaged (its SHA-256 is not the one written when it was '
                     'cached), exported again']
    path.with_name(f'{path.name}.sha256').unlink()  # a file cached before digests, which ONNX Runtime cannot load
    backends.cached_onnx(model, 'tiny', log=notes.append)
    assert len(calls) == 3 and 'ONNX Runtime cannot load it: InvalidProtobuf' in notes[-1]

    import onnxruntime.quantization
    monkeypatch.setattr(onnxruntime.quantization, 'quantize_dynamic',
                        lambda source, out, **kwargs: calls.append(out) or open(out, 'wb').write(b'int8' * 300))
    quantized = backends.cached_onnx(model, 'tiny', int8=True, log=notes.append)
    assert quantized.name.endswith('-int8.onnx') and quantized.read_bytes() == b'int8' * 300 and len(calls) == 4
    quantized.write_bytes(b'int8')
    assert backends.cached_onnx(model, 'tiny', int8=True, log=notes.append) == quantized
    assert quantized.read_bytes() == b'int8' * 300 and len(calls) == 5 and notes[-1].endswith('quantised again')
    assert len(notes) == 3 and not list(onnx_cache.glob('.*'))  # no temporary file left behind


def test_a_file_cut_while_written_never_becomes_the_cached_file(model, onnx_cache, monkeypatch):
    def cut_off(model, out, *args, **kwargs):
        with open(out, 'wb') as f:
            f.write(b'x' * 1000)
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(export_module, 'export_model', cut_off)
    with pytest.raises(OSError, match='No space left'):
        backends.cached_onnx(model, 'tiny')
    assert not list(onnx_cache.iterdir())

    monkeypatch.setattr(backends, 'export_checked', fake_exporter([], b'graph' * 400))
    import onnxruntime.quantization
    monkeypatch.setattr(onnxruntime.quantization, 'quantize_dynamic', lambda source, out, **kwargs: cut_off(None, out))
    with pytest.raises(OSError, match='No space left'):
        backends.cached_onnx(model, 'tiny', int8=True)
    assert sorted(p.suffix for p in onnx_cache.iterdir()) == ['.onnx', '.sha256']  # the fp32 file and its digest


@pytest.mark.slow
def test_cli_onnxruntime_runs_without_amp_and_rebuilds_a_damaged_cache(onnx_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime, 'bf16_is_fast', lambda device: True)  # where --amp auto means bf16 for torch
    Image.new('RGB', (48, 48), 'gray').save(tmp_path / 'face.png')
    argv = ['predict', str(tmp_path / 'face.png'), '--aligned', '--backend', 'onnxruntime', '--threads', '1']
    assert main(argv) == 0
    first = capsys.readouterr().out
    [path] = onnx_cache.glob('*.onnx')
    size = path.stat().st_size
    path.with_name(f'{path.name}.sha256').unlink()  # cached by an older timm-fer: loads, so kept
    assert main(argv) == 0 and 'damaged' not in capsys.readouterr().err
    assert path.with_name(f'{path.name}.sha256').is_file()
    with open(path, 'r+b') as f:
        f.truncate(1000)
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f'note: the cached ONNX file {path} was damaged' in err and 'exported again' in err
    assert out == first and path.stat().st_size == size
