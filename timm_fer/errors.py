"""Errors that timm-fer's commands report as one line naming the problem and the fix, without a traceback."""

__all__ = ['ConfigError', 'DatasetError', 'DatasetFileNotFoundError', 'FerError']


class FerError(Exception):
    """Base of the errors caused by the user's data or options rather than by a bug."""


class ConfigError(FerError, ValueError):
    """Options that cannot work together, or a file given as an option that does not fit."""


class DatasetError(FerError, ValueError):
    """A dataset file is unreadable or malformed; the message names the file, what was skipped and the fix."""


class DatasetFileNotFoundError(FerError, FileNotFoundError):
    """A file that the dataset's layout needs does not exist; the message names it and the expected layout."""
