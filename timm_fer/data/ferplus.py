"""FERPlus (Barsoum et al., ICMI 2016): FER2013's 48x48 grayscale faces relabelled by ten annotators, 8 classes."""
import itertools
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..constants import FERPLUS_LABELS
from ..errors import ConfigError, DatasetError, DatasetFileNotFoundError
from .dataset import ImageFileDataset, find_missing_files, read_csv_rows, require_file

__all__ = ['FER2013_LABELS', 'FerPlus', 'majority_vote', 'mix_original_labels', 'read_original_labels', 'reweigh_votes']

FERPLUS_SPLITS = {'train': ('FER2013Train', 'Training'), 'valid': ('FER2013Valid', 'PublicTest'),
                  'test': ('FER2013Test', 'PrivateTest')}
"""Split name -> (image folder written by Microsoft's generate_training_data.py, Usage in the CSV files)."""

VOTE_COLUMNS = FERPLUS_LABELS + ('unknown', 'NF')
"""The ten vote columns of ``label.csv`` and ``fer2013new.csv``."""

IMAGE_SIZE = 48

FER2013_LABELS = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
"""FER2013's original 7 classes, in the order of its label numbers 0-6 (it has no contempt)."""

FER2013_TO_FERPLUS = (4, 5, 6, 1, 3, 2, 0)
"""FERPlus class index of each FER2013 label number: angry -> anger, ..., happy -> happiness, neutral -> neutral."""

_FIX_ORIGINAL = ('Expected fer2013_original_labels.csv with columns row,image,usage,fer2013_label (row: the 0-based '
                 'data row of fer2013new.csv; fer2013_label: 0-6 as in FER2013).')

_FIX_LAYOUT = ('Expected <root>/FER2013Train/ (PNGs and label.csv, as written by generate_training_data.py of '
               "Microsoft's FERPlus repository), FER2013Valid/, FER2013Test/ and fer2013new.csv; or fer2013.csv "
               '(pixels) with fer2013new.csv.')
_SKIP_TIE = 'with a tied majority vote'
_SKIP_UNKNOWN = 'with majority vote unknown'
_SKIP_NOT_FACE = 'with majority vote not-a-face (NF)'
_SKIP_UNNAMED = 'without an image name in fer2013new.csv (not a face, removed by FERPlus)'
_SKIP_MISSING = 'with a missing image file'


def majority_vote(votes: Sequence[int]) -> Tuple[Optional[int], str]:
    """Label of the FERPlus paper's majority protocol for one image's ten votes, or (None, why it is dropped).

    The label is the column with the most votes; the image is dropped when that column is unknown or NF, or when
    several columns tie for the most votes.
    """
    most = max(votes)
    winners = [column for column, count in enumerate(votes) if count == most]
    if len(winners) > 1:
        return None, _SKIP_TIE
    if VOTE_COLUMNS[winners[0]] == 'unknown':
        return None, _SKIP_UNKNOWN
    if VOTE_COLUMNS[winners[0]] == 'NF':
        return None, _SKIP_NOT_FACE
    return winners[0], ''


def reweigh_votes(soft_targets: torch.Tensor, classes: Sequence[str], name: str, weight: float) -> torch.Tensor:
    """Vote distributions with the votes for class ``name`` multiplied by ``weight``, normalised again.

    A face whose only votes are for ``name`` keeps its distribution, so ``weight`` changes mixed faces only.

    Raises:
        ConfigError: ``classes`` has no class ``name``.
    """
    if name not in classes:
        raise ConfigError(f"cannot reweigh the votes for '{name}': the classes are {', '.join(classes)}.")
    scale = torch.ones(soft_targets.shape[1], dtype=soft_targets.dtype)
    scale[list(classes).index(name)] = weight
    weighed = soft_targets * scale
    total = weighed.sum(dim=1, keepdim=True)
    return torch.where(total > 0, weighed / total.clamp_min(torch.finfo(total.dtype).tiny), soft_targets)


