"""Speed of `transfer_fer_ir50`: timm-fer's paths and backends against the authors' code path, per CPU class.

Variants, sharing one set of weights (briefly trained on generated faces, so that top-1 agreement means
something) and inputs, measured interleaved in one run (median over repetitions):
- authors: the released code path (Python loops over the batch for MAD and head dropping, unfused attention,
  fp32, contiguous tensors; see authors_baseline.py);
- default: what ``timm-fer train`` and the torch backend use (channels-last, bf16 autocast where the CPU's kernels
  run it fast, fused attention, vectorised MAD / MSAD); default with p1 = p2 = 0, so (default / this) is the cost
  of MAD and MSAD;
- fp32 contiguous and fp32 channels-last: the memory-format lever on its own;
- int8 Linear (torch dynamic quantisation), ONNX Runtime fp32 and ONNX Runtime int8 MatMul (inference only);
- with --compile: the default path under torch.compile (inductor); its first call, the compilation, is reported.
Modes: batch-1 latency, batch-N inference, batch-N training step (forward, backward, SGD update, fused where
the device has the fused kernel, as ``timm-fer train`` runs it). Every variant runs ``--repeats`` times, the
variants interleaved within each repetition, after one warm-up call each; a table gives the median and the spread
(min-median-max) of the time, and the spread of the per-repetition speed-up against the authors' code path (both
measured in the same repetition). The header says whether the machine was quiet: how much of the cores other
processes used while the mode was timed (from /proc/stat, less this process's own CPU time); a figure from a busy
machine is not a claim. Peak memory is
the process's resident high-water mark on CPU (reset before each measurement, so it includes the weights of all
variants) or the CUDA allocator's peak. The fp32 and bf16 matmul rates of the machine are measured after each mode
in the same run (the best counts), and each variant's achieved rate (2 x MACs x images/s, backward counted as 2 x
forward) is given as a fraction of the matching one. The header gives the CPU flags that matter and the
instructions torch's kernels use; the AVX2 proxy on an AVX512 CPU:

    python benchmarks/benchmark_transfer.py --batch-size 32 --repeats 5 --out benchmarks/results
    python benchmarks/benchmark_transfer.py --modes train --variants authors default no-drop --batch-size 16
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/benchmark_transfer.py --batch-size 32 --repeats 5 --out benchmarks/results
"""
import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List

import timm
import torch
from authors_baseline import to_authors_code_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))  # the generated faces the tests use
from drawn_faces import generated_faces  # noqa: E402

import timm_fer
from timm_fer.engine.optimizer import create_sgd
from timm_fer.inference.backends import OnnxRuntimeModel, cached_onnx, quantize_linear
from timm_fer.utils.runtime import (
    autocast,
    bf16_is_fast,
    cpu_capability,
    cpu_flags,
    cpu_times,
    resolve_amp_dtype,
)

PROXY_VARIABLES = ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA', 'FBGEMM_ENABLE_INSTRUCTIONS')
"""Environment variables that lower the instructions torch, oneDNN and FBGEMM use: the AVX2 proxy."""


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


class OtherLoad:
    """How many cores other processes kept busy while the block ran: /proc/stat's busy time of all cores less this
    process's own CPU time, over the wall time (0 where /proc/stat is missing)."""

    def __enter__(self) -> 'OtherLoad':
        self.cores = 0.
        self._start = (self._busy_seconds(), sum(os.times()[:2]), time.perf_counter())
        return self

    def __exit__(self, *exc_info: object) -> None:
        busy, own, wall = self._busy_seconds(), sum(os.times()[:2]), time.perf_counter()
        if busy is not None and self._start[0] is not None:
            self.cores = max(0., (busy - self._start[0]) - (own - self._start[1])) / (wall - self._start[2])

    @staticmethod
    def _busy_seconds():
        if not Path('/proc/stat').exists():
            return None
        return sum(busy for busy, _ in cpu_times()) / os.sysconf('SC_CLK_TCK')


def load_note(cores: float) -> str:
    """'quiet' when other processes kept under a tenth of a core busy, else how busy the machine was."""
    return 'quiet' if cores < 0.1 else f'BUSY: other processes kept {cores:.1f} cores busy, not a claim'


