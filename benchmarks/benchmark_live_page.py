"""Live mode of ``timm-fer serve`` as a user sees it: frames/s and capture-to-box latency, measured by the page.

Headless Chromium (the system's chromium and chromedriver, driven by Selenium) opens the page of a server started
here on a loopback port; its fake camera plays the shipped portrait (a smiling face) centred on a 640x480 frame at
30 frames/s. Live mode sends each camera frame as JPEG over the WebSocket, at most two in flight, and draws the
boxes it gets back. After a warm-up, for ``--seconds``, the page's own measurements are read: frames drawn per
second, and the median and 95th percentile of the time from a frame's capture to its box drawn on the video
(``performance.now()`` in the page), with the server's part of it (``server_ms`` of its answers). The target on a
2-core CPU with one face: at least 15 frames/s and at most 150 ms median. With ``--screenshots DIR``, the two
pictures of the README are written there: live mode (serve-live.png) and a chosen photo with its table
(serve-photo.png).

    python benchmarks/benchmark_live_page.py --seconds 20 --screenshots docs/images
"""
import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))  # the browser harness the tests use
from live_page import (CHROMIUM, browser_missing, choose_photo, chromium, serving, start_live,  # noqa: E402
                       write_fake_camera)

from timm_fer.inference.classifier import load_classifier  # noqa: E402
from timm_fer.inference.predict import SAMPLE_IMAGE  # noqa: E402
from timm_fer.serve.app import create_app  # noqa: E402
from timm_fer.utils.runtime import cpu_capability, cpu_flags  # noqa: E402


def save_small_png(png: bytes, path: Path, colors: int = 128) -> Path:
    """A screenshot as a palette PNG (what keeps README pictures small)."""
    Image.open(io.BytesIO(png)).convert('RGB').quantize(colors).save(path, optimize=True)
    return path


def measure(driver, warmup: float, seconds: float) -> dict:
    """Frames drawn per second and capture-to-box latencies (ms) over ``seconds`` after ``warmup``, as the page
    measured them."""
    read = 'return window.timmFerLive.measurements()'
    time.sleep(warmup)
    before = driver.execute_script(read)
    time.sleep(seconds)
    after = driver.execute_script(read)
    start = len(before['drawnTimes'])
    latencies = after['latencies'][start:]
    server = after['serverMs'][start:]
    drawn = after['drawnTimes'][start:]
    span = (after['now'] - before['now']) / 1000
    ranked = sorted(latencies)
    return {'frames': len(drawn), 'seconds': span, 'fps': len(drawn) / span,
            'median_ms': statistics.median(latencies) if latencies else float('nan'),
            'p95_ms': ranked[min(len(ranked) - 1, int(0.95 * len(ranked)))] if ranked else float('nan'),
            'server_median_ms': statistics.median(server) if server else float('nan'),
            'skipped': after['skipped'] - before['skipped']}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=20., help='measured time after the warm-up')
    parser.add_argument('--warmup', type=float, default=5., help='seconds of live mode before measuring')
    parser.add_argument('--model', default=None, help='model name with optional tag; default the shipped one')
    parser.add_argument('--backend', default='auto', choices=('auto', 'torch', 'onnxruntime'))
    parser.add_argument('--threads', type=int, default=None, help="the model's intra-op threads")
    parser.add_argument('--screenshots', type=Path, default=None,
                        help='folder for serve-live.png and serve-photo.png (the README pictures)')
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(missing)

    classifier = load_classifier(model=args.model, backend=args.backend, threads=args.threads)
    version = subprocess.run([str(CHROMIUM), '--version'], capture_output=True, text=True).stdout.strip()
    flags = cpu_flags()
    print(f'cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch kernels '
          f'{cpu_capability()}, {", ".join(flags) or "no bf16 instructions"}; browser: {version}')
    print(f'model: {classifier.model_name}, backend {args.backend}; camera: 640x480 at 30 frames/s, one face')
    with tempfile.TemporaryDirectory() as folder, serving(create_app(classifier)) as url:
        clip = write_fake_camera(Path(folder) / 'portrait.y4m')
        with chromium(clip, width=1280, height=1400) as driver:
            from selenium.webdriver.common.by import By

            driver.get(url)
            labels = start_live(driver)
            print(f'first box drawn: {labels}')
            result = measure(driver, args.warmup, args.seconds)
            print(f"live: {result['fps']:.1f} processed frames/s ({result['frames']} frames in "
                  f"{result['seconds']:.1f} s, {result['skipped']} skipped by the server), capture to drawn box: "
                  f"median {result['median_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms (the server's part, decode to "
                  f"answer: median {result['server_median_ms']:.0f} ms)")
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                live = save_small_png(driver.find_element(By.ID, 'live').screenshot_as_png,
                                      args.screenshots / 'serve-live.png')
                driver.find_element(By.ID, 'live-toggle').click()
                choose_photo(driver, SAMPLE_IMAGE)
                photo = save_small_png(driver.find_element(By.ID, 'photos').screenshot_as_png,
                                       args.screenshots / 'serve-photo.png')
                for path in (live, photo):
                    print(f'screenshot: {path} ({path.stat().st_size // 1024} KB)')


if __name__ == '__main__':
    main()
