"""From photos to model inputs: read images robustly, detect faces with five landmarks, align them."""
from .align import align_face, pillow_resample, warp_affine
from .detector import DetectedFace, FaceDetector, FaceDetectorUnavailableError, RetinaFaceDetector
from .io import MAX_PHOTO_PIXELS, ImageReadError, find_images, image_suffixes, read_image, to_rgb
from .template import (
    ARCFACE_TEMPLATE_112,
    DEFAULT_FACE_TEMPLATE,
    FACE_TEMPLATES,
    FER2013_TEMPLATE_48,
    apply_similarity,
    estimate_similarity,
    face_template,
    invert_similarity,
)

__all__ = [
    'ARCFACE_TEMPLATE_112',
    'DEFAULT_FACE_TEMPLATE',
    'DetectedFace',
    'FACE_TEMPLATES',
    'FER2013_TEMPLATE_48',
    'FaceDetector',
    'FaceDetectorUnavailableError',
    'ImageReadError',
    'MAX_PHOTO_PIXELS',
    'RetinaFaceDetector',
    'align_face',
    'apply_similarity',
    'estimate_similarity',
    'face_template',
    'find_images',
    'image_suffixes',
    'invert_similarity',
    'pillow_resample',
    'read_image',
    'to_rgb',
    'warp_affine',
]
