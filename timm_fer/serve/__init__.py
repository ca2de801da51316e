"""``timm-fer serve``: one process with its models loaded once, answering a REST API, a live WebSocket and a web page.

Needs the ``serve`` extra: ``pip install "timm-fer[serve]"`` (FastAPI, uvicorn, python-multipart, swagger-ui-bundle).
The names below load on first use: without the extra, those of the web application raise
:class:`ServeUnavailableError`, naming the install command. :func:`serve_replicas` runs the application as replicas
on a Ray cluster (``timm-fer serve --replicas``); it needs the ``ray`` extra too, imported only when it runs.
"""
from importlib import import_module
from typing import Any, List

from .extra import ServeUnavailableError, require_serve_extra

__all__ = ['API_KEY_HEADER', 'ApiError', 'BatchingClassifier', 'ReplicaSettings', 'ServeLimits',
           'ServeUnavailableError', 'create_app', 'load_classifiers', 'replica_application', 'require_serve_extra',
           'serve', 'serve_replicas']

_LAZY = {'API_KEY_HEADER': '.app', 'ApiError': '.app', 'ServeLimits': '.app', 'create_app': '.app', 'serve': '.app',
         'load_classifiers': '.app',
         'BatchingClassifier': '.batching', 'ReplicaSettings': '.replicas', 'replica_application': '.replicas',
         'serve_replicas': '.replicas'}
"""Where the public names that need the extra live."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'timm_fer.serve' has no attribute '{name}'")
    if _LAZY[name] in ('.app', '.replicas'):
        require_serve_extra()
    return getattr(import_module(_LAZY[name], __name__), name)


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
