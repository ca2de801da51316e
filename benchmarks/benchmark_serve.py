"""Throughput and latency of ``timm-fer serve``'s ``POST /v1/predict``, with micro-batching on and off.

Starts the server in this process on 127.0.0.1 (an ephemeral port; nothing leaves the machine), then sends
``--requests`` requests of one photo with one face (the shipped sample portrait, or its aligned face crop with
``--aligned``) from 1, 4 and 16 concurrent clients, each level stopped after ``--max-seconds``. Micro-batching on
is the server's default (32 faces, 5 ms wait); off is ``max_batch=1``. Prints requests/s, p50 and p95 latency, and
the throughput relative to one client with batching off (one request at a time).

    python benchmarks/benchmark_serve.py --requests 64
    python benchmarks/benchmark_serve.py --aligned --backend torch --threads 2
"""
import argparse
import io
import statistics
import threading
import time
from typing import Dict, List

import httpx
import uvicorn

from timm_fer.faces import read_image
from timm_fer.inference.classifier import load_classifier
from timm_fer.inference.predict import SAMPLE_IMAGE
from timm_fer.serve import ServeLimits, create_app
from timm_fer.utils.runtime import cpu_capability, cpu_flags

FACE_BOX = (66, 56, 159, 177)
"""Where the sample portrait's face is: its crop is the aligned input of ``--aligned``."""


def photo(aligned: bool) -> bytes:
    image = read_image(SAMPLE_IMAGE)
    if aligned:
        image = image.crop(FACE_BOX)
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=90)
    return buffer.getvalue()


class Server:
    """A uvicorn server on a thread, on 127.0.0.1 with a free port."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=0, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError('the server did not start in 30 s')
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f'http://127.0.0.1:{port}'

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def load(url: str, body: bytes, clients: int, requests: int, max_seconds: float) -> Dict[str, float]:
    """Send ``requests`` requests from ``clients`` threads (stopping after ``max_seconds``): rate and latencies."""
    latencies: List[float] = []
    failures: List[str] = []
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < deadline:
                with lock:
                    if not remaining[0]:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                answer = session.post(f'{url}/v1/predict', files={'file': ('portrait.jpg', body, 'image/jpeg')})
                elapsed = time.perf_counter() - start
                with lock:
                    if answer.status_code == 200 and len(answer.json()['images'][0]['faces']) == 1:
                        latencies.append(elapsed)
                    else:
                        failures.append(f'{answer.status_code}: {answer.text[:200]}')

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f'{len(failures)} requests failed, first {failures[0]}')
    ordered = sorted(latencies)
    return dict(done=len(ordered), rate=len(ordered) / wall, p50=statistics.median(ordered) * 1000,
                p95=ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--requests', type=int, default=64, help='requests per level (default: 64)')
    parser.add_argument('--max-seconds', type=float, default=60., help='time limit per level (default: 60)')
    parser.add_argument('--clients', type=int, nargs='+', default=[1, 4, 16])
    parser.add_argument('--aligned', action='store_true', help='send the face crop, detect nothing')
    parser.add_argument('--model', default=None)
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--max-wait-ms', type=float, nargs='+', default=[5.],
                        help='batching on: the longest wait for other requests\' faces, one row set per value '
                             '(default: 5, the server\'s)')
    args = parser.parse_args()

    classifier = load_classifier(model=args.model, backend=args.backend, threads=args.threads)
    body = photo(args.aligned)
    print(f'CPU: {cpu_capability()} ({", ".join(cpu_flags()) or "no AVX flags"}); model {classifier.model_name}, '
          f'backend {classifier.backend}, {classifier.threads} threads; '
          f'{"aligned face crop" if args.aligned else "photo with one face, RetinaFace"}; '
          f'{args.requests} requests per level')
    print(f'{"batching":<22} {"clients":>7} {"done":>5} {"req/s":>7} {"p50 ms":>7} {"p95 ms":>7} '
          f'{"x one-at-a-time":>15}')
    baseline = None
    limits = ServeLimits(max_in_flight=max(args.clients))
    settings = [('off (max_batch=1)', 1, 0.)] + [(f'on (32 faces, {wait:g} ms)', 32, wait) for wait in args.max_wait_ms]
    for name, max_batch, max_wait_ms in settings:
        app = create_app(classifier, aligned=args.aligned, limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms)
        with Server(app) as url:
            load(url, body, 1, 2, args.max_seconds)  # warm-up
            for clients in args.clients:
                result = load(url, body, clients, args.requests, args.max_seconds)
                baseline = baseline or result['rate']
                print(f'{name:<22} {clients:>7} {result["done"]:>5} {result["rate"]:>7.1f} {result["p50"]:>7.1f} '
                      f'{result["p95"]:>7.1f} {result["rate"] / baseline:>15.2f}')


if __name__ == '__main__':
    main()
