"""Expressions over time: ``timm-fer predict`` on videos and :func:`predict_video`.

A video is decoded one frame at a time (:class:`~timm_fer.faces.video_io.VideoReader`, PyAV), sampled at a few
frames per second (or every frame), and each sampled frame goes through the photo pipeline: its faces are detected
and aligned, given a track id (:class:`~timm_fer.inference.tracking.FaceTracker`), and classified in batches by the
:class:`~timm_fer.inference.classifier.FaceClassifier` that photos use too. The result has one row per face and
sampled frame, and a summary per track (the share of its frames in each expression). Optional outputs: an
expression timeline PNG per video, and the video with each face's box, track id and top expression drawn on it. A
video that cannot be opened, or that breaks off, is reported while the others go on; the rows of a video that breaks
off are kept.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..constants import DEFAULT_FPS, DEFAULT_MIN_TRACK, DEFAULT_SMOOTHING
from ..errors import ConfigError, FerError, VideoReadError
from ..faces import FaceDetector, image_suffixes
from ..faces.io import find_media
from ..faces.video_io import VideoReader, VideoWriter, require_video_decoder
from ..utils.options import Range, option_ranges
from ..utils.outputs import OutputPlan
from .annotate import annotate_image
from .classifier import (
    FaceClassifier,
    FaceCrop,
    aligned_input_warning,
    classify_pairs,
    face_detector,
    resolve_classifier,
    unlike_a_face_crop,
)
from .predict import check_top_k
from .report import Report, SkippedInput, label_columns
from .timeline import draw_timeline
from .tracking import FaceTracker, appearance

__all__ = ['DEFAULT_FPS', 'DEFAULT_MIN_TRACK', 'DEFAULT_SMOOTHING', 'FrameFace', 'TrackSummary', 'TrackedCrop',
           'TrackedFaces', 'VideoOutputs', 'VideoReport', 'VideoSummary', 'classify_tracked', 'finish_source',
           'format_video_table', 'frame_columns', 'frame_row', 'plan_video_outputs', 'predict_video',
           'write_video_report']


@dataclass
class FrameFace:
    """The expression of one face in one sampled frame.

    Attributes:
        file: The video.
        frame: Index of the frame among the video's decoded frames, from 0.
        time: Presentation time of the frame in seconds from the start.
        track: The face's track id in this video: the same person keeps it across frames.
        box: (x0, y0, x1, y1) in pixels of the upright frame.
        detector_score: The detector's confidence; None with ``aligned``.
        expression: The most probable label.
        probabilities: Probability of every label, in the model's label order.
    """
    file: str
    frame: int
    time: float
    track: int
    box: Tuple[int, int, int, int]
    detector_score: Optional[float]
    expression: str
    probabilities: Dict[str, float]


@dataclass
class TrackSummary:
    """One face track of a video: when it was seen and its share of time in each expression.

    Attributes:
        file: The video.
        track: The track id.
        start: Time of its first frame, in seconds.
        end: Time of its last frame, in seconds.
        frames: Number of sampled frames it was classified in.
        expression: Its most frequent top expression.
        shares: Share of its frames whose top expression is each label (sampled frames are evenly spaced in time,
            so this is the share of time).
        mean_probabilities: Its mean probability of each label.
        detector_score: The detector's mean confidence over its frames; None with ``aligned``.
    """
    file: str
    track: int
    start: float
    end: float
    frames: int
    expression: str
    shares: Dict[str, float]
    mean_probabilities: Dict[str, float]
    detector_score: Optional[float] = None


@dataclass
class VideoSummary:
    """What happened to one video.

    Attributes:
        file: The video.
        codec: FFmpeg's name of its codec.
        width: Frame width in pixels, as stored.
        height: Frame height in pixels, as stored.
        fps: The file's average frame rate; None when it does not say.
        duration: The length the file declares, in seconds; None when it does not say.
        frames_decoded: Frames decoded.
        frames_sampled: Frames that went through face detection.
        frames_with_faces: Sampled frames with at least one classified face.
        decoded_until: Time of the last decoded frame, in seconds.
        problem: Why decoding stopped early or what went wrong; None when the whole video was read.
        timeline: Path of the timeline PNG, when one was written.
        annotated: Path of the annotated video, when one was written.
        short_tracks: Face tracks seen for less than ``min_track``, dropped with their rows.
        frames_dropped: Frames of a live source left out because the model was slower than the source.
    """
    file: str
    codec: str
    width: int
    height: int
    fps: Optional[float]
    duration: Optional[float]
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_with_faces: int = 0
    decoded_until: Optional[float] = None
    problem: Optional[str] = None
    timeline: Optional[str] = None
    annotated: Optional[str] = None
    short_tracks: int = 0
    frames_dropped: int = 0


@dataclass
class VideoReport(Report):
    """Everything :func:`predict_video` found: a row per face and sampled frame, a summary per track and video.

    Attributes:
        model: The model's name.
        weights: Where its weights came from.
        labels: The label names, in the model's order.
        fps: Frames sampled per second; None when every frame was.
        smoothing: Seconds of the timeline's moving average.
        min_track: Seconds a face track had to be seen for to be kept.
        videos: One summary per video that could be opened.
        tracks: One summary per face track, in video and track order.
        faces: One row per face and sampled frame, in video, frame and left-to-right order.
        skipped: Inputs (or parts of them) that gave no prediction, and why.
        warnings: What may make predictions meaningless (videos given as aligned faces that look like none).
    """
    model: str
    weights: str
    labels: List[str]
    fps: Optional[float]
    smoothing: float
    min_track: float = DEFAULT_MIN_TRACK
    videos: List[VideoSummary] = field(default_factory=list)
    tracks: List[TrackSummary] = field(default_factory=list)
    faces: List[FrameFace] = field(default_factory=list)
    skipped: List[SkippedInput] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def to_dataframe(self) -> Any:
        """The rows as a pandas DataFrame: file, frame, time, track, x0, y0, x1, y1, detector_score, expression and
        ``p_<label>`` columns (pandas is not a dependency: ``pip install pandas``)."""
        return _dataframe([frame_row(f) for f in self.faces], frame_columns(self.labels))

    def tracks_dataframe(self) -> Any:
        """The track summaries as a pandas DataFrame: file, track, start, end, frames, expression and
        ``share_<label>`` columns."""
        return _dataframe([dict(file=t.file, track=t.track, start=t.start, end=t.end, frames=t.frames,
                                expression=t.expression, **{f'share_{k}': v for k, v in t.shares.items()})
                           for t in self.tracks],
                          ['file', 'track', 'start', 'end', 'frames', 'expression'] +
                          [f'share_{label}' for label in self.labels])


def frame_columns(labels: Sequence[str]) -> List[str]:
    """The keys of :func:`frame_row`, in order, for a model with these labels."""
    return ['file', 'frame', 'time', 'track', 'x0', 'y0', 'x1', 'y1', 'detector_score', 'expression'] + [
        f'p_{label}' for label in labels]


def frame_row(face: FrameFace) -> Dict[str, Any]:
    """One face in one frame as a flat row: file, frame, time, track, x0, y0, x1, y1, detector_score, expression
    and ``p_<label>`` per label (the columns of :meth:`VideoReport.to_dataframe` and of a live source's rows)."""
    return dict(file=face.file, frame=face.frame, time=face.time, track=face.track,
                **dict(zip(('x0', 'y0', 'x1', 'y1'), face.box)), detector_score=face.detector_score,
                expression=face.expression, **{f'p_{k}': v for k, v in face.probabilities.items()})


def _dataframe(rows: List[Dict[str, Any]], columns: List[str]) -> Any:
    try:
        import pandas
    except ImportError as e:
        raise ImportError('the DataFrame view needs pandas, which timm-fer does not install: pip install pandas') \
            from e
    return pandas.DataFrame(rows, columns=columns)


@dataclass
class TrackedCrop(FaceCrop):
    """An aligned face of a frame, with its track id, waiting for its batch."""
    frame: int
    time: float
    track: int

    def describe(self) -> str:
        return f'face {self.face} of frame {self.frame} ({self.time:.2f} s)'


class TrackedFaces:
    """The per-frame step of videos and live streams: detect, align and track the faces of one source's frames.

    Call it once per frame, in time order. A frame whose face detection fails gives no face (the source goes on);
    :attr:`failures` counts those frames, :attr:`first_failure` and :attr:`last_failure` describe the first and the
    latest.

    Args:
        classifier: Crops the faces at its model's input size (only its ``crop_faces`` is used).
        detector: The face detector; None takes each frame as an aligned face.
        min_face_size: Faces whose box has a shorter side below this many pixels are left out.
        max_gap: Seconds a face track waits for its face before it ends.
        source: The source's name, the ``file`` of its rows.
    """

    def __init__(self, classifier: FaceClassifier, detector: Optional[FaceDetector], min_face_size: float,
                 max_gap: float, source: str) -> None:
        self.classifier = classifier
        self.detector = detector
        self.min_face_size = min_face_size
        self.source = source
        self.tracker = FaceTracker(max_gap=max_gap)
        self.failures = 0
        self.first_failure: Optional[str] = None
        self.last_failure: Optional[str] = None

    def __call__(self, image: Image.Image, time: float, index: int) -> List[TrackedCrop]:
        """The aligned faces of the frame ``index`` at ``time`` seconds, each with its track id."""
        try:
            crops, _ = self.classifier.crop_faces(Path(self.source), image, self.detector, self.min_face_size)
        except Exception as e:  # one bad frame never stops the source
            self.failures += 1
            self.last_failure = f'frame {index} ({time:.2f} s): {type(e).__name__}: {e}'
            self.first_failure = self.first_failure or self.last_failure
            crops = []
        tracks = self.tracker.update(time, [c.box for c in crops], [appearance(c.image) for c in crops])
        return [TrackedCrop(c.file, c.face, c.box, c.detector_score, c.image, index, time, track)
                for c, track in zip(crops, tracks)]

    def failure_note(self) -> Optional[str]:
        """What :attr:`failures` says, for the skipped inputs; None when detection never failed."""
        if not self.failures:
            return None
        return f'face detection failed on {self.failures} frame(s), first {self.first_failure}'


def classify_tracked(classifier: FaceClassifier, crops: Sequence[TrackedCrop], source: str,
                     skipped: List[SkippedInput]) -> List[Tuple[TrackedCrop, FrameFace]]:
    """Classify tracked faces in one batch (:func:`~timm_fer.inference.classifier.classify_pairs`: faces that cannot
    be classified go to ``skipped``), each with its row; ``source`` is the rows' ``file``."""
    return [(crop, FrameFace(source, crop.frame, crop.time, crop.track, crop.box, crop.detector_score,
                             prediction.expression, prediction.probabilities))
            for crop, prediction in classify_pairs(classifier, crops, skipped)]


@dataclass
class _PendingFrame:
    """A sampled frame whose faces wait for their batch (its image only when the annotated video is written)."""
    time: float
    image: Optional[Image.Image]
    crops: List[TrackedCrop]
    rows: List[FrameFace] = field(default_factory=list)


class _VideoRun:
    """Runs one video through detection, tracking and batched classification into a report."""

    def __init__(self, report: VideoReport, classifier: FaceClassifier, detector: Optional[FaceDetector],
                 fps: Optional[float], batch_size: int, min_face_size: float, max_gap: float,
                 disable_progress: Optional[bool]) -> None:
        self.report = report
        self.classifier = classifier
        self.detector = detector
        self.fps = fps
        self.batch_size = batch_size
        self.min_face_size = min_face_size
        self.max_gap = max_gap
        self.disable_progress = disable_progress

    def __call__(self, reader: VideoReader, summary: VideoSummary, writer: Optional[VideoWriter]) -> None:
        faces = TrackedFaces(self.classifier, self.detector, self.min_face_size, self.max_gap, str(reader.path))
        pending: List[_PendingFrame] = []
        frames = tqdm(reader.frames(self.fps), total=reader.expected_frames(self.fps), desc=reader.path.name,
                      unit='frame', disable=self.disable_progress)
        try:
            for frame in frames:
                summary.frames_sampled += 1
                pending.append(_PendingFrame(frame.time, frame.image if writer is not None else None,
                                             faces(frame.image, frame.time, frame.index)))
                if len(pending) >= self.batch_size or sum(len(p.crops) for p in pending) >= self.batch_size:
                    batch, pending = pending, []
                    self._flush(batch, summary, writer)
            self._flush(pending, summary, writer)
        except FerError:
            raise
        except Exception as e:  # keep the rows found so far, and go on with the next video
            summary.problem = f'stopped after frame {reader.frames_decoded - 1} ({type(e).__name__}: {e})'
        finally:
            frames.close()
        note = faces.failure_note()
        if note:
            self.report.skipped.append(SkippedInput(str(reader.path), note))

    def _flush(self, pending: List[_PendingFrame], summary: VideoSummary, writer: Optional[VideoWriter]) -> None:
        """Classify the faces of the pending frames in batches, add their rows, and write the annotated frames."""
        crops = [(frame, crop) for frame in pending for crop in frame.crops]
        by_crop = {id(crop): frame for frame, crop in crops}
        for start in range(0, len(crops), self.batch_size):
            batch = [crop for _, crop in crops[start:start + self.batch_size]]
            for crop, row in classify_tracked(self.classifier, batch, summary.file, self.report.skipped):
                by_crop[id(crop)].rows.append(row)
                self.report.faces.append(row)
        summary.frames_with_faces += sum(1 for frame in pending if frame.rows)
        if writer is None:
            return
        suffix = self.classifier.title_suffix
        for frame in pending:
            labels = [(r.box, f'#{r.track} {r.expression} {r.probabilities[r.expression]:.2f}{suffix}')
                      for r in frame.rows]
            writer.write(annotate_image(frame.image, labels), frame.time)


def _summaries(rows: Sequence[FrameFace], labels: List[str]) -> List[TrackSummary]:
    """One summary per track of one video's rows, in track order."""
    by_track: Dict[int, List[FrameFace]] = {}
    for row in rows:
        by_track.setdefault(row.track, []).append(row)
    summaries = []
    for track, track_rows in sorted(by_track.items()):
        probabilities = np.array([[r.probabilities[label] for label in labels] for r in track_rows])
        counts = np.bincount(probabilities.argmax(axis=1), minlength=len(labels))
        shares = {label: float(c / len(track_rows)) for label, c in zip(labels, counts)}
        scores = [r.detector_score for r in track_rows if r.detector_score is not None]
        summaries.append(TrackSummary(
            track_rows[0].file, track, track_rows[0].time, track_rows[-1].time, len(track_rows),
            labels[int(counts.argmax())], shares, dict(zip(labels, probabilities.mean(axis=0).tolist())),
            float(np.mean(scores)) if scores else None))
    return summaries


def _sampling_interval(fps: Optional[float], summary: VideoSummary) -> float:
    """Seconds between one video's sampled frames: the sampling's or the video's own, whichever is longer."""
    intervals = [1. / rate for rate in (fps, summary.fps) if rate]
    return max(intervals) if intervals else 1.


def _drop_short_tracks(rows: List[FrameFace], summary: VideoSummary, interval: float,
                       min_track: float) -> List[FrameFace]:
    """One video's rows without those of tracks seen for less than ``min_track`` seconds (and at least two sampled
    frames, a single detection being no track; fewer when the video has no more), counted in ``summary``."""
    if not min_track:
        return rows
    needed = min(max(2, math.ceil(min_track / interval - 1e-9)), summary.frames_sampled)
    frames: Dict[int, int] = {}
    for row in rows:
        frames[row.track] = frames.get(row.track, 0) + 1
    short = {track for track, count in frames.items() if count < needed}
    if not short:
        return rows
    summary.short_tracks = len(short)
    kept = [row for row in rows if row.track not in short]
    summary.frames_with_faces = len({row.frame for row in kept})
    return kept


def _timeline(rows: Sequence[FrameFace], labels: List[str], summary: VideoSummary, fps: Optional[float], path: Path,
              title: str, smoothing: float) -> None:
    """Draw one video's timeline."""
    interval = _sampling_interval(fps, summary)
    tracks: Dict[int, Tuple[List[float], List[List[float]]]] = {}
    for row in rows:
        times, probabilities = tracks.setdefault(row.track, ([], []))
        times.append(row.time)
        probabilities.append([row.probabilities[label] for label in labels])
    duration = max(summary.duration or 0., (summary.decoded_until or 0.) + interval)
    draw_timeline({t: (np.array(times), np.array(p)) for t, (times, p) in tracks.items()}, labels, duration,
                  interval, str(path), title, smoothing)


def finish_source(report: VideoReport, summary: VideoSummary, rows: List[FrameFace], timeline: Optional[Path],
                  title: str) -> None:
    """Add the rows and face tracks of one video or live source (whose ``summary`` is in ``report``) to ``report``.

    Tracks seen for less than the report's ``min_track`` are dropped with their rows and counted in ``summary``; a
    ``summary.problem`` is noted among the skipped inputs; with ``timeline``, the source's timeline is drawn there.
    """
    rows = _drop_short_tracks(rows, summary, _sampling_interval(report.fps, summary), report.min_track)
    report.faces.extend(rows)
    report.tracks.extend(_summaries(rows, report.labels))
    if summary.problem:
        report.skipped.append(SkippedInput(summary.file, f'{summary.problem}; kept the {len(rows)} rows of the '
                                                         f'frames before'))
    if timeline is not None:
        summary.timeline = str(timeline)
        _timeline(rows, report.labels, summary, report.fps, timeline, title, report.smoothing)


@dataclass
class VideoOutputs:
    """Where a video run writes its pictures and videos, reserved by :func:`plan_video_outputs` before the run."""
    timelines: Dict[str, Path] = field(default_factory=dict)
    annotated: Dict[str, Path] = field(default_factory=dict)


def plan_video_outputs(plan: OutputPlan, files: Sequence[Union[str, Path]], timeline: Optional[Union[str, Path]] = None,
                       save_annotated: Optional[Union[str, Path]] = None) -> VideoOutputs:
    """Reserve in ``plan`` the files :func:`predict_video` writes for ``files``: ``STEM.timeline.png`` and
    ``STEM.annotated.mp4`` per video (see :class:`~timm_fer.utils.OutputPlan`).

    Raises:
        ConfigError: an output path is an input, or exists (without the plan's ``overwrite``), or a folder cannot be
            written.
    """
    outputs = VideoOutputs()
    for file in files:
        if timeline is not None:
            outputs.timelines[str(file)] = plan.derived(timeline, file, 'timeline', '.png', '--timeline')
        if save_annotated is not None:
            outputs.annotated[str(file)] = plan.derived(save_annotated, file, 'annotated', '.mp4', '--save-annotated')
    return outputs


def _not_a_video(path: Path) -> str:
    if path.suffix.lower() in image_suffixes():
        return 'an image, not a video: predict it with timm_fer.predict (the command line does so by itself)'
    return 'not a video file (.mp4, .webm, .avi, .mkv, .mov, ...)'


@option_ranges(fps=Range(0, low_open=True, optional=True), batch_size=Range(1, integer=True),
               min_face_size=Range(0), smoothing=Range(0), max_gap=Range(0), min_track=Range(0))
def predict_video(
        videos: Union[str, Path, Sequence[Union[str, Path]]],
        classifier: Optional[FaceClassifier] = None,
        *,
        aligned: bool = False,
        detector: Optional[FaceDetector] = None,
        fps: Optional[float] = DEFAULT_FPS,
        batch_size: int = 32,
        min_face_size: float = 32.,
        timeline: Optional[Union[str, Path]] = None,
        save_annotated: Optional[Union[str, Path]] = None,
        smoothing: float = DEFAULT_SMOOTHING,
        max_gap: float = 1.,
        min_track: float = DEFAULT_MIN_TRACK,
        overwrite: bool = False,
        outputs: Optional[OutputPlan] = None,
        progress: Optional[bool] = None,
        **options: Any,
) -> VideoReport:
    """Predict the expression of every face over time in some videos, with face tracks.

    Args:
        videos: Video files, folders (searched recursively for video suffixes) or glob patterns, or one of them.
        classifier: The model to classify with (see :func:`~timm_fer.predict`); None loads one from ``options``.
        aligned: The frames already are aligned faces: resize them, detect nothing. Videos whose frames look like no
            face crop are classified all the same, with a warning in the report (as :func:`~timm_fer.predict`).
        detector: Face detector; default :class:`~timm_fer.faces.RetinaFaceDetector` (the ``face`` extra).
        fps: Frames sampled per second of video (on the grid 0, 1/fps, 2/fps, ... s); None samples every frame.
        batch_size: Faces per forward pass.
        min_face_size: Faces whose box has a shorter side below this many pixels are left out.
        timeline: Folder for one expression timeline PNG per video, ``STEM.timeline.png``.
        save_annotated: Folder for each video (``STEM.annotated.mp4``) with every face's box, track id and top
            expression drawn; it holds the sampled frames, each shown until the next, so it lasts as long as the
            input.
        smoothing: Seconds of the centred moving average of the timeline's probabilities (0: none).
        max_gap: Seconds a face track waits for its face (missed detections, frames without faces) before it ends.
        min_track: Seconds a face track must be seen for (sampled frames times the sampling interval, and at least
            two frames) to be kept; shorter ones, mostly false faces detected in a frame or two, are dropped with
            their rows and counted in :attr:`VideoSummary.short_tracks`. 0 keeps every track. The annotated video
            is written as the frames go by, so it still shows them.
        overwrite: Replace files already at the output paths (an input never): without it, such a file stops the
            run before any work (:class:`~timm_fer.utils.OutputPlan`).
        outputs: The run's output plan, when the caller reserved other outputs in it; its ``overwrite`` then
            applies.
        progress: Show a progress bar over each video's frames; None shows it on a terminal.
        options: Without ``classifier``: :class:`~timm_fer.inference.classifier.ClassifierOptions` fields, as for
            :func:`~timm_fer.predict`.

    Raises:
        VideoDecoderUnavailableError: PyAV (the ``video`` extra) is not installed.
    """
    if smoothing < 0 or max_gap < 0 or min_track < 0:
        raise ConfigError(f'smoothing, max_gap and min_track must not be negative, got {smoothing}, {max_gap} and '
                          f'{min_track}.')
    require_video_decoder()
    if isinstance(videos, (str, Path)):
        videos = [videos]
    others, files, problems = find_media([str(v) for v in videos])
    plan = outputs or OutputPlan([*files, options.get('checkpoint')], overwrite=overwrite)
    planned = plan_video_outputs(plan, files, timeline, save_annotated)
    plan.create_folders()
    classifier = resolve_classifier(classifier, options)
    detector = face_detector(aligned, detector)
    report = VideoReport(classifier.model_name, classifier.weights, classifier.labels, fps, smoothing, min_track,
                         skipped=[SkippedInput(i, r) for i, r in problems] +
                         [SkippedInput(str(p), _not_a_video(p)) for p in others])
    run = _VideoRun(report, classifier, detector, fps, batch_size, min_face_size, max_gap,
                    None if progress is None else not progress)
    unlike: List[str] = []
    for path in files:
        try:
            reader = VideoReader(path)
        except VideoReadError as e:
            report.skipped.append(SkippedInput(str(path), e.reason))
            continue
        with reader:
            info = reader.info
            summary = VideoSummary(str(path), info.codec, info.width, info.height, info.fps, info.duration)
            report.videos.append(summary)
            size = (info.width, info.height)  # as stored: a display rotation does not change how far from square
            why = unlike_a_face_crop(str(path), size, classifier.size) if detector is None else None
            if why:
                unlike.append(why)
            first_row = len(report.faces)
            writer = (VideoWriter(planned.annotated[str(path)], reader.rate or fps or 30)
                      if save_annotated is not None else None)
            try:
                run(reader, summary, writer)
            finally:
                if writer is not None:
                    writer.close()
                    summary.annotated = str(writer.path) if writer.frames else None
            summary.frames_decoded = reader.frames_decoded
            summary.decoded_until = reader.last_time
            summary.problem = summary.problem or reader.problem
        rows = report.faces[first_row:]
        del report.faces[first_row:]
        finish_source(report, summary, rows, planned.timelines.get(str(path)),
                      f'{path.name}: {classifier.model_name}{classifier.title_suffix}')
    if unlike:
        report.warnings.append(aligned_input_warning(unlike))
    return report


@option_ranges(top_k=Range(1, integer=True, optional=True))
def format_video_table(report: VideoReport, top_k: Optional[int] = None) -> str:
    """The report as text: a line per video, a row per face track (share of its frames in each expression), then
    the skipped inputs. The rows per frame are in :meth:`VideoReport.to_dict` and :func:`write_video_report`.

    Args:
        report: What :func:`predict_video` found.
        top_k: Show each track's ``top_k`` most frequent expressions instead of a column per label.
    """
    check_top_k(top_k, report.labels)
    sampling = f'{report.fps:g} frames/s sampled' if report.fps else 'every frame'
    lines = []
    for video in report.videos:
        fps = f'{video.fps:.2f} fps' if video.fps else 'unknown fps'
        duration = f'{video.duration:.2f} s' if video.duration else 'unknown length'
        tracks = sum(1 for t in report.tracks if t.file == video.file)
        short = f' ({video.short_tracks} shorter than {report.min_track:g} s dropped)' if video.short_tracks else ''
        lines.append(f'{video.file}: {video.codec} {video.width}x{video.height} {fps} {duration}; '
                     f'{video.frames_sampled} frames sampled, {video.frames_with_faces} with faces, {tracks} track'
                     f'{"s" if tracks != 1 else ""}{short}')
    if report.tracks:
        file_width = max(len('file'), *(len(t.file) for t in report.tracks))
        expression_width, widths = label_columns(report.labels)
        lines.append('share of each track\'s frames per top expression:')
        columns = f'top {top_k}' if top_k else f'{"expression":<{expression_width}} ' + ' '.join(
            f'{label:>{w}}' for label, w in zip(report.labels, widths))
        lines.append(f'{"file":<{file_width}} {"track":>5} {"from s":>7} {"to s":>7} {"frames":>6} {columns}')
        for t in report.tracks:
            if top_k:
                ranked = sorted(t.shares.items(), key=lambda item: -item[1])[:top_k]
                values = '  '.join(f'{label} {share:.2f}' for label, share in ranked)
            else:
                top = f'{t.expression} {t.shares[t.expression]:.2f}'
                values = f'{top:<{expression_width}} ' + ' '.join(
                    f'{t.shares[label]:>{w}.2f}' for label, w in zip(report.labels, widths))
            lines.append(f'{t.file:<{file_width}} {t.track:>5} {t.start:>7.2f} {t.end:>7.2f} {t.frames:>6} {values}')
    elif report.videos:
        lines.append('no face was classified in the videos.')
    return report.format_text(lines, f'; {sampling}')


def write_video_report(report: VideoReport, path: Union[str, Path]) -> Path:
    """Write the report as JSON (``.json``: videos, tracks, rows, skipped) or CSV (``.csv``: one row per face and
    sampled frame, then one per skipped input)."""
    header = (['file', 'frame', 'time', 'track', 'x0', 'y0', 'x1', 'y1', 'detector_score', 'expression'] +
              [f'p_{label}' for label in report.labels] + ['skipped', 'weights'])
    rows = [[f.file, f.frame, f'{f.time:.4f}', f.track, *f.box,
             '' if f.detector_score is None else f'{f.detector_score:.4f}', f.expression] +
            [f'{f.probabilities[label]:.6f}' for label in report.labels] + ['', report.weights] for f in report.faces]
    return report.write(path, header, rows)
