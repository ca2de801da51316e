"""Batch prediction on a Ray cluster: ``timm-fer predict --engine ray`` and Ray Data pipelines of your own.

:class:`RayPredictor` is a callable class for ``ray.data.Dataset.map_batches``: each Ray actor loads the model and
the face detector once, then turns batches of files (paths, or the bytes of ``ray.data.read_binary_files``) into
rows with :func:`~timm_fer.predict` (photos) and :func:`~timm_fer.predict_video` (videos), the functions of the
local run, so the faces, boxes, track ids and probabilities are those of ``timm-fer predict``. :func:`predict_dataset`
plugs it into a dataset; :func:`predict_on_ray` is the command line's run: files, folders and globs in, one Parquet,
CSV or JSON Lines file (or a folder of Parquet parts) out, resumable.

Every row has the columns :func:`row_columns` lists: a face of a photo (``face``), a face in a sampled frame of a
video (``frame``, ``time``, ``track``), or an input (or a face of it) that gave no prediction, its reason in
``skipped``. Each input gives at least one row, so that a run can tell the inputs already done (``resume``).

Needs the ``ray`` extra (``pip install "timm-fer[ray]"``): Ray Data and pyarrow, imported only when a function here
runs.
"""
import csv
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Union

from ..errors import ConfigError, FerError
from ..faces import RetinaFaceDetector
from ..faces.io import find_media
from ..faces.video_io import is_video_file
from ..utils.atomic import write_atomic
from ..utils.options import Range, check_output_path, option_ranges
from .classifier import ClassifierOptions, load_classifier
from .predict import PredictionReport, predict
from .report import FORMULA_PREFIXES, RowWriter
from .video import DEFAULT_FPS, DEFAULT_MIN_TRACK, VideoReport, predict_video

if TYPE_CHECKING:
    import pyarrow
    import ray.data

__all__ = ['RAY_OUTPUT_SUFFIXES', 'RayPredictor', 'RayRunSummary', 'RayUnavailableError', 'check_ray_output',
           'done_inputs', 'file_batches', 'predict_dataset', 'predict_on_ray', 'require_ray', 'row_columns']

RAY_OUTPUT_SUFFIXES = ('.parquet', '.csv', '.jsonl')
"""The files a Ray run writes; an output without a suffix is a folder of Parquet parts."""
RAY_INSTALL = 'pip install "timm-fer[ray]"'
"""The command that installs the ``ray`` extra."""


class RayUnavailableError(FerError, ImportError):
    """The ``ray`` extra (Ray Data and pyarrow) is not installed."""


def require_ray() -> None:
    """Raise :class:`RayUnavailableError`, naming the install command, unless Ray Data and pyarrow are installed."""
    missing = [package for package in ('ray', 'pyarrow') if find_spec(package) is None]
    if missing:
        raise RayUnavailableError(f'--engine ray needs Ray Data ({", ".join(missing)} missing): {RAY_INSTALL}')


def row_columns(labels: Sequence[str]) -> List[str]:
    """The columns of every row, in order, for a model with these labels."""
    return (['file', 'kind', 'face', 'frame', 'time', 'track', 'x0', 'y0', 'x1', 'y1', 'detector_score',
             'expression'] + [f'p_{label}' for label in labels] + ['skipped', 'weights'])


def _schema(labels: Sequence[str]) -> 'pyarrow.Schema':
    import pyarrow as pa

    types = dict(file=pa.string(), kind=pa.string(), face=pa.int64(), frame=pa.int64(), time=pa.float64(),
                 track=pa.int64(), x0=pa.int64(), y0=pa.int64(), x1=pa.int64(), y1=pa.int64(),
                 detector_score=pa.float64(), expression=pa.string(), skipped=pa.string(), weights=pa.string())
    return pa.schema([(name, types.get(name, pa.float64())) for name in row_columns(labels)])


def _rows_of_photos(report: PredictionReport, names: Dict[str, str]) -> List[Dict[str, Any]]:
    """The rows of a photo run: its faces, then its skipped inputs; ``names`` maps its file names to the rows'."""
    rows = [dict(file=names.get(f.file, f.file), kind='photo', face=f.face,
                 **dict(zip(('x0', 'y0', 'x1', 'y1'), f.box)), detector_score=f.detector_score,
                 expression=f.expression, **{f'p_{k}': v for k, v in f.probabilities.items()}) for f in report.faces]
    rows += [dict(file=names.get(s.file, s.file), kind='photo', skipped=s.reason) for s in report.skipped]
    return rows


