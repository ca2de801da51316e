"""``timm-fer serve``: one process with the model loaded once, answering a REST API, a live WebSocket and a web page.

Needs the ``serve`` extra: ``pip install "timm-fer[serve]"`` (FastAPI, uvicorn, python-multipart).
"""
from .app import API_KEY_HEADER, ApiError, ServeLimits, create_app, serve
from .batching import BatchingClassifier

__all__ = ['API_KEY_HEADER', 'ApiError', 'BatchingClassifier', 'ServeLimits', 'create_app', 'serve']
