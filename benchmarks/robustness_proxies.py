"""How a FERPlus model holds up off its own domain: proxies for posed, subtle and differently framed faces.

Three proxies on the FERPlus validation faces (majority vote), and the calibration of the probabilities:

- shift suite: each validation face shifted as other datasets and cameras differ from FERPlus (framing: crop 0.8-1.2
  times the face and offsets of 10 %, the border repeated where a looser crop has no pixels; contrast, gamma, blur,
  JPEG quality 30, noise, down-up sampling), with accuracy and mean class recall per shift and the worst case;
- intensity: faces whose annotators agree on one expression that is not neutral (all ten, or at least eight of
  the votes for emotions), as posed faces look; accuracy, mean class recall and how often they are called neutral;
- non-neutral recall: of the faces whose majority is not neutral, how many the model calls neutral;
- calibration: expected calibration error (15 bins) as the model is, and after the temperature that fits the
  validation faces (what ``timm-fer push --temperature`` folds into the classifier);
- intended expressions (with ``--original-labels``): the same faces scored against FER2013's original labels, the
  expression each face was collected as, beside the FERPlus majority: accuracy and mean class recall under every
  shift, each class's recall, and how often a face meant as an expression is called neutral.

The model is a run checkpoint (``RUN/last.pth``), a Hub model folder, or a tag (``transfer_fer_compact.ferplus``,
the shipped weights); fp32, one view unless ``--tta-flip`` averages each face with its mirror image::

    python benchmarks/robustness_proxies.py transfer_fer_compact.ferplus path/to/ferplus
    python benchmarks/robustness_proxies.py runs/ferplus-transfer_fer_compact/last.pth path/to/ferplus --tta-flip
    python benchmarks/robustness_proxies.py transfer_fer_compact.ferplus path/to/ferplus \
        --original-labels path/to/ferplus/fer2013_original_labels.csv
"""
import argparse
import io
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image

from timm_fer.data import FerPlus, normalize_faces
from timm_fer.engine import (
    ClassificationReport,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
)
from timm_fer.engine.evaluate import describe_intended
from timm_fer.hub import load_model, resolve_fer_data_config

Shift = Callable[[torch.Tensor], torch.Tensor]
"""A function of a float (N, 1, H, W) batch of gray faces in 0..1 to the shifted batch."""


def _affine(faces: torch.Tensor, scale: float = 1., dx: float = 0., dy: float = 0.) -> torch.Tensor:
    """Faces re-cropped: a window ``scale`` times the face, its centre moved by (dx, dy) of the face's size."""
    theta = faces.new_tensor([[scale, 0., 2 * dx], [0., scale, 2 * dy]]).expand(len(faces), 2, 3)
    grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
    return F.grid_sample(faces, grid, mode='bilinear', padding_mode='border', align_corners=False)


def _blur(faces: torch.Tensor, sigma: float) -> torch.Tensor:
    taps = torch.arange(-3, 4, dtype=faces.dtype)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = F.pad(faces, (3, 3, 3, 3), mode='replicate')
    return F.conv2d(F.conv2d(x, kernel.view(1, 1, 1, 7)), kernel.view(1, 1, 7, 1))


