"""Command line of timm-fer: ``timm-fer`` or ``python -m timm_fer``."""
import argparse
import sys
import time
from typing import List, Optional

import timm
import torch

from .complexity import count_macs, count_params


def registered_models() -> List[str]:
    """Names of the models that timm-fer registers with timm."""
    return timm.list_models(module=['irnet', 'transfer'])


def list_and_classify(batch_size: int = 2, seed: int = 0) -> None:
    """Print every registered model with its size, and classify a random batch with it."""
    torch.manual_seed(seed)
    print(f'{"model":<20} {"params (M)":>10} {"MACs (G)":>9} {"input":>11} {"ms/img":>7}  random-batch top-1')
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
        print(f'{name:<20} {count_params(model) / 1e6:>10.2f} {count_macs(model) / 1e9:>9.2f} {size:>11} '
              f'{ms_per_image:>7.1f}  {top}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='timm-fer', description='Facial expression recognition for timm.')
    subparsers = parser.add_subparsers(dest='command')
    models_parser = subparsers.add_parser(
        'models', help='list the registered models with params and MACs, and classify a random batch with each')
    models_parser.add_argument('--batch-size', type=int, default=2, help='images in the random batch')
    models_parser.add_argument('--seed', type=int, default=0, help='seed of the random batch')
    args = parser.parse_args(argv)
    if args.command in (None, 'models'):
        list_and_classify(getattr(args, 'batch_size', 2), getattr(args, 'seed', 0))
    return 0


if __name__ == '__main__':
    sys.exit(main())
