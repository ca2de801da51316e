"""From photos to expressions: ``timm-fer predict`` and :func:`predict`.

Each image is read robustly (EXIF rotation, any colour mode), its faces are found with five landmarks and aligned
to the model's face template (its data config's 'face_template': FER2013's for ``transfer_fer_compact.ferplus``,
ArcFace's by default) at its input size (or, for already aligned crops, just resized), preprocessed with the
model's own data config, and classified in batches. Inputs that give no prediction (unreadable files, no face,
faces below the minimum size) are reported one by one while the others go on.
"""
import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from ..data.transforms import create_fer_transform
from ..errors import ConfigError, FerError, ImageReadError
from ..faces import (
    DetectedFace,
    FaceDetector,
    RetinaFaceDetector,
    align_face,
    face_template,
    find_images,
    pillow_resample,
    read_image,
)
from ..hub import RANDOM_WEIGHTS, load_model, resolve_fer_data_config
from ..models import tagged_name
from ..utils.runtime import autocast, num_threads, prepare_model, resolve_amp_dtype, resolve_threads, to_input
from .annotate import annotate_image
from .backends import OnnxRuntimeModel, cached_onnx, quantize_linear, resolve_backend
from .visualize import explain, render_explanation

__all__ = ['OUTPUT_SUFFIXES', 'SAMPLE_IMAGE', 'FacePrediction', 'PredictionReport', 'SkippedInput', 'format_table',
           'predict', 'write_report']

SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / 'assets' / 'astronaut.png'
"""Public-domain portrait (NASA astronaut Eileen Collins) used when no image is given."""
OUTPUT_SUFFIXES = ('.json', '.csv')


@dataclass
class FacePrediction:
    """The expression of one face.

    Attributes:
        file: The image it was found in.
        face: Index of the face in that image (left to right).
        box: (x0, y0, x1, y1) in pixels of the upright image; the whole image with ``aligned``.
        detector_score: The detector's confidence; None with ``aligned``.
        expression: The most probable label.
        probabilities: Probability of every label, in the model's label order.
        visualization: Path of the explanation picture, when one was written.
        crop: Path of the aligned face as the model saw it, when crops were saved.
    """
    file: str
    face: int
    box: Tuple[int, int, int, int]
    detector_score: Optional[float]
    expression: str
    probabilities: Dict[str, float]
    visualization: Optional[str] = None
    crop: Optional[str] = None


@dataclass
class SkippedInput:
    """An input, or a face in it, that gave no prediction, and why."""
    file: str
    reason: str


@dataclass
class PredictionReport:
    """Everything :func:`predict` found: predictions per face, skipped inputs, model and weights."""
    model: str
    weights: str
    labels: List[str]
    faces: List[FacePrediction] = field(default_factory=list)
    skipped: List[SkippedInput] = field(default_factory=list)
    annotated: List[str] = field(default_factory=list)

    @property
    def meaningful(self) -> bool:
        """False when the model has random weights."""
        return self.weights != RANDOM_WEIGHTS

    def to_dict(self) -> Dict:
        """A JSON-ready dict."""
        return dict(model=self.model, weights=self.weights, meaningful=self.meaningful, labels=self.labels,
                    faces=[asdict(f) for f in self.faces], skipped=[asdict(s) for s in self.skipped],
                    annotated=self.annotated)


@dataclass
class FaceCrop:
    """An aligned face waiting for its batch."""
    file: Path
    face: int
    box: Tuple[int, int, int, int]
    detector_score: Optional[float]
    image: Image.Image

    def describe(self) -> str:
        """Which face of its input this is, for messages."""
        return f'face {self.face}'