def _jpeg(faces: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for face in (faces[:, 0] * 255).round().to(torch.uint8):
        buffer = io.BytesIO()
        Image.fromarray(face.numpy(), 'L').save(buffer, 'JPEG', quality=quality)
        out.append(torch.frombuffer(bytearray(Image.open(buffer).tobytes()), dtype=torch.uint8).view(face.shape))
    return torch.stack(out)[:, None].float() / 255


def _noise(faces: torch.Tensor, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (faces + std * torch.randn(faces.shape, generator=generator)).clamp(0, 1)


def _down_up(faces: torch.Tensor, factor: int) -> torch.Tensor:
    size = faces.shape[-2:]
    small = F.interpolate(faces, size=(size[0] // factor, size[1] // factor), mode='area')
    return F.interpolate(small, size=size, mode='bilinear', align_corners=False)


SHIFTS: Dict[str, Shift] = {
    'none': lambda x: x,
    'crop 0.8 (tighter)': lambda x: _affine(x, 0.8),
    'crop 0.9': lambda x: _affine(x, 0.9),
    'crop 1.1': lambda x: _affine(x, 1.1),
    'crop 1.2 (looser)': lambda x: _affine(x, 1.2),
    'offset left 10 %': lambda x: _affine(x, dx=-0.1),
    'offset right 10 %': lambda x: _affine(x, dx=0.1),
    'offset up 10 %': lambda x: _affine(x, dy=-0.1),
    'offset down 10 %': lambda x: _affine(x, dy=0.1),
    'contrast x0.5': lambda x: ((x - x.mean(dim=(1, 2, 3), keepdim=True)) * 0.5 + x.mean(dim=(1, 2, 3), keepdim=True)),
    'gamma 0.6': lambda x: x.clamp_min(1e-6) ** 0.6,
    'gamma 1.6': lambda x: x.clamp_min(1e-6) ** 1.6,
    'blur sigma 1': lambda x: _blur(x, 1.),
    'JPEG quality 30': lambda x: _jpeg(x, 30),
    'noise std 0.05': lambda x: _noise(x, 0.05),
    'down-up x2 (24 px)': lambda x: _down_up(x, 2),
    'down-up x3 (16 px)': lambda x: _down_up(x, 3),
}
"""The shift suite, each a function of a gray float batch in 0..1."""


def load_faces(root: str, original_labels: Optional[str] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[str], Optional[torch.Tensor]]:
    """The FERPlus validation faces as gray floats in 0..1 (N, 1, 48, 48), majority labels, votes, classes, and the
    original labels (-1 where a face has none) when ``original_labels`` names FER2013's file."""
    valid = FerPlus(root, 'valid', original_labels=original_labels)
    faces = torch.stack([torch.frombuffer(bytearray(valid.load_image(index).convert('L').tobytes()),
                                          dtype=torch.uint8).view(48, 48) for index in range(len(valid))])
    original = torch.tensor(valid.original_targets) if valid.original_targets is not None else None
    return faces[:, None].float() / 255, torch.tensor(valid.targets), valid.soft_targets, list(valid.classes), original


def model_logits(model: torch.nn.Module, faces: torch.Tensor, tta_flip: bool, batch_size: int = 512) -> torch.Tensor:
    """fp32 logits of gray faces in 0..1 with the model's normalisation (and channels); flip TTA averages softmax
    in log space, so the result stays a logit."""
    config = resolve_fer_data_config(model)
    channels = config['input_size'][0]
    out = []
    with torch.inference_mode():
        for begin in range(0, len(faces), batch_size):
            uint8 = (faces[begin:begin + batch_size] * 255).round().to(torch.uint8).expand(-1, channels, -1, -1)
            x = normalize_faces(uint8.contiguous(), config['mean'], config['std'])
            logits = model(x).float()
            if tta_flip:
                logits = torch.stack([logits.log_softmax(1), model(x.flip(-1)).float().log_softmax(1)]).logsumexp(0)
            out.append(logits)
    return torch.cat(out)


def report(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> ClassificationReport:
    """Scores of the faces whose label is a class (faces without an original label, -1, are left out)."""
    keep = labels >= 0
    return ClassificationReport.from_confusion(
        confusion_matrix(labels[keep], logits[keep].argmax(dim=1), len(classes)), classes)


def intensity_rows(logits: torch.Tensor, labels: torch.Tensor, votes: torch.Tensor,
                   classes: Sequence[str]) -> List[Tuple[str, int, ClassificationReport, float]]:
    """(subset, faces, report, share called neutral) for the agreed-expression and non-neutral subsets."""
    neutral = classes.index('neutral')
    share, top = votes.max(dim=1)
    predicted_neutral = logits.argmax(dim=1) == neutral
    subsets = {
        'unanimous, not neutral (10 of 10 votes)': (share >= 1 - 1e-6) & (top != neutral),
        'near-unanimous, not neutral (>= 80 % of votes)': (share >= 0.8 - 1e-6) & (top != neutral),
        'majority not neutral': labels != neutral,
    }
    rows = []
    for name, keep in subsets.items():
        rows.append((name, int(keep.sum()), report(logits[keep], labels[keep], classes),
                     float(predicted_neutral[keep].float().mean())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='run checkpoint, Hub model folder, or a tag such as transfer_fer_compact.ferplus')
    parser.add_argument('root', help='FERPlus folder')
    parser.add_argument('--tta-flip', action='store_true', help='average each face with its mirror image')
    parser.add_argument('--logit-adjustment', type=float, default=0., metavar='TAU',
                        help='subtract TAU x log(FERPlus training prior) from the logits, as push folds it (a negative '
                             'TAU takes a folded adjustment back out)')
    parser.add_argument('--original-labels', default=None, metavar='CSV',
                        help="FER2013's original labels (fer2013_original_labels.csv): score the intended expressions "
                             'too')
    args = parser.parse_args()
    torch.manual_seed(0)
    if os.path.exists(args.model):
        model, source = load_model(checkpoint=args.model)
    else:
        model, source = load_model(args.model)
    model = model.float().eval()
    faces, labels, votes, classes, original = load_faces(args.root, args.original_labels)
    adjustment = torch.zeros(len(classes))
    if args.logit_adjustment:
        counts = torch.tensor(FerPlus(args.root, 'train').class_counts, dtype=torch.float)
        adjustment = args.logit_adjustment * (counts / counts.sum()).log()
    print(f'{source}: {len(labels)} FERPlus validation faces, fp32, {"flip TTA" if args.tta_flip else "one view"}, '
          f'{torch.get_num_threads()} threads, logit adjustment tau {args.logit_adjustment:g}\n')

    intended_header = ' intended accuracy | intended mean class recall |' if original is not None else ''
    print(f'| shift | accuracy | mean class recall | called neutral (majority not neutral) |{intended_header}\n'
          f'|---|---|---|---|{"---|---|" if original is not None else ""}')
    results = {}
    start = time.perf_counter()
    for name, shift in SHIFTS.items():
        logits = model_logits(model, shift(faces).clamp(0, 1), args.tta_flip) - adjustment
        results[name] = logits
        r = report(logits, labels, classes)
        not_neutral = labels != classes.index('neutral')
        called = float((logits.argmax(1)[not_neutral] == classes.index('neutral')).float().mean())
        intended = ''
        if original is not None:
            r_intended = report(logits, original, classes)
            intended = f' {100 * r_intended.accuracy:.2f} | {100 * r_intended.mean_class_accuracy:.2f} |'
        print(f'| {name} | {100 * r.accuracy:.2f} | {100 * r.mean_class_accuracy:.2f} | {100 * called:.1f} |{intended}')
    shifted = {name: report(logits, labels, classes) for name, logits in results.items() if name != 'none'}
    worst_accuracy = min(shifted, key=lambda name: shifted[name].accuracy)
    worst_recall = min(shifted, key=lambda name: shifted[name].mean_class_accuracy)
    mean_accuracy = sum(r.accuracy for r in shifted.values()) / len(shifted)
    mean_recall = sum(r.mean_class_accuracy for r in shifted.values()) / len(shifted)
    intended_means = ''
    if original is not None:
        shifted_intended = [report(logits, original, classes) for name, logits in results.items() if name != 'none']
        intended_means = (f' {100 * sum(r.accuracy for r in shifted_intended) / len(shifted_intended):.2f} | '
                          f'{100 * sum(r.mean_class_accuracy for r in shifted_intended) / len(shifted_intended):.2f} |')
    print(f'| **mean of the {len(shifted)} shifts** | {100 * mean_accuracy:.2f} | {100 * mean_recall:.2f} | |'
          f'{intended_means}')
    print(f'| **worst** | {100 * shifted[worst_accuracy].accuracy:.2f} ({worst_accuracy}) | '
          f'{100 * shifted[worst_recall].mean_class_accuracy:.2f} ({worst_recall}) | |')
    print(f'\n({len(SHIFTS)} passes in {time.perf_counter() - start:.0f} s)\n')

    logits = results['none']
    print('| subset | faces | accuracy | mean class recall | called neutral |\n|---|---|---|---|---|')
    for name, count, r, neutral_rate in intensity_rows(logits, labels, votes, classes):
        print(f'| {name} | {count} | {100 * r.accuracy:.2f} | {100 * r.mean_class_accuracy:.2f} | '
              f'{100 * neutral_rate:.1f} |')
    r = report(logits, labels, classes)
    print('\nper class, no shift: ' + ', '.join(
        f'{name} {100 * recall:.1f}' for name, recall in zip(classes, r.per_class_accuracy)))

    if original is not None:
        print('\n' + describe_intended(report(logits, original, classes)))

    temperature = fit_temperature(logits, labels)
    before = expected_calibration_error(logits.softmax(1), labels)
    after = expected_calibration_error((logits / temperature).softmax(1), labels)
    nll_before = float(F.cross_entropy(logits, labels))
    nll_after = float(F.cross_entropy(logits / temperature, labels))
    print(f'\ncalibration (15 bins): ECE {100 * before:.2f} % (NLL {nll_before:.4f}); temperature {temperature:.4f} '
          f'fitted on these faces: ECE {100 * after:.2f} % (NLL {nll_after:.4f})')


if __name__ == '__main__':
    main()
