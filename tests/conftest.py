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
