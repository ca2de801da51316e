"""timm-fer against the ``fer`` package (mini-Xception, 64x64 grayscale, 7 classes) on the FERPlus validation crops.

Scores a timm-fer model (default: the shipped ``transfer_fer_compact.ferplus``) in this environment, and ``fer``'s
two classifiers in a separate virtual environment through a subprocess: the default ``FER()`` (TFLite, int8
weights) and ``FER(use_tflite=False)`` (the Keras ``emotion_model.hdf5``). Both read the same 3,396 majority-vote
48x48 PNGs of ``FER2013Valid``, each with its own decoding and preprocessing: ours with the project's transform,
``fer`` with its own steps of ``FER.detect_emotions`` for a face box covering the whole crop (grayscale, pad 40
pixels with the mean of the bottom rows, box grown by the 10-pixel offsets, resize to 64x64, scale to [-1, 1]),
fed to ``FER._classify_emotions`` in batches of 64 (the TFLite model still runs one face at a time inside it).
The helper checks that path against ``detect_emotions(img, face_rectangles=[(0, 0, w, h)])`` on the first
``--check-images`` crops: identical 64x64 inputs, the same probabilities (up to the batch size's float round-off)
and the same 2-decimal scores; the table's header line reports the result.

``fer``'s classes map onto FERPlus's (angry -> anger, happy -> happiness, sad -> sadness, the rest by name); it has
no contempt, so its contempt recall is 0 by construction: mean class accuracy is given over the 8 FERPlus classes
and over the 7 both share. Images/s are the best of ``--repeats`` passes after a warm-up batch, model only (on the
preprocessed crops) and end to end (PNG decode, preprocessing, model), both libraries at ``--threads`` (torch
threads; TF intra- and inter-op threads and the TFLite interpreter's threads).

Set-up of the ``fer`` environment (``fer`` is no dependency of timm-fer; it needs ``tensorflow`` proper and
``opencv-contrib-python``; OpenCV 5 has no Haar cascades, so ``FER()`` fails; setuptools 81+ has no
``pkg_resources``, which ``fer`` imports; ``from fer import FER`` fails, ``from fer.fer import FER`` works).
``fer``'s declared dependencies also pull ``facenet-pytorch`` with a CUDA build of torch, ``moviepy``, ``pandas``
and ``matplotlib``, which ``fer.fer`` does not import; installing ``fer`` without them and then what ``fer.fer``
imports gives a 2.4 GB venv instead of more than 8 GB:

    python -m venv venv-fer
    venv-fer/bin/python -m pip install --no-deps fer==25.10.3
    venv-fer/bin/python -m pip install tensorflow "opencv-contrib-python<5" "setuptools<81" requests pillow

The comparison (run from the repository root):

    python benchmarks/compare_fer_package.py path/to/ferplus --json compare_fer_package.json
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from timm_fer.data import FerPlus, create_fer_transform
from timm_fer.hub import DEFAULT_MODEL, load_model, resolve_fer_data_config
from timm_fer.utils.runtime import cpu_capability, cpu_flags

FER_PYTHON = 'venv-fer/bin/python'
FER_TO_FERPLUS = ('anger', 'disgust', 'fear', 'happiness', 'sadness', 'surprise', 'neutral')
"""The FERPlus class of each of ``fer``'s outputs (angry, disgust, fear, happy, sad, surprise, neutral)."""
FER_VARIANTS = {'tflite': 'FER() default: TFLite', 'keras': 'FER(use_tflite=False): Keras .hdf5'}