def crop_faces(
        path: Path,
        image: Image.Image,
        detector: Optional[FaceDetector],
        size: Tuple[int, int],
        resample: Image.Resampling,
        min_face_size: float,
        template: np.ndarray,
) -> Tuple[List[FaceCrop], List[SkippedInput]]:
    """Aligned crops of the faces of one image (the image itself when ``detector`` is None), and faces skipped.

    ``template`` holds the five points, in pixels of a ``size`` crop, that each face's landmarks are aligned to.
    """
    if detector is None:
        if min(image.size) < min_face_size:
            return [], [SkippedInput(str(path), f'the aligned crop is {min(image.size)} px, below the minimum face '
                                                f'size {min_face_size:g} px; use a larger crop')]
        face = image.resize((size[1], size[0]), resample)
        return [FaceCrop(path, 0, (0, 0, image.width, image.height), None, face)], []
    detected: List[DetectedFace] = sorted(detector(image), key=lambda f: (f.box[0], f.box[1]))
    if not detected:
        return [], [SkippedInput(str(path), 'no face found; if the image is an aligned face crop, pass --aligned')]
    crops, skipped = [], []
    for index, face in enumerate(detected):
        box = tuple(int(round(v)) for v in face.box)
        if face.size < min_face_size:
            skipped.append(SkippedInput(str(path), f'face {index} at {box} is {face.size:.0f} px, below the minimum '
                                                   f'face size {min_face_size:g} px; use a larger image'))
            continue
        crops.append(FaceCrop(path, index, box, face.score, align_face(image, face.landmarks, size, resample,
                                                                      template)))
    return crops, skipped


class UniqueNames:
    """File names in one folder, ``STEM.png`` then ``STEM_1.png``, ... when two inputs share a stem."""

    def __init__(self, folder: Path, suffix: str = '.png') -> None:
        self.folder = folder
        self.suffix = suffix
        self.counts: Dict[str, int] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, stem: str) -> Path:
        count = self.counts.get(stem, 0)
        self.counts[stem] = count + 1
        return self.folder / (f'{stem}{self.suffix}' if count == 0 else f'{stem}_{count}{self.suffix}')


