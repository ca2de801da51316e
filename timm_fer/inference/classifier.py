"""The classifier core that photos and videos share: load a model once, crop and align faces, classify them in
batches.

:func:`load_classifier` turns :class:`ClassifierOptions` (which model, which weights, where and how it runs) into a
:class:`FaceClassifier`; :func:`~timm_fer.inference.predict.predict` and
:func:`~timm_fer.inference.video.predict_video` take one, so a run over photos and videos loads its model once.
"""
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.transforms import create_fer_transform
from ..errors import ConfigError, FerError, NonFiniteOutputError
from ..faces import DetectedFace, FaceDetector, RetinaFaceDetector, align_face, face_template, pillow_resample
from ..hub import RANDOM_WEIGHTS, load_model, resolve_fer_data_config
from ..hub.loading import check_finite_outputs
from ..models import tagged_name
from ..utils.options import Range, check_fields
from ..utils.outputs import FaceNames
from ..utils.runtime import (
    AMP_CHOICES,
    autocast,
    num_threads,
    parse_device,
    prepare_model,
    resolve_amp_dtype,
    resolve_threads,
    to_input,
)
from .backends import (
    BACKENDS,
    OnnxRuntimeModel,
    cache_dir_problem,
    cached_onnx,
    note,
    onnx_cache_dir,
    quantize_linear,
    resolve_backend,
)
from .report import SkippedInput, UniqueNames
from .visualize import explain, render_explanation

__all__ = ['ALIGNED_ASPECT_RANGE', 'ALIGNED_MAX_SIDE', 'ClassifierOptions', 'FaceClassifier', 'FaceCrop',
           'FacePrediction', 'aligned_input_warning', 'classify_pairs', 'crop_faces', 'face_detector',
           'load_classifier', 'resolve_classifier', 'unlike_a_face_crop']

ALIGNED_ASPECT_RANGE = (1 / 1.5, 1.2)
"""Aspect ratios, relative to the model's input, of images that may be aligned face crops. Faces are taller than
wide, so a face box cut out of a photo is up to 1.5 times taller than a square crop (a 93x121 box: 1.3); photos and
video frames are mostly wider (4:3 is 1.33 times a square, 16:9 1.78)."""
ALIGNED_MAX_SIDE = 1024
"""An image given as an aligned face crop whose shorter side exceeds this looks like no face crop either: aligned face
sets come at 1024 px (FFHQ) or less, photos larger."""


@dataclass(frozen=True)
class ClassifierOptions:
    """Which model a prediction run classifies faces with, and how it runs: the options photos and videos share.

    Attributes:
        model: Model name with optional tag, or a model (put in eval mode). Default: the model the checkpoint names,
            else :data:`~timm_fer.hub.DEFAULT_MODEL`.
        checkpoint: Checkpoint file or Hub model folder (:func:`~timm_fer.hub.load_model` reads it).
        random_weights: Go on with random weights when the named model's weights cannot be loaded (demo only).
        device: Where the model runs; default CUDA when available for named models, else the model's device.
        amp: Autocast precision: 'auto' (bf16 where the device runs it fast), 'bf16' or 'none'. Explanation
            pictures are computed in fp32. 'auto' means fp32 with ``backend='onnxruntime'``, which runs in fp32.
        channels_last: Run the model in channels-last memory format.
        compile_model: ``torch.compile`` the model (not with ``explain``, whose explanations need the eager model).
        backend: 'auto' (ONNX Runtime for a named model in fp32 on the CPU, else torch), 'torch' or 'onnxruntime'
            (see :mod:`~timm_fer.inference.backends`).
        int8: Run the Linear layers in int8 (dynamic quantisation, CPU): faster, close to but not equal to fp32.
            The other layers then run in fp32: 'auto' ``amp`` means no autocast with it (torch's int8 layers take
            fp32 inputs), and 'bf16' is refused.
        threads: Intra-op threads (1-4096); default one per core that no other process keeps busy.
        explain: Keep the eager fp32 model, so that explanation pictures (``save_viz``) can be drawn.
        tta_flip: Average each face's probabilities with those of its mirror image (one forward pass of twice the
            faces); explanation pictures show the face as given.
        label_names: The class names of the model's outputs, over those its checkpoint or tag carries.
        use_ema: Load the weight average (EMA) the checkpoint holds (timm ``train.py``'s ``state_dict_ema``).
    """
    model: Optional[Union[str, nn.Module]] = None
    checkpoint: Optional[Union[str, Path]] = None
    random_weights: bool = False
    device: Optional[Union[str, torch.device]] = None
    amp: str = 'auto'
    channels_last: bool = True
    compile_model: bool = False
    backend: str = 'auto'
    int8: bool = False
    threads: Optional[int] = field(default=None, metadata={'range': Range(1, 4096, integer=True, optional=True)})
    explain: bool = False
    tta_flip: bool = False
    label_names: Optional[Sequence[str]] = None
    use_ema: bool = False

    def __post_init__(self) -> None:
        """Check the numeric options (:func:`~timm_fer.utils.options.check_fields`) and the choices."""
        check_fields(self)
        if self.amp not in AMP_CHOICES:
            raise ConfigError(f"--amp is one of {', '.join(AMP_CHOICES)}, got {self.amp!r}.")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend is one of {', '.join(BACKENDS)}, got {self.backend!r}.")


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


