"""Whether the ``serve`` extra is installed, asked without importing it (the command line asks before loading)."""
from importlib.util import find_spec

from ..errors import FerError

__all__ = ['SERVE_PACKAGES', 'ServeUnavailableError', 'require_serve_extra']

SERVE_PACKAGES = {'fastapi': 'fastapi', 'uvicorn': 'uvicorn', 'multipart': 'python-multipart',
                  'swagger_ui_bundle': 'swagger-ui-bundle'}
"""The modules ``timm-fer serve`` imports, and the packages that hold them."""


class ServeUnavailableError(FerError, ImportError):
    """The ``serve`` extra (FastAPI, uvicorn, python-multipart, swagger-ui-bundle) is not installed."""


def require_serve_extra() -> None:
    """Raise :class:`ServeUnavailableError`, naming the missing packages and the install command, unless every
    package of the ``serve`` extra is installed."""
    missing = [package for module, package in SERVE_PACKAGES.items() if find_spec(module) is None]
    if missing:
        raise ServeUnavailableError(f'timm-fer serve needs the serve extra ({", ".join(missing)} missing): '
                                    f'pip install "timm-fer[serve]"')
