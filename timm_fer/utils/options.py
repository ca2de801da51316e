"""Ranges of numeric options, declared once and checked where the Python API is entered.

A :class:`Range` says which values one option takes. Functions declare theirs with :func:`option_ranges` (checked on
every call, and by :func:`check_options` before a command starts the work that leads to the call); dataclasses such
as :class:`~timm_fer.engine.TrainConfig` declare them as field metadata ``{'range': Range(...)}``, checked by
:func:`check_fields`. A value out of range, NaN, infinite or of the wrong type is a
:class:`~timm_fer.errors.ConfigError` of one line that names the option as its command-line flag, the value and the
range, so Python callers and the command line see the same message.
"""
import functools
import inspect
import math
import os
import tempfile
from dataclasses import dataclass, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

from ..errors import ConfigError

__all__ = ['Range', 'check_fields', 'check_given', 'check_options', 'check_output_path', 'option_ranges']

Function = TypeVar('Function', bound=Callable[..., Any])


@dataclass(frozen=True)
class Range:
    """The values one numeric option takes: finite numbers (whole with ``integer``) between the bounds.

    Attributes:
        low: Smallest value; None: no lower bound.
        high: Largest value; None: no upper bound.
        low_open: ``low`` itself is excluded.
        high_open: ``high`` itself is excluded.
        integer: Only integers (not bools, not floats such as 4.0).
        optional: None is allowed too (the option is unset).
        flag: The name in messages; default ``--`` and the option's name with dashes.
    """
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    flag: Optional[str] = None

    def __str__(self) -> str:
        kind = 'an integer' if self.integer else 'a number'
        if self.low is not None and self.high is not None:
            return (f'{kind} in {"(" if self.low_open else "["}{self.low:g}, {self.high:g}'
                    f'{")" if self.high_open else "]"}')
        if self.low is not None:
            return f'{kind} {">" if self.low_open else ">="} {self.low:g}'
        if self.high is not None:
            return f'{kind} {"<" if self.high_open else "<="} {self.high:g}'
        return kind if self.integer else 'a finite number'

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the range's values."""
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, Integral if self.integer else Real):
            return False
        if not isinstance(value, Integral) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, name: str, value: Any) -> None:
        """Raise a :class:`ConfigError` naming the option ``name``, ``value`` and the range when it is outside.

        Raises:
            ConfigError: ``value`` is not in the range.
        """
        if not self.contains(value):
            flag = self.flag or '--' + name.replace('_', '-')
            raise ConfigError(f'{flag} must be {self}{" (or unset)" if self.optional else ""}, got {value!r}.')


def check_fields(instance: Any) -> None:
    """Check every field of the dataclass ``instance`` whose metadata holds a ``range`` (a :class:`Range`).

    Raises:
        ConfigError: a field's value outside its range.
    """
    for f in fields(instance):
        if 'range' in f.metadata:
            f.metadata['range'].check(f.name, getattr(instance, f.name))


def _check_values(ranges: Mapping[str, Range], values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if name in ranges:
            ranges[name].check(name, value)


def check_given(ranges: Mapping[str, Range], values: Mapping[str, Any]) -> None:
    """Check the ``values`` that were given (not None) against ``ranges``, each element of a list or tuple alone.

    The command line calls it with every parsed flag before a command imports torch (names without a range pass).

    Raises:
        ConfigError: a given value outside its range.
    """
    for name, value in values.items():
        if name in ranges and value is not None:
            for item in value if isinstance(value, (list, tuple)) else (value,):
                ranges[name].check(name, item)


def option_ranges(**ranges: Range) -> Callable[[Function], Function]:
    """Declare the ranges of a function's numeric arguments; every call checks the arguments it is given.

    The defaults are not checked: they are in range by declaration. :func:`check_options` checks values against the
    same ranges before the call.
    """
    def decorate(function: Function) -> Function:
        signature = inspect.signature(function)
        unknown = set(ranges) - set(signature.parameters)
        if unknown:
            raise TypeError(f'{function.__qualname__} has no arguments {sorted(unknown)}.')

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _check_values(ranges, signature.bind_partial(*args, **kwargs).arguments)
            return function(*args, **kwargs)
        checked.option_ranges = ranges
        return checked  # type: ignore[return-value]
    return decorate


def check_options(function: Callable[..., Any], **values: Any) -> None:
    """Check ``values`` against the ranges ``function`` declares (:func:`option_ranges`), before the work that
    leads to calling it starts.

    Raises:
        ConfigError: a value outside its range.
    """
    _check_values(function.option_ranges, values)


def check_output_path(path: Union[str, os.PathLike], flag: str, folder: bool = False) -> Path:
    """Check that ``path`` can be written (as a folder with ``folder``, else as a file) before any work starts.

    Nothing is created: a temporary file is opened and removed in the nearest folder that exists on the way.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is a folder where a file is wanted (or the reverse), a file stands where a folder
            would be created, or its nearest existing folder cannot be written.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f'{flag} {path} is a file, not a folder; choose a folder.')
    if not folder and path.is_dir():
        raise ConfigError(f'{flag} {path} is a folder; give a file name in it.')
    existing = path.absolute() if folder else path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f'{flag} {path} cannot be written: {existing} is a file, not a folder.')
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f'{flag} {path} cannot be written ({e.strerror or type(e).__name__} in {existing}); '
                          f'choose a writable location.') from e
    return path
