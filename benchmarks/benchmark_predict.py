"""End-to-end speed of ``predict --aligned`` on 48x48 face crops with ``transfer_fer_compact.ferplus`` (or ``--model``,
``--checkpoint``: another tag, or a checkpoint of ``timm-fer train``, e.g. a grown architecture).

Reads every crop from disk (EXIF, colour mode, resize, transform, batching, model, report), as
``timm-fer predict crops/ --aligned`` does, for each backend, on a quiet CPU and with one core kept busy by a
busy-loop process; threads are left to :func:`~timm_fer.utils.runtime.resolve_threads` (automatic). Each number is
the best of ``--repeats`` runs after a warm-up run (which also exports and caches the ONNX file). The top-1 of
every variant is compared with the torch fp32 predictions.

    python benchmarks/benchmark_predict.py path/to/ferplus/FER2013Valid --limit 1000
    python benchmarks/benchmark_predict.py path/to/ferplus/FER2013Valid --variants auto 'auto, flip TTA'
    python benchmarks/benchmark_predict.py path/to/ferplus/FER2013Valid --variants auto --checkpoint runs/x/last.pth
"""
import argparse
import multiprocessing
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from timm_fer.inference.predict import predict
from timm_fer.utils.runtime import cpu_capability, cpu_flags

MODEL = 'transfer_fer_compact.ferplus'
VARIANTS = {
    'auto': dict(),
    'torch, amp auto': dict(backend='torch'),
    'torch, fp32': dict(backend='torch', amp='none'),
    'torch, fp32, int8 Linear': dict(backend='torch', amp='none', int8=True),
    'onnxruntime, fp32': dict(backend='onnxruntime', amp='none'),
    'onnxruntime, int8 MatMul': dict(backend='onnxruntime', amp='none', int8=True),
    'auto, flip TTA': dict(tta_flip=True),
    'torch, amp auto, flip TTA': dict(backend='torch', tta_flip=True),
}


def busy_loop() -> None:
    """Keep one core busy until killed."""
    while True:
        pass


def run(files: List[str], repeats: int, weights: Dict[str, Optional[str]], **kwargs) -> Dict:
    """Best crops/s over ``repeats`` runs of :func:`predict` with ``weights`` (``model``, ``checkpoint``), and the last
    report's top-1 per file."""
    predict(files, aligned=True, progress=False, **weights, **kwargs)
    best = 0.
    for _ in range(repeats):
        start = time.perf_counter()
        report = predict(files, aligned=True, progress=False, **weights, **kwargs)
        best = max(best, len(report.faces) / (time.perf_counter() - start))
    return dict(rate=best, top1={f.file: f.expression for f in report.faces})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', type=Path, help='folder of aligned face crops')
    parser.add_argument('--limit', type=int, default=1000, help='crops read per run (default: 1000)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS),
                        help='the variants to run (default: all; torch fp32, the reference, always runs)')
    parser.add_argument('--model', default=None, help=f'model and tag (default: {MODEL}, or the checkpoint\'s)')
    parser.add_argument('--checkpoint', default=None, help='a checkpoint to time instead of a shipped tag')
    args = parser.parse_args()
    weights = dict(model=args.model or (None if args.checkpoint else MODEL), checkpoint=args.checkpoint)
    variants = {name: VARIANTS[name] for name in VARIANTS if name in {*args.variants, 'torch, fp32'}}
    files = sorted(str(p) for p in args.folder.iterdir() if p.suffix.lower() in ('.png', '.jpg'))[:args.limit]
    env = ' '.join(f'{k}={os.environ[k]}' for k in ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA',
                                                   'FBGEMM_ENABLE_INSTRUCTIONS') if k in os.environ)
    lines = [f'{args.checkpoint or weights["model"]}, {len(files)} aligned 48x48 crops end to end; CPU flags '
             f'{", ".join(cpu_flags())}; torch {torch.__version__} cpu capability {cpu_capability()}'
             f'{"; env " + env if env else ""}; {os.cpu_count()} cores; best of {args.repeats}', '',
             '| variant | backend ran | quiet: crops/s | one core busy: crops/s | top-1 = torch fp32 |',
             '|---|---|---|---|---|']
    results = {}
    for load in ('quiet', 'busy'):
        hog = None
        if load == 'busy':
            hog = multiprocessing.Process(target=busy_loop, daemon=True)
            hog.start()
            time.sleep(1.)
        try:
            for name, kwargs in variants.items():
                results[name, load] = run(files, args.repeats, weights, **kwargs)
        finally:
            if hog is not None:
                hog.terminate()
                hog.join()
    from timm_fer.inference.classifier import load_classifier
    reference = results['torch, fp32', 'quiet']['top1']
    for name, kwargs in variants.items():
        options = dict(dict(amp='auto', backend='auto', int8=False), **kwargs)
        classifier = load_classifier(**weights, amp=options['amp'], backend=options['backend'], int8=options['int8'])
        quiet, busy = results[name, 'quiet'], results[name, 'busy']
        agreement = sum(quiet['top1'][f] == reference[f] for f in reference) / len(reference)
        backend = f"{classifier.backend}{', bf16' if classifier.amp_dtype else ''}"
        lines.append(f"| {name} | {backend} | {quiet['rate']:.0f} | {busy['rate']:.0f} | {100 * agreement:.1f} % |")
    print('\n'.join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = '_avx2_proxy' if 'ATEN_CPU_CAPABILITY' in os.environ else ''
    (args.out / f'predict{suffix}.md').write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
