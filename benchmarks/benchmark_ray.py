"""Photos per second of ``timm-fer predict`` run locally and on Ray Data, and ``timm-fer serve``'s queue under a burst.

In one run on this machine: the same ``--photos`` photos (the shipped sample portrait, turned a little each, as JPEG;
RetinaFace then the shipped model, torch backend, one thread) are predicted by the local run (one process), then
by Ray with 1 and with 2 single-threaded actors on a local cluster of ``--cpus`` CPUs. Ray's figures are given from
the start of the run (actors starting and loading the model included) and from its first batch of rows on (the
steady rate). Then ``--clients`` concurrent clients each send the portrait once to the service with its default
limits (queue included) over loopback: how many were answered 200 and 429, and the latencies. Prints the CPU class
(``grep -o -E 'avx512_bf16|amx' /proc/cpuinfo | sort -u``) and the load average, since other processes skew both.

    python benchmarks/benchmark_ray.py --photos 1000
    python benchmarks/benchmark_ray.py --photos 200 --skip-serve
"""
import argparse
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import httpx

from timm_fer.faces import RetinaFaceDetector, read_image
from timm_fer.inference.classifier import ClassifierOptions, load_classifier
from timm_fer.inference.predict import SAMPLE_IMAGE, predict
from timm_fer.inference.ray_batch import file_batches, predict_dataset
from timm_fer.utils.runtime import cpu_capability, num_threads

OPTIONS = ClassifierOptions(backend='torch', threads=1)
"""The model of every run: the shipped model, torch backend, one thread (the single-threaded actor's)."""


def cpu_class() -> str:
    """The CPU's bf16 and AMX flags, as ``grep -o -E 'avx512_bf16|amx' /proc/cpuinfo | sort -u`` lists them."""
    cpuinfo = Path('/proc/cpuinfo')
    found = sorted(set(re.findall(r'avx512_bf16|amx', cpuinfo.read_text()))) if cpuinfo.exists() else []
    return ' '.join(found) or 'neither avx512_bf16 nor amx'


def write_photos(folder: Path, count: int) -> List[Path]:
    portrait = read_image(SAMPLE_IMAGE)
    paths = []
    for i in range(count):
        path = folder / f'portrait{i:05d}.jpg'
        portrait.rotate(i % 11 - 5, fillcolor=(90, 120, 160)).save(path, quality=90)
        paths.append(path)
    return paths


def local_rate(files: List[Path], threads: int) -> float:
    """Photos per second of the local run with ``threads`` torch threads (detector and model), warmed up first."""
    classifier = load_classifier(OPTIONS, threads=threads)
    detector = RetinaFaceDetector(threads=threads)
    with num_threads(threads):
        predict(files[:4], classifier, detector=detector)
        start = time.perf_counter()
        report = predict(files, classifier, detector=detector)
        wall = time.perf_counter() - start
    assert len(report.faces) == len(files), report.skipped[:3]
    return len(files) / wall


def ray_rates(files: List[Path], actors: int) -> Tuple[float, float]:
    """Photos per second of Ray with ``actors`` actors: from the start, and from the first batch of rows on."""
    import pyarrow as pa
    import ray

    blocks = [pa.table(block) for block in file_batches(files, 16)]
    rows = predict_dataset(ray.data.from_arrow(blocks), actors=actors, classifier_options=OPTIONS)
    start = time.perf_counter()
    first, after_first, faces = None, 0, 0
    for table in rows.iter_batches(batch_size=None, batch_format='pyarrow'):
        faces += sum(1 for reason in table.column('skipped').to_pylist() if not reason)  # a face row skips nothing
        if first is None:
            first = time.perf_counter()
        else:
            after_first += table.num_rows
    wall = time.perf_counter() - start
    assert faces == len(files), f'{faces} faces of {len(files)} photos'
    return len(files) / wall, after_first / (time.perf_counter() - first)


def serve_burst(clients: int) -> Dict[str, float]:
    """``clients`` concurrent requests of the portrait to the service with its default limits."""
    from benchmark_serve import Server

    from timm_fer.serve import create_app

    body = SAMPLE_IMAGE.read_bytes()
    app = create_app(load_classifier(backend='torch'), detector=RetinaFaceDetector())
    statuses: List[int] = []
    latencies: List[float] = []
    lock = threading.Lock()
    with Server(app) as url:
        httpx.post(f'{url}/v1/predict', files={'file': ('portrait.png', body, 'image/png')}, timeout=60)  # warm-up
        barrier = threading.Barrier(clients)

        def client() -> None:
            barrier.wait()
            start = time.perf_counter()
            answer = httpx.post(f'{url}/v1/predict', files={'file': ('portrait.png', body, 'image/png')}, timeout=120)
            with lock:
                statuses.append(answer.status_code)
                latencies.append(time.perf_counter() - start)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ordered = sorted(latencies)
    return dict(ok=statuses.count(200), refused=statuses.count(429), other=len(statuses) - statuses.count(200) -
                statuses.count(429), p50=statistics.median(ordered) * 1000,
                p95=ordered[round(0.95 * (len(ordered) - 1))] * 1000, max=ordered[-1] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--photos', type=int, default=1000, help='photos per run (default: 1000)')
    parser.add_argument('--cpus', type=int, default=2, help="the local Ray cluster's CPUs (default: 2)")
    parser.add_argument('--clients', type=int, default=64, help='concurrent clients of the service (default: 64)')
    parser.add_argument('--skip-serve', action='store_true', help='leave out the service burst')
    args = parser.parse_args()

    import ray

    print(f'CPU class: {cpu_class()} (torch cpu capability {cpu_capability()}); {os.cpu_count()} cores; load '
          f'average {os.getloadavg()[0]:.1f} at the start; {args.photos} photos, torch backend, one thread per run')
    with tempfile.TemporaryDirectory(prefix='benchmark-ray-') as folder:
        files = write_photos(Path(folder), args.photos)
        local = local_rate(files, threads=1)
        machine = local_rate(files, threads=args.cpus)
        print(f'{"run":<24} {"photos/s":>9} {"steady":>9} {"x local":>8}')
        print(f'{"local, 1 thread":<24} {local:>9.1f} {local:>9.1f} {1:>8.2f}')
        print(f'{f"local, {args.cpus} threads":<24} {machine:>9.1f} {machine:>9.1f} {machine / local:>8.2f}')
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            rates = {}
            for actors in (1, 2):
                rates[actors] = ray_rates(files, actors)
                rate, steady = rates[actors]
                print(f'{f"ray, {actors} actor" + "s" * (actors > 1):<24} {rate:>9.1f} {steady:>9.1f} '
                      f'{steady / local:>8.2f}')
        finally:
            ray.shutdown()
    print(f'ray overhead: 1 actor steady = {rates[1][1] / local:.2f}x local; scaling: 2 actors = '
          f'{rates[2][1] / rates[1][1]:.2f}x 1 actor (steady), {rates[2][0] / rates[1][0]:.2f}x (from the start)')
    if not args.skip_serve:
        burst = serve_burst(args.clients)
        print(f'serve, {args.clients} concurrent clients, default limits: {burst["ok"]:.0f} answered 200, '
              f'{burst["refused"]:.0f} 429, {burst["other"]:.0f} other; latency p50 {burst["p50"]:.0f} ms, p95 '
              f'{burst["p95"]:.0f} ms, max {burst["max"]:.0f} ms')
    print(f'load average {os.getloadavg()[0]:.1f} at the end')


if __name__ == '__main__':
    main()
