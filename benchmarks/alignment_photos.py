"""What the face template changes on real photos: ``predict`` with faces aligned to ArcFace's template, then FER2013's.

Runs :func:`timm_fer.inference.predict.predict` twice on the same photos with the same model, once aligned to each
template (by setting the model's ``face_template``), and prints per face the expression and confidence of both, plus
the FER2013 template run's probability of the ArcFace run's expression. Writes, outside the repository, what the
model saw: each run's crops and one side-by-side picture per face (ArcFace's crop left, FER2013's right, x4).

The photos of the README's table: the package's sample portrait, and the real photos shipped in
scikit-image's wheel (``camera.png``) and insightface's source archive (``t1.jpg``, six faces; ``Tom_Hanks_54745.png``):

    pip download --no-deps scikit-image==0.26.0 insightface==0.7.3 -d align/pkgs
    (unzip -j the wheel's skimage/data/camera.png; untar insightface/data/images/{t1.jpg,Tom_Hanks_54745.png})
    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/alignment_photos.py timm_fer/assets/astronaut.png \
        align/photos --model transfer_fer_compact.ferplus --out align/crops

With other weights: ``--checkpoint runs/ferplus-transfer_fer_compact/best.pth`` (and ``--model`` when the checkpoint
does not name its model).
"""
import argparse
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image, ImageDraw
from torch import nn

from timm_fer.hub import load_model, resolve_fer_data_config
from timm_fer.inference.predict import SAMPLE_IMAGE, FacePrediction, predict

TEMPLATES = ('arcface', 'fer2013')
ZOOM = 4


def run(photos: List[str], model: nn.Module,
        out: Path) -> Tuple[Dict[str, Dict[Tuple[str, int], FacePrediction]], List[str]]:
    """Per template, the predictions by (file, face) with ``model`` aligned to it, and the inputs skipped."""
    results: Dict[str, Dict[Tuple[str, int], FacePrediction]] = {}
    for template in TEMPLATES:
        model.face_template = template
        report = predict(photos, model=model, device='cpu', backend='torch', amp='none', save_crops=out / template)
        results[template] = {(f.file, f.face): f for f in report.faces}
    return results, [f'{s.file}: {s.reason}' for s in report.skipped]


def side_by_side(before: FacePrediction, after: FacePrediction) -> Image.Image:
    """The two crops, enlarged ``ZOOM`` times, with each run's expression under them."""
    crops = [Image.open(p.crop).convert('RGB') for p in (before, after)]
    width, height = crops[0].width * ZOOM, crops[0].height * ZOOM
    canvas = Image.new('RGB', (2 * width + 8, height + 28), 'white')
    draw = ImageDraw.Draw(canvas)
    for i, (template, crop, prediction) in enumerate(zip(TEMPLATES, crops, (before, after))):
        canvas.paste(crop.resize((width, height), Image.Resampling.NEAREST), (i * (width + 8), 0))
        confidence = prediction.probabilities[prediction.expression]
        draw.text((i * (width + 8) + 2, height + 2), f'{template}: {prediction.expression} {confidence:.2f}',
                  fill='black')
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('photos', nargs='*', help='photos or folders (default: the sample portrait)')
    parser.add_argument('--model', default=None, help='model name and tag (default: the checkpoint\'s, else '
                                                      'transfer_fer_compact.ferplus)')
    parser.add_argument('--checkpoint', default=None, help='checkpoint file or Hub model folder')
    parser.add_argument('--out', type=Path, default=Path('alignment_photos'),
                        help='folder for the crops and side-by-side pictures (keep it outside the repository)')
    args = parser.parse_args()

    model, weights = load_model(args.model, args.checkpoint)
    print(f'weights: {weights}; the model\'s own template: {resolve_fer_data_config(model)["face_template"]}')
    results, skipped = run(args.photos or [str(SAMPLE_IMAGE)], model, args.out)
    before, after = (results[t] for t in TEMPLATES)
    pictures = args.out / 'side_by_side'
    pictures.mkdir(parents=True, exist_ok=True)
    print(f'{"file":<24} {"face":>4}  {"ArcFace template":<20} {"FER2013 template":<20} p(ArcFace top) with FER2013')
    changed = 0
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key], after[key]
        changed += a.expression != b.expression
        print(f'{Path(key[0]).name:<24} {key[1]:>4}  {a.expression + f" {a.probabilities[a.expression]:.2f}":<20} '
              f'{b.expression + f" {b.probabilities[b.expression]:.2f}":<20} {b.probabilities[a.expression]:.2f}'
              f'{"  (changed)" if a.expression != b.expression else ""}')
        side_by_side(a, b).save(pictures / f'{Path(key[0]).stem}_face{key[1]}.png')
    print(f'{len(before.keys() & after.keys())} faces, {changed} with another top expression; pictures in {pictures}')
    for line in skipped:
        print(f'skipped {line}')


if __name__ == '__main__':
    main()
