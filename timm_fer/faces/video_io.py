"""Reading videos frame by frame, and writing them, with PyAV (the ``video`` extra).

PyAV's wheels carry FFmpeg's libraries, so ``pip install "timm-fer[video]"`` decodes H.264, HEVC, VP8/VP9, AV1,
MPEG-4 and MJPEG in MP4, MOV, MKV, WebM and AVI files without a system FFmpeg. Frames are decoded one packet at a
time and handed on one by one, so memory does not grow with the video's length. A damaged packet is skipped (the
decoder picks up at the next good one); a file cut short ends early, and :class:`VideoReader` says where.
"""
import math
import os
import re
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, List, Optional, Tuple, Union

from PIL import Image

from ..errors import UnsupportedCodecError, VideoDecoderUnavailableError, VideoReadError

__all__ = ['DecodedFrame', 'VideoInfo', 'VideoReader', 'VideoWriter', 'is_video_file', 'require_video_decoder',
           'video_suffixes']

VIDEO_SUFFIXES = ('.3gp', '.avi', '.flv', '.m2ts', '.m4v', '.mkv', '.mov', '.mp4', '.mpeg', '.mpg', '.mts', '.ogv',
                  '.ts', '.webm', '.wmv')
"""File suffixes (lower case, with the dot) taken as videos."""
ENCODERS = ('libx264', 'mpeg4')
"""Encoders of written videos, first available first: H.264 (PyAV's wheels include x264), else MPEG-4 Part 2."""
MAX_DAMAGED_PACKETS = 100
"""Decoding gives up after this many damaged packets in a row."""

_INSTALL_HINT = 'pip install "timm-fer[video]" (PyAV, whose wheels carry the FFmpeg libraries)'
_TRANSPOSE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def video_suffixes() -> Tuple[str, ...]:
    """File suffixes (lower case, with the dot) of the video files that folders and globs give."""
    return VIDEO_SUFFIXES


def is_video_file(path: Union[str, Path]) -> bool:
    """Whether the file's suffix is a video suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _import_av() -> ModuleType:
    try:
        import av
    except ImportError as e:
        raise VideoDecoderUnavailableError(f'reading videos needs the video extra: {_INSTALL_HINT}.') from e
    return av


def require_video_decoder() -> str:
    """PyAV's version.

    Raises:
        VideoDecoderUnavailableError: PyAV (the ``video`` extra) is not installed.
    """
    return _import_av().__version__


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares about its first video stream.

    Attributes:
        path: The file.
        codec: FFmpeg's name of the codec, e.g. ``h264``, ``vp9``, ``mjpeg``.
        width: Frame width in pixels, as stored (before any rotation).
        height: Frame height in pixels, as stored.
        fps: Average frame rate; None when the file does not say.
        duration: Length in seconds; None when the file does not say.
        frame_count: Number of frames; None when the file does not say.
    """
    path: Path
    codec: str
    width: int
    height: int
    fps: Optional[float]
    duration: Optional[float]
    frame_count: Optional[int]


@dataclass
class DecodedFrame:
    """One decoded frame, upright.

    Attributes:
        index: Position of the frame among the decoded frames, from 0.
        time: Presentation time in seconds from the start of the stream.
        image: The frame as an RGB image, with the file's display rotation applied.
    """
    index: int
    time: float
    image: Image.Image


def _codec_described(logs: List[Tuple[int, str, str]]) -> str:
    """The codec as FFmpeg's log describes the stream it could not decode, e.g. ``none (QQQQ / 0x51515151)``."""
    for _, _, message in logs:
        match = re.search(r'Video: ([^,]+)', message)
        if match:
            return match.group(1).strip()
    return 'unknown'


