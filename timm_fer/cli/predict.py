"""``timm-fer predict``: detect, align and classify the faces in photos, videos and live sources."""
import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

from ..constants import (
    ANNOTATED_FORMATS,
    DEFAULT_FPS,
    DEFAULT_MIN_TRACK,
    DEFAULT_SMOOTHING,
    DEFAULT_STALL_TIMEOUT,
    OUTPUT_SUFFIXES,
)
from ..errors import ConfigError
from . import COMMANDS
from .common import (
    add_backend_arguments,
    add_command,
    add_overwrite_argument,
    add_runtime_arguments,
    add_weights_arguments,
    label_names_of,
)

if TYPE_CHECKING:
    from ..faces import FaceDetector
    from ..inference.classifier import FaceClassifier
    from ..inference.stream import StreamFrame
    from ..utils.outputs import OutputPlan

__all__ = ['add_predict_parser']


def _predict(args: argparse.Namespace) -> int:
    from ..faces import RetinaFaceDetector
    from ..faces.io import find_media
    from ..inference.classifier import ClassifierOptions, load_classifier
    from ..faces.video_io import is_live_source
    from ..inference.predict import check_top_k, format_table, predict, write_report

    live = [source for source in args.images if is_live_source(source)]
    if live or args.camera is not None:
        return _predict_live(args, live + ([f'camera:{args.camera}'] if args.camera is not None else []))
    if args.engine == 'ray':
        return _predict_ray(args)
    if args.resume or args.ray_address is not None or args.ray_actors is not None:
        raise ConfigError('--resume, --ray-address and --ray-actors apply to --engine ray; add it, or leave them out.')
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f'--output must end in .json or .csv, got {args.output}.')
    _check_options(args)
    if args.duration is not None or args.reconnect:
        print('note: --duration and --reconnect apply to live sources (camera:N, URLs, -), not to files')
    images, videos, problems = find_media([str(i) for i in args.images])
    photos = bool(images) or not videos
    outputs = _plan_outputs(args, images, videos, photos)
    detector = None
    if not args.aligned:
        detector = RetinaFaceDetector(score_threshold=args.face_threshold, threads=args.threads)
    classifier = load_classifier(ClassifierOptions(  # once for the photos and the videos of the run
        model=args.model, checkpoint=args.checkpoint, random_weights=args.random_weights, device=args.device,
        amp=args.amp, channels_last=args.channels_last, compile_model=args.compile, backend=args.backend,
        int8=args.int8, threads=args.threads, explain=photos and args.save_viz is not None, tta_flip=args.tta_flip,
        label_names=label_names_of(args), use_ema=args.ema))
    check_top_k(args.top_k, classifier.labels)  # before any input is read
    faces = 0
    if photos:
        report = predict(
            images if videos else args.images, classifier, aligned=args.aligned, detector=detector,
            batch_size=args.batch_size, min_face_size=args.min_face_size, save_viz=args.save_viz,
            save_crops=args.save_crops, save_annotated=args.save_annotated, annotated_format=args.annotated_format,
            outputs=outputs)
        print(format_table(report, top_k=args.top_k))
        if args.output is not None:
            print(f'wrote {write_report(report, args.output)}')
        for folder, count, what in ((args.save_viz, len(report.faces), 'explanation picture'),
                                    (args.save_crops, len(report.faces), 'aligned face'),
                                    (args.save_annotated, len(report.annotated), 'annotated image')):
            _say_written(folder, count, what)
        faces += len(report.faces)
    if videos:
        faces += _predict_videos(args, classifier, videos, problems, detector, mixed=bool(images), outputs=outputs)
    elif args.timeline is not None:
        print('no video among the inputs: --timeline wrote nothing')
    return 0 if faces else 1


