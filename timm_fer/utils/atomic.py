"""Atomic file writes: a process killed while writing leaves the previous file intact."""
import os
import uuid
from typing import Any, Callable

__all__ = ['write_atomic', 'write_text_atomic']


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)`` on a file in ``path``'s folder, then move it over ``path`` in one step.

    A process killed while writing leaves the previous ``path`` intact (and at worst a stray temporary file).
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary_path = os.path.join(folder, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
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
