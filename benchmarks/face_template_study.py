"""Where the five landmarks of FER2013 faces lie: the template that photos are aligned to for models trained on them.

FER2013 (and so FERPlus) faces are 48x48 grayscale crops of a face detector's boxes, framed differently from the
ArcFace template that ``timm-fer predict`` aligns photos to by default. This runs the project's own detector
(:class:`~timm_fer.faces.RetinaFaceDetector`, as ``predict`` does) on a random sample of FERPlus training faces,
upsampled (bicubic) and padded so RetinaFace sees a face of a photo's size, keeps one confident face per image,
maps its landmarks back to 48x48 pixel-index coordinates and prints their per-point mean, median and spread, and
how far the faces are from the median template before and after a similarity alignment. It writes nothing; the
median is :data:`timm_fer.faces.template.FER2013_TEMPLATE_48`.

With ``--evaluate FERPLUS_ROOT`` it then checks the templates on labelled faces: every FERPlus validation face whose
landmarks are found is aligned from its upsampled image to the model's input size with each template, and the
model's accuracy (majority-vote labels) on those crops is printed next to its accuracy on the original crops.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/face_template_study.py \
        path/to/ferplus/FER2013Train --limit 5000 --evaluate path/to/ferplus
"""
import argparse
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from timm_fer.data import create_fer_dataset
from timm_fer.data.transforms import create_fer_transform
from timm_fer.faces import (
    FACE_TEMPLATES,
    RetinaFaceDetector,
    align_face,
    apply_similarity,
    estimate_similarity,
    face_template,
)
from timm_fer.hub import load_model, resolve_fer_data_config

SIZE = 48
POINTS = ('left eye', 'right eye', 'nose', 'left mouth', 'right mouth')


def upsampled(file: Path, scale: int, pad: int) -> Image.Image:
    """The face of ``file`` at 48x48, upsampled ``scale`` times (bicubic) on a mid-grey canvas ``pad`` px wider."""
    face = Image.open(file).convert('L')
    if face.size != (SIZE, SIZE):
        face = face.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    canvas = Image.new('L', (SIZE * scale + 2 * pad,) * 2, 128)
    canvas.paste(face.resize((SIZE * scale,) * 2, Image.Resampling.BICUBIC), (pad, pad))
    return canvas.convert('RGB')


def find_landmarks(detector: RetinaFaceDetector, image: Image.Image, scale: int, pad: int) -> Optional[np.ndarray]:
    """Landmarks of the most confident face of an :func:`upsampled` image whose box centre lies on the face image."""
    inside = [d for d in detector(image) if pad <= (d.box[0] + d.box[2]) / 2 < pad + SIZE * scale
              and pad <= (d.box[1] + d.box[3]) / 2 < pad + SIZE * scale]
    return max(inside, key=lambda d: d.score).landmarks if inside else None


def detect_landmarks(files: List[Path], scale: int, pad: int, min_score: float) -> Tuple[np.ndarray, int]:
    """Landmarks (N, 5, 2) in 48x48 pixel-index coordinates of the faces detected, and how many images had none."""
    detector = RetinaFaceDetector(score_threshold=min_score, max_side=SIZE * scale + 2 * pad)
    found, missed = [], 0
    for file in files:
        landmarks = find_landmarks(detector, upsampled(file, scale, pad), scale, pad)
        if landmarks is None:
            missed += 1
        else:  # Pillow's resize maps pixel centres: index i of the upsampled image is (i + 0.5) / scale - 0.5 here
            found.append((landmarks - pad + 0.5) / scale - 0.5)
    return np.array(found), missed


def evaluate(root: Path, model_name: Optional[str], checkpoint: Optional[str], scale: int, pad: int,
             min_score: float) -> List[str]:
    """Accuracy of the model on FERPlus validation faces as cropped, and re-aligned to each template."""
    model, weights = load_model(model_name, checkpoint)
    config = resolve_fer_data_config(model)
    size, transform = tuple(config['input_size'][1:]), create_fer_transform(config)
    data = create_fer_dataset('ferplus', str(root), 'valid')
    detector = RetinaFaceDetector(score_threshold=min_score, max_side=SIZE * scale + 2 * pad)
    inputs: Dict[str, List[torch.Tensor]] = {'as cropped': [], **{name: [] for name in FACE_TEMPLATES}}
    targets = []
    for path, target in zip(data.paths, data.targets):
        image = upsampled(Path(path), scale, pad)
        landmarks = find_landmarks(detector, image, scale, pad)
        if landmarks is None:
            continue
        targets.append(target)
        inputs['as cropped'].append(transform(Image.open(path).convert('RGB')))
        for name in FACE_TEMPLATES:
            inputs[name].append(transform(align_face(image, landmarks, size, template=face_template(size, name))))
    lines = [f'{weights} (its template: {config["face_template"]}): {len(targets)} of {len(data.paths)} FERPlus '
             f'validation faces with landmarks']
    with torch.inference_mode():
        for name, faces in inputs.items():
            logits = torch.cat([model(torch.stack(faces[i:i + 256])) for i in range(0, len(faces), 256)])
            accuracy = (logits.argmax(dim=1) == torch.tensor(targets)).float().mean().item()
            lines.append(f'  {name if name == "as cropped" else f"aligned to {name}":<20} accuracy {accuracy:.2%}')
    return lines


