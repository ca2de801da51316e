"""Class-per-folder datasets: torchvision's ``ImageFolder`` layout, and timm's with split folders above it."""
import os
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import DatasetError, DatasetFileNotFoundError
from .dataset import ImageFileDataset

__all__ = ['FerImageFolder', 'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')
_SKIP_NOT_IMAGE = 'files without an image extension'


class FerImageFolder(ImageFileDataset):
    """Faces sorted into one folder per class: ``<root>/<split>/<class>/**/<image>`` or ``<root>/<class>/...``.

    Images may sit in sub-folders of a class folder. Files without an image extension are skipped and counted.

    Args:
        root: Dataset folder.
        split: Split folder under ``root`` (e.g. 'train', 'val', 'test'); None reads ``root`` itself.
        transform: Transform of the RGB PIL image.
        classes: Class names in label order, each a folder name; None takes the sorted folder names.
    """
    display_name = 'Image folder'

    def __init__(
            self,
            root: str,
            split: Optional[str] = None,
            transform: Optional[Callable] = None,
            classes: Optional[Sequence[str]] = None,
    ) -> None:
        folder = os.path.join(root, split) if split else root
        if not os.path.isdir(folder):
            raise DatasetFileNotFoundError(
                f'image folder not found: {folder}. Expected <root>/<split>/<class name>/<images> (timm) or '
                f'<root>/<class name>/<images> (torchvision).')
        found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        if classes is None:
            classes = found
        absent = [name for name in classes if name not in found]
        if absent or not classes:
            raise DatasetFileNotFoundError(
                f'class folders {absent or "(any)"} not found in {folder}, which has {found}; give the class names '
                f'of its folders (--classes) or fix the layout.')
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DatasetError(
                f'{folder} has folders {extra} that are not among the classes {list(classes)}; add them to '
                f'--classes or move them out.')
        paths: List[str] = []
        targets: List[int] = []
        skipped: Dict[str, int] = {}
        for label, name in enumerate(classes):
            for directory, subdirectories, files in os.walk(os.path.join(folder, name)):
                subdirectories.sort()
                for file in sorted(files):
                    if file.lower().endswith(IMAGE_EXTENSIONS):
                        paths.append(os.path.join(directory, file))
                        targets.append(label)
                    else:
                        skipped[_SKIP_NOT_IMAGE] = skipped.get(_SKIP_NOT_IMAGE, 0) + 1
        skipped['files outside the class folders'] = sum(entry.is_file() for entry in os.scandir(folder))
        super().__init__(paths=paths, root=root, split=split or os.path.basename(os.path.normpath(root)),
                         classes=classes, targets=targets, skipped=skipped, transform=transform)
