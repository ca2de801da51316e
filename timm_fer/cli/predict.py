"""``timm-fer predict``: detect, align and classify the faces in photos."""
import argparse
from pathlib import Path

from ..errors import ConfigError
from ..hub import DEFAULT_MODEL
from ..inference.predict import OUTPUT_SUFFIXES, format_table, predict, write_report
from .common import add_runtime_arguments, run_command

__all__ = ['add_predict_parser', 'run']


def _predict(args: argparse.Namespace) -> int:
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f'--output must end in .json or .csv, got {args.output}.')
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f'--top-k must be at least 1, got {args.top_k}.')
    detector = None
    if not args.aligned:
        from ..faces import RetinaFaceDetector
        detector = RetinaFaceDetector(score_threshold=args.face_threshold)
    report = predict(
        args.images, model=args.model, checkpoint=args.checkpoint, random_weights=args.random_weights,
        aligned=args.aligned, detector=detector, batch_size=args.batch_size, min_face_size=args.min_face_size,
        device=args.device, save_viz=args.save_viz, save_crops=args.save_crops, save_annotated=args.save_annotated,
        amp=args.amp, channels_last=args.channels_last, compile_model=args.compile)
    print(format_table(report, top_k=args.top_k))
    if args.output is not None:
        print(f'wrote {write_report(report, args.output)}')
    for folder, count, what in ((args.save_viz, len(report.faces), 'explanation picture'),
                                (args.save_crops, len(report.faces), 'aligned face'),
                                (args.save_annotated, len(report.annotated), 'annotated image')):
        if folder is not None and count:
            print(f'wrote {count} {what}{"s" if count > 1 else ""} to {folder}')
    return 0 if report.faces else 1


def run(args: argparse.Namespace) -> int:
    """Entry of the ``predict`` sub-command: a table of expressions per face, optionally JSON/CSV and pictures."""
    return run_command(_predict, args, 'timm-fer predict')


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer predict``."""
    parser = subparsers.add_parser(
        'predict', help='detect, align and classify the faces in photos',
        description='Examples:\n  timm-fer predict photo.jpg photos/ "shots/**/*.png" --output results.csv\n'
                    '  timm-fer predict --save-viz viz/   (the shipped sample portrait and FERPlus weights)\n'
                    '  timm-fer predict photo.jpg --checkpoint runs/ferplus-transfer_fer_ir50/best.pth\n'
                    '  timm-fer predict crops/ --aligned --model transfer_fer_ir50.ferplus --checkpoint ferplus.pth',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('images', nargs='*', help='image files, folders or glob patterns (default: a sample portrait)')
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
                        help="write each image with every face's box, top expression and confidence drawn on it")
    parser.add_argument('--save-crops', type=Path, metavar='DIR', help='write the aligned faces the model classified')
    parser.add_argument('--top-k', type=int, metavar='N',
                        help='show the N most probable expressions of each face instead of every probability')
    parser.add_argument('--batch-size', type=int, default=32, help='faces per forward pass (default: 32)')
    parser.add_argument('--min-face-size', type=float, default=32.,
                        help='skip faces whose box is smaller than this many pixels (default: 32)')
    parser.add_argument('--face-threshold', type=float, default=0.9,
                        help='smallest face detector confidence (default: 0.9)')
    parser.add_argument('--device', help='torch device (default: cuda when available, else cpu)')
    add_runtime_arguments(parser)
    parser.set_defaults(func=run)