def _rows_of_video(report: VideoReport, name: str) -> List[Dict[str, Any]]:
    """The rows of one video's run: a face per sampled frame, then what was skipped; a video without any gives one
    row saying so."""
    rows = [dict(file=name, kind='video', frame=f.frame, time=f.time, track=f.track,
                 **dict(zip(('x0', 'y0', 'x1', 'y1'), f.box)), detector_score=f.detector_score,
                 expression=f.expression, **{f'p_{k}': v for k, v in f.probabilities.items()}) for f in report.faces]
    rows += [dict(file=name, kind='video', skipped=s.reason) for s in report.skipped]
    if not rows:
        sampled = sum(v.frames_sampled for v in report.videos)
        rows.append(dict(file=name, kind='video', skipped=f'no face found in its {sampled} sampled frames'))
    return rows


class RayPredictor:
    """A callable class for ``ray.data.Dataset.map_batches``: each Ray actor loads the model and the face detector
    once and turns batches of files into rows (:func:`row_columns`).

    A batch (a pyarrow Table, ``batch_format='pyarrow'``) has a ``path`` column, and optionally ``bytes`` (the
    files' contents, as ``ray.data.read_binary_files(..., include_paths=True)`` gives them: ``path`` then only
    names them and tells photos from videos by its suffix) and ``name`` (what the rows call each file; default its
    ``path``). Photos go through :func:`~timm_fer.predict` together (their faces classified in batches), each
    video through :func:`~timm_fer.predict_video` (its face tracks as in the local run).

    Args:
        classifier_options: The model and how it runs; ``threads`` (default 1, one core per actor) also sets the
            face detector's.
        aligned: The files are aligned face crops: resize them, detect nothing.
        face_threshold: Smallest face detector confidence.
        min_face_size: Faces whose box has a shorter side below this many pixels are skipped, with the reason.
        batch_size: Faces per forward pass.
        fps: Frames sampled per second of video; None samples every frame.
        min_track: Seconds a face track must be seen for to be kept (see :func:`~timm_fer.predict_video`).
    """

    def __init__(self, classifier_options: Optional[ClassifierOptions] = None, *, aligned: bool = False,
                 face_threshold: float = 0.9, min_face_size: float = 32., batch_size: int = 32,
                 fps: Optional[float] = DEFAULT_FPS, min_track: float = DEFAULT_MIN_TRACK) -> None:
        options = classifier_options or ClassifierOptions()
        threads = options.threads or 1
        self.classifier = load_classifier(options, threads=threads)
        self.detector = None if aligned else RetinaFaceDetector(score_threshold=face_threshold, threads=threads)
        self.aligned = aligned
        self.min_face_size = min_face_size
        self.batch_size = batch_size
        self.fps = fps
        self.min_track = min_track
        self.schema = _schema(self.classifier.labels)

    def __call__(self, batch: 'pyarrow.Table') -> 'pyarrow.Table':
        """The rows of the batch's files: photos first, in order, then each video."""
        import pyarrow as pa

        paths = [str(p) for p in batch.column('path').to_pylist()]
        names = batch.column('name').to_pylist() if 'name' in batch.column_names else paths
        contents = batch.column('bytes').to_pylist() if 'bytes' in batch.column_names else None
        rows: List[Dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix='timm-fer-ray-') as folder:
            local = paths if contents is None else [
                _write_bytes(Path(folder) / f'{i}{Path(p).suffix.lower()}', data)
                for i, (p, data) in enumerate(zip(paths, contents))]
            photos = [i for i, path in enumerate(local) if not is_video_file(path)]
            if photos:
                report = predict([local[i] for i in photos], self.classifier, aligned=self.aligned,
                                 detector=self.detector, batch_size=self.batch_size,
                                 min_face_size=self.min_face_size, progress=False)
                rows += _rows_of_photos(report, {str(Path(local[i])): names[i] for i in photos})
            for i in (i for i in range(len(local)) if is_video_file(local[i])):
                report = predict_video([local[i]], self.classifier, aligned=self.aligned, detector=self.detector,
                                       fps=self.fps, batch_size=self.batch_size, min_face_size=self.min_face_size,
                                       min_track=self.min_track, progress=False)
                rows += _rows_of_video(report, names[i])
        weights = self.classifier.weights
        return pa.Table.from_pylist([dict(row, weights=weights) for row in rows], schema=self.schema)


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@option_ranges(actors=Range(1, integer=True, optional=True), files_per_batch=Range(1, integer=True),
               num_cpus=Range(0, low_open=True))
