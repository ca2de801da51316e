"""Expressions as they happen: a camera, a network stream or a pipe, frame by frame (:func:`stream`), and the run
behind ``timm-fer predict camera:0 | URL | -`` (:func:`predict_stream`).

A reader thread decodes the source (:class:`~timm_fer.faces.video_io.LiveReader`) and samples its frames at ``fps``;
it hands them over one at a time, the newest replacing one not taken yet, so a model slower than the source is
never behind it: the frames it had no time for are dropped and counted. :class:`FrameTracker` is the one per-frame
step: it detects, aligns and tracks the faces of a frame (the step that videos share,
:class:`~timm_fer.inference.video.TrackedFaces`), classifies them at once, and smooths each track's probabilities
over the last seconds (:class:`~timm_fer.inference.timeline.TrackSmoother`, the timeline's moving average).
"""
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple, Union

from PIL import Image

from ..constants import DEFAULT_FPS, DEFAULT_MIN_TRACK, DEFAULT_SMOOTHING, DEFAULT_STALL_TIMEOUT
from ..errors import StreamError, VideoReadError
from ..faces import FaceDetector
from ..faces.video_io import (
    DecodedFrame,
    LiveReader,
    VideoInfo,
    VideoReader,
    is_live_source,
    require_video_decoder,
)
from ..utils.options import Range, option_ranges
from ..utils.outputs import OutputPlan
from .backends import note
from .classifier import FaceClassifier, face_detector, resolve_classifier
from .report import RowWriter, SkippedInput, check_row_file
from .timeline import TrackSmoother
from .video import (
    FrameFace,
    TrackedFaces,
    VideoReport,
    VideoSummary,
    classify_tracked,
    finish_source,
    frame_columns,
    frame_row,
)

__all__ = ['MAX_RECONNECT_DELAY', 'FrameStream', 'FrameTracker', 'StreamFrame', 'live_columns', 'live_row',
           'plan_live_outputs', 'predict_stream', 'stream']

MAX_RECONNECT_DELAY = 30.
"""Longest wait, in seconds, between two tries to reopen a source that dropped out (the waits double from 1 s)."""
MAX_SKIPPED = 20
"""Skipped faces and frames a live run lists one by one; it counts the others."""
_JOIN_TIMEOUT = 2.
"""Seconds to wait for the reader thread when the stream closes (a read blocked on the source ends with its
timeout, and the thread then ends by itself)."""


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
        smoothed: Track id -> the probabilities of each face of ``faces`` averaged over its track's last
            ``smoothing`` seconds (:class:`FrameTracker`), label -> probability.
    """
    index: int
    time: float
    faces: List[FrameFace]
    dropped: int = 0
    image: Optional[Image.Image] = None
    skipped: List[SkippedInput] = field(default_factory=list)
    smoothed: Dict[int, Dict[str, float]] = field(default_factory=dict)

    def smoothed_expression(self, track: int) -> str:
        """The most probable label of the track's smoothed probabilities."""
        smoothed = self.smoothed[track]
        return max(smoothed, key=smoothed.__getitem__)


def live_columns(labels: List[str]) -> List[str]:
    """The keys of :func:`live_row`, in order: those of :func:`~timm_fer.inference.video.frame_row`, then
    ``smoothed_expression`` and ``smoothed_p_<label>`` per label."""
    return frame_columns(labels) + ['smoothed_expression'] + [f'smoothed_p_{label}' for label in labels]