def face_detector(aligned: bool, detector: Optional[FaceDetector]) -> Optional[FaceDetector]:
    """The detector of a run: none for aligned crops, else ``detector`` or, by default, RetinaFace."""
    if aligned:
        return None
    return detector if detector is not None else RetinaFaceDetector()


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


def unlike_a_face_crop(file: str, image_size: Tuple[int, int], crop_size: Tuple[int, int]) -> Optional[str]:
    """Why an image given as an aligned face crop (``--aligned``) looks like none, for a warning; None when it may
    be one.

    Args:
        file: The image or video, for the message.
        image_size: Its (width, height).
        crop_size: The model's input (height, width).
    """
    (width, height), crop_aspect = image_size, crop_size[1] / crop_size[0]
    if not ALIGNED_ASPECT_RANGE[0] <= width / height / crop_aspect <= ALIGNED_ASPECT_RANGE[1]:
        return f'{file} ({width}x{height}: aspect {width / height:.2f}, face crops {crop_aspect:.2f})'
    if min(width, height) > ALIGNED_MAX_SIDE:
        return f'{file} ({width}x{height}: larger than aligned faces come, {ALIGNED_MAX_SIDE} px at most)'
    return None


def aligned_input_warning(unlike: Sequence[str], limit: int = 5) -> str:
    """The warning for the inputs that :func:`unlike_a_face_crop` found (``limit`` of them named)."""
    named = '; '.join(unlike[:limit]) + (f'; and {len(unlike) - limit} more' if len(unlike) > limit else '')
    return (f'--aligned takes each image as an aligned face crop, but {len(unlike)} look like none: {named}. Each was '
            f'classified whole, as one face; drop --aligned to find the faces in them.')