FER_HELPER = '''
import json
import sys
import time

import numpy as np
import tensorflow as tf

request = json.loads(open(sys.argv[1]).read())
threads, batch_size, repeats, paths = request['threads'], request['batch_size'], request['repeats'], request['paths']
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)

import cv2
import fer
import keras
import pkg_resources
from fer.fer import FER, PADDING
from fer.utils import load_image

cv2.setNumThreads(threads)
interpreter = tf.lite.Interpreter(
    model_path=pkg_resources.resource_filename('fer', 'data/emotion_model_quantized.tflite'), num_threads=threads)
interpreter.allocate_tensors()
FER._tflite_interpreter_cache = interpreter  # what FER() would build, with the threads set


def faces(detector, images):
    """detect_emotions' preprocessing of each whole image, as for the face box (0, 0, width, height)."""
    crops = []
    for image in images:
        gray = FER.pad(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        x1, x2, y1, y2 = detector._FER__apply_offsets(FER.tosquare((0, 0, image.shape[1], image.shape[0])))
        crop = gray[max(0, y1 + PADDING):y2 + PADDING, max(0, x1 + PADDING):x2 + PADDING]
        crops.append(cv2.resize(crop, detector._FER__emotion_target_size))
    return (np.array(crops, dtype='float32') / 255.0 - 0.5) * 2.0


def classify(detector, batch):
    return np.asarray(detector._classify_emotions(batch), dtype='float64')


def check(detector, images):
    """This path against detect_emotions with a face box covering each crop."""
    captured = []
    original = detector._classify_emotions

    def capture(batch):
        out = original(batch)
        captured.append((np.array(batch), np.asarray(out, dtype='float64')))
        return out

    detector._classify_emotions = capture
    scores = [detector.detect_emotions(image, face_rectangles=[(0, 0, image.shape[1], image.shape[0])])[0]['emotions']
              for image in images]
    del detector._classify_emotions
    ours = faces(detector, images)
    probs = classify(detector, ours)
    theirs = np.concatenate([batch for batch, _ in captured])
    their_probs = np.concatenate([out for _, out in captured])
    rounded = np.array([list(s.values()) for s in scores])
    return dict(images=len(images), input_max_abs_diff=float(np.abs(ours - theirs).max()),
                prob_max_abs_diff=float(np.abs(probs - their_probs).max()),
                rounded_scores_equal=int((np.round(probs, 2) == rounded).all(axis=1).sum()),
                top1_equal=int((probs.argmax(1) == their_probs.argmax(1)).sum()))


def run(detector):
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    classify(detector, faces(detector, [load_image(p) for p in batches[0]]))  # warm-up
    end_to_end_s = model_s = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        inputs, probs = [], []
        for batch in batches:
            inputs.append(faces(detector, [load_image(p) for p in batch]))
            probs.append(classify(detector, inputs[-1]))
        end_to_end_s = min(end_to_end_s, time.perf_counter() - start)
        start = time.perf_counter()
        for batch in inputs:
            classify(detector, batch)
        model_s = min(model_s, time.perf_counter() - start)
    return dict(probs=np.concatenate(probs).tolist(), model_s=model_s, end_to_end_s=end_to_end_s,
                check=check(detector, [load_image(p) for p in paths[:request['check_images']]]))


detectors = dict(tflite=FER(), keras=FER(use_tflite=False))
result = dict(versions=dict(fer=fer.__version__, tensorflow=tf.__version__, keras=keras.__version__,
                            opencv=cv2.__version__),
              params=detectors['keras']._FER__emotion_classifier.count_params(),
              variants={name: run(detector) for name, detector in detectors.items()})
open(sys.argv[2], 'w').write(json.dumps(result))
'''
"""Program run by the ``fer`` environment's python: ``-c FER_HELPER request.json result.json``."""