def spread(values: List[float], digits: int = 2) -> str:
    """min-median-max."""
    return '-'.join(f'{v:.{digits}f}' for v in (min(values), statistics.median(values), max(values)))


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
    """One way of running the model: its module (or ONNX Runtime session), memory format, autocast dtype, backend."""

    def __init__(self, name: str, model, channels_last: bool, amp_dtype, device: torch.device,
                 backend: str = 'torch', trains: bool = True):
        self.name, self.model, self.device, self.backend, self.trains = name, model, device, backend, trains
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp_dtype = amp_dtype
        self.optimizer = create_sgd(model.parameters(), device, lr=1e-6, momentum=0.9) if trains else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, OnnxRuntimeModel):
            return self.model(images)
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            return self.model(images.contiguous(memory_format=self.memory_format)).float()

    def inference(self, images: torch.Tensor) -> Callable[[], None]:
        images = images.contiguous(memory_format=self.memory_format)
        return lambda: self.logits(images)

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


def briefly_train(model: torch.nn.Module, steps: int, size: int) -> None:
    """Train ``model`` for ``steps`` AdamW steps of 16 generated faces (bf16 autocast where it is fast)."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp_dtype = resolve_amp_dtype('auto', next(model.parameters()).device)
    model.train()
    for _ in range(steps):
        images, labels = generated_faces(16, generator, size)
        optimizer.zero_grad()
        with autocast(next(model.parameters()).device, amp_dtype):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    model.eval()


VARIANTS = ('authors', 'default', 'no-drop', 'fp32', 'fp32-channels-last', 'int8', 'onnxruntime')
"""What ``--variants`` can pick; the authors' code path is always measured (the speed-ups are against it)."""


def build_variants(args: argparse.Namespace, device: torch.device) -> List[Variant]:
    torch.manual_seed(0)
    reference = timm.create_model('transfer_fer_ir50').to(device)
    briefly_train(reference, args.train_steps, reference.pretrained_cfg['input_size'][-1])
    state = reference.state_dict()
    amp_dtype = resolve_amp_dtype('none' if args.no_bf16 else 'auto', device)
    precision = 'bf16' if amp_dtype else 'fp32'
    wanted = set(args.variants)
    variants = [Variant('authors', to_authors_code_path(copy.deepcopy(reference)), channels_last=False,
                        amp_dtype=None, device=device)]
    default = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    if 'default' in wanted:
        variants.append(Variant(f'default ({precision}, channels-last)', default, channels_last=True,
                                amp_dtype=amp_dtype, device=device))
    if 'no-drop' in wanted:
        no_drop = timm.create_model('transfer_fer_ir50', mad_drop_prob=0., msad_drop_prob=0.).to(device)
        no_drop.load_state_dict(state)
        variants.append(Variant('default, p1 = p2 = 0', no_drop.to(memory_format=torch.channels_last),
                                channels_last=True, amp_dtype=amp_dtype, device=device))
    if 'fp32' in wanted:
        variants.append(Variant('fp32, contiguous', copy.deepcopy(reference), channels_last=False, amp_dtype=None,
                                device=device))
    if 'fp32-channels-last' in wanted:
        variants.append(Variant('fp32, channels-last', copy.deepcopy(reference).to(memory_format=torch.channels_last),
                                channels_last=True, amp_dtype=None, device=device))
    if 'int8' in wanted:
        variants.append(Variant('int8 Linear (torch dynamic)', quantize_linear(copy.deepcopy(reference).eval()),
                                channels_last=True, amp_dtype=None, device=device, trains=False))
    if args.compile:
        variants.append(Variant(f'compiled default ({precision})', torch.compile(copy.deepcopy(default)),
                                channels_last=True, amp_dtype=amp_dtype, device=device))
    if device.type == 'cpu' and 'onnxruntime' in wanted:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            fp32_file = cached_onnx(copy.deepcopy(reference).eval(), 'transfer_fer_ir50', cache_dir=Path(folder))
            print(f'ONNX export with parity check: {time.perf_counter() - start:.1f} s')
            int8_file = cached_onnx(copy.deepcopy(reference).eval(), 'transfer_fer_ir50', int8=True,
                                    cache_dir=Path(folder))
            threads = torch.get_num_threads()
            variants += [
                Variant('onnxruntime fp32', OnnxRuntimeModel(fp32_file, threads), channels_last=False,
                        amp_dtype=None, device=device, backend='onnxruntime', trains=False),
                Variant('onnxruntime int8 MatMul', OnnxRuntimeModel(int8_file, threads), channels_last=False,
                        amp_dtype=None, device=device, backend='onnxruntime', trains=False),
            ]
    return variants