def _plan_outputs(args: argparse.Namespace, images: List[Path], videos: List[Path], photos: bool) -> 'OutputPlan':
    """Reserve every file the run writes, before any work: a name that is an input, or a file already there
    (without --overwrite), is refused here, before anything is loaded or written."""
    from ..inference.predict import SAMPLE_IMAGE, plan_photo_outputs
    from ..inference.video import plan_video_outputs
    from ..utils.outputs import OutputPlan

    plan = OutputPlan([*images, *videos, args.checkpoint], overwrite=args.overwrite)
    if args.output is not None:
        plan.file(args.output, '--output')
        if images and videos:
            plan.file(_video_rows(args.output), '--output')
    if photos:
        plan_photo_outputs(plan, images if args.images else [SAMPLE_IMAGE], args.save_viz, args.save_crops,
                           args.save_annotated, args.annotated_format)
    plan_video_outputs(plan, videos, args.timeline, args.save_annotated)
    return plan


def _video_rows(output: Path) -> Path:
    """Where a run over photos and videos writes the videos' rows: ``--output`` with ``_video`` after its stem."""
    return output.with_name(f'{output.stem}_video{output.suffix}')


def _predict_ray(args: argparse.Namespace) -> int:
    """The run on a Ray cluster: every option checked, then rows to --output by a pool of actors; 1 when no face
    was found."""
    from ..inference.classifier import ClassifierOptions
    from ..inference.predict import predict
    from ..inference.ray_batch import predict_on_ray, require_ray
    from ..inference.video import predict_video
    from ..utils.options import check_options

    require_ray()
    given = [flag for flag, value in (('--save-viz', args.save_viz), ('--save-crops', args.save_crops),
                                      ('--save-annotated', args.save_annotated), ('--timeline', args.timeline),
                                      ('--top-k', args.top_k), ('--duration', args.duration))
             if value is not None] + (['--reconnect'] if args.reconnect else [])
    if given:
        raise ConfigError(f'{", ".join(given)} apply to the local run, not to --engine ray (it writes rows only); '
                          f'leave them out, or run without --engine ray.')
    if args.output is None:
        raise ConfigError('--engine ray writes its rows to --output: give rows.parquet, rows.csv, rows.jsonl or a '
                          'folder for Parquet parts.')
    check_options(predict, batch_size=args.batch_size, min_face_size=args.min_face_size)
    check_options(predict_video, fps=args.fps, min_track=args.min_track)
    check_options(predict_on_ray, actors=args.ray_actors)
    summary = predict_on_ray(
        args.images, args.output, resume=args.resume, overwrite=args.overwrite, address=args.ray_address,
        actors=args.ray_actors, classifier_options=ClassifierOptions(
            model=args.model, checkpoint=args.checkpoint, random_weights=args.random_weights, device=args.device,
            amp=args.amp, channels_last=args.channels_last, compile_model=args.compile, backend=args.backend,
            int8=args.int8, threads=args.threads, tta_flip=args.tta_flip, label_names=label_names_of(args),
            use_ema=args.ema),
        aligned=args.aligned, face_threshold=args.face_threshold, min_face_size=args.min_face_size,
        batch_size=args.batch_size, fps=None if args.every_frame else args.fps or DEFAULT_FPS,
        min_track=args.min_track)
    print(summary)
    return 0 if summary.faces or summary.new_inputs < summary.inputs else 1


def _check_options(args: argparse.Namespace) -> None:
    """The output locations, checked before anything is loaded or written (the numeric options' ranges are checked
    before the command runs: :data:`~timm_fer.cli.ranges.OPTION_RANGES`)."""
    from ..utils.options import check_output_path

    if args.output is not None:
        check_output_path(args.output, '--output')
    for flag, folder in (('--save-viz', args.save_viz), ('--save-crops', args.save_crops),
                         ('--save-annotated', args.save_annotated), ('--timeline', args.timeline)):
        if folder is not None:
            check_output_path(folder, flag, folder=True)


