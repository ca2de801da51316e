"""Reading videos frame by frame, and writing them, with PyAV (the ``video`` extra).

PyAV's wheels carry FFmpeg's libraries, so ``pip install "timm-fer[video]"`` decodes H.264, HEVC, VP8/VP9, AV1,
MPEG-4 and MJPEG in MP4, MOV, MKV, WebM and AVI files without a system FFmpeg. Frames are decoded one packet at a
time and handed on one by one, so memory does not grow with the video's length. A damaged packet is skipped (the
decoder picks up at the next good one); a file cut short ends early, and :class:`VideoReader` says where.

:class:`LiveReader` decodes live sources the same way: a camera (``camera:N``, Linux V4L2), a network stream
(``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://``) or standard input (``-``).
"""
import math
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from PIL import Image

from ..constants import DEFAULT_STALL_TIMEOUT
from ..errors import ConfigError, UnsupportedCodecError, VideoDecoderUnavailableError, VideoReadError

__all__ = ['LIVE_SCHEMES', 'DecodedFrame', 'LiveReader', 'LiveSource', 'VideoInfo', 'VideoReader',
           'VideoWriter', 'is_live_source', 'is_video_file', 'live_source', 'require_video_decoder', 'video_suffixes']

VIDEO_SUFFIXES = ('.3gp', '.avi', '.flv', '.m2ts', '.m4v', '.mkv', '.mov', '.mp4', '.mpeg', '.mpg', '.mts', '.ogv',
                  '.ts', '.webm', '.wmv')
"""File suffixes (lower case, with the dot) taken as videos."""
ENCODERS = ('libx264', 'mpeg4')
"""Encoders of written videos, first available first: H.264 (PyAV's wheels include x264), else MPEG-4 Part 2."""
MAX_DAMAGED_PACKETS = 100
"""Decoding gives up after this many damaged packets in a row."""
LIVE_SCHEMES = ('rtsp', 'rtsps', 'rtmp', 'rtmps', 'http', 'https', 'udp', 'tcp', 'srt')
"""URL schemes of the network streams that :class:`LiveReader` opens (through FFmpeg's protocols)."""

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
        path: The file, or a live source's name (``camera:0``, its URL, ``stdin``).
        codec: FFmpeg's name of the codec, e.g. ``h264``, ``vp9``, ``mjpeg``.
        width: Frame width in pixels, as stored (before any rotation).
        height: Frame height in pixels, as stored.
        fps: Average frame rate; None when the file does not say.
        duration: Length in seconds; None when the file does not say.
        frame_count: Number of frames; None when the file does not say.
    """
    path: Union[Path, str]
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

    _kind = 'file'
    """What the reader reads, for messages."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(self.path, 'no such file; check the path.')
        self._open(str(self.path), self.path)

    def _open(self, target: str, name: Union[Path, str], container_format: Optional[str] = None,
              options: Optional[Dict[str, str]] = None, timeout: Optional[Tuple[float, float]] = None) -> None:
        """Open ``target`` with FFmpeg (``name`` in messages) and its first video stream."""
        av = _import_av()
        self._errors = av.error.FFmpegError
        self._exit_error = av.error.ExitError
        previous_level = av.logging.get_level()
        av.logging.set_level(av.logging.WARNING)
        try:
            with av.logging.Capture() as logs:
                self._container = av.open(target, format=container_format, options=options or {}, timeout=timeout)
        except self._errors as e:
            raise VideoReadError(name, self._cannot_open(e)) from e
        finally:
            av.logging.set_level(previous_level)
        try:
            if not self._container.streams.video:
                raise VideoReadError(name, f'the {self._kind} holds no video stream.')
            self._stream = self._container.streams.video[0]
            if self._stream.codec_context is None:
                raise UnsupportedCodecError(name, _codec_described(logs))
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
        self.info = VideoInfo(name, stream.codec_context.name, stream.codec_context.width,
                              stream.codec_context.height, float(self.rate) if self.rate else None, duration,
                              stream.frames or None)
        self._start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else None
        self.frames_decoded = 0
        self.last_time: Optional[float] = None
        self.damaged_packets = 0
        self.problem: Optional[str] = None
        self._stopped: Optional[str] = None

    def _cannot_open(self, error: Exception) -> str:
        """Why the source could not be opened, and what to do."""
        return (f'not a video that FFmpeg can read, or damaged where it starts ({error}); an MP4/MOV file cut short '
                f'loses its index, which is written last.')

    def _broke_off(self, error: Exception) -> str:
        """Why reading stopped on ``error``."""
        return f'the file is damaged or truncated ({error})'

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
                self._stopped = self._broke_off(e)
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


@dataclass(frozen=True)
class LiveSource:
    """A live source, and how FFmpeg opens it.

    Attributes:
        name: The source's name: ``camera:N``, the URL, or ``stdin`` for ``-``.
        kind: 'camera', 'url' or 'stdin'.
        target: What FFmpeg opens: ``/dev/videoN``, the URL, or ``pipe:0``.
        container_format: FFmpeg's input format (``v4l2`` for cameras); None lets FFmpeg tell from the data.
        options: FFmpeg options of the input (RTSP over TCP, which loses no packets, rather than UDP).
    """
    name: str
    kind: str
    target: str
    container_format: Optional[str] = None
    options: Dict[str, str] = field(default_factory=dict)


