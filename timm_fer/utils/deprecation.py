"""Keyword arguments renamed in this release: the old names keep working, with a warning, for one release."""
import warnings
from typing import Optional, TypeVar

__all__ = ['renamed_kwarg']

T = TypeVar('T')


def renamed_kwarg(old_name: str, old_value: Optional[T], new_name: str, new_value: T) -> T:
    """The value of a renamed keyword argument: ``old_value`` when the caller still passed the old name (with a
    ``FutureWarning``, which command-line users see too), else ``new_value``.

    Args:
        old_name: The keyword's former name.
        old_value: What the caller passed under the former name; None when it did not use it.
        new_name: The keyword's name now.
        new_value: What the caller passed under the new name (or its default).
    """
    if old_value is None:
        return new_value
    warnings.warn(f"'{old_name}' is renamed '{new_name}'; pass {new_name}={old_value!r} (the old name goes in the "
                  f'next release).', FutureWarning, stacklevel=3)
    return old_value