class FaceClassifier:
    """Classifies batches of aligned faces and, optionally, draws where the model looked.

    Attributes:
        model_name: The model's name with its tag (its class name for a model passed in).
        weights: Where its weights came from.
        description: What the model is for, from its pretrained cfg ('' when it has none).
        labels: The label names, in the model's order.
        size: (height, width) of the model's input faces.
        can_explain: Whether it runs the eager fp32 model that explanation pictures need.
        tta_flip: Whether each face's probabilities are averaged with those of its mirror image.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], labels: List[str], data_config: Dict[str, Any],
                 device: torch.device, model_name: str, weights: str, amp_dtype: Optional[torch.dtype] = None,
                 channels_last: bool = False, backend: str = 'torch', threads: Optional[int] = None,
                 can_explain: bool = True, tta_flip: bool = False, description: str = '') -> None:
        self.model = model
        self.description = description
        self.tta_flip = tta_flip
        self.model_name = model_name
        self.weights = weights
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
        self.backend = backend
        self.can_explain = can_explain
        self.threads = threads if threads is not None else torch.get_num_threads()
        # Around an ONNX Runtime session, torch's few ops run on one thread: idle torch threads would spin on the
        # cores the session's threads need.
        self.torch_threads = 1 if backend == 'onnxruntime' else self.threads

    @property
    def title_suffix(self) -> str:
        """What pictures add to each face's label: a warning when the weights are random."""
        return ' (random weights)' if self.weights == RANDOM_WEIGHTS else ''

    def crop_faces(self, path: Path, image: Image.Image, detector: Optional[FaceDetector],
                   min_face_size: float) -> Tuple[List[FaceCrop], List[SkippedInput]]:
        """:func:`crop_faces` at this model's input size, interpolation and face template."""
        return crop_faces(path, image, detector, self.size, self.resample, min_face_size, self.template)

    def batch(self, crops: List[FaceCrop]) -> torch.Tensor:
        """The normalised batch of the faces: what the test transform gives, converted in bulk when every face
        already has the model's input size (the transform's resize is then a copy)."""
        if any(c.image.size != (self.size[1], self.size[0]) for c in crops):
            return torch.stack([self.transform(c.image) for c in crops])
        pixels = np.stack([np.asarray(c.image if c.image.mode == self.image_mode else c.image.convert(self.image_mode))
                           for c in crops])
        images = torch.from_numpy(pixels).view(len(crops), *self.size, -1).permute(0, 3, 1, 2).float().div_(255)
        return images.sub_(self.mean).div_(self.std)

    def __call__(self, crops: List[FaceCrop], viz_names: Optional[Union[FaceNames, UniqueNames]] = None,
                 crop_names: Optional[Union[FaceNames, UniqueNames]] = None) -> List[FacePrediction]:
        """The prediction of each face; with ``viz_names``, an explanation picture of each (written to the next
        name), with ``crop_names`` each aligned face as the model saw it."""
        with num_threads(self.torch_threads):
            images = to_input(self.batch(crops), self.device, self.channels_last)
            if viz_names is None:
                with torch.inference_mode(), autocast(self.device, self.amp_dtype):
                    logits = self.model(torch.cat([images, images.flip(-1)]) if self.tta_flip else images)
                maps = None
            else:
                maps = explain(self.model, images)
                logits = maps['logits']
                if self.tta_flip:
                    with torch.inference_mode():
                        logits = torch.cat([logits.detach(), self.model(images.flip(-1))])
            finite = torch.isfinite(logits).all()  # read after the copy below, which waits for the device anyway
            probabilities = logits.float().softmax(dim=-1)
            if self.tta_flip:
                probabilities = probabilities.view(2, len(crops), -1).mean(dim=0)
            probabilities = probabilities.cpu().tolist()  # one conversion, not one per face
        if not finite:
            raise NonFiniteOutputError(
                f'{self.model_name} with the weights of {self.weights} gave NaN or infinite logits for a batch of '
                f'{len(crops)} faces: the weights overflow in the forward pass (or are damaged) and no row is made '
                f'of them; use the checkpoint of a run whose loss stayed finite, or --amp none.')
        predictions = []
        for i, (crop, probs) in enumerate(zip(crops, probabilities)):
            top = max(range(len(probs)), key=probs.__getitem__)  # the first of equal maxima, as argmax
            expression = self.labels[top]
            prediction = FacePrediction(
                file=str(crop.file), face=crop.face, box=crop.box, detector_score=crop.detector_score,
                expression=expression, probabilities=dict(zip(self.labels, probs)))
            if crop_names is not None:
                path = crop_names.face_path(crop.file, crop.face)
                crop.image.convert(self.image_mode).save(path)
                prediction.crop = str(path)
            if maps is not None:
                path = viz_names.face_path(crop.file, crop.face)
                lanet_map = maps['lanet_map'][i] if maps['lanet_map'] is not None else None
                title = f'{crop.file.name} face {crop.face}: {expression} {probs[top]:.2f}{self.title_suffix}'
                face = crop.image.convert(self.image_mode)
                render_explanation(face, maps['relevance'][i], lanet_map, title).save(path)
                prediction.visualization = str(path)
            predictions.append(prediction)
        return predictions


