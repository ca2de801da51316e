"""Speed of `transfer_fer_ir50`: timm-fer's default path against the authors' code path, and the cost of MAD + MSAD.

Variants, sharing one set of weights and inputs, measured interleaved in one run (median over repetitions):
- authors: the released code path (Python loops over the batch for MAD and head dropping, unfused attention,
  fp32, contiguous tensors; see authors_baseline.py);
- default: what timm-fer's commands use (channels-last, bf16 autocast where the device supports it, fused
  attention, vectorised MAD / MSAD; with --compile also torch.compile);
- default, p1 = p2 = 0: the default path with MAD and MSAD off, so (default / this) is their cost.
Modes: batch-1 latency, batch-N inference, batch-N training step (forward, backward, SGD update). Peak memory is
the process's resident high-water mark on CPU (reset before each measurement, so it includes the weights of all
three variants, about 0.8 GiB) or the CUDA allocator's peak. The fp32 and bf16 matmul rates of the machine are
measured after each mode in the same run (the best counts), and each variant's achieved rate (2 x MACs x
images/s, backward counted as 2 x forward) is given as a fraction of the matching one.

    python benchmarks/benchmark_transfer.py --batch-size 32 --repeats 5 --out benchmarks/results
"""
import argparse
import copy
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List

import timm
import torch
from authors_baseline import to_authors_code_path

import timm_fer


def reset_peak_memory(device: torch.device) -> None:
    """Reset the peak-memory counter (CPU: the process's VmHWM, through /proc/self/clear_refs)."""
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
    raise RuntimeError('no VmHWM in /proc/self/status: CPU peak memory is measured on Linux only.')


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    cpuinfo = Path('/proc/cpuinfo')
    names = [line.split(':', 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith('model name')] if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or 'CPU'


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_tflops(dtype: torch.dtype, device: torch.device, sizes=(2048, 4096), repeats: int = 5) -> float:
    """Dense matmul rate of the device in ``dtype``, in TFLOP/s: the best over ``sizes`` of the median time."""
    rates = []
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
        rates.append(2 * size ** 3 / statistics.median(times) / 1e12)
    return max(rates)


class Variant:
    """One way of running the model: its module, input memory format and autocast dtype."""

    def __init__(self, name: str, model: torch.nn.Module, channels_last: bool, amp_dtype, device: torch.device):
        self.name, self.model, self.device = name, model, device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp_dtype = amp_dtype
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def inference(self, images: torch.Tensor) -> Callable[[], None]:
        images = images.contiguous(memory_format=self.memory_format)

        def step() -> None:
            self.model.eval()
            with torch.inference_mode(), self.autocast():
                self.model(images)
        return step

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
        images = images.contiguous(memory_format=self.memory_format)

        def step() -> None:
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = torch.nn.functional.cross_entropy(self.model(images), targets)
            loss.backward()
            self.optimizer.step()
        return step


def build_variants(args: argparse.Namespace, device: torch.device) -> List[Variant]:
    torch.manual_seed(0)
    reference = timm.create_model('transfer_fer_ir50').to(device)
    state = reference.state_dict()
    amp_dtype = torch.bfloat16 if not args.no_bf16 else None
    authors = to_authors_code_path(copy.deepcopy(reference))
    default = reference.to(memory_format=torch.channels_last)
    no_drop = timm.create_model('transfer_fer_ir50', mad_prob=0., msad_prob=0.).to(device)
    no_drop.load_state_dict(state)
    no_drop = no_drop.to(memory_format=torch.channels_last)
    if args.compile:
        default, no_drop = torch.compile(default), torch.compile(no_drop)
    return [
        Variant('authors', authors, channels_last=False, amp_dtype=None, device=device),
        Variant('default', default, channels_last=True, amp_dtype=amp_dtype, device=device),
        Variant('default, p1 = p2 = 0', no_drop, channels_last=True, amp_dtype=amp_dtype, device=device),
    ]


def measure(step: Callable[[], None], device: torch.device) -> Dict[str, float]:
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return {'seconds': time.perf_counter() - start, 'peak_mib': peak_memory_mib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--compile', action='store_true', help='torch.compile the default variants')
    parser.add_argument('--no-bf16', action='store_true', help='run the default variants in fp32')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = build_variants(args, device)
    input_size = variants[0].model.pretrained_cfg['input_size']
    macs = timm_fer.count_macs(timm.create_model('transfer_fer_ir50'))
    torch.manual_seed(1)
    batch = torch.randn(args.batch_size, *input_size, device=device)
    targets = torch.randint(7, (args.batch_size,), device=device)
    modes = {
        'inference, batch 1': (1, lambda v: v.inference(batch[:1]), 1),
        f'inference, batch {args.batch_size}': (args.batch_size, lambda v: v.inference(batch), 1),
        f'training step, batch {args.batch_size}': (args.batch_size, lambda v: v.train_step(batch, targets), 3),
    }
    rows = []
    matmul_rates: Dict[str, List[float]] = {'fp32': [], 'bf16': []}
    for mode, (images, make_step, flop_factor) in modes.items():
        steps = {v.name: make_step(v) for v in variants}
        for step in steps.values():
            step()  # warm-up (and compilation)
        runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                runs[name].append(measure(step, device))
        for precision, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
            matmul_rates[precision].append(matmul_tflops(dtype, device))
        medians = {name: statistics.median(r['seconds'] for r in result) for name, result in runs.items()}
        peak_rates = {precision: max(rates) for precision, rates in matmul_rates.items()}
        for variant in variants:
            seconds = medians[variant.name]
            precision = 'bf16' if variant.amp_dtype == torch.bfloat16 else 'fp32'
            achieved = 2 * macs * flop_factor * images / seconds / 1e12
            rows.append(dict(
                mode=mode, variant=variant.name, precision=precision, images_per_s=images / seconds,
                latency_ms=1e3 * seconds, peak_mib=max(r['peak_mib'] for r in runs[variant.name]),
                speedup_vs_authors=medians['authors'] / seconds,
                time_vs_no_drop=seconds / medians['default, p1 = p2 = 0'],
                fraction_of_matmul_rate=achieved / peak_rates[precision]))

    name = device_name(device)
    lines = [
        f'transfer_fer_ir50, 112x112, {device.type} ({name}, {torch.get_num_threads()} threads), '
        f'torch {torch.__version__}, compile {args.compile}, median of {args.repeats}; matmul rate fp32 '
        f'{peak_rates["fp32"]:.2f} TFLOP/s, bf16 {peak_rates["bf16"]:.2f} TFLOP/s',
        '',
        '| mode | variant | precision | images/s | latency (ms) | peak memory (MiB) | speed-up vs authors | '
        'time vs p1 = p2 = 0 | share of matmul rate |',
        '|---|---|---|---|---|---|---|---|---|',
    ] + [f"| {r['mode']} | {r['variant']} | {r['precision']} | {r['images_per_s']:.2f} | {r['latency_ms']:.0f} | "
         f"{r['peak_mib']:.0f} | {r['speedup_vs_authors']:.2f}x | {r['time_vs_no_drop']:.3f} | "
         f"{r['fraction_of_matmul_rate']:.2f} |" for r in rows]
    print('\n'.join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'transfer.md').write_text('\n'.join(lines) + '\n')
    (args.out / 'transfer.json').write_text(json.dumps(dict(
        args={**vars(args), 'out': str(args.out)}, device=name, matmul_tflops=peak_rates, rows=rows), indent=2))


if __name__ == '__main__':
    main()
