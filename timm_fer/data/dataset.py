"""Base of the FER dataset readers: labels, class names, a report of skipped rows, and per-sample seeded transforms."""
import csv
import os
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ..errors import DatasetError, DatasetFileNotFoundError

__all__ = ['FerDataset', 'ImageFileDataset', 'SampleKey', 'find_missing_files', 'read_csv_rows', 'require_file']

SampleKey = Union[int, Tuple[int, int]]
"""A dataset index, or (index, seed) to run the random transform of that sample from its own seed."""

Box = Tuple[int, int, int, int]
"""Face box as (left, top, width, height) in pixels."""


def require_file(path: str, what: str, fix: str) -> str:
    """Return ``path`` if it is a file, else raise an error naming it, what it is and how to get it."""
    if not os.path.isfile(path):
        raise DatasetFileNotFoundError(f'{what} not found: {path}. {fix}')
    return path


def read_csv_rows(path: str) -> Iterator[Tuple[int, List[str]]]:
    """Yield (line number, fields) of a CSV file, skipping blank lines; errors name the file."""
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if row and any(field.strip() for field in row):
                    yield line_number, row
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f'cannot read {path}: {e}.') from e


def find_missing_files(paths: Sequence[str]) -> List[str]:
    """Paths of ``paths`` that are not files, listing each folder once (fast on folders of many images)."""
    listings: Dict[str, set] = {}
    missing = []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        if name not in listings[folder]:
            missing.append(path)
    return missing


def _unreadable(path: str) -> Optional[str]:
    """Why the image file at ``path`` cannot be decoded, or None when it can."""
    try:
        with Image.open(path) as image:
            image.draft('RGB', (1, 1))  # JPEGs decode at 1/8 scale: truncation still shows, at a fraction of the cost
            image.load()
            if not (image.width and image.height):
                return 'the image is empty'
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f'{type(e).__name__}: {e}'
    return None


