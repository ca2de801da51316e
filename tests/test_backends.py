"""Backends, int8 and threads of ``predict``: each gives the eager model's answers, and the automatic choices follow
the kernels torch will actually run."""
import copy

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
from timm_fer.inference.classifier import FaceClassifier, FaceCrop, load_classifier
from timm_fer.inference.predict import predict
from timm_fer.utils import runtime

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
