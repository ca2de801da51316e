"""Five-point face templates (ArcFace's, FER2013's) and the similarity transform that maps landmarks onto them.

The templates and which one each tag and dataset uses are settings of :mod:`timm_fer.constants`; this module scales
them to a face size and aligns landmarks onto them.

A template says where the five landmarks of a face lie in the crops a model was trained on; photos are aligned to
the template of the model's data config (its 'face_template' entry names one of :data:`FACE_TEMPLATES`). Landmarks
are in pixel-index coordinates (the centre of the top-left pixel is (0, 0)), in the order left eye, right eye, nose
tip, left mouth corner, right mouth corner, where left and right are as seen in the image.
"""
from typing import Tuple

import numpy as np

from ..constants import ARCFACE_TEMPLATE_112, DEFAULT_FACE_TEMPLATE, FACE_TEMPLATES, FER2013_TEMPLATE_48
from ..errors import ConfigError

__all__ = ['ARCFACE_TEMPLATE_112', 'DEFAULT_FACE_TEMPLATE', 'FACE_TEMPLATES', 'FER2013_TEMPLATE_48',
           'apply_similarity', 'estimate_similarity', 'face_template', 'invert_similarity']


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
