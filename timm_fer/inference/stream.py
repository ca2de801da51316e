"""Expressions as they happen: a camera, a network stream or a pipe, frame by frame (:func:`stream`).

:class:`FrameTracker` is the one per-frame step of live sources: it detects, aligns and tracks the faces of a frame
(the step that videos share, :class:`~timm_fer.inference.video.TrackedFaces`) and classifies them at once.
"""
from dataclasses import dataclass, field
from typing import List, Optional

from PIL import Image

from ..faces import FaceDetector
from .classifier import FaceClassifier, face_detector
from .report import SkippedInput
from .video import FrameFace, TrackedFaces, classify_tracked

__all__ = ['FrameTracker', 'StreamFrame']


@dataclass
class StreamFrame:
    """The faces of one frame of a source, as they were classified.

    Attributes:
        index: Index of the frame among the frames the source gave, from 0.
        time: Seconds since the source started.
        faces: One row per classified face, left to right; ``file`` is the source's name.
        dropped: Frames on the sampling grid that the source gave since the previous yielded frame and that were
            left out because the model was slower than the source.
        image: The frame, upright RGB; None unless asked for.
        skipped: Faces of this frame that could not be classified, and a face detection that failed on it.
    """
    index: int
    time: float
    faces: List[FrameFace]
    dropped: int = 0
    image: Optional[Image.Image] = None
    skipped: List[SkippedInput] = field(default_factory=list)


class FrameTracker:
    """Detect, align, track and classify the faces of a source's frames, one frame per call, in time order.

    Each tracker keeps the face tracks of one source: use one per camera, stream or connection. It only calls the
    classifier's ``crop_faces(...)`` and ``classifier(crops)``, and reads its ``labels``, so a wrapper with those
    (one that gathers the faces of several sources into one batch, say) serves too.

    Args:
        classifier: The model to classify with (:func:`~timm_fer.inference.classifier.load_classifier`).
        detector: Face detector; default :class:`~timm_fer.faces.RetinaFaceDetector` (the ``face`` extra).
        aligned: The frames already are aligned faces: resize them, detect nothing.
        min_face_size: Faces whose box has a shorter side below this many pixels are left out.
        max_gap: Seconds a face track waits for its face (missed detections, frames without faces) before it ends.
        source: The source's name, the ``file`` of the rows.
    """

    def __init__(self, classifier: FaceClassifier, detector: Optional[FaceDetector] = None, *, aligned: bool = False,
                 min_face_size: float = 32., max_gap: float = 1., source: str = 'stream') -> None:
        self.classifier = classifier
        self.source = source
        self._faces = TrackedFaces(classifier, face_detector(aligned, detector), min_face_size, max_gap, source)

    @property
    def labels(self) -> List[str]:
        """The classifier's label names, in the model's order."""
        return self.classifier.labels

    def __call__(self, image: Image.Image, time: float, index: int = 0) -> StreamFrame:
        """The classified faces of the frame ``index`` at ``time`` seconds since the source started."""
        failures = self._faces.failures
        crops = self._faces(image, time, index)
        skipped: List[SkippedInput] = []
        if self._faces.failures > failures:
            skipped.append(SkippedInput(self.source, f'face detection failed on {self._faces.last_failure}'))
        rows = [row for _, row in classify_tracked(self.classifier, crops, self.source, skipped)] if crops else []
        return StreamFrame(index, time, rows, skipped=skipped)
