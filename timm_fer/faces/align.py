"""Face alignment: warp a face so that its five landmarks land on the template of the model's training faces."""
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from .template import estimate_similarity, face_template, invert_similarity

__all__ = ['align_face', 'pillow_resample', 'warp_affine']

_AFFINE_RESAMPLE = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
}


def pillow_resample(interpolation: str) -> Image.Resampling:
    """Pillow's filter for a timm interpolation name; affine warps know nearest, bilinear and bicubic only."""
    return _AFFINE_RESAMPLE.get(interpolation, Image.Resampling.BILINEAR)


def warp_affine(
        image: Image.Image,
        matrix: np.ndarray,
        size: Tuple[int, int],
        resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> Image.Image:
    """Warp ``image`` by a 2x3 transform between pixel-index coordinates (as ``cv2.warpAffine`` does).

    Args:
        image: Source image.
        matrix: Maps source pixel indices (x, y) to output pixel indices.
        size: Output (height, width); pixels mapped from outside the source are black.
        resample: Pillow filter.
    """
    inverse = invert_similarity(matrix)
    linear, shift = inverse[:, :2], inverse[:, 2]
    # Pillow samples at pixel centres (i + 0.5) in coordinates where pixel i spans [i, i + 1).
    shift = shift + 0.5 - linear @ np.array([0.5, 0.5])
    coefficients = (linear[0, 0], linear[0, 1], shift[0], linear[1, 0], linear[1, 1], shift[1])
    height, width = size
    return image.transform((width, height), Image.Transform.AFFINE, coefficients, resample=resample)


def align_face(
        image: Image.Image,
        landmarks: np.ndarray,
        size: Tuple[int, int] = (112, 112),
        resample: Image.Resampling = Image.Resampling.BILINEAR,
        template: Optional[np.ndarray] = None,
) -> Image.Image:
    """Crop the face whose five landmarks are given, aligned by a similarity transform to a five-point template.

    Faces much larger than ``size`` are first shrunk with a box filter, so the warp does not alias.

    Args:
        image: The whole image.
        landmarks: (5, 2) pixel coordinates: left eye, right eye, nose, left and right mouth corners (image left).
        size: Output (height, width), the model's input size.
        resample: Pillow filter of the warp.
        template: (5, 2) points where the landmarks go, in pixels of the output (e.g. ``face_template(size,
            'fer2013')``); default ArcFace's template at ``size``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    template = face_template(size) if template is None else np.asarray(template, dtype=np.float64)
    matrix = estimate_similarity(landmarks, template)
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    factor = int(1. / (2. * scale))
    if factor >= 2:
        image = image.reduce(factor)
        matrix = estimate_similarity((landmarks + 0.5) / factor - 0.5, template)
    return warp_affine(image, matrix, size, resample)