def scores(targets: Sequence[int], predictions: Sequence[int], classes: Sequence[str],
           shared: Sequence[str]) -> Dict[str, Any]:
    """Accuracy, per-class recall and mean class accuracy over all ``classes`` and over the ``shared`` ones."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    recall = {name: float((predictions[targets == i] == i).mean()) if (targets == i).any() else float('nan')
              for i, name in enumerate(classes)}
    return dict(accuracy=float((predictions == targets).mean()), recall=recall,
                mean_class_accuracy_all=float(np.mean(list(recall.values()))),
                mean_class_accuracy_shared=float(np.mean([recall[name] for name in shared])))


def run_ours(dataset: FerPlus, model: torch.nn.Module, batch_size: int, repeats: int) -> Dict[str, Any]:
    """Predictions of ``model`` on ``dataset`` (its transform set) and its best seconds of ``repeats`` passes, end to
    end and model only."""
    batches = [range(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    end_to_end_s = model_s = float('inf')
    with torch.inference_mode():
        model(torch.stack([dataset[i][0] for i in batches[0]]))  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            inputs, predictions = [], []
            for batch in batches:
                inputs.append(torch.stack([dataset[i][0] for i in batch]))
                predictions.append(model(inputs[-1]).argmax(1))
            end_to_end_s = min(end_to_end_s, time.perf_counter() - start)
            start = time.perf_counter()
            for batch in inputs:
                model(batch)
            model_s = min(model_s, time.perf_counter() - start)
    return dict(predictions=torch.cat(predictions).tolist(), model_s=model_s, end_to_end_s=end_to_end_s)


def run_fer(paths: List[str], fer_python: str, threads: int, batch_size: int, repeats: int,
            check_images: int) -> Dict[str, Any]:
    """``FER_HELPER`` in the ``fer`` environment: versions, parameters, and per variant probabilities and times."""
    with tempfile.TemporaryDirectory(prefix='compare_fer_') as tmp:
        request, result = Path(tmp, 'request.json'), Path(tmp, 'result.json')
        request.write_text(json.dumps(dict(paths=paths, threads=threads, batch_size=batch_size, repeats=repeats,
                                           check_images=check_images)))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads),
                   TF_NUM_INTEROP_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL='2')
        done = subprocess.run([fer_python, '-c', FER_HELPER, str(request), str(result)], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f'the fer helper failed in {fer_python} (exit {done.returncode}); set the environment '
                               f'up as this script\'s docstring says. Its stderr ends:\n{done.stderr[-3000:]}')
        return json.loads(result.read_text())


def compare(
        root: str,
        model_name: Optional[str] = None,
        checkpoint: Optional[str] = None,
        fer_python: str = FER_PYTHON,
        threads: int = 1,
        batch_size: int = 64,
        repeats: int = 3,
        limit: Optional[int] = None,
        check_images: int = 20,
) -> Dict[str, Any]:
    """Score a timm-fer model and ``fer``'s two classifiers on the FERPlus validation crops.

    Args:
        root: FERPlus folder (with ``FER2013Valid/``).
        model_name: timm-fer model with tag; default: the checkpoint's, else ``DEFAULT_MODEL``.
        checkpoint: A run checkpoint or Hub model folder instead of the tag's shipped or published weights.
        fer_python: Python of the environment with ``fer`` installed.
        threads: Threads of torch and of TensorFlow/TFLite.
        batch_size: Faces per batch.
        repeats: Timed passes over the faces; the fastest counts.
        limit: Score only the first ``limit`` faces (a quick try); default: all.
        check_images: Crops on which ``fer``'s path here is checked against ``detect_emotions``.

    Returns:
        The CPU, versions, the check of ``fer``'s path, and one row of scores and speeds per model.
    """
    torch.set_num_threads(threads)
    dataset = FerPlus(root, 'valid')
    model, source = load_model(model_name, checkpoint, num_classes=len(dataset.classes))
    dataset.transform = create_fer_transform(resolve_fer_data_config(model))
    labels = tuple(model.pretrained_cfg.get('label_names') or dataset.classes)
    if labels != tuple(dataset.classes):
        raise ValueError(f'the model\'s classes {labels} are not FERPlus\'s {dataset.classes} in that order.')
    if limit is not None:
        dataset.paths, dataset.targets = dataset.paths[:limit], dataset.targets[:limit]
    shared = [name for name in dataset.classes if name in FER_TO_FERPLUS]
    n = len(dataset)
    ours = run_ours(dataset, model, batch_size, repeats)
    rows = [dict(model=f'timm-fer {source}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params',
                 classes=len(dataset.classes), threads=threads, model_images_per_s=n / ours['model_s'],
                 end_to_end_images_per_s=n / ours['end_to_end_s'],
                 **scores(dataset.targets, ours['predictions'], dataset.classes, shared))]
    fer = run_fer(dataset.paths, fer_python, threads, batch_size, repeats, check_images)
    to_ours = np.array([dataset.classes.index(name) for name in FER_TO_FERPLUS])
    for name, variant in fer['variants'].items():
        predictions = to_ours[np.asarray(variant['probs']).argmax(1)]
        rows.append(dict(model=f'fer {fer["versions"]["fer"]} mini-Xception, {FER_VARIANTS[name]}, '
                               f'{fer["params"] / 1e3:.0f}k params',
                         classes=len(FER_TO_FERPLUS), threads=threads, model_images_per_s=n / variant['model_s'],
                         end_to_end_images_per_s=n / variant['end_to_end_s'],
                         **scores(dataset.targets, predictions, dataset.classes, shared)))
    return dict(cpu_flags=cpu_flags(), cpu_capability=cpu_capability(), cores=os.cpu_count(),
                load_average=os.getloadavg(), images=n, torch=torch.__version__, fer_versions=fer['versions'],
                fer_check={name: variant['check'] for name, variant in fer['variants'].items()}, rows=rows)


def format_table(results: Dict[str, Any]) -> str:
    """The markdown report of :func:`compare`: a header line, the check of ``fer``'s path, and the table."""
    versions = ', '.join(f'{k} {v}' for k, v in results['fer_versions'].items())
    load = ', '.join(f'{x:.1f}' for x in results['load_average'])
    lines = [f'CPU flags {", ".join(results["cpu_flags"]) or "none"}; torch {results["torch"]} cpu capability '
             f'{results["cpu_capability"]}; {results["cores"]} cores, load average {load}; {versions}; '
             f'{results["images"]} FERPlus valid faces', '']
    for name, check in results['fer_check'].items():
        lines.append(f'fer {name} path vs detect_emotions(img, face_rectangles=[(0, 0, w, h)]) on {check["images"]} '
                     f'crops: inputs max |diff| {check["input_max_abs_diff"]:.3g}, probabilities max |diff| '
                     f'{check["prob_max_abs_diff"]:.3g}, 2-decimal scores equal {check["rounded_scores_equal"]}/'
                     f'{check["images"]}, top-1 equal {check["top1_equal"]}/{check["images"]}')
    lines += ['', '| model | classes | accuracy | mean class acc. (8) | mean class acc. (7 shared) | per-class '
                  'recall | images/s model only | images/s end to end | threads |', '|---' * 9 + '|']
    for row in results['rows']:
        recall = ', '.join(f'{name[:3]} {100 * value:.1f}' for name, value in row['recall'].items())
        lines.append(f'| {row["model"]} | {row["classes"]} | {100 * row["accuracy"]:.2f} | '
                     f'{100 * row["mean_class_accuracy_all"]:.2f} | {100 * row["mean_class_accuracy_shared"]:.2f} | '
                     f'{recall} | {row["model_images_per_s"]:.0f} | {row["end_to_end_images_per_s"]:.0f} | '
                     f'{row["threads"]} |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', help='FERPlus folder (with FER2013Valid/)')
    parser.add_argument('--model', default=None, help=f'timm-fer model with tag (default: {DEFAULT_MODEL})')
    parser.add_argument('--checkpoint', default=None, help='run checkpoint or Hub model folder')
    parser.add_argument('--fer-python', default=FER_PYTHON, help=f'python with fer installed (default: {FER_PYTHON})')
    parser.add_argument('--threads', type=int, default=1, help='threads of both libraries (default: 1)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--repeats', type=int, default=3, help='timed passes, the fastest counts (default: 3)')
    parser.add_argument('--limit', type=int, default=None, help='score only the first N faces (default: all)')
    parser.add_argument('--check-images', type=int, default=20,
                        help="crops on which fer's path is checked against detect_emotions (default: 20)")
    parser.add_argument('--json', type=Path, default=None, help='write the numbers to this JSON file')
    args = parser.parse_args()
    results = compare(args.root, args.model, args.checkpoint, args.fer_python, args.threads, args.batch_size,
                      args.repeats, args.limit, args.check_images)
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