def load_classifier(options: Optional[ClassifierOptions] = None, log: Callable[[str], None] = note,
                    **changes: Any) -> FaceClassifier:
    """The classifier of the named (or given) model, loaded once for every photo and video of a run.

    The ONNX Runtime backend keeps its exported files in :func:`~timm_fer.inference.backends.onnx_cache_dir`; when
    that folder cannot be used, ``backend='auto'`` runs torch instead and 'onnxruntime' exports to a temporary file
    for the run, and ``log`` says which.

    Args:
        options: Which model and how it runs; default :class:`ClassifierOptions`'s defaults.
        log: Says what was chosen instead of what was asked, and that a damaged cached ONNX file was made again
            (default: a 'note:' line on standard error).
        changes: :class:`ClassifierOptions` fields that replace those of ``options``.
    """
    options = replace(options or ClassifierOptions(), **changes)
    model = options.model
    if options.compile_model and options.explain:
        raise ConfigError('--compile and --save-viz do not go together: explanations need the eager model.')
    if isinstance(model, nn.Module):
        fer_model, weights, model_name = model.eval(), 'the given model', type(model).__name__
        device = parse_device(options.device) if options.device else next(model.parameters()).device
    else:
        fer_model, weights = load_model(model, options.checkpoint, random_weights=options.random_weights,
                                        label_names=options.label_names, use_ema=options.use_ema, log=log)
        cfg = fer_model.pretrained_cfg
        model_name = tagged_name(cfg['architecture'], cfg.get('tag'))
        device = parse_device(options.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if options.int8 and device.type != 'cpu':
        raise ConfigError(f'--int8 runs on the CPU, not on {device}.')
    if options.int8 and options.explain:
        raise ConfigError('--int8 and --save-viz do not go together: explanations need the fp32 model.')
    if options.int8 and options.amp == 'bf16':
        raise ConfigError('--int8 runs its int8 layers on fp32 inputs, not under bf16 autocast: use --amp auto (fp32 '
                          'with --int8) or none.')
    fp32_only = options.int8 or options.backend == 'onnxruntime' and options.amp == 'auto'
    amp_dtype = None if fp32_only else resolve_amp_dtype(options.amp, device)
    cacheable = not isinstance(model, nn.Module) and weights != RANDOM_WEIGHTS
    backend = resolve_backend(options.backend, device, amp_dtype, cacheable,
                              eager_only=options.compile_model or options.explain)
    if backend == 'onnxruntime' and cacheable:
        problem = cache_dir_problem(onnx_cache_dir())
        if problem:
            cacheable = False
            backend = 'torch' if options.backend == 'auto' else backend
            instead = 'runs torch instead' if backend == 'torch' else 'exports to a temporary file for this run'
            log(f'the ONNX cache folder {onnx_cache_dir()} cannot be used ({problem}), so {options.backend} '
                f'{instead}; set TIMM_FER_CACHE to a writable folder.')
    threads = resolve_threads(options.threads, device)
    labels = list(fer_model.pretrained_cfg.get('label_names') or [f'class {i}' for i in range(fer_model.num_classes)])
    data_config = resolve_fer_data_config(fer_model)
    if not isinstance(model, nn.Module):  # a model passed in is checked batch by batch only
        check_finite_outputs(fer_model, data_config['input_size'], weights)
    if backend == 'onnxruntime':
        with tempfile.TemporaryDirectory() as folder:  # the session holds the graph: a file not cached can go
            path = cached_onnx(fer_model, model_name, options.int8, cache_dir=None if cacheable else Path(folder),
                               log=log)
            runner, channels_last = OnnxRuntimeModel(path, threads), False
    else:
        if options.int8:
            fer_model = quantize_linear(fer_model)
        # A model passed in keeps its memory format (channels-last inputs alone select the fast convolutions).
        channels_last = options.channels_last
        runner = prepare_model(fer_model, device, channels_last and not isinstance(model, nn.Module),
                               options.compile_model)
    can_explain = backend == 'torch' and not options.int8 and not options.compile_model
    description = fer_model.pretrained_cfg.get('description') or ''
    return FaceClassifier(runner, labels, data_config, device, model_name, weights, amp_dtype, channels_last, backend,
                          threads, can_explain, options.tta_flip, description)


def resolve_classifier(classifier: Optional[FaceClassifier], options: Dict[str, Any],
                       explain: bool = False) -> FaceClassifier:
    """``classifier``, or, when None, one loaded from ``options`` (:class:`ClassifierOptions` fields; ``explain``
    when explanation pictures are wanted)."""
    if classifier is None:
        return load_classifier(explain=explain, **options)
    if not isinstance(classifier, FaceClassifier):
        raise TypeError(f'classifier must be a FaceClassifier (from load_classifier), got {type(classifier).__name__}; '
                        f'pass a model name or module as model=...')
    if options:
        raise TypeError(f'pass a classifier or the options to load one, not both: got {", ".join(sorted(options))}.')
    if explain and not classifier.can_explain:
        raise ConfigError('--save-viz needs the eager fp32 model: load the classifier with explain=True.')
    return classifier


def classify_pairs(classifier: FaceClassifier, crops: Sequence[FaceCrop], skipped: List[SkippedInput],
                   **outputs: Optional[Union[FaceNames, UniqueNames]]) -> List[Tuple[FaceCrop, FacePrediction]]:
    """Classify a batch of faces, each with its prediction; when the batch fails, each face alone, adding those that
    fail to ``skipped``. ``outputs``: the pictures :meth:`FaceClassifier.__call__` writes."""
    try:
        return list(zip(crops, classifier(list(crops), **outputs)))
    except FerError:
        raise
    except Exception as e:
        if len(crops) > 1:
            return [pair for crop in crops for pair in classify_pairs(classifier, [crop], skipped, **outputs)]
        skipped.append(SkippedInput(str(crops[0].file), f'{crops[0].describe()} could not be classified '
                                                        f'({type(e).__name__}: {e})'))
        return []