class FaceClassifier:
    """Classifies batches of aligned faces and, optionally, draws where the model looked."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], labels: List[str], data_config: Dict,
                 device: torch.device, viz_dir: Optional[Path], title_suffix: str,
                 amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
                 crops_dir: Optional[Path] = None, backend: str = 'torch', threads: Optional[int] = None) -> None:
        self.model = model
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.labels = labels
        self.size: Tuple[int, int] = tuple(data_config['input_size'][1:])
        self.resample = pillow_resample(data_config['interpolation'])
        self.template = face_template(self.size, data_config['face_template'])  # where faces' landmarks go
        self.transform = create_fer_transform(data_config)  # grayscale for one-channel models
        self.image_mode = 'L' if data_config['input_size'][0] == 1 else 'RGB'  # of the pictures: what the model saw
        self.mean = torch.tensor(data_config['mean']).view(1, -1, 1, 1)
        self.std = torch.tensor(data_config['std']).view(1, -1, 1, 1)
        self.device = device
        self.viz_names = UniqueNames(viz_dir) if viz_dir is not None else None
        self.crop_names = UniqueNames(crops_dir) if crops_dir is not None else None
        self.title_suffix = title_suffix
        self.backend = backend
        self.threads = threads if threads is not None else torch.get_num_threads()
        # Around an ONNX Runtime session, torch's few ops run on one thread: idle torch threads would spin on the
        # cores the session's threads need.
        self.torch_threads = 1 if backend == 'onnxruntime' else self.threads

    def batch(self, crops: List[FaceCrop]) -> torch.Tensor:
        """The normalised batch of the faces: what the test transform gives, converted in bulk when every face
        already has the model's input size (the transform's resize is then a copy)."""
        if any(c.image.size != (self.size[1], self.size[0]) for c in crops):
            return torch.stack([self.transform(c.image) for c in crops])
        pixels = np.stack([np.asarray(c.image if c.image.mode == self.image_mode else c.image.convert(self.image_mode))
                           for c in crops])
        images = torch.from_numpy(pixels).view(len(crops), *self.size, -1).permute(0, 3, 1, 2).float().div_(255)
        return images.sub_(self.mean).div_(self.std)

    def __call__(self, crops: List[FaceCrop]) -> List[FacePrediction]:
        with num_threads(self.torch_threads):
            images = to_input(self.batch(crops), self.device, self.channels_last)
            if self.viz_names is None:
                with torch.inference_mode(), autocast(self.device, self.amp_dtype):
                    logits = self.model(images)
                maps = None
            else:
                maps = explain(self.model, images)
                logits = maps['logits']
            probabilities = logits.float().softmax(dim=-1).cpu().tolist()  # one conversion, not one per face
        predictions = []
        for i, (crop, probs) in enumerate(zip(crops, probabilities)):
            top = max(range(len(probs)), key=probs.__getitem__)  # the first of equal maxima, as argmax
            expression = self.labels[top]
            prediction = FacePrediction(
                file=str(crop.file), face=crop.face, box=crop.box, detector_score=crop.detector_score,
                expression=expression, probabilities=dict(zip(self.labels, probs)))
            if self.crop_names is not None:
                path = self.crop_names(f'{crop.file.stem}_face{crop.face}')
                crop.image.convert(self.image_mode).save(path)
                prediction.crop = str(path)
            if maps is not None:
                path = self.viz_names(f'{crop.file.stem}_face{crop.face}')
                lanet_map = maps['lanet_map'][i] if maps['lanet_map'] is not None else None
                title = f'{crop.file.name} face {crop.face}: {expression} {probs[top]:.2f}{self.title_suffix}'
                face = crop.image.convert(self.image_mode)
                render_explanation(face, maps['relevance'][i], lanet_map, title).save(path)
                prediction.visualization = str(path)
            predictions.append(prediction)
        return predictions


def load_classifier(
        model: Optional[Union[str, nn.Module]],
        checkpoint: Optional[Union[str, Path]],
        random_weights: bool,
        device: Optional[Union[str, torch.device]],
        amp: str,
        channels_last: bool,
        compile_model: bool,
        viz_dir: Optional[Path] = None,
        crops_dir: Optional[Path] = None,
        backend: str = 'auto',
        int8: bool = False,
        threads: Optional[int] = None,
) -> Tuple[FaceClassifier, str, str]:
    """The classifier of the named (or given) model, the model's name, and where its weights came from.

    The arguments are those of :func:`predict`.
    """
    if isinstance(model, nn.Module):
        fer_model, weights, model_name = model.eval(), 'the given model', type(model).__name__
        device = torch.device(device) if device else next(model.parameters()).device
    else:
        fer_model, weights = load_model(model, checkpoint, random_weights=random_weights)
        cfg = fer_model.pretrained_cfg
        model_name = tagged_name(cfg['architecture'], cfg.get('tag'))
        device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if int8 and device.type != 'cpu':
        raise ConfigError(f'--int8 runs on the CPU, not on {device}.')
    if int8 and viz_dir is not None:
        raise ConfigError('--int8 and --save-viz do not go together: explanations need the fp32 model.')
    amp_dtype = resolve_amp_dtype(amp, device)
    cacheable = not isinstance(model, nn.Module) and weights != RANDOM_WEIGHTS
    backend = resolve_backend(backend, device, amp_dtype, cacheable, eager_only=compile_model or viz_dir is not None)
    threads = resolve_threads(threads, device)
    labels = list(fer_model.pretrained_cfg.get('label_names') or [f'class {i}' for i in range(fer_model.num_classes)])
    data_config = resolve_fer_data_config(fer_model)
    if backend == 'onnxruntime':
        with tempfile.TemporaryDirectory() as folder:  # the session holds the graph: a file not cached can go
            path = cached_onnx(fer_model, model_name, int8, cache_dir=None if cacheable else Path(folder))
            runner, channels_last = OnnxRuntimeModel(path, threads), False
    else:
        if int8:
            fer_model = quantize_linear(fer_model)
        # A model passed in keeps its memory format (channels-last inputs alone select the fast convolutions).
        runner = prepare_model(fer_model, device, channels_last and not isinstance(model, nn.Module), compile_model)
    title_suffix = ' (random weights)' if weights == RANDOM_WEIGHTS else ''
    classify = FaceClassifier(runner, labels, data_config, device, viz_dir, title_suffix, amp_dtype, channels_last,
                              crops_dir, backend, threads)
    return classify, model_name, weights


def predict(
        images: Optional[Union[str, Path, Sequence[Union[str, Path]]]] = None,
        model: Optional[Union[str, nn.Module]] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        random_weights: bool = False,
        aligned: bool = False,
        detector: Optional[FaceDetector] = None,
        batch_size: int = 32,
        min_face_size: float = 32.,
        device: Optional[Union[str, torch.device]] = None,
        save_viz: Optional[Union[str, Path]] = None,
        save_crops: Optional[Union[str, Path]] = None,
        save_annotated: Optional[Union[str, Path]] = None,
        progress: Optional[bool] = None,
        amp: str = 'auto',
        channels_last: bool = True,
        compile_model: bool = False,
        backend: str = 'auto',
        int8: bool = False,
        threads: Optional[int] = None,
) -> PredictionReport:
    """Predict the expression of every face in some images.

    Args:
        images: Image files, folders (searched recursively) or glob patterns, or one of them; None uses the shipped
            sample portrait.
        model: Model name with optional tag, or a model (put in eval mode). Default: the model the checkpoint names,
            else :data:`~timm_fer.hub.DEFAULT_MODEL`.
        checkpoint: Checkpoint file or Hub model folder (:func:`~timm_fer.hub.load_model` reads it).
        random_weights: Go on with random weights when the named model's weights cannot be loaded (demo only).
        aligned: The images already are aligned face crops: resize them, detect nothing.
        detector: Face detector; default :class:`~timm_fer.faces.RetinaFaceDetector` (the ``face`` extra).
        batch_size: Faces per forward pass.
        min_face_size: Faces whose box has a shorter side below this many pixels are reported and skipped.
        device: Where the model runs; default CUDA when available for named models, else the model's device.
        save_viz: Folder for one explanation PNG per face (aligned face, LANet map, relevance map).
        save_crops: Folder for the aligned faces, as the model saw them (before normalisation).
        save_annotated: Folder for each input image with every face's box, top expression and confidence drawn.
        progress: Show a progress bar; None shows it for 20 or more files on a terminal.
        amp: Autocast precision: 'auto' (bf16 where the device runs it fast), 'bf16' or 'none'. Explanation
            pictures are computed in fp32.
        channels_last: Run the model in channels-last memory format.
        compile_model: ``torch.compile`` the model (not with ``save_viz``, whose explanations need the eager model).
        backend: 'auto' (ONNX Runtime for a named model in fp32 on the CPU, else torch), 'torch' or 'onnxruntime'
            (see :mod:`~timm_fer.inference.backends`).
        int8: Run the Linear layers in int8 (dynamic quantisation, CPU): faster, close to but not equal to fp32.
        threads: Intra-op threads; default one per core that no other process keeps busy.
    """
    if batch_size < 1:
        raise ConfigError(f'batch size must be at least 1, got {batch_size}.')
    if compile_model and save_viz is not None:
        raise ConfigError('--compile and --save-viz do not go together: explanations need the eager model.')
    classify, model_name, weights = load_classifier(
        model, checkpoint, random_weights, device, amp, channels_last, compile_model,
        Path(save_viz) if save_viz else None, Path(save_crops) if save_crops else None, backend, int8, threads)
    if not aligned and detector is None:
        detector = RetinaFaceDetector()

    if isinstance(images, (str, Path)):
        images = [images]
    files, problems = find_images([str(i) for i in images] if images else [_shown_path(SAMPLE_IMAGE)])
    report = PredictionReport(model_name, weights, classify.labels,
                              skipped=[SkippedInput(i, r) for i, r in problems])
    if progress is None:
        progress = len(files) >= 20
    pending: List[FaceCrop] = []
    for path in tqdm(files, desc='predict', unit='image', disable=None if progress else True):
        try:
            crops, skipped = crop_faces(path, read_image(path), None if aligned else detector, classify.size,
                                         classify.resample, min_face_size, classify.template)
        except ImageReadError as e:
            crops, skipped = [], [SkippedInput(str(path), e.reason)]
        except Exception as e:  # one bad file never stops the run: report it and go on
            crops, skipped = [], [SkippedInput(str(path), f'face detection or alignment failed ({type(e).__name__}: '
                                                          f'{e}); check the image')]
        report.skipped.extend(skipped)
        pending.extend(crops)
        while len(pending) >= batch_size:
            classify_into(report, classify, pending[:batch_size])
            pending = pending[batch_size:]
    if pending:
        classify_into(report, classify, pending)
    if save_annotated is not None:
        report.annotated = _annotate(report, Path(save_annotated), classify.title_suffix)
    return report


def _shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies inside it (as a user would type it), else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith('..') else relative


def _annotate(report: PredictionReport, folder: Path, suffix: str) -> List[str]:
    """Draw every predicted face on its image (read again, so no image is held during the run); the paths written."""
    names = UniqueNames(folder)
    by_file: Dict[str, List[FacePrediction]] = {}
    for face in report.faces:
        by_file.setdefault(face.file, []).append(face)
    written = []
    for file, faces in by_file.items():
        labels = [(f.box, f'{f.expression} {f.probabilities[f.expression]:.2f}{suffix}') for f in faces]
        path = names(Path(file).stem)
        annotate_image(read_image(Path(file)), labels).save(path)
        written.append(str(path))
    return written


def classify_pairs(classify: FaceClassifier, crops: Sequence[FaceCrop],
                    skipped: List[SkippedInput]) -> List[Tuple[FaceCrop, FacePrediction]]:
    """Classify a batch of faces, each with its prediction; when the batch fails, each face alone, adding those that
    fail to ``skipped``."""
    try:
        return list(zip(crops, classify(list(crops))))
    except FerError:
        raise
    except Exception as e:
        if len(crops) > 1:
            return [pair for crop in crops for pair in classify_pairs(classify, [crop], skipped)]
        skipped.append(SkippedInput(str(crops[0].file), f'{crops[0].describe()} could not be classified '
                                                        f'({type(e).__name__}: {e})'))
        return []


def classify_into(report: PredictionReport, classify: FaceClassifier, crops: List[FaceCrop]) -> None:
    """Classify a batch of faces into ``report``; when the batch fails, each face alone, reporting those that fail."""
    report.faces.extend(prediction for _, prediction in classify_pairs(classify, crops, report.skipped))


def format_table(report: PredictionReport, top_k: Optional[int] = None) -> str:
    """The report as a text table, one row per face, then the skipped inputs.

    Args:
        report: What :func:`predict` found.
        top_k: Show each face's ``top_k`` most probable expressions instead of a column per label.
    """
    if top_k is not None and not 1 <= top_k <= len(report.labels):
        raise ConfigError(f'--top-k must be between 1 and the {len(report.labels)} labels, got {top_k}.')
    lines = [f'model {report.model}, weights: {report.weights}']
    if not report.meaningful:
        lines.append('WARNING: random weights, the expressions below are meaningless.')
    if report.faces:
        file_width = max(len('file'), *(len(f.file) for f in report.faces))
        boxes = [','.join(map(str, f.box)) for f in report.faces]
        box_width = max(len('box x0,y0,x1,y1'), *(len(b) for b in boxes))
        expression_width = max(len(label) for label in report.labels) + 5
        widths = [max(len(label), 5) for label in report.labels]
        columns = f'top {top_k}' if top_k else f'{"expression":<{expression_width}} ' + ' '.join(
            f'{lb:>{w}}' for lb, w in zip(report.labels, widths))
        lines.append(f'{"file":<{file_width}} {"face":>4} {"box x0,y0,x1,y1":<{box_width}} {columns}')
        for face, box in zip(report.faces, boxes):
            if top_k:
                ranked = sorted(face.probabilities.items(), key=lambda item: -item[1])[:top_k]
                values = '  '.join(f'{label} {p:.2f}' for label, p in ranked)
            else:
                top = f'{face.expression} {face.probabilities[face.expression]:.2f}'
                values = f'{top:<{expression_width}} ' + ' '.join(
                    f'{face.probabilities[lb]:>{w}.2f}' for lb, w in zip(report.labels, widths))
            lines.append(f'{face.file:<{file_width}} {face.face:>4} {box:<{box_width}} {values}')
    else:
        lines.append('no face was classified.')
    if report.skipped:
        lines.append(f'skipped ({len(report.skipped)}):')
        lines.extend(f'  {s.file}: {s.reason}' for s in report.skipped)
    return '\n'.join(lines)


def write_rows(path: Union[str, Path], report: Dict, header: List[str], rows: List[List]) -> Path:
    """Write a report as JSON (``.json``: ``report``) or CSV (``.csv``: ``header`` then ``rows``); the path."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f'--output must end in .json or .csv, got {path}.')
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == '.json':
        path.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
        return path
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header] + rows)
    path.write_text(buffer.getvalue(), encoding='utf-8')
    return path


def write_report(report: PredictionReport, path: Union[str, Path]) -> Path:
    """Write the report as JSON (``.json``) or CSV (``.csv``: one row per face, then one per skipped input)."""
    header = (['file', 'face', 'x0', 'y0', 'x1', 'y1', 'detector_score', 'expression'] +
              [f'p_{label}' for label in report.labels] + ['visualization', 'crop', 'skipped', 'weights'])
    rows = [[f.file, f.face, *f.box, '' if f.detector_score is None else f'{f.detector_score:.4f}', f.expression] +
            [f'{f.probabilities[label]:.6f}' for label in report.labels] +
            [f.visualization or '', f.crop or '', '', report.weights] for f in report.faces]
    rows += [[s.file] + [''] * (len(header) - 3) + [s.reason, report.weights] for s in report.skipped]
    return write_rows(path, report.to_dict(), header, rows)
