"""Atomic file writes: a process killed while writing leaves the previous file intact.

An output whose folder cannot be created or written (``--out /proc/x``, a read-only disk) is a one-line
:class:`~timm_fer.errors.ConfigError` naming the folder, raised before anything is written.
"""
import os
import tempfile
import uuid
from typing import Any, Callable

from ..errors import ConfigError

__all__ = ['make_output_folder', 'staging_folder', 'write_atomic', 'write_text_atomic']


def _unwritable(path: str, folder: str, error: OSError) -> ConfigError:
    """The error of an output ``path`` that cannot be written in ``folder``."""
    return ConfigError(f'{path} cannot be written: its folder {folder} cannot be created or written '
                       f'({error.strerror or type(error).__name__}); choose a writable location.')


def make_output_folder(folder: str, path: str = '') -> None:
    """Create ``folder`` (with its parents) for the output ``path`` (default: the folder itself).

    Raises:
        ConfigError: the folder cannot be created.
    """
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise _unwritable(path or folder, folder, e) from e


def staging_folder(path: str) -> str:
    """A new private folder beside ``path`` (the folder is created), to fill and then move over ``path`` in one step.

    Raises:
        ConfigError: the folder of ``path`` cannot be created or written.
    """
    folder, name = os.path.split(os.path.abspath(path))
    make_output_folder(folder, path)
    try:
        return tempfile.mkdtemp(prefix=f'.{name}.', dir=folder)
    except OSError as e:
        raise _unwritable(path, folder, e) from e


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)`` on a file in ``path``'s folder, then move it over ``path`` in one step.

    A process killed while writing leaves the previous ``path`` intact (and at worst a stray temporary file).

    Raises:
        ConfigError: the folder of ``path`` cannot be created or written (checked before ``write`` is called).
    """
    folder, name = os.path.split(os.path.abspath(path))
    make_output_folder(folder, path)
    temporary_path = os.path.join(folder, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        open(temporary_path, 'xb').close()  # the folder is writable: what ``write`` fails on is its own
    except OSError as e:
        raise _unwritable(path, folder, e) from e
    try:
        write(temporary_path)
        os.replace(temporary_path, path)
    except BaseException:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) atomically."""
    def write(temporary_path: str) -> None:
        with open(temporary_path, 'w', encoding='utf-8') as f:
            f.write(text)
    write_atomic(path, write)
