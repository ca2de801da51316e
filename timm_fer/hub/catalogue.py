"""What timm-fer offers: every registered model with its size, and a random batch through each."""
import time
from typing import List

import timm
import torch

from ..models import registered_models
from ..utils import count_macs, count_params

__all__ = ['list_and_classify']


def list_and_classify(batch_size: int = 2, seed: int = 0) -> List[str]:
    """One line per registered model: parameters, MACs, input size, time per image and top-1 of a random batch."""
    torch.manual_seed(seed)
    lines = [f'{"model":<22} {"params (M)":>10} {"MACs (G)":>9} {"input":>11} {"ms/img":>7}  random-batch top-1']
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
                     f'{ms_per_image:>7.1f}  {top}')
    return lines
