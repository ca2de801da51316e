"""What photo and video prediction runs report, and how: skipped inputs, unique output names, the text table's
shared parts and the JSON / CSV writers, and :class:`RowWriter`, which writes a live source's rows as they come.

:class:`Report` is the base of :class:`~timm_fer.inference.predict.PredictionReport` and
:class:`~timm_fer.inference.video.VideoReport`: the model line, the "random weights" warning, the skipped inputs
and the file writers are written once here; each report adds its own rows.
"""
import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from ..constants import OUTPUT_SUFFIXES
from ..errors import ConfigError
from ..hub import RANDOM_WEIGHTS
from ..utils.options import check_output_path
from ..utils.outputs import create_output_folder

__all__ = ['FORMULA_PREFIXES', 'OUTPUT_SUFFIXES', 'ROW_SUFFIXES', 'Report', 'RowWriter', 'SkippedInput', 'UniqueNames',
           'check_row_file', 'csv_cell', 'label_columns']

ROW_SUFFIXES = ('.csv', '.jsonl')
"""The file types :class:`RowWriter` writes: CSV, and JSON Lines (one JSON object per row and line)."""

FORMULA_PREFIXES = ('=', '+', '-', '@', '\t', '\r')
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP, "CSV Injection")."""


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell that spreadsheets show as text: a string starting with one of
    :data:`FORMULA_PREFIXES` gets a single quote in front (``=cmd.png`` -> ``'=cmd.png``); numbers stay."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


@dataclass
class SkippedInput:
    """An input, or a face in it, that gave no prediction, and why."""
    file: str
    reason: str


class UniqueNames:
    """File names in one folder, ``STEM.png`` then ``STEM_1.png``, ... when two inputs share a stem: for a folder the
    caller owns (the web service's temporary ones); a command's outputs are planned with
    :class:`~timm_fer.utils.OutputPlan`."""

    def __init__(self, folder: Path, suffix: str = '.png') -> None:
        self.folder = folder
        self.suffix = suffix
        self.counts: Dict[str, int] = {}
        create_output_folder(folder)

    def __call__(self, stem: str) -> Path:
        count = self.counts.get(stem, 0)
        self.counts[stem] = count + 1
        return self.folder / (f'{stem}{self.suffix}' if count == 0 else f'{stem}_{count}{self.suffix}')

    def face_path(self, source: Path, face: int) -> Path:
        """The next name for face ``face`` of ``source``: ``STEM_faceN.png``, as
        :meth:`~timm_fer.utils.FaceNames.face_path` names a planned run's."""
        return self(f'{Path(source).stem}_face{face}')


def label_columns(labels: Sequence[str]) -> Tuple[int, List[int]]:
    """Widths of a table's 'expression' column (the top label and its probability) and of one column per label."""
    return max(len(label) for label in labels) + 5, [max(len(label), 5) for label in labels]


class Report:
    """The parts every prediction report shares, for dataclasses whose fields start with ``model`` (the model's
    name), ``weights`` (where its weights came from) and ``labels`` (in the model's order), and that hold the
    ``skipped`` inputs (:class:`SkippedInput`) and ``warnings`` about the run (inputs that gave predictions
    perhaps meaningless)."""
    model: str
    weights: str
    labels: List[str]
    skipped: List[SkippedInput]
    warnings: List[str]

    @property
    def meaningful(self) -> bool:
        """False when the model has random weights."""
        return self.weights != RANDOM_WEIGHTS

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict: model, weights, whether they are meaningful, then the other fields in order."""
        fields = asdict(self)
        head = {key: fields.pop(key) for key in ('model', 'weights')}
        return {**head, 'meaningful': self.meaningful, **fields}

    def format_text(self, body: List[str], sampling: str = '') -> str:
        """The report as text: the model line (with ``sampling`` after it), a warning for random weights and the
        run's warnings, ``body``, then the skipped inputs."""
        lines = [f'model {self.model}, weights: {self.weights}{sampling}']
        if not self.meaningful:
            lines.append('WARNING: random weights, the expressions below are meaningless.')
        lines.extend(f'WARNING: {warning}' for warning in self.warnings)
        lines.extend(body)
        if self.skipped:
            lines.append(f'skipped ({len(self.skipped)}):')
            lines.extend(f'  {s.file}: {s.reason}' for s in self.skipped)
        return '\n'.join(lines)

    def write(self, path: Union[str, Path], header: List[str], rows: List[List[Any]]) -> Path:
        """Write the report as JSON (``.json``: :meth:`to_dict`) or CSV (``.csv``: ``header``, ``rows``, then one row
        per skipped input, its reason in the next-to-last column and the weights in the last); the path.

        CSV cells that a spreadsheet would run as formulas are escaped (:func:`csv_cell`); JSON holds the values as
        they are.

        Raises:
            ConfigError: ``path`` is not a .json or .csv file, or cannot be written.
        """
        path = check_output_path(path, '--output')
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ConfigError(f'--output must end in .json or .csv, got {path}.')
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == '.json':
            path.write_text(json.dumps(self.to_dict(), indent=2) + '\n', encoding='utf-8')
            return path
        skipped = [[s.file] + [''] * (len(header) - 3) + [s.reason, self.weights] for s in self.skipped]
        buffer = io.StringIO()
        csv.writer(buffer).writerows([[csv_cell(value) for value in row] for row in [header] + rows + skipped])
        path.write_text(buffer.getvalue(), encoding='utf-8')
        return path


class RowWriter:
    """Write rows to a CSV or JSON Lines file as they come, flushed after every :meth:`write`: a run that is killed
    keeps every row written before.

    CSV: a header line, then a line per row (cells escaped as :func:`csv_cell`, None as an empty cell). JSON Lines
    (``.jsonl``): one JSON object per row and line. Numbers with a fraction are rounded to 6 decimals in both. Use it
    as a context manager, or :meth:`close` it.

    Args:
        path: The ``.csv`` or ``.jsonl`` file (created, or replaced).
        columns: The keys of every row, in the CSV's column order.

    Raises:
        ConfigError: ``path`` is neither, or cannot be written.
    """

    def __init__(self, path: Union[str, Path], columns: Sequence[str]) -> None:
        self.path = check_row_file(path)
        self.columns = list(columns)
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open('w', encoding='utf-8', newline='')
        self._csv = csv.writer(self._file) if self.path.suffix.lower() == '.csv' else None
        if self._csv is not None:
            self._csv.writerow(self.columns)
            self._file.flush()

    def __enter__(self) -> 'RowWriter':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, rows: Sequence[Dict[str, Any]]) -> None:
        """Append ``rows`` (dicts with the keys of ``columns``) and flush them to the file."""
        for row in rows:
            values = [round(row[key], 6) if isinstance(row[key], float) else row[key] for key in self.columns]
            if self._csv is not None:
                self._csv.writerow([csv_cell('' if value is None else value) for value in values])
            else:
                self._file.write(json.dumps(dict(zip(self.columns, values))) + '\n')
        self._file.flush()
        self.rows += len(rows)

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def check_row_file(path: Union[str, Path]) -> Path:
    """``path`` as a :class:`RowWriter` file, checked before any work starts.

    Raises:
        ConfigError: ``path`` is not a ``.csv`` or ``.jsonl`` file, or cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() not in ROW_SUFFIXES:
        raise ConfigError(f'--output must end in {" or ".join(ROW_SUFFIXES)} for a live source (rows are written as '
                          f'they come), got {path}.')
    return check_output_path(path, '--output')
