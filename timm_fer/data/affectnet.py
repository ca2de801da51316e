"""AffectNet (Mollahosseini et al., 2017), manually annotated part: 7 or 8 expression classes."""
import os
from typing import Callable, Dict, List, Optional, Tuple

from ..constants import AFFECTNET7_LABELS, AFFECTNET8_LABELS
from ..errors import DatasetError, DatasetFileNotFoundError
from .dataset import ImageFileDataset, read_csv_rows

__all__ = ['AffectNet']

AFFECTNET_SPLITS = {'train': 'training.csv', 'val': 'validation.csv'}
"""Split name -> label file of the AffectNet release."""

AFFECTNET_COLUMNS = ('subDirectory_filePath', 'face_x', 'face_y', 'face_width', 'face_height', 'facial_landmarks',
                     'expression', 'valence', 'arousal')
"""Columns of ``training.csv`` and ``validation.csv`` (the header row may be absent)."""

_DROPPED_EXPRESSIONS = {7: 'contempt (not one of the 7 classes)', 8: 'labelled none', 9: 'labelled uncertain',
                        10: 'labelled non-face'}
_FIX_LAYOUT = ('Expected training.csv and validation.csv in <root> or <root>/Manually_Annotated_file_lists, and the '
               'images under <root>/Manually_Annotated_Images/<subDirectory_filePath>.')


class AffectNet(ImageFileDataset):
    """AffectNet's manually annotated images, read from ``training.csv`` / ``validation.csv``.

    Expressions 0..6 (neutral, happiness, sadness, surprise, fear, disgust, anger) and, with 8 classes, 7
    (contempt) are kept; 8..10 (none, uncertain, non-face) are dropped and counted in ``skipped``. Faces are cropped
    to the CSV's face box. The validation set is the reported test set.

    Args:
        root: AffectNet folder.
        split: 'train' or 'val'.
        transform: Transform of the RGB PIL image.
        num_classes: 7 or 8.
        crop_faces: Crop each image to its face box (face_x, face_y, face_width, face_height).
        image_dir: Folder that ``subDirectory_filePath`` is relative to; by default
            ``<root>/Manually_Annotated_Images`` when it exists, else ``root``.
    """
    display_name = 'AffectNet'

    def __init__(
            self,
            root: str,
            split: str = 'train',
            transform: Optional[Callable] = None,
            num_classes: int = 7,
            crop_faces: bool = True,
            image_dir: Optional[str] = None,
    ) -> None:
        if split not in AFFECTNET_SPLITS:
            raise DatasetError(f"AffectNet has splits 'train' and 'val', got '{split}'.")
        if num_classes not in (7, 8):
            raise DatasetError(f'AffectNet has 7 or 8 expression classes, got num_classes={num_classes}.')
        label_path = self._find_label_file(root, AFFECTNET_SPLITS[split])
        if image_dir is None:
            annotated = os.path.join(root, 'Manually_Annotated_Images')
            image_dir = annotated if os.path.isdir(annotated) else root
        paths, boxes, targets = [], [], []
        skipped: Dict[str, int] = {}
        for line_number, row in read_csv_rows(label_path):
            if line_number == 1 and row[0] == AFFECTNET_COLUMNS[0]:
                continue
            relative_path, box, expression = self._parse_row(row, label_path, line_number, len(targets))
            if expression >= num_classes:
                reason = _DROPPED_EXPRESSIONS[expression]
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            paths.append(os.path.join(image_dir, relative_path))
            boxes.append(box)
            targets.append(expression)
        super().__init__(
            paths=paths, boxes=boxes if crop_faces else None, root=root, split=split,
            classes=AFFECTNET8_LABELS if num_classes == 8 else AFFECTNET7_LABELS, targets=targets, skipped=skipped,
            transform=transform)
        self.check_files(label_path, _FIX_LAYOUT)

    @staticmethod
    def _find_label_file(root: str, name: str) -> str:
        candidates = [os.path.join(root, name), os.path.join(root, 'Manually_Annotated_file_lists', name)]
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise DatasetFileNotFoundError(f'AffectNet label file not found: {" or ".join(candidates)}. {_FIX_LAYOUT}')

    @staticmethod
    def _parse_row(
            row: List[str], path: str, line_number: int, rows_read: int) -> Tuple[str, Tuple[int, ...], int]:
        """(image path, face box, expression) of one CSV row; a malformed row raises an error naming it."""
        try:
            if len(row) != len(AFFECTNET_COLUMNS) or not row[0].strip():
                raise ValueError(f'{len(row)} fields')
            box = tuple(int(float(field)) for field in row[1:5])  # inf: OverflowError, nan: ValueError
            expression = int(row[6])
            if not 0 <= expression <= 10 or box[2] <= 0 or box[3] <= 0:
                raise ValueError(f'expression {expression}, face box {box}')
        except (ValueError, OverflowError) as e:
            raise DatasetError(
                f'{path} line {line_number}: expected {",".join(AFFECTNET_COLUMNS)} with an expression 0..10 and a '
                f'positive face size ({e}; {rows_read} rows kept before it); fix the row or re-download.') from e
        return row[0].strip(), box, expression