def measure(step: Callable[[], None], device: torch.device) -> Dict[str, float]:
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return {'seconds': time.perf_counter() - start, 'peak_mib': peak_memory_mib(device)}


def agreement(variants: List[Variant], images: torch.Tensor, batch_size: int) -> Dict[str, float]:
    """Share of ``images`` whose top-1 each variant's logits give as the authors' fp32 code path's does."""
    top1 = {v.name: torch.cat([v.logits(chunk).argmax(dim=-1) for chunk in images.split(batch_size)])
            for v in variants}
    return {name: float((labels == top1['authors']).float().mean()) for name, labels in top1.items()}


MODES = ('latency', 'inference', 'train')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=5, help='timed runs of each variant, interleaved (default: 5)')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES),
                        help='batch-1 latency, batch-N inference, batch-N training step (default: all)')
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS),
                        help='which variants to measure besides the authors\' code path (default: all)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--compile', action='store_true', help='add a torch.compile-d default variant')
    parser.add_argument('--no-bf16', action='store_true', help='run the default variants in fp32')
    parser.add_argument('--train-steps', type=int, default=30,
                        help='AdamW steps on generated faces before measuring, so top-1 agreement means something')
    parser.add_argument('--agreement-images', type=int, default=128)
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
    args = parser.parse_args()
    if args.repeats < 5:
        print(f'note: {args.repeats} repeats give a loose spread; figures for the docs take at least 5')
    device = torch.device(args.device)
    variants = build_variants(args, device)
    input_size = variants[0].model.pretrained_cfg['input_size']
    macs = timm_fer.count_macs(timm.create_model('transfer_fer_ir50'))
    held_out, held_out_labels = generated_faces(args.agreement_images, torch.Generator().manual_seed(1),
                                                input_size[-1])
    agreements = agreement(variants, held_out.to(device), args.batch_size)
    accuracy = float((variants[0].logits(held_out[:args.batch_size].to(device)).argmax(-1).cpu()
                      == held_out_labels[:args.batch_size]).float().mean())
    torch.manual_seed(1)
    batch = torch.randn(args.batch_size, *input_size, device=device)
    targets = torch.randint(7, (args.batch_size,), device=device)
    all_modes = {
        'latency': ('inference, batch 1', 1, lambda v: v.inference(batch[:1]), 1),
        'inference': (f'inference, batch {args.batch_size}', args.batch_size, lambda v: v.inference(batch), 1),
        'train': (f'training step, batch {args.batch_size}', args.batch_size,
                  lambda v: v.train_step(batch, targets), 3),
    }
    modes = {title: (images, make_step, flop_factor)
             for key, (title, images, make_step, flop_factor) in all_modes.items() if key in args.modes}
    rows = []
    loads: Dict[str, float] = {}
    matmul_rates: Dict[str, List[float]] = {'fp32': [], 'bf16': []}
    for mode, (images, make_step, flop_factor) in modes.items():
        training = mode.startswith('training')
        mode_variants = [v for v in variants if v.trains or not training]
        steps = {v.name: make_step(v) for v in mode_variants}
        warm_up = {}
        for name, step in steps.items():
            warm_up[name] = measure(step, device)['seconds']  # warm-up (and compilation)
        runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in steps}
        with OtherLoad() as load:
            for _ in range(args.repeats):
                for name, step in steps.items():
                    runs[name].append(measure(step, device))
        loads[mode] = load.cores
        for precision, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
            if precision == 'fp32' or bf16_is_fast(device):  # bf16 on reference kernels would take minutes
                matmul_rates[precision].append(matmul_tflops(dtype, device))
        seconds = {name: [r['seconds'] for r in result] for name, result in runs.items()}
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        peak_rates = {precision: max(rates, default=float('nan')) for precision, rates in matmul_rates.items()}
        no_drop = next((name for name in medians if name.startswith('default, p1')), None)
        for variant in mode_variants:
            median = medians[variant.name]
            precision = 'bf16' if variant.amp_dtype == torch.bfloat16 else 'int8' if 'int8' in variant.name else 'fp32'
            achieved = 2 * macs * flop_factor * images / median / 1e12
            speedups = [a / t for a, t in zip(seconds['authors'], seconds[variant.name])]  # same repetition
            rows.append(dict(
                mode=mode, variant=variant.name, backend=variant.backend, precision=precision,
                images_per_s=images / median, latency_ms=1e3 * median,
                times_ms=[1e3 * t for t in seconds[variant.name]], warm_up_s=warm_up[variant.name],
                peak_mib=max(r['peak_mib'] for r in runs[variant.name]),
                speedup_vs_authors=medians['authors'] / median, speedups=speedups,
                time_vs_no_drop=None if no_drop is None else median / medians[no_drop],
                top1_agreement=None if training else agreements[variant.name],
                fraction_of_matmul_rate=None if precision == 'int8' else achieved / peak_rates[precision]))

    name = device_name(device)
    bf16_rate = (f'{peak_rates["bf16"]:.2f} TFLOP/s' if matmul_rates['bf16'] else 'not measured (slow here)')
    env = ' '.join(f'{k}={os.environ[k]}' for k in PROXY_VARIABLES if k in os.environ)
    lines = [
        f'transfer_fer_ir50, 112x112, {device.type} ({name}, {torch.get_num_threads()} threads), CPU flags '
        f'{", ".join(cpu_flags()) or "none"}, torch {torch.__version__} cpu capability {cpu_capability()}'
        f'{", env " + env if env else ""}; {args.repeats} repeats, variants interleaved; matmul rate fp32 '
        f'{peak_rates["fp32"]:.2f} TFLOP/s, bf16 {bf16_rate}; model trained {args.train_steps} steps on generated '
        f'faces (top-1 accuracy {100 * accuracy:.0f} % on held-out ones), agreement with the authors\' top-1 on '
        f'{args.agreement_images} held-out generated faces',
    ]
    for mode in modes:
        lines += [
            '', f'**{mode}** ({load_note(loads[mode])})', '',
            '| variant | backend | precision | images/s | time (ms), min-median-max | first call (s) | '
            'peak memory (MiB) | speed-up vs authors, min-median-max | time vs p1 = p2 = 0 | top-1 agreement | '
            'share of matmul rate |',
            '|---|---|---|---|---|---|---|---|---|---|---|',
        ] + [f"| {r['variant']} | {r['backend']} | {r['precision']} | {r['images_per_s']:.2f} | "
             f"{spread(r['times_ms'], 0)} | {r['warm_up_s']:.1f} | {r['peak_mib']:.0f} | "
             f"{spread(r['speedups'])}x | "
             f"{'' if r['time_vs_no_drop'] is None else format(r['time_vs_no_drop'], '.3f')} | "
             f"{'' if r['top1_agreement'] is None else format(100 * r['top1_agreement'], '.1f') + ' %'} | "
             f"{'' if r['fraction_of_matmul_rate'] is None else format(r['fraction_of_matmul_rate'], '.2f')} |"
             for r in rows if r['mode'] == mode]
    print('\n'.join(lines))
    suffix = '_avx2_proxy' if 'ATEN_CPU_CAPABILITY' in os.environ else ''
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f'transfer{suffix}.md').write_text('\n'.join(lines) + '\n')
    (args.out / f'transfer{suffix}.json').write_text(json.dumps(dict(
        args={**vars(args), 'out': str(args.out)}, device=name, cpu_flags=cpu_flags(), cpu_capability=cpu_capability(),
        env=env, matmul_tflops=peak_rates, other_load_cores=loads, rows=rows), indent=2))


if __name__ == '__main__':
    main()
