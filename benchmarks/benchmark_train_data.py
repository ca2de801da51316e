"""Training throughput of the compact model on FERPlus by data path: per-image PIL augmentation in loader workers
(the data path before batch augmentation), uint8 faces from loader workers augmented as a batch, and faces decoded
once into memory augmented as a batch (``timm-fer train --in-memory``); with ``--compile`` also the in-memory path
with the model under ``torch.compile`` (``timm-fer train --in-memory --compile``; its compilation falls in the
untimed warm-up steps).

Every path runs the same training step (``transfer_fer_compact`` with ``in_chans=1``, batch 64, SGD, the run's
autocast) for the same number of steps, interleaved over ``--repeats`` rounds; the best round of each is reported
with its ratio to the per-image path::

    python benchmarks/benchmark_train_data.py path/to/ferplus --steps 60 --repeats 3 [--compile]
"""
import argparse
import os
import time
from typing import Callable, Dict, Iterator, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

import timm_fer  # noqa: F401
from timm_fer.data import FaceBatchAugment, FerPlus, create_fer_transform
from timm_fer.hub import create_fer_model, resolve_fer_data_config
from timm_fer.utils import autocast, resolve_amp_dtype
from timm_fer.utils.runtime import cpu_capability, cpu_flags

Batches = Iterator[Tuple[torch.Tensor, torch.Tensor]]


def per_image_transform(data_config: Dict) -> transforms.Compose:
    """The per-image training transform that batch augmentation replaced (same parameters)."""
    size = data_config['input_size'][-1]
    return transforms.Compose([
        transforms.Grayscale(1), transforms.Resize(round(1.1 * size)), transforms.RandomRotation(10.),
        transforms.RandomCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(data_config['mean'], data_config['std']), transforms.RandomErasing(0.25)])


IN_MEMORY = 'in memory, batch augmentation (--in-memory)'
"""The in-memory path's name in the table; ``--compile`` runs its batches again through the compiled model."""


def data_paths(root: str, data_config: Dict, batch: int, workers: int) -> Dict[str, Callable[[], Batches]]:
    """Each data path as a factory of an endless iterator of (inputs, labels) batches."""
    augment = FaceBatchAugment(data_config['mean'], data_config['std'])

    def seeds(count: int) -> torch.Tensor:
        return torch.randint(0, 2 ** 62, (count,))

    def loader(transform: Callable) -> Batches:
        dataset = FerPlus(root, 'train', transform=transform)
        while True:
            yield from DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                  persistent_workers=False)

    def streamed() -> Batches:
        for images, labels in loader(create_fer_transform(data_config, to_uint8=True)):
            yield augment(images, seeds(len(labels))), labels

    def in_memory() -> Batches:
        dataset = FerPlus(root, 'train', transform=create_fer_transform(data_config, to_uint8=True))
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        labels = torch.tensor(dataset.targets)
        while True:
            for indices in torch.randperm(len(labels)).split(batch):
                if len(indices) == batch:
                    yield augment(images[indices], seeds(batch)), labels[indices]

    return {'per-image PIL, loader workers': lambda: loader(per_image_transform(data_config)),
            'uint8 from loader workers, batch augmentation': streamed,
            IN_MEMORY: in_memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', help='FERPlus folder')
    parser.add_argument('--steps', type=int, default=60, help='timed steps per path and round')
    parser.add_argument('--repeats', type=int, default=3, help='interleaved rounds; the best is reported')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument('--amp', default='auto', choices=('auto', 'bf16', 'none'))
    parser.add_argument('--compile', action='store_true', help='add the in-memory path with torch.compile')
    args = parser.parse_args()

    model, _ = create_fer_model('transfer_fer_compact', 8, None, dict(in_chans=1), pretrained_tag=None)
    model = model.to(memory_format=torch.channels_last).train()
    data_config = resolve_fer_data_config(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    amp_dtype = resolve_amp_dtype(args.amp, torch.device('cpu'))

    def run(batches: Batches, net: torch.nn.Module) -> float:
        """Images per second over ``args.steps`` steps, after 5 warm-up steps."""
        for step in range(args.steps + 5):
            if step == 5:
                start = time.perf_counter()
            images, labels = next(batches)
            with autocast(torch.device('cpu'), amp_dtype):
                loss = F.cross_entropy(net(images.contiguous(memory_format=torch.channels_last)).float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return args.steps * args.batch_size / (time.perf_counter() - start)

    paths = {name: (batches, model) for name, batches in
             data_paths(args.root, data_config, args.batch_size, args.workers).items()}
    if args.compile:
        paths['in memory, batch augmentation, torch.compile (--compile)'] = (
            paths[IN_MEMORY][0], torch.compile(model))
    best = {name: 0. for name in paths}
    for _ in range(args.repeats):
        for name, (batches, net) in paths.items():
            best[name] = max(best[name], run(batches(), net))
    print(f'CPU flags {", ".join(cpu_flags()) or "none"}; torch {torch.__version__} cpu capability '
          f'{cpu_capability()}; {torch.get_num_threads()} threads, {args.workers} loader workers, amp '
          f'{amp_dtype or "none"}; best of {args.repeats} rounds of {args.steps} steps of {args.batch_size}\n')
    print('| data path | images/s | vs per-image |\n|---|---|---|')
    baseline = next(iter(best.values()))
    for name, rate in best.items():
        print(f'| {name} | {rate:.0f} | {rate / baseline:.2f}x |')


if __name__ == '__main__':
    main()