class VideoReader:
    """Decode the first video stream of a file one frame at a time.

    Use it as a context manager, and iterate :meth:`frames` once. After the iteration, :attr:`problem` says why
    decoding stopped before the end the file declares, or that damaged packets were skipped; None when all went
    well.

    Args:
        path: The video file.

    Raises:
        VideoDecoderUnavailableError: PyAV is not installed.
        UnsupportedCodecError: the codec has no decoder in PyAV's FFmpeg.
        VideoReadError: the file is missing, not a video, or damaged where it starts.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        av = _import_av()
        self._errors = av.error.FFmpegError
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(self.path, 'no such file; check the path.')
        previous_level = av.logging.get_level()
        av.logging.set_level(av.logging.WARNING)
        try:
            with av.logging.Capture() as logs:
                self._container = av.open(str(self.path))
        except self._errors as e:
            raise VideoReadError(self.path, f'not a video that FFmpeg can read, or damaged where it starts ({e}); an '
                                            f'MP4/MOV file cut short loses its index, which is written last.') from e
        finally:
            av.logging.set_level(previous_level)
        try:
            if not self._container.streams.video:
                raise VideoReadError(self.path, 'the file holds no video stream.')
            self._stream = self._container.streams.video[0]
            if self._stream.codec_context is None:
                raise UnsupportedCodecError(self.path, _codec_described(logs))
        except VideoReadError:
            self._container.close()
            raise
        self._stream.thread_type = 'AUTO'
        stream = self._stream
        time_base = stream.time_base
        if stream.duration and time_base:
            duration: Optional[float] = float(stream.duration * time_base)
        else:
            duration = self._container.duration / 1e6 if self._container.duration else None
        self.rate: Optional[Fraction] = stream.average_rate or stream.guessed_rate or None
        self.info = VideoInfo(self.path, stream.codec_context.name, stream.codec_context.width,
                              stream.codec_context.height, float(self.rate) if self.rate else None, duration,
                              stream.frames or None)
        self._start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else None
        self.frames_decoded = 0
        self.last_time: Optional[float] = None
        self.damaged_packets = 0
        self.problem: Optional[str] = None
        self._stopped: Optional[str] = None

    def __enter__(self) -> 'VideoReader':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        self._container.close()

    def expected_frames(self, fps: Optional[float] = None) -> Optional[int]:
        """About how many frames :meth:`frames` gives (for a progress bar); None when the file does not say."""
        if fps is None or (self.info.fps and fps >= self.info.fps):
            if self.info.frame_count:
                return self.info.frame_count
            return round(self.info.duration * self.info.fps) if self.info.duration and self.info.fps else None
        return math.ceil(self.info.duration * fps) if self.info.duration else None

    def _packets_decoded(self) -> Iterator[Any]:
        """PyAV's decoded frames, skipping damaged packets; sets ``_stopped`` when reading stops early."""
        packets = self._container.demux(self._stream)
        in_a_row = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except self._errors as e:
                self._stopped = f'the file is damaged or truncated ({e})'
                return
            try:
                frames = self._stream.decode(packet)
            except self._errors as e:
                self.damaged_packets += 1
                in_a_row += 1
                if in_a_row >= MAX_DAMAGED_PACKETS:
                    self._stopped = f'{in_a_row} damaged packets in a row ({e})'
                    return
                continue
            in_a_row = 0
            yield from frames

    def _time(self, frame: Any, index: int) -> float:
        if frame.time is None:
            return index / self.info.fps if self.info.fps else float(index)
        if self._start is None:
            self._start = frame.time
        return frame.time - self._start

    def frames(self, fps: Optional[float] = None) -> Iterator[DecodedFrame]:
        """Decode the frames in order, keeping those on a grid of ``fps`` per second (every frame when None).

        A frame is kept when its time reaches the next grid point k / fps, so a 30 fps video sampled at 5 fps
        gives frames 0, 6, 12, ... at 0.0, 0.2, 0.4 s. Only the kept frames are converted to RGB.
        """
        tolerance = 0.25 / self.info.fps if self.info.fps else 1e-3
        next_time = 0.
        for frame in self._packets_decoded():
            index = self.frames_decoded
            self.frames_decoded += 1
            time = self._time(frame, index)
            self.last_time = time
            if fps is not None:
                if time < next_time - tolerance:
                    continue
                next_time = (math.floor((time + tolerance) * fps) + 1) / fps
            image = frame.to_image()
            rotation = round(frame.rotation) % 360
            if rotation in _TRANSPOSE:
                image = image.transpose(_TRANSPOSE[rotation])
            yield DecodedFrame(index, time, image)
        self.problem = self._what_went_wrong()

    def _what_went_wrong(self) -> Optional[str]:
        """Why the frames ended before the declared end, and how many damaged packets were skipped, or None."""
        info = self.info
        where = (f'frame {self.frames_decoded - 1} ({self.last_time:.2f} s)' if self.frames_decoded else
                 'the first frame')
        interval = 1. / info.fps if info.fps else 0.
        reason = self._stopped
        if reason is None and info.frame_count and self.frames_decoded < info.frame_count - 1:
            reason = f'the file declares {info.frame_count} frames; it is truncated or damaged'
        elif reason is None and info.duration and \
                (self.last_time or 0.) + interval < info.duration - max(3 * interval, 0.5):
            reason = f'the file declares {info.duration:.2f} s; it is truncated or damaged'
        notes = [f'decoding stopped at {where}: {reason}'] if reason else []
        if self.damaged_packets:
            notes.append(f'{self.damaged_packets} damaged packet{"s" if self.damaged_packets > 1 else ""} skipped')
        return '; '.join(notes) or None


