"""Finding and reading input images robustly: folders and globs, EXIF rotation, any colour mode, damaged files."""
import glob
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..errors import ConfigError, ImageReadError
from .video_io import is_video_file, video_suffixes

__all__ = ['MAX_PHOTO_PIXELS', 'ImageReadError', 'find_images', 'find_media', 'glob_regex', 'image_suffixes',
           'read_image', 'to_rgb', 'walk_files']


MAX_PHOTO_PIXELS = 8192 * 8192
"""Largest photo :func:`read_image` decodes (64 megapixels, e.g. 8192x8192): a larger one is refused from its header,
before decoding, which keeps the peak memory of face detection under 1 GB (a 13000x13000 photo took 2.1 GB)."""
NOT_STILL_IMAGES = frozenset({'MPEG'})
"""Pillow formats that Pillow identifies but whose files are videos, not photos."""


def image_suffixes() -> Tuple[str, ...]:
    """File suffixes (lower case, with the dot) of the still-image formats that Pillow can open."""
    Image.init()
    return tuple(sorted(suffix for suffix, image_format in Image.registered_extensions().items()
                        if image_format in Image.OPEN and image_format not in NOT_STILL_IMAGES))


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, sorted per folder, following folder links but never entering a folder twice.

    A symbolic-link loop (a link to a parent folder, or two links to each other) is entered once and cut there.
    """
    seen: Set[Tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:  # unreadable folder, dangling or looping link
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir():
                    subfolders.append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue
        pending.extend(reversed(subfolders))


def glob_regex(pattern: str) -> 're.Pattern[str]':
    """A regular expression matching the paths that the glob ``pattern`` names, with ``**`` for any depth."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith('**/', i):
            parts.append('(?:.*/)?')
            i += 3
        elif pattern.startswith('**', i):
            parts.append('.*')
            i += 2
        elif pattern[i] == '*':
            parts.append('[^/]*')
            i += 1
        elif pattern[i] == '?':
            parts.append('[^/]')
            i += 1
        elif pattern[i] == '[' and ']' in pattern[i + 2:]:
            end = pattern.index(']', i + 2)
            body = pattern[i + 1:end]
            parts.append('[' + ('^' + body[1:] if body.startswith('!') else body).replace('\\', '\\\\') + ']')
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile(''.join(parts) + r'\Z', re.DOTALL)


def _glob_files(pattern: str) -> Iterator[Path]:
    """Files matching ``pattern``; ``**`` patterns are walked with :func:`walk_files`, so links never loop."""
    if '**' not in pattern:
        yield from sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
        return
    pattern = pattern.replace(os.sep, '/')
    while pattern.startswith('./'):
        pattern = pattern[2:]
    head = pattern.split('**', 1)[0]
    root = head[:head.rfind('/') + 1]
    if glob.has_magic(root):
        raise ConfigError(f"'{pattern}': put '**' before any other wildcard, e.g. 'photos/**/*.jpg'.")
    matcher = glob_regex(pattern)
    yield from (path for path in walk_files(Path(root or '.')) if matcher.match(path.as_posix()))


def find_images(
        inputs: Sequence[str],
        progress: Optional[bool] = None,
        suffixes: Optional[Sequence[str]] = None,
        what: str = 'image files (.jpg, .png, ...)',
) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Expand image files, folders (searched recursively for image suffixes) and glob patterns, in order.

    Files reached twice (through two inputs or a link) are listed once; symbolic-link loops are never followed.

    Args:
        inputs: Files, folders or glob patterns (``**`` for any depth).
        progress: Show a count of the files found; None shows it on a terminal when listing takes over a second.
        suffixes: The suffixes of the files taken from folders; default :func:`image_suffixes`.
        what: The files searched for, as the reason of an input folder without any says.

    Returns:
        The files, without duplicates, and (input, reason) for every input that gives no file.
    """
    suffixes = set(image_suffixes() if suffixes is None else suffixes)
    files: List[Path] = []
    seen: Set[Path] = set()
    problems: List[Tuple[str, str]] = []
    counter = tqdm(desc='finding images', unit=' files', delay=1., leave=False,
                   disable=None if progress is None or progress else True)
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found: Iterable[Path] = (p for p in walk_files(path) if p.suffix.lower() in suffixes)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = _glob_files(item)
        else:
            problems.append((item, 'no such file or folder: check the path'))
            continue
        count = 0
        for file in found:
            count += 1
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
                counter.update()
        if not count:
            problems.append((item, f'the folder holds no {what}' if path.is_dir() else 'no file matches this pattern'))
    counter.close()
    return files, problems


def find_media(
        inputs: Sequence[str],
        progress: Optional[bool] = None,
) -> Tuple[List[Path], List[Path], List[Tuple[str, str]]]:
    """Like :func:`find_images`, with video files too: folders give image and video files (by suffix).

    Returns:
        The image files (and any other file given by name or pattern), the video files, and (input, reason) for
        every input that gives no file.
    """
    files, problems = find_images(inputs, progress, image_suffixes() + video_suffixes(),
                                  'image or video files (.jpg, .png, .mp4, .webm, ...)')
    return ([f for f in files if not is_video_file(f)], [f for f in files if is_video_file(f)], problems)


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
        ImageReadError: the file does not exist, is not an image, is larger than :data:`MAX_PHOTO_PIXELS` (refused
            before decoding), or is truncated or damaged.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)  # refused below, with a clearer message
            opened = Image.open(path)
        with opened as image:
            if image.width * image.height > MAX_PHOTO_PIXELS:
                raise ImageReadError(path, f'the photo is {image.width}x{image.height} '
                                           f'({image.width * image.height / 1e6:.0f} megapixels), above the '
                                           f'{MAX_PHOTO_PIXELS / 1e6:.0f} megapixels (8192x8192) decoded for face '
                                           f'detection; downscale it first.')
            image.load()  # decode now, so damage shows up here rather than later
            try:
                upright = ImageOps.exif_transpose(image)
            except Exception as e:  # Pillow's EXIF parser raises struct.error, TypeError, ... on malformed data
                raise ImageReadError(path, f'its EXIF orientation data is malformed ({type(e).__name__}: {e}); '
                                           f're-save the image without EXIF.') from e
            return to_rgb(upright)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise ImageReadError(path, 'no such file; check the path.') from e
    except UnidentifiedImageError as e:
        raise ImageReadError(path, 'not an image file that Pillow can read; give JPEG, PNG, BMP, WebP, TIFF, ... '
                                   'files.') from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f'{e}; shrink the image first.') from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f'the image is damaged or truncated ({e}); re-export or replace it.') from e