def table(title: str, rows: np.ndarray, header: str = '    x      y') -> List[str]:
    """Lines of a five-row table of (x, y) pairs."""
    return [f'{title}:', f'  {"":<12}{header}'] + [f'  {name:<12}{x:6.2f} {y:6.2f}' for name, (x, y) in
                                                   zip(POINTS, rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', type=Path, help='folder of 48x48 FER2013 / FERPlus face images (the training set)')
    parser.add_argument('--limit', type=int, default=5000, help='faces sampled (default: 5000)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the sample (default: 0)')
    parser.add_argument('--scale', type=int, default=4, help='upsampling factor before detection (default: 4)')
    parser.add_argument('--pad', type=int, default=48, help='grey border in upsampled pixels (default: 48)')
    parser.add_argument('--min-score', type=float, default=0.9, help='smallest detector confidence (default: 0.9)')
    parser.add_argument('--evaluate', type=Path, default=None, help='FERPlus root: check the templates on its '
                                                                    'validation faces')
    parser.add_argument('--model', default=None, help='model of --evaluate (default: transfer_fer_compact.ferplus)')
    parser.add_argument('--checkpoint', default=None, help='checkpoint of --evaluate')
    args = parser.parse_args()

    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in ('.png', '.jpg'))
    random.Random(args.seed).shuffle(files)
    files = files[:args.limit]
    start = time.perf_counter()
    landmarks, missed = detect_landmarks(files, args.scale, args.pad, args.min_score)
    print(f'{len(files)} faces of {args.folder} (seed {args.seed}), upsampled x{args.scale} (bicubic), padded '
          f'{args.pad} px; detector score >= {args.min_score}: {len(landmarks)} detected, {missed} without a face '
          f'({time.perf_counter() - start:.0f} s)')
    median = np.median(landmarks, axis=0)
    lines = table('mean (48x48 pixel-index coordinates)', landmarks.mean(axis=0))
    lines += table('median, the template', median)
    spread = np.stack([landmarks.std(axis=0), 1.4826 * np.median(np.abs(landmarks - median), axis=0)], axis=1)
    lines += ['spread (px):', f'  {"":<12}  std x  std y   MAD x  MAD y (scaled to a std)']
    lines += [f'  {name:<12}{s[0]:6.2f} {s[1]:6.2f}  {m[0]:6.2f} {m[1]:6.2f}' for name, s, m in
              zip(POINTS, spread[:, 0], spread[:, 1])]
    mirrored = median[[1, 0, 2, 4, 3]] * [-1, 1] + [SIZE - 1, 0]
    lines += table('left-right asymmetry: median minus its mirror image', median - mirrored, header='   dx     dy')
    lines += table('ArcFace template at 48x48, for comparison', face_template((SIZE, SIZE)))

    eyes = landmarks[:, 1] - landmarks[:, 0]
    distance, roll = np.hypot(*eyes.T), np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    quartiles = np.percentile(distance, [25, 50, 75])
    lines.append(f'eye distance: median {quartiles[1]:.2f} px (quartiles {quartiles[0]:.2f}, {quartiles[2]:.2f}); '
                 f'ArcFace {np.hypot(*np.diff(face_template((SIZE, SIZE))[:2], axis=0)[0]):.2f} px')
    lines.append(f'roll: median {np.median(roll):+.2f} deg, std {roll.std():.2f} deg')
    before = np.linalg.norm(landmarks - median, axis=2).mean(axis=1)
    after = np.array([np.linalg.norm(apply_similarity(estimate_similarity(p, median), p) - median, axis=1).mean()
                      for p in landmarks])
    lines.append(f'mean landmark distance to the median template: {np.median(before):.2f} px as cropped (median over '
                 f'faces; 90th percentile {np.percentile(before, 90):.2f}), {np.median(after):.2f} px after a '
                 f'similarity alignment (90th percentile {np.percentile(after, 90):.2f})')
    lines.append('FER2013_TEMPLATE_48 = np.array([' + ', '.join(f'[{x:.3f}, {y:.3f}]' for x, y in median) + '])')
    print('\n'.join(lines))
    if args.evaluate is not None:
        print('\n'.join(evaluate(args.evaluate, args.model, args.checkpoint, args.scale, args.pad, args.min_score)))


if __name__ == '__main__':
    main()