def _predict_videos(args: argparse.Namespace, classifier: 'FaceClassifier', videos: List[Path],
                    problems: List[Tuple[str, str]], detector: Optional['FaceDetector'], mixed: bool,
                    outputs: 'OutputPlan') -> int:
    """The video part of the run: tables, outputs and pictures; the number of rows (faces over frames) found."""
    from ..inference.predict import SkippedInput
    from ..inference.video import format_video_table, predict_video, write_video_report

    report = predict_video(
        videos, classifier, aligned=args.aligned, detector=detector,
        fps=None if args.every_frame else args.fps or DEFAULT_FPS, batch_size=args.batch_size,
        min_face_size=args.min_face_size, timeline=args.timeline, save_annotated=args.save_annotated,
        smoothing=args.smoothing, min_track=args.min_track, outputs=outputs)
    report.skipped[:0] = [SkippedInput(item, reason) for item, reason in problems]
    if mixed:
        print()
    print(format_video_table(report, top_k=args.top_k))
    if args.output is not None:
        path = _video_rows(args.output) if mixed else args.output
        print(f'wrote {write_video_report(report, path)} ({len(report.faces)} rows: a face in a sampled frame each)')
    elif report.faces:
        print(f'{len(report.faces)} rows (frame, time, track, box, probabilities): write them with --output '
              f'results.csv or results.json')
    _say_written(args.timeline, sum(1 for v in report.videos if v.timeline), 'timeline picture')
    _say_written(args.save_annotated, sum(1 for v in report.videos if v.annotated), 'annotated video')
    if args.save_viz is not None or args.save_crops is not None:
        print('note: --save-viz and --save-crops apply to photos; none were written for the videos')
    return len(report.faces)


def _predict_live(args: argparse.Namespace, sources: List[str]) -> int:
    """A live source's run (a camera, a network stream, standard input) until it ends, --duration or Ctrl-C: rows
    written as they come, then the summary; 1 when the source dropped out for good, else 0."""
    from ..faces import RetinaFaceDetector
    from ..inference.classifier import ClassifierOptions, load_classifier
    from ..inference.stream import plan_live_outputs, predict_stream
    from ..inference.video import format_video_table
    from ..utils.outputs import OutputPlan

    if len(sources) != 1 or len(args.images) + (args.camera is not None) != 1:
        given = args.images + ([f'--camera {args.camera}'] if args.camera is not None else [])
        raise ConfigError(f'a live source runs alone, got {", ".join(given)}: give one camera, URL or - per run, '
                          f'and files in a run of their own.')
    _check_options(args)
    outputs = OutputPlan([args.checkpoint], overwrite=args.overwrite)
    plan_live_outputs(outputs, sources[0], args.output, args.timeline)
    ignored = [flag for flag, value in (('--save-viz', args.save_viz), ('--save-crops', args.save_crops),
                                        ('--save-annotated', args.save_annotated), ('--top-k', args.top_k))
               if value is not None]
    if ignored:
        print(f'note: {", ".join(ignored)} apply to photos and videos; a live source writes rows and a timeline')
    detector = None if args.aligned else RetinaFaceDetector(score_threshold=args.face_threshold, threads=args.threads)
    classifier = load_classifier(ClassifierOptions(
        model=args.model, checkpoint=args.checkpoint, random_weights=args.random_weights, device=args.device,
        amp=args.amp, channels_last=args.channels_last, compile_model=args.compile, backend=args.backend,
        int8=args.int8, threads=args.threads, tta_flip=args.tta_flip, label_names=label_names_of(args),
        use_ema=args.ema))
    status = _LiveStatus(sys.stderr.isatty())
    report = predict_stream(
        sources[0], classifier, output=args.output, timeline=args.timeline,
        fps=None if args.every_frame else args.fps or DEFAULT_FPS, duration=args.duration, reconnect=args.reconnect,
        aligned=args.aligned, detector=detector, min_face_size=args.min_face_size, smoothing=args.smoothing,
        min_track=args.min_track, stall_timeout=args.stall_timeout, on_frame=status, outputs=outputs)
    status.finish()
    print(format_video_table(report))
    (summary,) = report.videos
    print(f'{summary.frames_dropped} frame{"s" if summary.frames_dropped != 1 else ""} dropped of '
          f'{summary.frames_sampled + summary.frames_dropped} sampled'
          + (': the model was slower than the source' if summary.frames_dropped else ''))
    if args.output is not None:
        print(f'wrote {args.output} ({status.rows} rows as they came: a face in a sampled frame each)')
    _say_written(args.timeline, 1 if summary.timeline else 0, 'timeline picture')
    return 1 if summary.problem else 0


