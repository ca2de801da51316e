"""From photos to expressions: ``timm-fer predict`` and :func:`predict`.

Each image is read robustly (EXIF rotation, any colour mode), its faces are found with five landmarks and aligned
to the model's face template (its data config's 'face_template': FER2013's for ``transfer_fer_compact.ferplus``,
ArcFace's by default) at its input size (or, for already aligned crops, just resized), preprocessed with the
model's own data config, and classified in batches. Inputs that give no prediction (unreadable files, no face,
faces below the minimum size) are reported one by one while the others go on.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from tqdm import tqdm

from ..errors import ConfigError, ImageReadError
from ..faces import FaceDetector, find_images, read_image
from ..utils.options import Range, option_ranges
from ..utils.outputs import FaceNames, OutputPlan
from .annotate import annotate_image, annotated_suffix, save_annotated_image
from .classifier import (
    FaceClassifier,
    FaceCrop,
    FacePrediction,
    aligned_input_warning,
    classify_pairs,
    face_detector,
    resolve_classifier,
    unlike_a_face_crop,
)
from .report import OUTPUT_SUFFIXES, Report, SkippedInput, label_columns

__all__ = ['OUTPUT_SUFFIXES', 'SAMPLE_IMAGE', 'FacePrediction', 'PhotoOutputs', 'PredictionReport', 'SkippedInput',
           'check_top_k', 'format_table', 'plan_photo_outputs', 'predict', 'write_report']

SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / 'assets' / 'astronaut.png'
"""Public-domain portrait (NASA astronaut Eileen Collins) used when no image is given."""


@dataclass
class PredictionReport(Report):
    """Everything :func:`predict` found: predictions per face, skipped inputs, model and weights."""
    model: str
    weights: str
    labels: List[str]
    faces: List[FacePrediction] = field(default_factory=list)
    skipped: List[SkippedInput] = field(default_factory=list)
    annotated: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


@dataclass
class PhotoOutputs:
    """Where a photo run writes its pictures, reserved by :func:`plan_photo_outputs` before the run."""
    viz: Optional[FaceNames] = None
    crops: Optional[FaceNames] = None
    annotated: Dict[str, Path] = field(default_factory=dict)


def plan_photo_outputs(
        plan: OutputPlan,
        files: Sequence[Union[str, Path]],
        save_viz: Optional[Union[str, Path]] = None,
        save_crops: Optional[Union[str, Path]] = None,
        save_annotated: Optional[Union[str, Path]] = None,
        annotated_format: str = 'same',
) -> PhotoOutputs:
    """Reserve in ``plan`` the pictures :func:`predict` writes for ``files``: ``STEM_faceN.viz.png`` and
    ``STEM_faceN.crop.png`` per face, ``STEM.annotated.EXT`` per photo (see :class:`~timm_fer.utils.OutputPlan`).

    Raises:
        ConfigError: an output path is an input, or exists (without the plan's ``overwrite``), or a folder cannot be
            written.
    """
    outputs = PhotoOutputs()
    if save_viz is not None:
        outputs.viz = plan.faces(save_viz, 'viz', '.png', '--save-viz', files)
    if save_crops is not None:
        outputs.crops = plan.faces(save_crops, 'crop', '.png', '--save-crops', files)
    if save_annotated is not None:
        outputs.annotated = {str(file): plan.derived(save_annotated, file, 'annotated',
                                                     annotated_suffix(Path(file), annotated_format),
                                                     '--save-annotated') for file in files}
    return outputs


@option_ranges(batch_size=Range(1, integer=True), min_face_size=Range(0))
def predict(
        images: Optional[Union[str, Path, Sequence[Union[str, Path]]]] = None,
        classifier: Optional[FaceClassifier] = None,
        *,
        aligned: bool = False,
        detector: Optional[FaceDetector] = None,
        batch_size: int = 32,
        min_face_size: float = 32.,
        save_viz: Optional[Union[str, Path]] = None,
        save_crops: Optional[Union[str, Path]] = None,
        save_annotated: Optional[Union[str, Path]] = None,
        annotated_format: str = 'same',
        overwrite: bool = False,
        outputs: Optional[OutputPlan] = None,
        progress: Optional[bool] = None,
        **options: Any,
) -> PredictionReport:
    """Predict the expression of every face in some images.

    Args:
        images: Image files, folders (searched recursively) or glob patterns, or one of them; None uses the shipped
            sample portrait. Photos above :data:`~timm_fer.faces.MAX_PHOTO_PIXELS` (64 megapixels) are skipped,
            with the reason, before they are decoded.
        classifier: The model to classify with, from :func:`~timm_fer.inference.classifier.load_classifier` (a run
            over photos and videos loads it once); None loads one from ``options``.
        aligned: The images already are aligned face crops: resize them, detect nothing. Images that look like no face
            crop (far from the model's aspect ratio, or very large) are classified all the same, with a warning in
            the report (:func:`~timm_fer.inference.classifier.unlike_a_face_crop`).
        detector: Face detector; default :class:`~timm_fer.faces.RetinaFaceDetector` (the ``face`` extra).
        batch_size: Faces per forward pass.
        min_face_size: Faces whose box has a shorter side below this many pixels are reported and skipped.
        save_viz: Folder for one explanation PNG per face (aligned face, LANet map, relevance map),
            ``STEM_faceN.viz.png``.
        save_crops: Folder for the aligned faces, as the model saw them (before normalisation), ``STEM_faceN.crop.png``.
        save_annotated: Folder for each input image with every face's box, top expression and confidence drawn,
            ``STEM.annotated.EXT``.
        annotated_format: Their format: 'same' as the input's (a JPEG stays a JPEG, at quality 90; PNG for inputs
            neither JPEG nor WebP), 'png' or 'jpeg'.
        overwrite: Replace files already at the output paths (an input never): without it, such a file stops the
            run before any work (:class:`~timm_fer.utils.OutputPlan`).
        outputs: The run's output plan, when the caller reserved other outputs in it (a command's whole run); its
            ``overwrite`` then applies.
        progress: Show a progress bar; None shows it for 20 or more files on a terminal.
        options: Without ``classifier``: the model and how it runs, as
            :class:`~timm_fer.inference.classifier.ClassifierOptions` fields (``model``, ``checkpoint``,
            ``random_weights``, ``device``, ``amp``, ``channels_last``, ``compile_model``, ``backend``, ``int8``,
            ``threads``).
    """
    annotated_suffix(Path(), annotated_format)  # a wrong format fails before the run
    if isinstance(images, (str, Path)):
        images = [images]
    files, problems = find_images([str(i) for i in images] if images else [_shown_path(SAMPLE_IMAGE)])
    plan = outputs or OutputPlan([*files, options.get('checkpoint')], overwrite=overwrite)
    planned = plan_photo_outputs(plan, files, save_viz, save_crops, save_annotated, annotated_format)
    plan.create_folders()
    classifier = resolve_classifier(classifier, options, explain=save_viz is not None)
    detector = face_detector(aligned, detector)
    names = dict(viz_names=planned.viz, crop_names=planned.crops)
    report = PredictionReport(classifier.model_name, classifier.weights, classifier.labels,
                              skipped=[SkippedInput(i, r) for i, r in problems])
    if progress is None:
        progress = len(files) >= 20
    pending: List[FaceCrop] = []
    unlike: List[str] = []
    for path in tqdm(files, desc='predict', unit='image', disable=None if progress else True):
        try:
            image = read_image(path)
            why = unlike_a_face_crop(str(path), image.size, classifier.size) if detector is None else None
            if why:
                unlike.append(why)
            crops, skipped = classifier.crop_faces(path, image, detector, min_face_size)
        except ImageReadError as e:
            crops, skipped = [], [SkippedInput(str(path), e.reason)]
        except Exception as e:  # one bad file never stops the run: report it and go on
            crops, skipped = [], [SkippedInput(str(path), f'face detection or alignment failed ({type(e).__name__}: '
                                                          f'{e}); check the image')]
        report.skipped.extend(skipped)
        pending.extend(crops)
        while len(pending) >= batch_size:
            _classify_into(report, classifier, pending[:batch_size], names)
            pending = pending[batch_size:]
    if pending:
        _classify_into(report, classifier, pending, names)
    if unlike:
        report.warnings.append(aligned_input_warning(unlike))
    if save_annotated is not None:
        report.annotated = _annotate(report, planned.annotated, classifier.title_suffix)
    return report


def _shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies inside it (as a user would type it), else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith('..') else relative


def _annotate(report: PredictionReport, paths: Dict[str, Path], suffix: str) -> List[str]:
    """Draw every predicted face on its image (read again, so no image is held during the run) and write it to its
    planned path in ``paths``; the paths written."""
    by_file: Dict[str, List[FacePrediction]] = {}
    for face in report.faces:
        by_file.setdefault(face.file, []).append(face)
    written = []
    for file, faces in by_file.items():
        labels = [(f.box, f'{f.expression} {f.probabilities[f.expression]:.2f}{suffix}') for f in faces]
        path = paths[file]
        save_annotated_image(annotate_image(read_image(Path(file)), labels), path)
        written.append(str(path))
    return written


def _classify_into(report: PredictionReport, classifier: FaceClassifier, crops: List[FaceCrop],
                   outputs: Dict[str, Optional[FaceNames]]) -> None:
    """Classify a batch of faces into ``report``; when the batch fails, each face alone, reporting those that fail."""
    report.faces.extend(prediction for _, prediction in classify_pairs(classifier, crops, report.skipped, **outputs))


def check_top_k(top_k: Optional[int], labels: Sequence[str]) -> None:
    """Refuse a ``top_k`` above the number of ``labels`` (or below 1) before the run whose tables show it.

    Raises:
        ConfigError: ``top_k`` is not None and not between 1 and the number of labels.
    """
    if top_k is not None and not 1 <= top_k <= len(labels):
        raise ConfigError(f'--top-k must be between 1 and the {len(labels)} labels of the model, got {top_k}.')


@option_ranges(top_k=Range(1, integer=True, optional=True))
def format_table(report: PredictionReport, top_k: Optional[int] = None) -> str:
    """The report as a text table, one row per face, then the skipped inputs.

    Args:
        report: What :func:`predict` found.
        top_k: Show each face's ``top_k`` most probable expressions instead of a column per label.
    """
    check_top_k(top_k, report.labels)
    lines = []
    if report.faces:
        file_width = max(len('file'), *(len(f.file) for f in report.faces))
        boxes = [','.join(map(str, f.box)) for f in report.faces]
        box_width = max(len('box x0,y0,x1,y1'), *(len(b) for b in boxes))
        expression_width, widths = label_columns(report.labels)
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
    return report.format_text(lines)


def write_report(report: PredictionReport, path: Union[str, Path]) -> Path:
    """Write the report as JSON (``.json``) or CSV (``.csv``: one row per face, then one per skipped input)."""
    header = (['file', 'face', 'x0', 'y0', 'x1', 'y1', 'detector_score', 'expression'] +
              [f'p_{label}' for label in report.labels] + ['visualization', 'crop', 'skipped', 'weights'])
    rows = [[f.file, f.face, *f.box, '' if f.detector_score is None else f'{f.detector_score:.4f}', f.expression] +
            [f'{f.probabilities[label]:.6f}' for label in report.labels] +
            [f.visualization or '', f.crop or '', '', report.weights] for f in report.faces]
    return report.write(path, header, rows)
