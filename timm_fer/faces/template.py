"""Five-point face templates (ArcFace's, FER2013's) and the similarity transform that maps landmarks onto them.

A template says where the five landmarks of a face lie in the crops a model was trained on; photos are aligned to
the template of the model's data config (its 'face_template' entry names one of :data:`FACE_TEMPLATES`). Landmarks
are in pixel-index coordinates (the centre of the top-left pixel is (0, 0)), in the order left eye, right eye, nose
tip, left mouth corner, right mouth corner, where left and right are as seen in the image.
"""
from typing import Dict, Tuple

import numpy as np

from ..constants import DEFAULT_FACE_TEMPLATE
from ..errors import ConfigError

__all__ = ['ARCFACE_TEMPLATE_112', 'DEFAULT_FACE_TEMPLATE', 'FACE_TEMPLATES', 'FER2013_TEMPLATE_48',
           'apply_similarity', 'estimate_similarity', 'face_template', 'invert_similarity']

ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
"""Where the five landmarks of an aligned 112x112 face lie (insightface's ``arcface_dst``), as (x, y) rows."""

FER2013_TEMPLATE_48 = np.array([
    [14.625, 18.375],
    [32.375, 18.125],
    [23.625, 28.375],
    [16.625, 36.125],
    [30.875, 36.125],
], dtype=np.float64)
"""Where the five landmarks of a FER2013 (FERPlus) 48x48 face lie, as (x, y) rows: the per-point median of the
landmarks that :class:`~timm_fer.faces.RetinaFaceDetector` finds on 4931 of 5000 random FERPlus training faces,
upsampled x4 (``python benchmarks/face_template_study.py FER2013Train --limit 5000``). Next to ArcFace's template
the face is larger (eye distance 17.5 px, ArcFace's 15.1 px) and higher (eyes at y 18.2, ArcFace's 22.1); a face's
landmarks lie a median 3.3 px from these points (2.2 to 3.0 px per coordinate, as a robust std)."""

FACE_TEMPLATES: Dict[str, Tuple[np.ndarray, Tuple[int, int]]] = {
    'arcface': (ARCFACE_TEMPLATE_112, (112, 112)),
    'fer2013': (FER2013_TEMPLATE_48, (48, 48)),
}
"""The templates a model's data config can name, each with the (height, width) of the face its points refer to."""


def face_template(size: Tuple[int, int] = (112, 112), name: str = DEFAULT_FACE_TEMPLATE) -> np.ndarray:
    """The five points of template ``name`` for an aligned face of ``size`` (height, width): its points, scaled.

    Raises:
        ConfigError: ``name`` is not one of :data:`FACE_TEMPLATES`.
    """
    if not isinstance(name, str) or name not in FACE_TEMPLATES:
        raise ConfigError(f"unknown face template {name!r} (the 'face_template' of the model's data config); known: "
                          f"{', '.join(FACE_TEMPLATES)}. Fix the checkpoint's or config.json's face_template, or "
                          f"update timm-fer if a newer version wrote it.")
    points, (template_height, template_width) = FACE_TEMPLATES[name]
    height, width = size
    return points * np.array([width / template_width, height / template_height])


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The similarity transform (rotation, uniform scale, shift) that maps ``src`` points closest onto ``dst``.

    Least squares (Umeyama, 1991), without reflections.

    Args:
        src: Points (N, 2), N >= 2, not all equal.
        dst: Their targets (N, 2).

    Returns:
        The 2x3 matrix ``[s R | t]`` with ``dst ~ s R src + t``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f'need two arrays of the same (N, 2) shape with N >= 2, got {src.shape} and {dst.shape}.')
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_variance = (src_centred ** 2).sum() / len(src)
    if src_variance < 1e-12:
        raise ValueError('the source points all coincide: a similarity transform is undefined.')
    covariance = dst_centred.T @ src_centred / len(src)
    u, singular_values, vt = np.linalg.svd(covariance)
    signs = np.array([1., np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular_values * signs).sum() / src_variance
    shift = dst_mean - scale * rotation @ src_mean
    return np.concatenate([scale * rotation, shift[:, None]], axis=1)


def apply_similarity(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (N, 2) with a 2x3 transform."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_similarity(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 similarity (or any invertible affine) transform."""
    linear_inverse = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inverse, -linear_inverse @ matrix[:, 2:]], axis=1)
