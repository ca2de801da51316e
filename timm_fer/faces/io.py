"""Finding and reading input images robustly: folders and globs, EXIF rotation, any colour mode, damaged files."""
import errno
import glob
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..errors import ConfigError, ImageReadError
from .video_io import is_video_file, video_suffixes

__all__ = ['MAX_PHOTO_PIXELS', 'ImageReadError', 'LeftOut', 'find_images', 'find_media', 'glob_regex',
           'image_suffixes', 'read_image', 'to_rgb', 'walk_files']


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


class LeftOut:
    """What a folder search (:func:`walk_files`) left out, by kind, each as the paths met, e.g. ``'s/root -> /'``."""

    REASONS = {
        'outside': ('symbolic link', 'leading out of the folder', 'a folder search follows no link out of its folder; '
                                                                   'give the targets by name to search them'),
        'loop': ('symbolic-link loop', '', 'each folder is searched once'),
        'broken': ('broken symbolic link', '', 'the target does not exist'),
        'special': ('special file', '', 'only regular files are read, never FIFOs, sockets or devices'),
    }
    """Each kind: what one is, what it does, and why it was left out (or what to do)."""

    def __init__(self) -> None:
        self.found: Dict[str, List[str]] = {}

    def add(self, kind: str, what: str) -> None:
        """Count ``what`` (a path, with where it leads) as left out for the reason ``kind`` (a key of REASONS)."""
        self.found.setdefault(kind, []).append(what)

    def reasons(self) -> List[str]:
        """One line per kind met, with the count and the first two paths, e.g. ``left out 1 symbolic link leading
        out of the folder (s/root -> /): ...``."""
        lines = []
        for kind, (noun, does, why) in self.REASONS.items():
            paths = self.found.get(kind, [])
            if paths:
                shown = '; '.join(paths[:2]) + ('; ...' if len(paths) > 2 else '')
                lines.append(f'left out {len(paths)} {noun}{"s" if len(paths) > 1 else ""}{" " + does if does else ""} '
                             f'({shown}): {why}')
        return lines


_SPECIAL_KINDS = ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a device'),
                  (stat.S_ISBLK, 'a device'))


def _not_regular(path: Path) -> str:
    """Why the special file ``path`` (a FIFO, socket or device) is not read, and what to give instead."""
    mode = path.stat().st_mode
    kind_name = next((name for test, name in _SPECIAL_KINDS if test(mode)), 'a special file')
    return (f'{kind_name}, not a regular file: only image and video files are read; save what it gives to a file, '
            f'or pipe a video stream into - (standard input)')


def _link_kind(path: Path, real_root: str, wanted: Callable[[Path], bool]) -> Optional[str]:
    """Why the symbolic link ``path`` (inside the folder ``real_root``, resolved) is worth a note: it leads out of
    the folder, loops or is broken; None when it leads to what the search reaches anyway, or to no wanted file."""
    try:
        is_folder = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as e:
        return 'loop' if e.errno == errno.ELOOP else 'broken' if wanted(path) else None
    if not is_folder and not wanted(path):
        return None
    target = os.path.realpath(path)
    if os.path.commonpath([target, real_root]) != real_root:
        return 'outside'
    holder = os.path.realpath(path.parent)
    return 'loop' if is_folder and os.path.commonpath([target, holder]) == target else None


def walk_files(root: Path, wanted: Callable[[Path], bool] = lambda path: True,
               left_out: Optional[LeftOut] = None) -> Iterator[Path]:
    """Every regular file under ``root`` that ``wanted`` takes, sorted per folder, following no symbolic link.

    As ``find`` does, links met on the way are not followed: one that leads inside ``root`` leads to what the search
    reaches anyway, and one that leads out of it (to ``/``, say) is left out, so a search never leaves ``root`` and
    never loops. ``root`` itself may be a link.

    Args:
        root: The folder searched.
        wanted: The files searched for (by path); links to files and special files it does not take are passed over
            without a note.
        left_out: Collects the links that lead out of ``root``, link loops, broken links and special files (FIFOs,
            sockets, devices) met, for the notes of :meth:`LeftOut.reasons`.
    """
    real_root = os.path.realpath(root)
    seen: Set[Tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:  # a folder mounted twice
                continue
            seen.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:  # an unreadable folder
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    kind = _link_kind(path, real_root, wanted)
                    if kind is not None and left_out is not None:
                        left_out.add(kind, f'{path} -> {os.readlink(path)}')
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append(path)
                elif wanted(path):
                    if entry.is_file(follow_symlinks=False):
                        yield path
                    elif left_out is not None:
                        mode = entry.stat(follow_symlinks=False).st_mode
                        kind_name = next((name for test, name in _SPECIAL_KINDS if test(mode)), 'not a regular file')
                        left_out.add('special', f'{path}, {kind_name}')
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


def _glob_files(pattern: str, left_out: LeftOut) -> Iterator[Path]:
    """Files matching ``pattern``; ``**`` patterns are walked with :func:`walk_files` (no link followed, what is
    left out collected in ``left_out``)."""
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
    yield from walk_files(Path(root or '.'), lambda path: matcher.match(path.as_posix()) is not None, left_out)


def find_images(
        inputs: Sequence[str],
        progress: Optional[bool] = None,
        suffixes: Optional[Sequence[str]] = None,
        what: str = 'image files (.jpg, .png, ...)',
) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Expand image files, folders (searched recursively for image suffixes) and glob patterns, in order.

    Files reached twice (through two inputs or a link) are listed once. Folders (and ``**`` patterns) are searched
    without following symbolic links (:func:`walk_files`): the links that lead out of a folder, link loops, broken
    links and special files (FIFOs, sockets) met are left out, with a reason per kind that counts them.

    Args:
        inputs: Files, folders or glob patterns (``**`` for any depth).
        progress: Show a count of the files found; None shows it on a terminal when listing takes over a second.
        suffixes: The suffixes of the files taken from folders; default :func:`image_suffixes`.
        what: The files searched for, as the reason of an input folder without any says.

    Returns:
        The files, without duplicates, and (input, reason) for every input that gives no file and for every kind
        of entry that a folder search left out.
    """
    suffixes = set(image_suffixes() if suffixes is None else suffixes)
    files: List[Path] = []
    seen: Set[Path] = set()
    problems: List[Tuple[str, str]] = []
    counter = tqdm(desc='finding images', unit=' files', delay=1., leave=False,
                   disable=None if progress is None or progress else True)
    for item in inputs:
        path = Path(item)
        left_out = LeftOut()
        if path.is_dir():
            found: Iterable[Path] = walk_files(path, lambda p: p.suffix.lower() in suffixes, left_out)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = _glob_files(item, left_out)
        elif path.exists():  # a FIFO, socket or device: never opened, a FIFO would wait for its writer
            problems.append((item, _not_regular(path)))
            continue
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
        problems.extend((item, reason) for reason in left_out.reasons())
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
        ImageReadError: the file does not exist, is a FIFO, socket or device (never opened: a FIFO would wait for
            its writer), is not an image, is larger than :data:`MAX_PHOTO_PIXELS` (refused before decoding), or is
            truncated or damaged.
    """
    if isinstance(path, (str, os.PathLike)) and os.path.exists(path) and not (os.path.isfile(path) or
                                                                            os.path.isdir(path)):
        raise ImageReadError(Path(path), _not_regular(Path(path)) + '.')
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