class _LiveStatus:
    """Counts a live run's rows and, on a terminal, keeps one line on standard error up to date with the latest
    frame's faces."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.rows = 0
        self.dropped = 0
        self.shown = False

    def __call__(self, frame: 'StreamFrame') -> None:
        self.rows += len(frame.faces)
        self.dropped += frame.dropped
        if self.show:
            tops = [(face.track, frame.smoothed_expression(face.track)) for face in frame.faces]
            faces = ', '.join(f'#{track} {top} {frame.smoothed[track][top]:.2f}' for track, top in tops)
            line = f'{frame.time:8.1f} s  {faces or "no face"}  ({self.dropped} dropped)'
            print(f'\r{line[:119]:<119}', end='', file=sys.stderr, flush=True)
            self.shown = True

    def finish(self) -> None:
        """End the status line."""
        if self.shown:
            print(file=sys.stderr)


def _say_written(folder: Optional[Path], count: int, what: str) -> None:
    if folder is not None and count:
        print(f'wrote {count} {what}{"s" if count > 1 else ""} to {folder}')


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer predict``: a table of expressions per face, optionally JSON/CSV and pictures."""
    parser = add_command(
        subparsers, 'predict', _predict, COMMANDS['predict'].help,
        examples=('timm-fer predict photo.jpg photos/ "shots/**/*.png" --output results.csv',
                  'timm-fer predict --save-viz viz/   (the shipped sample portrait and FERPlus weights)',
                  'timm-fer predict photo.jpg --checkpoint runs/ferplus-transfer_fer_ir50/best.pth',
                  'timm-fer predict crops/ --aligned --model transfer_fer_ir50.ferplus --checkpoint ferplus.pth',
                  'timm-fer predict clip.mp4 --fps 10 --output rows.csv --timeline timelines/ --save-annotated '
                  'annotated/',
                  'timm-fer predict --camera 0 --duration 60 --output rows.jsonl --timeline timelines/',
                  'timm-fer predict rtsp://camera.local/stream --reconnect --output rows.csv',
                  'ffmpeg -i in.mp4 -f mpegts - | timm-fer predict - --output rows.csv'))
    parser.add_argument('images', nargs='*',
                        help='image or video files, folders or glob patterns (default: a sample portrait); photos '
                             'above 64 megapixels (8192x8192) are skipped, unread. Or one live source: camera:N, a '
                             'URL (rtsp, rtmp, http(s), udp, tcp, srt) or - (standard input, e.g. MPEG-TS from '
                             'ffmpeg)')
    add_weights_arguments(parser)
    parser.add_argument('--aligned', action='store_true',
                        help='images are aligned face crops: resize only, no face detection')
    parser.add_argument('--output', type=Path,
                        help='write the results to a .json or .csv file (a live source: .csv or .jsonl, a row per '
                             'face and frame written as it comes)')
    parser.add_argument('--save-viz', type=Path, metavar='DIR',
                        help='write one picture per face, DIR/STEM_faceN.viz.png: aligned face, LANet map, '
                             'transformer relevance')
    parser.add_argument('--save-annotated', type=Path, metavar='DIR',
                        help="write each image as DIR/STEM.annotated.EXT (and each video as STEM.annotated.mp4) with "
                             "every face's box, top expression and confidence (and track id) drawn on it")
    parser.add_argument('--annotated-format', choices=ANNOTATED_FORMATS, default='same',
                        help="format of the annotated photos: same as the input's (JPEG stays JPEG, at quality 90; "
                             'PNG for inputs neither JPEG nor WebP), png or jpeg (default: same)')
    parser.add_argument('--save-crops', type=Path, metavar='DIR',
                        help='write the aligned faces the model classified, DIR/STEM_faceN.crop.png')
    add_overwrite_argument(parser)
    parser.add_argument('--top-k', type=int, metavar='N',
                        help='show the N most probable expressions of each face instead of every probability')
    parser.add_argument('--batch-size', type=int, default=32, help='faces per forward pass (default: 32)')
    parser.add_argument('--tta-flip', action='store_true',
                        help="average each face's probabilities with its mirror image's: steadier on faces unlike the "
                             'training data, at twice the classifier cost (see the docs for the measured trade-off)')
    parser.add_argument('--min-face-size', type=float, default=32.,
                        help='skip faces whose box is smaller than this many pixels (default: 32)')
    parser.add_argument('--face-threshold', type=float, default=0.9,
                        help='smallest face detector confidence, 0-1 (default: 0.9)')
    parser.add_argument('--device', help='torch device (default: cuda when available, else cpu)')
    video = parser.add_argument_group('videos')
    sampling = video.add_mutually_exclusive_group()
    sampling.add_argument('--fps', type=float, metavar='N',
                          help=f'frames sampled per second of video (default: {DEFAULT_FPS:g})')
    sampling.add_argument('--every-frame', action='store_true', help='classify every frame of the videos')
    video.add_argument('--timeline', type=Path, metavar='DIR',
                       help="write one PNG per video, DIR/STEM.timeline.png: each face track's expression "
                            'probabilities over time')
    video.add_argument('--smoothing', type=float, default=DEFAULT_SMOOTHING, metavar='SECONDS',
                       help='window of the centred moving average of the timeline, and for a live source of the '
                            "trailing one of its rows' smoothed_ columns (default: "
                            f'{DEFAULT_SMOOTHING:g} s; 0: none)')
    video.add_argument('--min-track', type=float, default=DEFAULT_MIN_TRACK, metavar='SECONDS',
                       help='drop face tracks seen for less than this (and single detections): false faces, such as '
                            'a patterned shirt, rarely last more than a frame or two; the video line counts them '
                            f'(default: {DEFAULT_MIN_TRACK:g} s, 3 frames at 5 frames/s; 0: keep every track)')
    live = parser.add_argument_group('live sources')
    live.add_argument('--camera', type=int, metavar='N',
                      help='read the camera /dev/videoN (Linux, V4L2) in real time, as the source camera:N does')
    live.add_argument('--duration', type=float, metavar='SECONDS',
                      help='stop a live source after this many seconds (default: until it ends, or Ctrl-C)')
    live.add_argument('--reconnect', action='store_true',
                      help='reopen a camera or stream that broke off, stalled or ended (waits from 1 s, doubling up '
                           'to 30 s), rather than stop')
    live.add_argument('--stall-timeout', type=float, default=DEFAULT_STALL_TIMEOUT, metavar='SECONDS',
                      help='a live source that takes longer to open, or gives no frame for this long, has stalled '
                           f'(default: {DEFAULT_STALL_TIMEOUT:g} s)')
    add_runtime_arguments(parser)
    add_backend_arguments(parser)
    scale = parser.add_argument_group('at scale (Ray)')
    scale.add_argument('--engine', choices=('local', 'ray'), default='local',
                       help='local: this process (default); ray: a pool of Ray actors, each loading the model once, '
                            'writing rows to --output (.parquet, .csv, .jsonl, or a folder of Parquet parts); needs '
                            'pip install "timm-fer[ray]"')
    scale.add_argument('--ray-address', metavar='ADDRESS',
                       help='the Ray cluster to run on (ray start --head prints it; default: a local one with this '
                            "machine's cores)")
    scale.add_argument('--ray-actors', type=int, metavar='N',
                       help='actors of --engine ray, one CPU each (default: one per CPU of the cluster)')
    scale.add_argument('--resume', action='store_true',
                       help='with --engine ray: add the rows of the inputs not in --output yet')
