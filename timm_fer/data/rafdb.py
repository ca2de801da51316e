"""RAF-DB basic expression set (Li, Deng, Du, CVPR 2017): 12,271 train and 3,068 test aligned faces, 7 classes."""
import os
from typing import Callable, Optional

from ..constants import RAFDB_LABELS
from ..errors import DatasetError
from .dataset import ImageFileDataset, require_file

__all__ = ['RafDb']

_FIX_LAYOUT = ('Expected the RAF-DB basic layout: <root>/EmoLabel/list_patition_label.txt and '
               '<root>/Image/aligned/<name>_aligned.jpg (unzip aligned.zip from the RAF-DB release).')
_LABEL_FIELDS = frozenset(str(label) for label in range(1, len(RAFDB_LABELS) + 1))


class RafDb(ImageFileDataset):
    """RAF-DB basic, read from ``EmoLabel/list_patition_label.txt`` and the provided aligned faces.

    Each line of the label file is ``train_00001.jpg 5``: the image name, whose ``train_`` / ``test_`` prefix
    gives the split, and a label 1..7 (surprise, fear, disgust, happiness, sadness, anger, neutral), shifted here
    to 0..6. The image of ``train_00001.jpg`` is ``Image/aligned/train_00001_aligned.jpg``.

    Args:
        root: RAF-DB ``basic`` folder.
        split: 'train' or 'test'.
        transform: Transform of the RGB PIL image.
        image_dir: Folder of the aligned images, relative to ``root``.
    """
    display_name = 'RAF-DB'
    label_file = os.path.join('EmoLabel', 'list_patition_label.txt')

    def __init__(
            self,
            root: str,
            split: str = 'train',
            transform: Optional[Callable] = None,
            image_dir: str = os.path.join('Image', 'aligned'),
    ) -> None:
        if split not in ('train', 'test'):
            raise DatasetError(f"RAF-DB has splits 'train' and 'test', got '{split}'.")
        label_path = require_file(os.path.join(root, self.label_file), 'RAF-DB label file', _FIX_LAYOUT)
        paths, targets = [], []
        with open(label_path, 'rb') as f:
            for line_number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode('utf-8')
                except UnicodeDecodeError as e:
                    raise DatasetError(
                        f'{label_path} line {line_number}: not UTF-8 text ({e.reason} at byte {e.start} of the line, '
                        f'{len(targets)} rows read before it); fix the line or re-download the label file.') from e
                fields = line.split()
                if not fields:
                    continue
                if (len(fields) != 2 or not fields[0].startswith(('train_', 'test_'))
                        or fields[1] not in _LABEL_FIELDS):
                    raise DatasetError(
                        f'{label_path} line {line_number}: expected "<train_|test_>NNNNN.jpg <label 1-7>", got '
                        f'{line.strip()!r} ({len(targets)} rows read before it); fix the line or re-download the '
                        f'label file.')
                name, label = fields
                if name.startswith(split + '_'):
                    stem, ext = os.path.splitext(name)
                    paths.append(os.path.join(root, image_dir, f'{stem}_aligned{ext}'))
                    targets.append(int(label) - 1)
        super().__init__(paths=paths, root=root, split=split, classes=RAFDB_LABELS, targets=targets,
                         transform=transform)
        self.check_files(label_path, _FIX_LAYOUT)
