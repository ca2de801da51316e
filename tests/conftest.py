import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    'timm_fer', deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'timm_fer'))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