_CAMERA = re.compile(r'camera:(\d+)')


def _scheme(text: str) -> Optional[str]:
    """The URL scheme of ``text`` in lower case, or None when it is no URL."""
    scheme, separator, _ = text.partition('://')
    return scheme.lower() if separator and scheme.isalpha() else None


def is_live_source(source: Union[str, int, Path]) -> bool:
    """Whether ``source`` names a live source: a camera (``camera:N`` or N), a URL whose scheme is one of
    :data:`LIVE_SCHEMES`, or ``-`` (standard input)."""
    if isinstance(source, int) and not isinstance(source, bool):
        return True
    text = str(source)
    return text == '-' or text.startswith('camera:') or _scheme(text) in LIVE_SCHEMES


def live_source(source: Union[str, int]) -> LiveSource:
    """How to open a live source (see :func:`is_live_source`).

    Raises:
        ConfigError: ``source`` is no live source, or a camera where V4L2 cannot read one.
    """
    text = f'camera:{source}' if isinstance(source, int) and not isinstance(source, bool) else str(source)
    if text == '-':
        return LiveSource('stdin', 'stdin', 'pipe:0')
    if text.startswith('camera:'):
        match = _CAMERA.fullmatch(text)
        if match is None:
            raise ConfigError(f'{text!r} names no camera: give its number, e.g. camera:0 for /dev/video0.')
        if not sys.platform.startswith('linux'):
            raise ConfigError(f'{text}: cameras are read through Linux V4L2, which {sys.platform} lacks; pipe '
                              f"ffmpeg's capture of the camera into '-' instead (ffmpeg ... -f mpegts - | timm-fer "
                              f'predict -).')
        return LiveSource(text, 'camera', f'/dev/video{int(match.group(1))}', 'v4l2')
    scheme = _scheme(text)
    if scheme not in LIVE_SCHEMES:
        raise ConfigError(f'{text!r} is no live source: give camera:N, -, or a URL starting with '
                          f'{", ".join(s + "://" for s in LIVE_SCHEMES)}.')
    return LiveSource(text, 'url', text, options={'rtsp_transport': 'tcp'} if scheme.startswith('rtsp') else {})


class LiveReader(VideoReader):
    """Decode a live source one frame at a time: a camera, a network stream or standard input.

    It reads as :class:`VideoReader` does, and :attr:`info` says what the source declares (a live stream declares no
    length). A source that declares no length is :attr:`endless`: it never ends by itself, so when a camera or a
    network stream stops giving frames, or gives no data for ``timeout`` seconds, :attr:`dropped_out` says why
    (standard input ends when its writer is done). A URL to a file of declared length (a duration, or a size in bytes
    as HTTP's Content-Length gives, whose early end FFmpeg reports as an error) reads as a file.

    Args:
        source: ``camera:N`` or N (``/dev/videoN``), a URL, or ``-``.
        timeout: Seconds to wait for the source to open, and then for data, before giving up.

    Raises:
        ConfigError: ``source`` names no live source.
        VideoDecoderUnavailableError: PyAV is not installed.
        UnsupportedCodecError: the codec has no decoder in PyAV's FFmpeg.
        VideoReadError: there is no such camera, or the source cannot be opened.
    """

    def __init__(self, source: Union[str, int], timeout: float = DEFAULT_STALL_TIMEOUT) -> None:
        self.source = live_source(source)
        self.timeout = timeout
        self.dropped_out: Optional[str] = None
        self._kind = {'camera': 'camera', 'url': 'stream', 'stdin': 'standard input'}[self.source.kind]
        if self.source.kind == 'camera' and not os.path.exists(self.source.target):
            present = ', '.join(sorted(str(p) for p in Path('/dev').glob('video[0-9]*'))) or 'none'
            raise VideoReadError(self.source.name, f'no camera at {self.source.target} (cameras on this machine: '
                                                   f'{present}); check the number, and that it is plugged in.')
        self._open(self.source.target, self.source.name, self.source.container_format, self.source.options,
                   (timeout, timeout))
        self.endless = self.source.kind != 'url' or (self.info.duration is None and self._container.size <= 0)
        if self.endless:  # frame threads hold back a frame each: slices only, for frames as they come
            self._stream.thread_type = 'SLICE'

    def _cannot_open(self, error: Exception) -> str:
        if self.source.kind == 'camera':
            return f'the camera cannot be opened ({error}); another program may be using it.'
        if self.source.kind == 'stdin':
            return (f'standard input holds no stream that FFmpeg can read ({error}); pipe a streamable format into '
                    f'it, such as MPEG-TS (ffmpeg ... -f mpegts -), NUT or Matroska.')
        if isinstance(error, self._exit_error):
            return f'no answer within {self.timeout:g} s; check the address, and that the stream is running.'
        return f'the stream cannot be opened ({error}); check the address, and that the stream is running.'

    def _broke_off(self, error: Exception) -> str:
        if isinstance(error, self._exit_error):
            return f'no data for {self.timeout:g} s: the {self._kind} stalled'
        return f'the {self._kind} broke off ({error})'

    def _what_went_wrong(self) -> Optional[str]:
        if self.endless:
            if self._stopped is None and self.source.kind != 'stdin':
                self._stopped = f'the {self._kind} ended'
            self.dropped_out = self._stopped
        return super()._what_went_wrong()


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
