"""Command line of timm-fer: ``timm-fer`` or ``python -m timm_fer``."""
import argparse
import shlex
import sys
import time
from typing import List, Optional

import timm
import torch

from .complexity import count_macs, count_params
from .convert import add_convert_parser, add_push_parser
from .errors import FerError
from .evaluate import add_eval_parser
from .export import add_export_parser
from .models import registered_models
from .predict import add_predict_parser
from .train import add_train_parser


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


def _run_models(args: argparse.Namespace) -> int:
    list_and_classify(args.batch_size, args.seed)
    return 0


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer models``."""
    parser = subparsers.add_parser(
        'models', help='list the registered models with params and MACs, and classify a random batch with each')
    parser.add_argument('--batch-size', type=int, default=2, help='images in the random batch')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random batch')
    parser.set_defaults(func=_run_models)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``timm-fer``: each sub-command registers itself with an ``add_*_parser`` function."""
    parser = argparse.ArgumentParser(prog='timm-fer', description='Facial expression recognition for timm.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for add_parser in (add_models_parser, add_train_parser, add_eval_parser, add_convert_parser, add_push_parser,
                       add_predict_parser, add_export_parser):
        add_parser(subparsers)
    argv = (sys.argv[1:] if argv is None else argv) or ['models']
    args = parser.parse_args(argv)
    args.command_line = 'timm-fer ' + shlex.join(argv)
    try:
        return args.func(args)
    except FerError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
