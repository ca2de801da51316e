"""``timm-fer predict``: detect, align and classify the faces in photos and videos."""
import argparse
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

from ..constants import (
    ANNOTATED_FORMATS,
    DEFAULT_FPS,
    DEFAULT_MIN_TRACK,
    DEFAULT_MODEL,
    DEFAULT_SMOOTHING,
    OUTPUT_SUFFIXES,
)
from ..errors import ConfigError
from . import COMMANDS
from .common import add_backend_arguments, add_command, add_runtime_arguments

if TYPE_CHECKING:
    from ..faces import FaceDetector
    from ..inference.classifier import FaceClassifier

__all__ = ['add_predict_parser']


def _predict(args: argparse.Namespace) -> int:
    from ..faces import RetinaFaceDetector
    from ..faces.io import find_media
    from ..inference.classifier import ClassifierOptions, load_classifier
    from ..inference.predict import format_table, predict, write_report

    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f'--output must end in .json or .csv, got {args.output}.')
    _check_options(args)
    detector = None
    if not args.aligned:
        detector = RetinaFaceDetector(score_threshold=args.face_threshold)
    images, videos, problems = find_media([str(i) for i in args.images])
    photos = bool(images) or not videos
    classifier = load_classifier(ClassifierOptions(  # once for the photos and the videos of the run
        model=args.model, checkpoint=args.checkpoint, random_weights=args.random_weights, device=args.device,
        amp=args.amp, channels_last=args.channels_last, compile_model=args.compile, backend=args.backend,
        int8=args.int8, threads=args.threads, explain=photos and args.save_viz is not None, tta_flip=args.tta_flip))
    faces = 0
    if photos:
        report = predict(
            images if videos else args.images, classifier, aligned=args.aligned, detector=detector,
            batch_size=args.batch_size, min_face_size=args.min_face_size, save_viz=args.save_viz,
            save_crops=args.save_crops, save_annotated=args.save_annotated, annotated_format=args.annotated_format)
        print(format_table(report, top_k=args.top_k))
        if args.output is not None:
            print(f'wrote {write_report(report, args.output)}')
        for folder, count, what in ((args.save_viz, len(report.faces), 'explanation picture'),
                                    (args.save_crops, len(report.faces), 'aligned face'),
                                    (args.save_annotated, len(report.annotated), 'annotated image')):
            _say_written(folder, count, what)
        faces += len(report.faces)
    if videos:
        faces += _predict_videos(args, classifier, videos, problems, detector, mixed=bool(images))
    elif args.timeline is not None:
        print('no video among the inputs: --timeline wrote nothing')
    return 0 if faces else 1


def _check_options(args: argparse.Namespace) -> None:
    """The ranges of the numeric options and the output locations, checked before anything is loaded or written."""
    from ..faces import RetinaFaceDetector
    from ..inference.predict import format_table, predict
    from ..inference.video import predict_video
    from ..utils.options import check_options, check_output_path

    check_options(predict, batch_size=args.batch_size, min_face_size=args.min_face_size)
    check_options(predict_video, fps=args.fps, smoothing=args.smoothing, min_track=args.min_track)
    check_options(format_table, top_k=args.top_k)
    check_options(RetinaFaceDetector.__init__, score_threshold=args.face_threshold)
    if args.output is not None:
        check_output_path(args.output, '--output')
    for flag, folder in (('--save-viz', args.save_viz), ('--save-crops', args.save_crops),
                         ('--save-annotated', args.save_annotated), ('--timeline', args.timeline)):
        if folder is not None:
            check_output_path(folder, flag, folder=True)


def _predict_videos(args: argparse.Namespace, classifier: 'FaceClassifier', videos: List[Path],
                    problems: List[Tuple[str, str]], detector: Optional['FaceDetector'], mixed: bool) -> int:
    """The video part of the run: tables, outputs and pictures; the number of rows (faces over frames) found."""
    from ..inference.predict import SkippedInput
    from ..inference.video import format_video_table, predict_video, write_video_report

    report = predict_video(
        videos, classifier, aligned=args.aligned, detector=detector,
        fps=None if args.every_frame else args.fps or DEFAULT_FPS, batch_size=args.batch_size,
        min_face_size=args.min_face_size, timeline=args.timeline, save_annotated=args.save_annotated,
        smoothing=args.smoothing, min_track=args.min_track)
    report.skipped[:0] = [SkippedInput(item, reason) for item, reason in problems]
    if mixed:
        print()
    print(format_video_table(report))
    if args.output is not None:
        path = args.output.with_name(f'{args.output.stem}_video{args.output.suffix}') if mixed else args.output
        print(f'wrote {write_video_report(report, path)} ({len(report.faces)} rows: a face in a sampled frame each)')
    elif report.faces:
        print(f'{len(report.faces)} rows (frame, time, track, box, probabilities): write them with --output '
              f'results.csv or results.json')
    _say_written(args.timeline, sum(1 for v in report.videos if v.timeline), 'timeline picture')
    _say_written(args.save_annotated, sum(1 for v in report.videos if v.annotated), 'annotated video')
    if args.save_viz is not None or args.save_crops is not None:
        print('note: --save-viz and --save-crops apply to photos; none were written for the videos')
    return len(report.faces)


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
                  'annotated/'))
    parser.add_argument('images', nargs='*',
                        help='image or video files, folders or glob patterns (default: a sample portrait); photos '
                             'above 64 megapixels (8192x8192) are skipped, unread')
    parser.add_argument('--model', default=None,
                        help='model and tag; the tag sets labels and preprocessing (default: the model a checkpoint '
                             f'names, else {DEFAULT_MODEL})')
    parser.add_argument('--checkpoint', type=Path,
                        help='weights: a timm-fer train checkpoint, a Hub model folder, or a .safetensors/.pth file')
    parser.add_argument('--random-weights', action='store_true',
                        help='when no weights can be loaded, run with random weights (meaningless, demo only)')
    parser.add_argument('--aligned', action='store_true',
                        help='images are aligned face crops: resize only, no face detection')
    parser.add_argument('--output', type=Path, help='write the results to a .json or .csv file')
    parser.add_argument('--save-viz', type=Path, metavar='DIR',
                        help='write one picture per face: aligned face, LANet map, transformer relevance')
    parser.add_argument('--save-annotated', type=Path, metavar='DIR',
                        help="write each image (and each video, as .mp4) with every face's box, top expression and "
                             "confidence (and track id) drawn on it")
    parser.add_argument('--annotated-format', choices=ANNOTATED_FORMATS, default='same',
                        help="format of the annotated photos: same as the input's (JPEG stays JPEG, at quality 90; "
                             'PNG for inputs neither JPEG nor WebP), png or jpeg (default: same)')
    parser.add_argument('--save-crops', type=Path, metavar='DIR', help='write the aligned faces the model classified')
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
                       help="write one PNG per video: each face track's expression probabilities over time")
    video.add_argument('--smoothing', type=float, default=DEFAULT_SMOOTHING, metavar='SECONDS',
                       help='window of the centred moving average of the timeline (default: '
                            f'{DEFAULT_SMOOTHING:g} s; 0: none)')
    video.add_argument('--min-track', type=float, default=DEFAULT_MIN_TRACK, metavar='SECONDS',
                       help='drop face tracks seen for less than this (and single detections): false faces, such as '
                            'a patterned shirt, rarely last more than a frame or two; the video line counts them '
                            f'(default: {DEFAULT_MIN_TRACK:g} s, 3 frames at 5 frames/s; 0: keep every track)')
    add_runtime_arguments(parser)
    add_backend_arguments(parser)
