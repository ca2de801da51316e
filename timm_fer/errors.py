"""Errors that timm-fer reports as one line naming the problem and the fix, without a traceback.

Every error caused by the user's data, files or options derives from :class:`FerError`; the command line prints
those as ``error: <message>`` and exits with status 2.
"""
from pathlib import Path

__all__ = ['CheckpointMismatchError', 'ConfigError', 'DatasetError', 'DatasetFileNotFoundError',
           'ExportUnavailableError', 'FaceDetectorUnavailableError', 'FerError', 'ImageReadError', 'InputFileError',
           'NonFiniteLossError', 'NonFiniteOutputError', 'PretrainedWeightsError', 'StreamError',
           'UnsupportedCodecError', 'VideoDecoderUnavailableError', 'VideoReadError']


class FerError(Exception):
    """Base of the errors caused by the user's data or options rather than by a bug."""


class ConfigError(FerError, ValueError):
    """Options that cannot work together, or a file given as an option that does not fit."""


class DatasetError(FerError, ValueError):
    """A dataset file is unreadable or malformed; the message names the file, what was skipped and the fix."""


class DatasetFileNotFoundError(FerError, FileNotFoundError):
    """A file that the dataset's layout needs does not exist; the message names it and the expected layout."""


class NonFiniteLossError(FerError, ArithmeticError):
    """Training stopped at the first step whose loss was NaN or infinite, before that step changed the weights."""


class NonFiniteOutputError(FerError, ArithmeticError):
    """A model gave NaN or infinite logits: its weights are finite but overflow in the forward pass (or are damaged).
    The message names the weights; no prediction or score is made of such outputs."""


class PretrainedWeightsError(FerError, RuntimeError):
    """Pretrained weights could not be found, fetched or read."""


class CheckpointMismatchError(FerError, ValueError):
    """A checkpoint's tensors do not fit the model: the message lists every key that does not fit."""


class InputFileError(FerError, ValueError):
    """An input file cannot be used; the message names the file, what is wrong and the fix.

    Attributes:
        path: The file.
        reason: What is wrong with it and what to do, without the file name.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason


class ImageReadError(InputFileError):
    """An input file is missing, not an image, or damaged."""


class FaceDetectorUnavailableError(FerError, ImportError):
    """The optional face detector is not installed."""


class ExportUnavailableError(FerError, ImportError):
    """A package the export format needs is not installed."""


class VideoReadError(InputFileError):
    """A video file is missing, not a video, or cannot be decoded."""


class UnsupportedCodecError(VideoReadError):
    """The video's codec has no decoder in the installed FFmpeg libraries.

    Attributes:
        codec: The codec as FFmpeg describes it, e.g. ``none (QQQQ / 0x51515151)`` for an unknown FourCC.
    """

    def __init__(self, path: Path, codec: str) -> None:
        super().__init__(path, f"its video codec '{codec}' cannot be decoded by the FFmpeg libraries inside PyAV; "
                               f're-encode it to H.264, VP9 or MJPEG (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4).')
        self.codec = codec


class VideoDecoderUnavailableError(FerError, ImportError):
    """The optional video decoder (PyAV) is not installed."""


class StreamError(FerError, RuntimeError):
    """A live source (camera, network stream) stopped giving frames: it broke off, stalled or ended, and was not
    (or could no longer be) reopened. The frames before were given.

    Attributes:
        source: The source's name.
        reason: What happened, without the source's name.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f'{source}: {reason}')
        self.source = source
        self.reason = reason