def _even(image: Image.Image) -> Image.Image:
    """The image padded with black to even width and height (what 4:2:0 video needs)."""
    width, height = image.width + image.width % 2, image.height + image.height % 2
    if (width, height) == image.size:
        return image
    padded = Image.new('RGB', (width, height))
    padded.paste(image, (0, 0))
    return padded


class VideoWriter:
    """Encode RGB images into an MP4 file, each at its own time; the file appears when the writer closes.

    H.264 (x264, CRF 23) when PyAV's FFmpeg has it, as in PyAV's wheels, else MPEG-4 Part 2. Odd frame sizes are
    padded by one black pixel. Frames that :meth:`write` was given before an error are kept: use the writer as a
    context manager and the file is finished however the block ends.

    Args:
        path: The ``.mp4`` file to write.
        rate: Frame rate of the time grid (the source video's); frames may leave grid points out.
    """

    def __init__(self, path: Union[str, Path], rate: Union[Fraction, float]) -> None:
        self._av = _import_av()
        self.path = Path(path)
        self.rate = Fraction(rate).limit_denominator(1001)
        self.frames = 0
        self._temporary = self.path.parent / f'.{self.path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.mp4'
        self._container = None
        self._stream = None
        self._last_pts = -1

    def __enter__(self) -> 'VideoWriter':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self, size: Tuple[int, int]) -> None:
        av = self._av
        encoder = next(name for name in ENCODERS if name in av.codecs_available)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._temporary), 'w', format='mp4')
        options = {'crf': '23', 'preset': 'veryfast'} if encoder == 'libx264' else {}
        self._stream = self._container.add_stream(encoder, rate=self.rate, options=options)
        self._stream.width, self._stream.height = size
        self._stream.pix_fmt = 'yuv420p'
        if encoder != 'libx264':
            self._stream.bit_rate = 8 * size[0] * size[1]

    def write(self, image: Image.Image, time: float) -> None:
        """Add ``image`` (all of the same size) shown from ``time`` seconds on."""
        image = _even(image.convert('RGB'))
        if self._container is None:
            self._open(image.size)
        frame = self._av.VideoFrame.from_image(image)
        frame.pts = self._last_pts = max(self._last_pts + 1, round(time * self.rate))
        frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place (nothing is written when no frame was)."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            os.replace(self._temporary, self.path)
        finally:
            self._container = None
            if self._temporary.exists():
                self._temporary.unlink()