def read_original_labels(path: str) -> Dict[int, Tuple[str, str, int]]:
    """FER2013's original labels by row of ``fer2013new.csv``: row -> (FERPlus image name or '', usage, label 0-6).

    Raises:
        DatasetFileNotFoundError: no file at ``path``.
        DatasetError: a row that is not ``row,image,usage,fer2013_label,...`` with a label 0-6, or a row twice.
    """
    require_file(path, "FER2013's original labels", _FIX_ORIGINAL)
    labels: Dict[int, Tuple[str, str, int]] = {}
    for line_number, fields in read_csv_rows(path):
        if line_number == 1 and fields[:4] == ['row', 'image', 'usage', 'fer2013_label']:
            continue
        try:
            row, label = int(fields[0]), int(fields[3])
        except (ValueError, IndexError):
            row, label = -1, -1
        if row < 0 or not 0 <= label < len(FER2013_LABELS) or fields[2] not in ('Training', 'PublicTest',
                                                                                'PrivateTest'):
            raise DatasetError(f'{path} line {line_number}: expected row,image,usage,fer2013_label with a row >= 0, '
                               f'a usage and a label 0-6, got {",".join(fields)[:80]!r}. {_FIX_ORIGINAL}')
        if row in labels:
            raise DatasetError(f'{path} line {line_number}: row {row} is labelled twice; keep one line per row.')
        labels[row] = (fields[1].strip(), fields[2], label)
    return labels


def mix_original_labels(soft_targets: torch.Tensor, original_targets: torch.Tensor, classes: Sequence[str],
                        weight: float) -> torch.Tensor:
    """Training targets that mix each face's vote distribution with its original (intended) label.

    A face's target is ``(1 - weight) * votes + weight * one_hot(original)`` over the classes the original labels
    have, while the class the original labels lack (contempt) keeps exactly its share of the votes: with ``v`` the
    votes and ``c`` their contempt share, the target is ``c * contempt + (1 - weight) * v_other + weight * (1 - c) *
    one_hot(original)``. It sums to 1; ``weight`` 0, and faces without an original label (-1), keep their votes.

    Args:
        soft_targets: (faces, classes) vote distributions (or one-hot majority labels).
        original_targets: (faces,) class index of each face's original label, -1 where it has none.
        classes: Class names; 'contempt' (when present) comes from the votes only.
        weight: Share of the original label, 0..1.
    """
    if not 0 <= weight <= 1:
        raise ConfigError(f'the original label weight is a share between 0 and 1, got {weight}.')
    has_original = original_targets >= 0
    one_hot = F.one_hot(original_targets.clamp_min(0), len(classes)).to(soft_targets.dtype)
    votes_only = torch.zeros(len(classes), dtype=soft_targets.dtype)
    if 'contempt' in classes:
        votes_only[list(classes).index('contempt')] = 1
    kept = soft_targets * votes_only
    mixed = kept + (1 - weight) * (soft_targets - kept) + weight * (1 - kept.sum(dim=1, keepdim=True)) * one_hot
    return torch.where(has_original[:, None], mixed, soft_targets)


def _parse_votes(fields: Sequence[str], path: str, line_number: int) -> List[int]:
    try:
        votes = [int(field) for field in fields]
    except ValueError:
        votes = []
    if len(votes) != len(VOTE_COLUMNS) or min(votes) < 0:
        raise DatasetError(
            f'{path} line {line_number}: expected {len(VOTE_COLUMNS)} vote counts '
            f'({", ".join(VOTE_COLUMNS)}), got {list(fields)}; fix the row or re-download the file.')
    return votes


