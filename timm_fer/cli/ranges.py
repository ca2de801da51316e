"""The ranges of every command's numeric options, where the command line reads them without importing torch.

The functions a command calls declare the same ranges (:func:`~timm_fer.utils.options.option_ranges`, dataclass field
metadata) and check them for Python callers; these copies let :func:`~timm_fer.cli.common.run_command` refuse a value
out of range before the command imports torch, so that an argument error answers at once.
``tests/test_bad_options.py`` holds each copy equal to its declaration.
"""
from typing import Dict

from ..utils.options import Range

__all__ = ['OPTION_RANGES']

_COUNT = Range(1, integer=True)
_NON_NEGATIVE = Range(0)
_POSITIVE_OR_UNSET = Range(0, low_open=True, optional=True)
_PROBABILITY = Range(0, 1)
_FACE_THRESHOLD = Range(0, 1, flag='--face-threshold')
_IMG_SIZE = Range(16, 2048, integer=True, optional=True)
_SEED = Range(0, 2 ** 32 - 1, integer=True)
_THREADS = Range(1, 4096, integer=True, optional=True)

OPTION_RANGES: Dict[str, Dict[str, Range]] = {
    'predict': {
        'batch_size': _COUNT, 'min_face_size': _NON_NEGATIVE, 'face_threshold': _FACE_THRESHOLD,
        'top_k': Range(1, integer=True, optional=True), 'threads': _THREADS, 'fps': _POSITIVE_OR_UNSET,
        'smoothing': _NON_NEGATIVE, 'min_track': _NON_NEGATIVE, 'duration': _POSITIVE_OR_UNSET,
        'stall_timeout': Range(0, low_open=True),
    },
    'serve': {
        'port': Range(0, 65535, integer=True), 'min_face_size': _NON_NEGATIVE, 'face_threshold': _FACE_THRESHOLD,
        'threads': _THREADS, 'max_upload_mb': Range(0, 4096, low_open=True),
        'max_files': Range(1, 1024, integer=True), 'max_megapixels': Range(0, 8192 * 8192 / 1e6, low_open=True),
        'max_video_seconds': Range(0, 86400, low_open=True), 'max_in_flight': Range(1, 1024, integer=True),
        'queue_size': Range(0, 65536, integer=True), 'queue_timeout_s': Range(0, 3600),
        'max_batch': Range(1, 4096, integer=True), 'max_wait_ms': Range(0, 1000),
    },
    'eval': {'batch_size': _COUNT, 'workers': Range(0, integer=True), 'img_size': _IMG_SIZE},
    'export': {'atol': _NON_NEGATIVE, 'opset': Range(18, 25, integer=True, optional=True, flag='--opset')},
    'models': {'batch_size': Range(1, 256, integer=True), 'seed': _SEED},
    'train': {
        'img_size': _IMG_SIZE, 'epochs': Range(1, integer=True, optional=True),
        'iterations': Range(1, integer=True, optional=True), 'warmup': Range(0, integer=True),
        'smoothing': Range(0, 1, high_open=True), 'neutral_vote_weight': _PROBABILITY,
        'original_label_weight': _PROBABILITY, 'ema_decay': Range(0, 1, low_open=True, high_open=True, optional=True),
        'lr': _NON_NEGATIVE, 'momentum': Range(0, 1, high_open=True), 'weight_decay': _NON_NEGATIVE,
        'batch_size': _COUNT, 'grad_accum_steps': _COUNT, 'rotation': Range(0, 180), 'crop_scale': Range(1, 4),
        'hflip': _PROBABILITY, 'erase_prob': _PROBABILITY, 'zoom': Range(0, low_open=True, flag='each of --zoom'),
        'photometric': _PROBABILITY, 'degrade': _PROBABILITY, 'seed': _SEED,
        'workers': Range(0, integer=True, optional=True),
        'checkpoint_every_steps': Range(1, integer=True, optional=True),
        'stop_after_steps': Range(1, integer=True, optional=True),
    },
}
"""Per command, its numeric options (by their ``argparse`` destination) and the values each takes; an option whose
value is None was not given, and is left to the function's default or the run's recipe."""
