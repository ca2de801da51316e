"""Create a FER dataset split by name, as the command line does."""
from typing import Callable, Optional, Sequence

from ..constants import DATASET_NAMES, EVAL_SPLITS
from ..errors import ConfigError
from .affectnet import AffectNet
from .dataset import FerDataset
from .ferplus import FerPlus
from .image_folder import FerImageFolder
from .rafdb import RafDb

__all__ = ['DATASET_NAMES', 'EVAL_SPLITS', 'create_fer_dataset']


def create_fer_dataset(
        name: str,
        root: str,
        split: str,
        transform: Optional[Callable] = None,
        classes: Optional[Sequence[str]] = None,
        skip_missing: bool = False,
        original_labels: Optional[str] = None,
) -> FerDataset:
    """One split of a FER dataset.

    Args:
        name: 'rafdb', 'ferplus', 'affectnet7', 'affectnet8' or 'folder' (one folder per class).
        root: Dataset folder.
        split: Split name ('train', or the dataset's ``EVAL_SPLITS`` entry).
        transform: Transform of the RGB PIL image.
        classes: Class names in label order, for 'folder' only.
        skip_missing: Skip FERPlus images listed with votes but missing from its folders.
        original_labels: FERPlus: FER2013's original labels file, joined by row (``FerPlus.original_targets``).
    """
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}.")
    if classes is not None and name != 'folder':
        raise ConfigError(f"classes are fixed by the {name} label files; --classes is for --dataset folder only.")
    if skip_missing and name != 'ferplus':
        raise ConfigError('--skip-missing-images is for --dataset ferplus only.')
    if original_labels is not None and name != 'ferplus':
        raise ConfigError("--original-labels are FER2013's own labels of the FERPlus images: for --dataset ferplus "
                          'only.')
    if name == 'rafdb':
        return RafDb(root, split, transform)
    if name == 'ferplus':
        return FerPlus(root, split, transform, skip_missing=skip_missing, original_labels=original_labels)
    if name in ('affectnet7', 'affectnet8'):
        return AffectNet(root, split, transform, num_classes=int(name[-1]))
    return FerImageFolder(root, split, transform, classes)
