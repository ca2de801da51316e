"""Finding and reading input images robustly: folders and globs, EXIF rotation, any colour mode, damaged files."""
import glob
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

__all__ = ['ImageReadError', 'find_images', 'image_suffixes', 'read_image', 'to_rgb']


def image_suffixes() -> Tuple[str, ...]:
    """File suffixes (lower case, with the dot) of the image formats that Pillow can open."""
    Image.init()
    return tuple(sorted(suffix for suffix, image_format in Image.registered_extensions().items()
                        if image_format in Image.OPEN))


def find_images(inputs: Sequence[str]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Expand image files, folders (searched recursively for image suffixes) and glob patterns, in order.

    Returns:
        The files, without duplicates, and (input, reason) for every input that gives no file.
    """
    suffixes = image_suffixes()
    files: List[Path] = []
    problems: List[Tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                problems.append((item, 'the folder holds no image files (.jpg, .png, ...)'))
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((item, 'no file matches this pattern'))
        else:
            found = []
            problems.append((item, 'no such file or folder: check the path'))
        files.extend(p for p in found if p not in files)
    return files, problems


def to_rgb(image: Image.Image, background: Tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB.

    Transparent images are composited on ``background``; 16-bit and float images are scaled to 8 bits (16-bit by
    1/257, others by their maximum); grayscale, palette and CMYK images are converted.
    """
    if image.mode == 'RGB':
        return image
    if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
        values = np.asarray(image, dtype=np.float64)
        scale = 255. / 65535. if image.mode.startswith('I;16') else 255. / max(values.max(), 1.)
        return Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8)).convert('RGB')
    if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info:
        rgba = image.convert('RGBA')
        canvas = Image.new('RGBA', rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert('RGB')
    return image.convert('RGB')


def read_image(path: Path) -> Image.Image:
    """Read an image file as upright 8-bit RGB (EXIF orientation applied, see :func:`to_rgb` for colour modes).

    Raises:
        ImageReadError: the file does not exist, is not an image, or is truncated or damaged.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so damage shows up here rather than later
            return to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError as e:
        raise ImageReadError(path, 'no such file; check the path.') from e
    except UnidentifiedImageError as e:
        raise ImageReadError(path, 'not an image file that Pillow can read; give JPEG, PNG, BMP, WebP, TIFF, ... '
                                   'files.') from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f'{e}; shrink the image first.') from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f'the image is damaged or truncated ({e}); re-export or replace it.') from e
