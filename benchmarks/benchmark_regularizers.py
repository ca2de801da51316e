"""Cost of MAD + MSAD: `transfer_fer_ir50` with the paper's drop rates against the same model with p1 = p2 = 0.

Both variants share weights and inputs and are measured interleaved in one run (medians over repetitions), for
eval inference and for a full training step (forward, backward, SGD update). Peak memory is the process's
resident-set high-water mark on CPU (reset before each measurement) or the CUDA allocator's peak.

    python benchmarks/benchmark_regularizers.py --batch-size 32 --repeats 5 --out benchmarks/results
"""
import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import timm
import torch

import timm_fer  # noqa: F401  (registers the models)


def reset_peak_memory(device: torch.device) -> None:
    """Reset the peak-memory counter of ``device`` (CPU: the process's VmHWM through /proc/self/clear_refs)."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path('/proc/self/clear_refs').write_text('5')


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since the last reset, in MiB."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError('no VmHWM line in /proc/self/status: peak memory is measured on Linux only.')


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once(step: Callable[[], None], device: torch.device) -> Dict[str, float]:
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return {'seconds': time.perf_counter() - start, 'peak_mib': peak_memory_mib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='transfer_fer_ir50')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    reference = timm.create_model(args.model).to(device)
    variants = {'MAD+MSAD (paper rates)': reference}
    no_drop = timm.create_model(args.model, mad_prob=0., msad_prob=0.).to(device)
    no_drop.load_state_dict(reference.state_dict())
    variants['p1 = p2 = 0'] = no_drop
    images = torch.randn(args.batch_size, *reference.pretrained_cfg['input_size'], device=device)
    targets = torch.randint(reference.num_classes, (args.batch_size,), device=device)

    def inference(model: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.inference_mode():
                model.eval()(images)
        return step

    def train_step(model: torch.nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

        def step() -> None:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), targets).backward()
            optimizer.step()
        return step

    results: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    for mode, make_step in (('inference', inference), ('train step', train_step)):
        steps = {name: make_step(model) for name, model in variants.items()}
        for step in steps.values():
            step()  # warm-up
        for _ in range(args.repeats):
            for name, step in steps.items():
                results.setdefault(mode, {}).setdefault(name, []).append(time_once(step, device))

    rows = []
    for mode, by_variant in results.items():
        base_seconds = statistics.median(r['seconds'] for r in by_variant['p1 = p2 = 0'])
        for name, runs in by_variant.items():
            seconds = statistics.median(r['seconds'] for r in runs)
            rows.append(dict(
                mode=mode, variant=name, images_per_s=args.batch_size / seconds,
                peak_mib=max(r['peak_mib'] for r in runs), time_vs_no_drop=seconds / base_seconds))
    table = [
        f'{args.model}, batch {args.batch_size}, {device.type} ({torch.get_num_threads()} threads), '
        f'torch {torch.__version__}, median of {args.repeats}',
        '',
        '| mode | variant | images/s | peak memory (MiB) | time vs p1 = p2 = 0 |',
        '|---|---|---|---|---|',
    ] + [f"| {r['mode']} | {r['variant']} | {r['images_per_s']:.2f} | {r['peak_mib']:.0f} | "
         f"{r['time_vs_no_drop']:.3f} |" for r in rows]
    print('\n'.join(table))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'regularizers.md').write_text('\n'.join(table) + '\n')
    (args.out / 'regularizers.json').write_text(json.dumps(dict(args={**vars(args), 'out': str(args.out)},
                                                                rows=rows), indent=2))


if __name__ == '__main__':
    main()