class FerPlus(ImageFileDataset):
    """FERPlus with the FERPlus paper's majority-vote labels (8 classes; FER2013Valid is the reported split).

    Majority protocol: an image's label is the emotion with the most of its ten votes; images whose most-voted
    column is unknown or NF (not a face), and images where two or more columns tie for the most votes, are dropped
    (and counted in ``skipped``). ``soft_targets`` are the paper's "probability" labels: each kept image's votes
    for the 8 emotions, normalised.

    Images come from one of two sources:

    - 'folders': ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/`` with one PNG per image. Votes come from
      the folder's header-less ``label.csv`` (name, face box, ten votes, written with the images), or from the
      split's rows of ``fer2013new.csv``; the two can differ in a few votes. Three training names appear twice in
      ``fer2013new.csv``; the script that writes the folders kept the later image of each, so the earlier rows'
      images are absent: they are skipped and reported.
    - 'fer2013.csv': the pixels column of FER2013's ``fer2013.csv`` (columns emotion, pixels, Usage), whose rows are
      in the order of ``fer2013new.csv``. Rows that FERPlus left without an image name are not faces and dropped.

    Args:
        root: FERPlus folder.
        split: 'train', 'valid' or 'test'.
        transform: Transform of the RGB PIL image.
        images: 'folders', 'fer2013.csv', or 'auto' (the split's folder when it exists, else fer2013.csv).
        labels: Votes of the folders: 'label.csv', 'fer2013new.csv', or 'auto' (label.csv when present).
        skip_missing: Skip, rather than fail on, images listed with votes but missing from the folders.
        original_labels: FER2013's original labels (``fer2013_original_labels.csv``) to join to the images by
            their row of ``fer2013new.csv``: ``original_targets`` then holds each image's intended expression as a
            FERPlus class index, -1 for an image whose row has none (reported in the summary). None: votes only,
            the paper's protocol.
    """
    display_name = 'FERPlus'

    def __init__(
            self,
            root: str,
            split: str = 'train',
            transform: Optional[Callable] = None,
            images: str = 'auto',
            labels: str = 'auto',
            skip_missing: bool = False,
            original_labels: Optional[str] = None,
    ) -> None:
        if split not in FERPLUS_SPLITS:
            raise DatasetError(f"FERPlus has splits {', '.join(map(repr, FERPLUS_SPLITS))}, got '{split}'.")
        if images not in ('auto', 'folders', 'fer2013.csv'):
            raise DatasetError(f"images must be 'auto', 'folders' or 'fer2013.csv', got '{images}'.")
        if labels not in ('auto', 'label.csv', 'fer2013new.csv'):
            raise DatasetError(f"labels must be 'auto', 'label.csv' or 'fer2013new.csv', got '{labels}'.")
        folder, usage = FERPLUS_SPLITS[split]
        image_dir = os.path.join(root, folder)
        if images == 'auto':
            images = 'folders' if os.path.isdir(image_dir) or not os.path.isfile(os.path.join(root, 'fer2013.csv')) \
                else 'fer2013.csv'
        self.image_source = images
        self.pixels: Optional[np.ndarray] = None
        paths: List[str] = []
        skipped: Dict[str, int] = {}
        rows: List[int] = []
        if images == 'folders':
            names, targets, votes = self._read_folder_labels(root, image_dir, usage, labels, skipped)
            if original_labels is not None:
                rows = _rows_of_names(root, usage, names)
            paths = [os.path.join(image_dir, name) for name in names]
            missing = set(find_missing_files(paths))
            if missing and not skip_missing:
                first = next(path for path in paths if path in missing)
                raise DatasetFileNotFoundError(
                    f'{len(missing)} of the {len(paths)} FERPlus {split} images with votes are missing from '
                    f'{image_dir}, the first is {first}. Re-run generate_training_data.py, or pass '
                    f'skip_missing=True (--skip-missing-images) to train without them.')
            if missing:
                kept = [i for i, path in enumerate(paths) if path not in missing]
                paths = [paths[i] for i in kept]
                targets = [targets[i] for i in kept]
                votes = [votes[i] for i in kept]
                rows = [rows[i] for i in kept] if rows else rows
                skipped[_SKIP_MISSING] = len(missing)
        else:
            targets, votes, rows = self._read_pixels(root, usage, skipped)
        original = _join_original_labels(original_labels, rows, usage) if original_labels is not None else None
        super().__init__(paths=paths, root=root, split=split, classes=FERPLUS_LABELS, targets=targets,
                         skipped=skipped, transform=transform, class_votes=votes, original_targets=original)

    @staticmethod
    def _read_folder_labels(
            root: str, image_dir: str, usage: str, labels: str, skipped: Dict[str, int],
    ) -> Tuple[List[str], List[int], List[List[int]]]:
        """Image names, labels and emotion votes of a split folder, from its ``label.csv`` or ``fer2013new.csv``."""
        label_csv = os.path.join(image_dir, 'label.csv')
        if labels == 'label.csv' or (labels == 'auto' and os.path.isfile(label_csv)):
            label_path = require_file(label_csv, 'FERPlus label file', _FIX_LAYOUT)
            rows = [(line_number, row[0], row[2:]) for line_number, row in read_csv_rows(label_path)]
        else:
            label_path = require_file(
                os.path.join(root, 'fer2013new.csv'), f'FERPlus labels ({label_csv} or fer2013new.csv)', _FIX_LAYOUT)
            rows = [(line_number, name, votes)
                    for line_number, _, name, votes, _ in _read_fer2013new(label_path, usage)]
        last_row_of_name = {name: line_number for line_number, name, _ in rows}
        names, targets, class_votes, overwritten = [], [], [], []
        for line_number, name, votes in rows:
            if not name:
                skipped[_SKIP_UNNAMED] = skipped.get(_SKIP_UNNAMED, 0) + 1
                continue
            if last_row_of_name[name] != line_number:
                overwritten.append(name)
                continue
            counts = _parse_votes(votes, label_path, line_number)
            label, reason = majority_vote(counts)
            if label is None:
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                names.append(name)
                targets.append(label)
                class_votes.append(counts[:len(FERPLUS_LABELS)])
        if overwritten:
            skipped[f'absent (named again by a later row, whose image replaced theirs: {", ".join(overwritten)})'] = \
                len(overwritten)
        return names, targets, class_votes

    def _read_pixels(
            self, root: str, usage: str, skipped: Dict[str, int]) -> Tuple[List[int], List[List[int]], List[int]]:
        """Labels, emotion votes and ``fer2013new.csv`` rows of a split, its images from ``fer2013.csv``'s pixels."""
        fix = 'Put fer2013.csv (FER2013 challenge release) and fer2013new.csv (FERPlus) in the FERPlus folder.'
        labels_path = require_file(os.path.join(root, 'fer2013new.csv'), 'FERPlus label file', fix)
        pixels_path = require_file(os.path.join(root, 'fer2013.csv'), 'FER2013 pixel file', fix)
        label_rows = _read_fer2013new(labels_path, None)
        pixel_rows = read_csv_rows(pixels_path)
        first_line, first_row = next(pixel_rows, (0, []))
        if first_row[:3] != ['emotion', 'pixels', 'Usage']:
            pixel_rows = itertools.chain([(first_line, first_row)], pixel_rows)
        targets, class_votes, images, rows = [], [], [], []
        for label_row, pixel_row in itertools.zip_longest(label_rows, pixel_rows):
            if label_row is None or pixel_row is None:
                raise DatasetError(
                    f'{pixels_path} and {labels_path} have different numbers of image rows ({len(label_rows)} in '
                    f'{labels_path}); FERPlus labels fer2013.csv row by row, so re-download the one cut short.')
            (label_line, row, name, votes, row_usage), (pixel_line, pixel_fields) = label_row, pixel_row
            if len(pixel_fields) != 3 or pixel_fields[2] != row_usage:
                raise DatasetError(
                    f'{pixels_path} line {pixel_line}: expected "emotion,pixels,{row_usage}" to match {labels_path} '
                    f'line {label_line}, got {len(pixel_fields)} fields ending {pixel_fields[-1][:20]!r}; the two '
                    f'files must list the same images in the same order.')
            if row_usage != usage:
                continue
            if not name:
                skipped[_SKIP_UNNAMED] = skipped.get(_SKIP_UNNAMED, 0) + 1
                continue
            counts = _parse_votes(votes, labels_path, label_line)
            label, reason = majority_vote(counts)
            if label is None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            values = np.array(pixel_fields[1].split(), dtype=np.int64)
            if values.size != IMAGE_SIZE * IMAGE_SIZE or values.min() < 0 or values.max() > 255:
                raise DatasetError(
                    f'{pixels_path} line {pixel_line}: expected {IMAGE_SIZE * IMAGE_SIZE} pixel values 0..255, got '
                    f'{values.size}; re-download fer2013.csv.')
            images.append(values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
            targets.append(label)
            class_votes.append(counts[:len(FERPLUS_LABELS)])
            rows.append(row)
        self.pixels = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return targets, class_votes, rows

    def load_image(self, index: int) -> Image.Image:
        if self.pixels is not None:
            return Image.fromarray(self.pixels[index]).convert('RGB')
        return super().load_image(index)


def _rows_of_names(root: str, usage: str, names: Sequence[str]) -> List[int]:
    """The ``fer2013new.csv`` row of each image name of a split folder: the last row of ``usage`` with that name,
    whose image the folder holds (generate_training_data.py writes a name's rows in turn, the last one stays)."""
    path = require_file(os.path.join(root, 'fer2013new.csv'), 'FERPlus label file (to join the original labels by '
                        'row)', _FIX_LAYOUT)
    last_row = {name: row for _, row, name, _, _ in _read_fer2013new(path, usage) if name}
    unknown = [name for name in names if name not in last_row]
    if unknown:
        raise DatasetError(f'{len(unknown)} images of the {usage} folder are not named in {path}, the first is '
                           f'{unknown[0]}; the label files and the images are of different FERPlus releases.')
    return [last_row[name] for name in names]


def _join_original_labels(path: str, rows: Sequence[int], usage: str) -> List[int]:
    """FERPlus class index of the original label of each of ``rows`` (-1 where the file has none)."""
    labels = read_original_labels(path)
    joined = []
    for row in rows:
        if row not in labels:
            joined.append(-1)
            continue
        _, row_usage, label = labels[row]
        if row_usage != usage:
            raise DatasetError(f'{path}: row {row} is {row_usage} there but {usage} in fer2013new.csv; the original '
                               f'labels must list the rows of fer2013new.csv in its order (join by row).')
        joined.append(FER2013_TO_FERPLUS[label])
    return joined


def _read_fer2013new(path: str, usage: Optional[str]) -> List[Tuple[int, int, str, List[str], str]]:
    """(line number, data row, image name, vote fields, usage) of the rows of ``fer2013new.csv`` for ``usage`` (all
    if None); the data row counts every image row from 0, as the original labels do."""
    rows = []
    data_rows = itertools.count()
    for line_number, row in read_csv_rows(path):
        if line_number == 1 and row[:2] == ['Usage', 'Image name']:
            continue
        if len(row) != 2 + len(VOTE_COLUMNS) or row[0] not in ('Training', 'PublicTest', 'PrivateTest'):
            raise DatasetError(
                f'{path} line {line_number}: expected "Usage,Image name,{",".join(VOTE_COLUMNS)}" with Usage '
                f'Training, PublicTest or PrivateTest, got {",".join(row)[:80]!r}; fix the row or re-download.')
        data_row = next(data_rows)
        if usage is None or row[0] == usage:
            rows.append((line_number, data_row, row[1].strip(), row[2:], row[0]))
    return rows