def live_row(frame: StreamFrame, face: FrameFace) -> Dict[str, Any]:
    """The row of a live source's ``face`` in ``frame``: :func:`~timm_fer.inference.video.frame_row`, then the top
    expression and the probabilities of its track smoothed (:attr:`StreamFrame.smoothed`)."""
    return dict(frame_row(face), smoothed_expression=frame.smoothed_expression(face.track),
                **{f'smoothed_p_{label}': p for label, p in frame.smoothed[face.track].items()})


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
        smoothing: Seconds over which each track's probabilities are averaged (:attr:`StreamFrame.smoothed`; 0:
            none); :attr:`smoother` ``.window`` changes it between frames.
    """

    def __init__(self, classifier: FaceClassifier, detector: Optional[FaceDetector] = None, *, aligned: bool = False,
                 min_face_size: float = 32., max_gap: float = 1., source: str = 'stream',
                 smoothing: float = DEFAULT_SMOOTHING) -> None:
        self.classifier = classifier
        self.source = source
        self.smoother = TrackSmoother(smoothing)
        self._faces = TrackedFaces(classifier, face_detector(aligned, detector), min_face_size, max_gap, source)

    @property
    def labels(self) -> List[str]:
        """The classifier's label names, in the model's order."""
        return self.classifier.labels

    def __call__(self, image: Image.Image, time: float, index: int = 0) -> StreamFrame:
        """The classified faces of the frame ``index`` at ``time`` seconds since the source started (any Pillow
        mode: converted to RGB)."""
        failures = self._faces.failures
        crops = self._faces(image if image.mode == 'RGB' else image.convert('RGB'), time, index)
        skipped: List[SkippedInput] = []
        if self._faces.failures > failures:
            skipped.append(SkippedInput(self.source, f'face detection failed on {self._faces.last_failure}'))
        rows = [row for _, row in classify_tracked(self.classifier, crops, self.source, skipped)] if crops else []
        labels = self.labels
        smoothed = self.smoother(time, {row.track: [row.probabilities[label] for label in labels] for row in rows})
        return StreamFrame(index, time, rows, skipped=skipped,
                           smoothed={track: dict(zip(labels, p.tolist())) for track, p in smoothed.items()})


class _Handover:
    """Hands decoded frames from the reader thread to the consumer, one at a time.

    In real time, a frame the consumer has not taken yet is replaced by the next one and counted as dropped, so the
    consumer always gets the newest frame and is never behind; otherwise the reader waits for the consumer.
    """

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._condition = threading.Condition()
        self._frame: Optional[DecodedFrame] = None
        self._dropped = 0
        self._ended = False
        self._error: Optional[BaseException] = None
        self._stopped = False

    def put(self, frame: DecodedFrame) -> bool:
        """Hand ``frame`` over (the reader's side); False once the consumer has stopped."""
        with self._condition:
            if not self.realtime:
                self._condition.wait_for(lambda: self._frame is None or self._stopped)
            elif self._frame is not None:
                self._dropped += 1
            if self._stopped:
                return False
            self._frame = frame
            self._condition.notify_all()
            return True

    def end(self, error: Optional[BaseException] = None) -> None:
        """The reader has no more frames (``error``: it failed)."""
        with self._condition:
            self._ended, self._error = True, error
            self._condition.notify_all()

    def take(self, timeout: Optional[float]) -> Tuple[Optional[DecodedFrame], int]:
        """The next frame and how many were dropped before it; (None, dropped) once the reader has ended.

        Raises:
            TimeoutError: no frame came within ``timeout`` seconds.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: self._frame is not None or self._ended, timeout):
                raise TimeoutError
            frame, dropped = self._frame, self._dropped
            self._frame, self._dropped = None, 0
            self._condition.notify_all()
            if frame is None and self._error is not None:
                raise self._error
            return frame, dropped

    def stop(self) -> None:
        """The consumer takes no more frames: the reader stops at its next frame."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()


def _read(reader: VideoReader, fps: Optional[float], handover: _Handover) -> None:
    """The reader thread: decode and sample the source into ``handover`` until it ends or the consumer stops; the
    thread closes the source (nobody else may while it reads)."""
    try:
        for frame in reader.frames(fps):
            if not handover.put(frame):
                break
    except BaseException as e:  # handed to the consumer, which raises it
        handover.end(e)
    else:
        handover.end()
    finally:
        reader.close()


class FrameStream:
    """The frames of a source with their classified faces, as they come: what :func:`stream` returns.

    Iterate it once. It stops when the source ends, when ``duration`` has passed, or when it is closed (:meth:`close`,
    leaving a ``with`` block, or a ``for`` loop's ``break`` followed by :meth:`close`); closing stops the reader
    thread and releases the source.

    Attributes:
        source: The source's name: ``camera:N``, the URL, ``stdin`` (for ``-``) or the file.
        info: What the source declared when it was (last) opened.
        realtime: Whether frames the model had no time for are dropped (live sources) rather than waited for
            (files, and URLs of files).
        frames_decoded: Frames the source gave, over every reconnection.
        frames_sampled: Frames on the sampling grid: those yielded and those dropped.
        frames_dropped: Frames on the sampling grid left out because the model was slower than the source.
        reconnects: Times the source was reopened after it dropped out.
        dropouts: Why the source dropped out each time it was reopened.
        problem: Why the source stopped before its end: a file damaged or cut short, or a live source that dropped
            out for good (then :class:`~timm_fer.errors.StreamError` was raised too); None otherwise.
        tracker: The per-frame step, with its face tracks.
    """

    def __init__(self, reader: VideoReader, tracker: 'FrameTracker', fps: Optional[float], duration: Optional[float],
                 reconnect: bool, stall_timeout: float, keep_image: bool, log: Callable[[str], None]) -> None:
        self.source = tracker.source
        self.info: VideoInfo = reader.info
        self.realtime = isinstance(reader, LiveReader) and reader.endless
        self.tracker = tracker
        self.fps = fps
        self.duration = duration
        self.reconnect = reconnect and isinstance(reader, LiveReader) and reader.source.kind != 'stdin'
        self.stall_timeout = stall_timeout
        self.keep_image = keep_image
        self.log = log
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.dropouts: List[str] = []
        self.problem: Optional[str] = None
        self._reader: Optional[VideoReader] = reader
        self._last_time = 0.
        self._frames = self._run()

    def __iter__(self) -> 'FrameStream':
        return self

    def __next__(self) -> StreamFrame:
        return next(self._frames)

    def __enter__(self) -> 'FrameStream':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: the reader thread ends and the source is released."""
        self._frames.close()
        if self._reader is not None:  # never iterated: no thread owns the source
            self._reader.close()
            self._reader = None

    def _run(self) -> Generator[StreamFrame, None, None]:
        """The frames of every connection to the source, reopening it after a dropout when asked to."""
        started = time.monotonic()
        offset, first_index = 0., 0
        while True:
            reader, self._reader = self._reader, None
            handover = _Handover(self.realtime)
            thread = threading.Thread(target=_read, args=(reader, self.fps, handover), daemon=True,
                                      name=f'timm-fer reader of {self.source}')
            thread.start()
            try:
                dropout = yield from self._frames_of(reader, handover, started, offset, first_index)
            finally:
                handover.stop()
                thread.join(_JOIN_TIMEOUT)
                self.frames_decoded += reader.frames_decoded
            if dropout is None:
                return
            if not self.reconnect:
                self.problem = dropout
                hint = '; --reconnect reopens it' if isinstance(reader, LiveReader) and \
                    reader.source.kind != 'stdin' else ''
                raise StreamError(self.source, f'{dropout} after {self.frames_decoded} frames{hint}.')
            self._reader = self._reopen(dropout, started)
            if self._reader is None:
                return
            self.info = self._reader.info
            offset = max(time.monotonic() - started, self._last_time + (1 / self.fps if self.fps else 1e-3))
            first_index = self.frames_decoded

    def _frames_of(self, reader: VideoReader, handover: _Handover, started: float, offset: float,
                   first_index: int) -> Generator[StreamFrame, None, Optional[str]]:
        """The frames of one connection; returns why the source dropped out, or None when it ended or the duration
        passed."""
        while True:
            wait = self.stall_timeout if self.realtime else None
            if self.duration is not None and self.realtime:
                left = self.duration - (time.monotonic() - started)
                if left <= 0:
                    return None
                wait = min(self.stall_timeout, left)
            try:
                frame, dropped = handover.take(wait)
            except TimeoutError:
                if self.duration is not None and time.monotonic() - started >= self.duration:
                    return None
                return f'no frame for {self.stall_timeout:g} s: the source stalled'
            self.frames_dropped += dropped
            self.frames_sampled += dropped
            if frame is None:
                if isinstance(reader, LiveReader) and reader.dropped_out:
                    return reader.dropped_out
                if not self.realtime:
                    self.problem = reader.problem
                elif reader.damaged_packets:  # a live source's end is no problem, but damage is worth a note
                    self.log(f'{self.source}: {reader.damaged_packets} damaged packets skipped')
                return None
            when = offset + frame.time
            if self.duration is not None and not self.realtime and when >= self.duration:
                return None
            self.frames_sampled += 1
            self._last_time = when
            result = self.tracker(frame.image, when, first_index + frame.index)
            result.dropped = dropped
            result.image = frame.image if self.keep_image else None
            yield result

    def _reopen(self, dropout: str, started: float) -> Optional[VideoReader]:
        """The source opened again after ``dropout``, waiting 1, 2, 4, ... up to :data:`MAX_RECONNECT_DELAY`
        seconds between tries; None when ``duration`` passes first."""
        self.log(f'{self.source}: {dropout}; reopening it')
        delay = 1.
        while True:
            if self.duration is not None and time.monotonic() - started + delay >= self.duration:
                return None
            time.sleep(delay)
            try:
                reader = LiveReader(self.source, self.stall_timeout)
            except VideoReadError as e:
                delay = min(2 * delay, MAX_RECONNECT_DELAY)
                self.log(f'{self.source}: reopening failed ({e.reason}); next try in {delay:g} s')
                continue
            self.reconnects += 1
            self.dropouts.append(dropout)
            self.log(f'{self.source}: reopened')
            return reader


def _open(source: Union[str, int, Path], stall_timeout: float) -> VideoReader:
    """The reader of a live source (:func:`~timm_fer.faces.video_io.is_live_source`) or of a video file."""
    if isinstance(source, (str, int)) and is_live_source(source):
        return LiveReader(source, stall_timeout)
    return VideoReader(source)


@option_ranges(fps=Range(0, low_open=True, optional=True), duration=Range(0, low_open=True, optional=True),
               min_face_size=Range(0), max_gap=Range(0), smoothing=Range(0), stall_timeout=Range(0, low_open=True))
def stream(
        source: Union[str, int, Path],
        classifier: Optional[FaceClassifier] = None,
        *,
        fps: Optional[float] = DEFAULT_FPS,
        duration: Optional[float] = None,
        reconnect: bool = False,
        aligned: bool = False,
        detector: Optional[FaceDetector] = None,
        min_face_size: float = 32.,
        max_gap: float = 1.,
        smoothing: float = DEFAULT_SMOOTHING,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        keep_image: bool = False,
        log: Callable[[str], None] = note,
        **options: Any,
) -> FrameStream:
    """The frames of a camera, a network stream, standard input or a video file, each with its classified and
    tracked faces, as they come: ``for frame in timm_fer.stream('camera:0'): ...``.

    A live source (a camera, a network stream, standard input) is read in real time: a reader thread decodes it and
    samples ``fps`` frames per second of it, and when the model is slower than that, the frames it has no time for
    are dropped (:attr:`StreamFrame.dropped` counts them), so each frame yielded is the newest. A video file (or a
    URL of a file, which declares its length) is read as fast as the model goes, every sampled frame, none dropped.

    The source is opened at once, so a wrong address fails here. When a camera or a network stream breaks off,
    stalls (no frame for ``stall_timeout`` seconds) or ends, the frames so far have been yielded and
    :class:`~timm_fer.errors.StreamError` is raised; with ``reconnect`` it is reopened instead, again and again (waits
    doubling from 1 s up to :data:`MAX_RECONNECT_DELAY`), and the frame times and indices go on from where they were
    (times from the clock's time since the start, or just after the last frame's when that is later). Standard input
    ends when its writer is done.

    Args:
        source: ``camera:N`` or N (the V4L2 camera ``/dev/videoN``, Linux), a URL (``rtsp://``, ``rtmp://``,
            ``http(s)://``, ``udp://``, ``tcp://``, ``srt://``), ``-`` (standard input: a stream that FFmpeg reads
            from a pipe, such as MPEG-TS), or a video file.
        classifier: The model to classify with (see :func:`~timm_fer.predict`); None loads one from ``options``.
        fps: Frames sampled per second of the source (on the grid 0, 1/fps, 2/fps, ... s of its time); None takes
            every frame.
        duration: Stop after this many seconds: of the clock for a live source (whose first frames may be seconds
            old: servers send some at once to a new client), of the file's time for a file.
        reconnect: Reopen a camera or network stream that dropped out, rather than raise.
        aligned: The frames already are aligned faces: resize them, detect nothing.
        detector: Face detector; default :class:`~timm_fer.faces.RetinaFaceDetector` (the ``face`` extra).
        min_face_size: Faces whose box has a shorter side below this many pixels are left out.
        max_gap: Seconds a face track waits for its face before it ends.
        smoothing: Seconds over which each face track's probabilities are averaged, up to each frame
            (:attr:`StreamFrame.smoothed`; 0: none): the timeline's moving average, in its causal form.
        stall_timeout: Seconds a live source may take to open, or give no frame, before it counts as stalled.
        keep_image: Keep each frame's image in :attr:`StreamFrame.image`.
        log: Says when a source dropped out and was reopened (default: a 'note:' line on standard error).
        options: Without ``classifier``: :class:`~timm_fer.inference.classifier.ClassifierOptions` fields.

    Raises:
        ConfigError: ``source`` is malformed, or an option is out of range.
        VideoReadError: the source cannot be opened (no such camera or file, no stream at the address).
        VideoDecoderUnavailableError: PyAV (the ``video`` extra) is not installed.
    """
    require_video_decoder()
    reader = _open(source, stall_timeout)
    try:
        classifier = resolve_classifier(classifier, options)
        name = reader.source.name if isinstance(reader, LiveReader) else str(source)
        tracker = FrameTracker(classifier, detector, aligned=aligned, min_face_size=min_face_size, max_gap=max_gap,
                               source=name, smoothing=smoothing)
    except BaseException:
        reader.close()
        raise
    return FrameStream(reader, tracker, fps, duration, reconnect, stall_timeout, keep_image, log)


def _stem(source: str) -> str:
    """A file name stem for a source: a file's stem, else its name with the odd characters replaced
    (``rtsp://cam.local/live`` -> ``rtsp_cam.local_live``)."""
    if not is_live_source(source) and source != 'stdin':
        return Path(source).stem
    return re.sub(r'[^A-Za-z0-9.-]+', '_', source).strip('_') or 'stream'


def plan_live_outputs(plan: OutputPlan, source: Union[str, int, Path], output: Optional[Union[str, Path]] = None,
                      timeline: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """Reserve in ``plan`` the files :func:`predict_stream` writes for ``source``: ``output`` and the timeline
    ``STEM.timeline.png`` (``camera:0`` -> ``camera_0``); the timeline's path, None without ``timeline``.

    Raises:
        ConfigError: ``output`` is not a writable ``.csv`` or ``.jsonl`` file, or an output path is an input or
            exists (without the plan's ``overwrite``).
    """
    if output is not None:
        plan.file(check_row_file(output), '--output')
    if timeline is None:
        return None
    name = f'camera:{source}' if isinstance(source, int) else 'stdin' if source == '-' else str(source)
    return plan.derived(timeline, name, 'timeline', '.png', '--timeline', stem=_stem(name))


@option_ranges(fps=Range(0, low_open=True, optional=True), duration=Range(0, low_open=True, optional=True),
               min_face_size=Range(0), max_gap=Range(0), min_track=Range(0), smoothing=Range(0),
               stall_timeout=Range(0, low_open=True))
def predict_stream(
        source: Union[str, int, Path],
        classifier: Optional[FaceClassifier] = None,
        *,
        output: Optional[Union[str, Path]] = None,
        timeline: Optional[Union[str, Path]] = None,
        fps: Optional[float] = DEFAULT_FPS,
        duration: Optional[float] = None,
        reconnect: bool = False,
        aligned: bool = False,
        detector: Optional[FaceDetector] = None,
        min_face_size: float = 32.,
        max_gap: float = 1.,
        min_track: float = DEFAULT_MIN_TRACK,
        smoothing: float = DEFAULT_SMOOTHING,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        on_frame: Optional[Callable[[StreamFrame], None]] = None,
        log: Callable[[str], None] = note,
        overwrite: bool = False,
        outputs: Optional[OutputPlan] = None,
        **options: Any,
) -> VideoReport:
    """Run a source through :func:`stream` until it ends, ``duration`` passes or Ctrl-C, writing its rows as they
    come; the report of the run (a video report with one video: the source).

    Ctrl-C (KeyboardInterrupt) ends the run as the source's end does: the report of the frames so far is returned.
    A source that drops out for good is the report's ``problem`` (and skipped input), not an exception.

    Args:
        source: As for :func:`stream`.
        classifier: The model to classify with; None loads one from ``options``.
        output: ``.csv`` or ``.jsonl`` file that gets one row per face and frame (the columns of
            :func:`live_row`: those of videos, and the track's smoothed probabilities), flushed after every frame: a
            killed run keeps every row written. Every row is written, also those of tracks that turn out shorter
            than ``min_track``.
        timeline: Folder for the source's expression timeline PNG (``STEM.timeline.png``), drawn at the end.
        min_track: Seconds a face track must be seen for to be in the report's tracks and rows (as for videos).
        smoothing: Seconds of the moving average of each track's probabilities (0: none): centred in the timeline,
            up to each frame in the rows' ``smoothed_`` columns.
        on_frame: Called with every frame as it comes (to show it, say).
        overwrite: Replace files already at ``output`` and the timeline's path (an input never): without it, such a
            file stops the run before the source is opened (:class:`~timm_fer.utils.OutputPlan`).
        outputs: The run's output plan, when the caller reserved the outputs in it; its ``overwrite`` then applies.
        **options: As for :func:`stream`, as are ``fps``, ``duration``, ``reconnect``, ``aligned``, ``detector``,
            ``min_face_size``, ``max_gap``, ``stall_timeout`` and ``log``.

    Raises:
        ConfigError: an option is out of range, or ``output`` is not a writable ``.csv`` or ``.jsonl`` file.
        VideoReadError: the source cannot be opened.
    """
    plan = outputs or OutputPlan([None if is_live_source(source) else source, options.get('checkpoint')],
                                 overwrite=overwrite)
    timeline_path = plan_live_outputs(plan, source, output, timeline)
    plan.create_folders()
    frames = stream(source, classifier, fps=fps, duration=duration, reconnect=reconnect, aligned=aligned,
                    detector=detector, min_face_size=min_face_size, max_gap=max_gap, smoothing=smoothing,
                    stall_timeout=stall_timeout, log=log, **options)
    classifier = frames.tracker.classifier
    info = frames.info
    summary = VideoSummary(frames.source, info.codec, info.width, info.height, info.fps, info.duration)
    report = VideoReport(classifier.model_name, classifier.weights, classifier.labels, fps, smoothing, min_track,
                         videos=[summary])
    rows: List[FrameFace] = []
    skipped: List[SkippedInput] = []
    writer = RowWriter(output, live_columns(classifier.labels)) if output is not None else None
    try:
        with frames:
            for frame in frames:
                rows.extend(frame.faces)
                skipped.extend(frame.skipped)
                summary.frames_with_faces += bool(frame.faces)
                summary.decoded_until = frame.time
                if writer is not None:
                    writer.write([live_row(frame, face) for face in frame.faces])
                if on_frame is not None:
                    on_frame(frame)
    except KeyboardInterrupt:
        log(f'{frames.source}: stopped (Ctrl-C)')
    except StreamError as e:
        log(str(e))
    finally:
        if writer is not None:
            writer.close()
    summary.frames_decoded = frames.frames_decoded
    summary.frames_sampled = frames.frames_sampled - frames.frames_dropped
    summary.frames_dropped = frames.frames_dropped
    # finish_source says how many rows its tracks keep; with ``output``, every row was written, short tracks' too
    summary.problem = frames.problem if output is None else None
    report.skipped.extend(skipped[:MAX_SKIPPED])
    if len(skipped) > MAX_SKIPPED:
        report.skipped.append(SkippedInput(frames.source, f'and {len(skipped) - MAX_SKIPPED} more skipped faces or '
                                                          f'frames'))
    report.skipped.extend(SkippedInput(frames.source, f'dropped out ({dropout}); reopened') for dropout in
                          frames.dropouts)
    finish_source(report, summary, rows, timeline_path,
                  f'{frames.source}: {classifier.model_name}{classifier.title_suffix}')
    if output is not None and frames.problem:
        summary.problem = frames.problem
        report.skipped.append(SkippedInput(frames.source, f'{frames.problem}; kept the {len(rows)} rows of the frames '
                                                          f'before in {output}'))
    return report
