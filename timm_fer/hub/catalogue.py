"""What timm-fer offers: every registered model with its size and the state of its weights, and a random batch
through each."""
import time
from typing import List

import timm
import torch

from ..models import registered_models
from ..utils import count_macs, count_params
from ..utils.options import Range, option_ranges

__all__ = ['list_and_classify', 'weights_of']


def weights_of(architecture: str) -> str:
    """The tags of ``architecture`` and whether their weights load: shipped in the package, on the Hub, or not yet
    published (those fail with ``pretrained=True`` until they are)."""
    parts = []
    for name in timm.models.get_arch_pretrained_cfgs(architecture):
        cfg = timm.models.get_pretrained_cfg(name)
        if not cfg.tag:
            continue
        state = 'shipped' if cfg.file else 'Hub' if cfg.hf_hub_id else 'not published'
        parts.append(f'{cfg.tag} ({state})')
    return ', '.join(parts) or '-'


@option_ranges(batch_size=Range(1, 256, integer=True), seed=Range(0, 2 ** 32 - 1, integer=True))
def list_and_classify(batch_size: int = 2, seed: int = 0) -> List[str]:
    """One line per registered model: parameters, MACs, input size, time per image, top-1 of a random batch, and its
    pretrained tags with whether their weights load (:func:`weights_of`)."""
    torch.manual_seed(seed)
    lines = [f'{"model":<22} {"params (M)":>10} {"MACs (G)":>9} {"input":>11} {"ms/img":>7}  '
             f'{"random-batch top-1":<28} weights (pretrained tags)']
    for name in registered_models():
        model = timm.create_model(name).eval()
        input_size = model.pretrained_cfg['input_size']
        labels = model.pretrained_cfg.get('label_names') or [f'class {i}' for i in range(model.num_classes)]
        images = torch.randn(batch_size, *input_size)
        start = time.perf_counter()
        with torch.inference_mode():
            output = model(images)
        ms_per_image = 1e3 * (time.perf_counter() - start) / batch_size
        if model.num_classes > 0:
            probs = output.softmax(dim=-1)
            top = ', '.join(f'{labels[i]} {p:.2f}' for p, i in zip(*probs.max(dim=-1)))
        else:
            top = f'embedding {tuple(output.shape[1:])} (no classifier)'
        size = 'x'.join(map(str, input_size))
        lines.append(f'{name:<22} {count_params(model) / 1e6:>10.2f} {count_macs(model) / 1e9:>9.2f} {size:>11} '
                     f'{ms_per_image:>7.1f}  {top:<28} {weights_of(name)}')
    return lines