class FerDataset(Dataset):
    """A labelled FER split: class names, a label per image, counts per class and the rows skipped while reading.

    ``dataset[i]`` returns ``(transform(image), label)``; ``dataset[(i, seed)]`` runs the transform with the
    torch random generator seeded by ``seed`` (and restores it afterwards), so that a sample's augmentation depends
    on its seed only, not on the number of loader workers or processes (see ``ClassBalancedSampler``).

    Args:
        root: Dataset folder.
        split: Name of the split.
        classes: Class names, in label order.
        targets: Label of each image.
        skipped: Number of rows skipped while reading, by reason.
        transform: Transform of the RGB PIL image.
        class_votes: Annotators' votes for each class, per image (FERPlus), for soft labels; None when the
            dataset has one label per image only.
        original_targets: A second label per image from another source (FERPlus: FER2013's original, intended
            expression), -1 where an image has none; None without a second source.
    """
    display_name = 'FER dataset'

    def __init__(
            self,
            root: str,
            split: str,
            classes: Sequence[str],
            targets: Sequence[int],
            skipped: Optional[Dict[str, int]] = None,
            transform: Optional[Callable] = None,
            class_votes: Optional[Sequence[Sequence[int]]] = None,
            original_targets: Optional[Sequence[int]] = None,
    ) -> None:
        self.root = root
        self.split = split
        self.classes = tuple(classes)
        self.targets = list(targets)
        self.skipped = {reason: count for reason, count in (skipped or {}).items() if count}
        self.transform = transform
        self.class_votes = [list(votes) for votes in class_votes] if class_votes is not None else None
        if self.class_votes is not None and len(self.class_votes) != len(self.targets):
            raise ValueError(f'class_votes has {len(self.class_votes)} rows for {len(self.targets)} images.')
        self.original_targets = list(original_targets) if original_targets is not None else None
        if self.original_targets is not None and len(self.original_targets) != len(self.targets):
            raise ValueError(f'original_targets has {len(self.original_targets)} rows for {len(self.targets)} images.')
        if not self.targets:
            raise DatasetError(
                f'{self.display_name} {split} split under {root} has no images left{self._skipped_text()}; '
                f'check the dataset folder and the split name.')

    @property
    def class_counts(self) -> List[int]:
        """Number of images of each class, in label order."""
        counts = Counter(self.targets)
        return [counts[label] for label in range(len(self.classes))]

    @property
    def soft_targets(self) -> Optional[torch.Tensor]:
        """(images, classes) float tensor of each image's votes, normalised to sum 1; None without votes."""
        if self.class_votes is None:
            return None
        votes = torch.tensor(self.class_votes, dtype=torch.float32)
        return votes / votes.sum(dim=1, keepdim=True).clamp(min=1)

    def _skipped_text(self) -> str:
        if not self.skipped:
            return ''
        return ' (skipped ' + ', '.join(f'{count} {reason}' for reason, count in self.skipped.items()) + ')'

    def summary(self) -> str:
        """One line with the split size, the images per class and the skipped rows."""
        counts = ', '.join(f'{name} {count}' for name, count in zip(self.classes, self.class_counts))
        original = ''
        if self.original_targets is not None:
            without = sum(1 for target in self.original_targets if target < 0)
            original = f'; original labels joined, {without} images without one' if without else \
                '; original labels joined to every image'
        return (f'{self.display_name} {self.split}: {len(self)} images in {len(self.classes)} classes ({counts})'
                f'{self._skipped_text() or ", nothing skipped"}{original}')

    def load_image(self, index: int) -> Image.Image:
        """The RGB face image of sample ``index``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: SampleKey) -> Tuple[object, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.load_image(index)
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    image = self.transform(image)
        return image, self.targets[index]


class ImageFileDataset(FerDataset):
    """A FER split whose images are files, optionally cropped to a face box.

    Args:
        paths: Image file of each sample.
        boxes: Face box (left, top, width, height) of each sample, or None to keep whole images.
        **kwargs: ``FerDataset`` arguments.
    """

    def __init__(self, paths: Sequence[str], boxes: Optional[Sequence[Box]] = None, **kwargs: Any) -> None:
        self.paths = list(paths)
        self.boxes = list(boxes) if boxes is not None else None
        super().__init__(**kwargs)

    def load_image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert('RGB')
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f'cannot read image {path} ({e}); re-extract it from the dataset archive.') from e
        if self.boxes is not None:
            left, top, width, height = self.boxes[index]
            image = image.crop((left, top, left + width, top + height))
        return image

    def drop_unreadable_images(self, skip: bool = False, progress: bool = False) -> List[Tuple[str, str]]:
        """Decode every image once, before training needs it, so a damaged file is found up front.

        Args:
            skip: Drop the unreadable images from the split (counted in ``skipped``) instead of failing.
            progress: Show a progress bar.

        Returns:
            (path, reason) of every unreadable image.

        Raises:
            DatasetError: some images are unreadable and ``skip`` is off; the message names the first.
        """
        bad = []
        for path in tqdm(self.paths, desc=f'checking {self.split} images', unit='image', leave=False,
                         disable=not progress):
            reason = _unreadable(path)
            if reason:
                bad.append((path, reason))
        if not bad:
            return bad
        if not skip:
            raise DatasetError(
                f'{len(bad)} of the {len(self.paths)} {self.display_name} {self.split} images cannot be read, the '
                f'first is {bad[0][0]} ({bad[0][1]}); re-extract them from the dataset archive, or pass '
                f'--skip-bad-images to train without them.')
        unreadable = {path for path, _ in bad}
        keep = [i for i, path in enumerate(self.paths) if path not in unreadable]
        self.paths = [self.paths[i] for i in keep]
        self.targets = [self.targets[i] for i in keep]
        if self.class_votes is not None:
            self.class_votes = [self.class_votes[i] for i in keep]
        if self.original_targets is not None:
            self.original_targets = [self.original_targets[i] for i in keep]
        if self.boxes is not None:
            self.boxes = [self.boxes[i] for i in keep]
        self.skipped['unreadable images'] = self.skipped.get('unreadable images', 0) + len(bad)
        if not self.targets:
            raise DatasetError(f'{self.display_name} {self.split} split under {self.root} has no readable images.')
        return bad

    def check_files(self, listed_in: str, fix: str) -> None:
        """Raise an error naming the first missing image and how many of the listed images are missing."""
        missing = find_missing_files(self.paths)
        if missing:
            raise DatasetFileNotFoundError(
                f'{len(missing)} of the {len(self.paths)} {self.display_name} {self.split} images listed in '
                f'{listed_in} are missing{self._skipped_text()}, the first is {missing[0]}. {fix}')