def predict_dataset(dataset: 'ray.data.Dataset', *, actors: Optional[int] = None, files_per_batch: int = 16,
                    num_cpus: float = 1., **predictor_options: Any) -> 'ray.data.Dataset':
    """A dataset of rows (:func:`row_columns`) from a dataset of files, computed by a pool of :class:`RayPredictor`
    actors.

    Args:
        dataset: Rows with ``path`` and optionally ``bytes`` and ``name`` (see :class:`RayPredictor`), e.g.
            ``ray.data.read_binary_files('s3://bucket/photos/', include_paths=True)`` or
            ``ray.data.from_items([{'path': p} for p in paths])`` (paths every node can read).
        actors: Actors in the pool, each with the model loaded once; default one per ``num_cpus`` of the cluster.
        files_per_batch: Files per batch handed to an actor; a video in a batch is run on its own, after the
            batch's photos.
        num_cpus: CPUs each actor holds (its threads, unless ``classifier_options`` sets them).
        predictor_options: :class:`RayPredictor`'s arguments.
    """
    require_ray()
    import ray

    if actors is None:
        actors = max(1, int(ray.cluster_resources().get('CPU', 1) // num_cpus))
    return dataset.map_batches(RayPredictor, fn_constructor_kwargs=predictor_options, batch_size=files_per_batch,
                               batch_format='pyarrow', compute=ray.data.ActorPoolStrategy(size=actors),
                               num_cpus=num_cpus)


@dataclass
class RayRunSummary:
    """What :func:`predict_on_ray` did.

    Attributes:
        output: Where the rows are.
        inputs: Files found among the inputs.
        new_inputs: Those that were not in the output yet, run now.
        rows: Rows written by this run.
        faces: Of which faces.
        skipped: Of which inputs, or faces, that gave no prediction (the reason in their ``skipped``).
        weights: Where the model's weights came from (None when nothing was run).
        not_found: The inputs that named no file, and why (no row: a later run looks for them again).
    """
    output: Path
    inputs: int = 0
    new_inputs: int = 0
    rows: int = 0
    faces: int = 0
    skipped: int = 0
    weights: Optional[str] = None
    not_found: List[str] = field(default_factory=list)

    def add(self, table: 'pyarrow.Table') -> None:
        """Count a batch of rows."""
        skipped = table.column('skipped').to_pylist()
        self.rows += table.num_rows
        self.skipped += sum(1 for reason in skipped if reason is not None)
        self.faces += sum(1 for reason in skipped if reason is None)
        if self.weights is None and table.num_rows:
            self.weights = table.column('weights')[0].as_py()

    def __str__(self) -> str:
        already = self.inputs - self.new_inputs
        lines = [f'wrote {self.rows} rows ({self.faces} faces, {self.skipped} skipped) of {self.new_inputs} inputs '
                 f'to {self.output}' + (f' ({already} inputs already there)' if already else '') +
                 (f'; weights: {self.weights}' if self.weights else '')]
        if self.not_found:
            lines.append(f'not found ({len(self.not_found)}):')
            lines.extend(f'  {line}' for line in self.not_found)
        return '\n'.join(lines)


def check_ray_output(output: Union[str, Path], resume: bool = False, overwrite: bool = False) -> Path:
    """``output`` checked before any work: a ``.parquet``, ``.csv`` or ``.jsonl`` file, or a folder (no suffix) of
    Parquet parts, writable, and new unless ``resume`` or ``overwrite``.

    Raises:
        ConfigError: Another suffix, a location that cannot be written, both ``resume`` and ``overwrite``, or an
            output that exists without either.
    """
    output = Path(output)
    folder = not output.suffix
    if not folder and output.suffix.lower() not in RAY_OUTPUT_SUFFIXES:
        raise ConfigError(f'--output with --engine ray is a {", ".join(RAY_OUTPUT_SUFFIXES)} file or a folder (no '
                          f'suffix) of Parquet parts, got {output}.')
    if resume and overwrite:
        raise ConfigError('--resume adds to the output and --overwrite replaces it: choose one.')
    check_output_path(output, '--output', folder=folder)
    if not (resume or overwrite) and output.exists() and (not folder or any(output.iterdir())):
        raise ConfigError(f'--output {output} exists: pass --resume to add the inputs not in it yet, or --overwrite '
                          f'to replace it.')
    return output


def _parts(folder: Path) -> List[Path]:
    return sorted(p for p in folder.glob('*.parquet') if not p.name.startswith('.'))


def done_inputs(output: Union[str, Path]) -> Set[str]:
    """The ``file`` of every row already in ``output`` (a file or folder :func:`predict_on_ray` wrote): the inputs
    a resumed run leaves out. An output that does not exist has none."""
    output = Path(output)
    if not output.exists():
        return set()
    suffix = output.suffix.lower()
    if suffix == '.csv':
        with output.open(encoding='utf-8', newline='') as f:
            return {_csv_text(row['file']) for row in csv.DictReader(f)}
    if suffix == '.jsonl':
        with output.open(encoding='utf-8') as f:
            return {json.loads(line)['file'] for line in f if line.strip()}
    import pyarrow.parquet as pq

    files = [output] if suffix else _parts(output)
    return {name for path in files for name in pq.read_table(path, columns=['file']).column('file').to_pylist()}


def _csv_text(cell: str) -> str:
    """A CSV cell as written by :func:`~timm_fer.inference.report.csv_cell`, back to its text."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_PREFIXES) else cell


def file_batches(files: Sequence[Path], files_per_batch: int) -> Iterator[Dict[str, List[str]]]:
    """The batches of a run over ``files``, as columns ``path`` (absolute, for the actors) and ``name`` (as given,
    for the rows): photos ``files_per_batch`` at a time, each video alone."""
    photos = [f for f in files if not is_video_file(f)]
    for start in range(0, len(photos), files_per_batch):
        chunk = photos[start:start + files_per_batch]
        yield {'path': [str(f.absolute()) for f in chunk], 'name': [str(f) for f in chunk]}
    for video in (f for f in files if is_video_file(f)):
        yield {'path': [str(video.absolute())], 'name': [str(video)]}


class _Writer:
    """Writes the batches of rows of one run to a temporary file (the rows of the output already there first, when
    resuming) and puts it in place at :meth:`finish`, or, for a folder, adds one Parquet part per batch: a run
    killed halfway leaves the output as it was (a folder: with the parts written)."""

    def __init__(self, output: Path, overwrite: bool) -> None:
        self.output = output
        self.overwrite = overwrite
        self.folder = not output.suffix
        self.suffix = output.suffix.lower()
        self.temporary = output.with_name(f'.{output.stem}.{uuid.uuid4().hex[:8]}.partial{output.suffix}')
        self.columns: Optional[List[str]] = None
        self._parquet: Any = None
        self._rows: Optional[RowWriter] = None
        self._run = uuid.uuid4().hex[:12]
        self._parts = 0

    def write(self, table: 'pyarrow.Table') -> None:
        """Add a batch of rows."""
        import pyarrow.parquet as pq

        if self.columns is None:
            self._open(table)
        if self.folder:
            part = self.output / f'part-{self._run}-{self._parts:05d}.parquet'
            self._parts += 1
            write_atomic(str(part), lambda path: pq.write_table(table, path))
        elif self._parquet is not None:
            self._parquet.write_table(table)
        elif self._rows is not None:
            self._rows.write(table.to_pylist())

    def _open(self, table: 'pyarrow.Table') -> None:
        """Start the output with the first batch's columns, after the rows already there."""
        import pyarrow.parquet as pq

        self.columns = table.column_names
        old: Optional[List[Dict[str, Any]]] = None
        if self.overwrite:
            existing = self.columns
        elif self.folder:
            self.output.mkdir(parents=True, exist_ok=True)
            parts = _parts(self.output)
            existing = pq.read_schema(parts[0]).names if parts else self.columns
        elif self.suffix == '.parquet':
            existing = pq.read_schema(self.output).names if self.output.exists() else self.columns
        else:
            old = list(_read_text_rows(self.output, self.suffix)) if self.output.exists() else []
            existing = list(old[0]) if old else self.columns
        if existing != self.columns:
            raise ConfigError(f'{self.output} holds the rows of a model with other labels ({", ".join(existing)}); '
                              f'write this model\'s rows to another output.')
        if self.folder:
            return
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.suffix == '.parquet':
            self._parquet = pq.ParquetWriter(str(self.temporary), table.schema)
            if self.output.exists() and not self.overwrite:
                self._parquet.write_table(pq.read_table(self.output).cast(table.schema))
        else:
            self._rows = RowWriter(self.temporary, self.columns)
            self._rows.write(old or [])

    def close(self, keep: bool) -> None:
        """Put the output in place (``keep``; with ``overwrite``, a folder loses the parts of earlier runs), or
        remove the temporary file of a run that failed."""
        if keep and self.overwrite and self.folder:
            for part in _parts(self.output):
                if not part.name.startswith(f'part-{self._run}-'):
                    part.unlink()
        if self._parquet is not None:
            self._parquet.close()
        if self._rows is not None:
            self._rows.close()
        if self.temporary.exists():
            if keep:
                os.replace(self.temporary, self.output)
            else:
                self.temporary.unlink()


def _read_text_rows(path: Path, suffix: str) -> Iterable[Dict[str, Any]]:
    with path.open(encoding='utf-8', newline='') as f:
        if suffix == '.csv':
            yield from ({k: None if v == '' else _csv_text(v) for k, v in row.items()} for row in csv.DictReader(f))
        else:
            yield from (json.loads(line) for line in f if line.strip())


@option_ranges(files_per_batch=Range(1, integer=True),
               actors=Range(1, integer=True, optional=True, flag='--ray-actors'))
def predict_on_ray(
        inputs: Sequence[Union[str, Path]],
        output: Union[str, Path],
        *,
        resume: bool = False,
        overwrite: bool = False,
        address: Optional[str] = None,
        actors: Optional[int] = None,
        files_per_batch: int = 16,
        classifier_options: Optional[ClassifierOptions] = None,
        **predictor_options: Any,
) -> RayRunSummary:
    """Predict the faces of files, folders and globs (photos and videos) on a Ray cluster into ``output``
    (``timm-fer predict --engine ray``).

    Args:
        inputs: Files, folders (searched recursively) and glob patterns; every node must read them at the same path.
        output: A ``.parquet``, ``.csv`` or ``.jsonl`` file, or a folder (no suffix) of Parquet parts.
        resume: Add the rows of the inputs not in ``output`` yet.
        overwrite: Replace ``output`` (a folder: its Parquet parts) once the run is done. Without either, an
            existing output is refused before any work.
        address: The Ray cluster to connect to (``ray start --head`` prints it); default the one this process
            is connected to, else a new local one with this machine's cores.
        actors: Actors, each loading the model once; default one per CPU of the cluster.
        files_per_batch: Photos per task; each video is a task of its own.
        classifier_options: The model and how it runs, as for :func:`~timm_fer.predict`.
        predictor_options: The other arguments of :class:`RayPredictor` (``aligned``, ``face_threshold``,
            ``min_face_size``, ``batch_size``, ``fps``, ``min_track``).

    Raises:
        RayUnavailableError: The ``ray`` extra is not installed.
        ConfigError: ``output`` cannot be written, or exists without ``resume``.
    """
    require_ray()
    output = check_ray_output(output, resume, overwrite)
    done = done_inputs(output) if resume else set()
    images, videos, problems = find_media([str(i) for i in inputs])
    todo = [f for f in images + videos if str(f) not in done]
    summary = RayRunSummary(output, inputs=len(images) + len(videos), new_inputs=len(todo),
                            not_found=[f'{item}: {reason}' for item, reason in problems])
    if not todo:
        return summary
    import pyarrow as pa
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    blocks = [pa.table(block) for block in file_batches(todo, files_per_batch)]
    rows = predict_dataset(ray.data.from_arrow(blocks), actors=actors, files_per_batch=files_per_batch,
                           classifier_options=classifier_options, **predictor_options)
    writer = _Writer(output, overwrite)
    kept = False
    try:
        for table in rows.iter_batches(batch_size=None, batch_format='pyarrow'):
            summary.add(table)
            writer.write(table)
        kept = True
    finally:
        writer.close(keep=kept)
    return summary
