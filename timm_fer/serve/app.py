"""``timm-fer serve``'s web application: a REST API over one or more loaded models, its limits, and the web page.

:func:`create_app` builds the FastAPI application around one or more
:class:`~timm_fer.inference.classifier.FaceClassifier` (each wrapped in a
:class:`~timm_fer.serve.batching.BatchingClassifier`, so that the faces of concurrent requests share forward passes);
each request names the model it wants (the form field or query parameter ``model``), else gets the first, the
default. :func:`load_classifiers` loads the models by name and :func:`serve` runs the application with uvicorn.
Photos go through the same steps as ``timm-fer predict`` (robust reading with EXIF rotation, detection, alignment,
classification), clips through :func:`~timm_fer.inference.video.predict_video`.

Every upload is written to a temporary folder under a name the server makes up, and removed with the folder when
its answer is ready: the client's file name is only echoed in the answer, never used as a path. Model work runs on
worker threads, off the event loop.
"""
import asyncio
import base64
import hmac
import io
import ipaddress
import shutil
import sys
import tempfile
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import (Any, AsyncIterator, Awaitable, Callable, Deque, Dict, List, Mapping, MutableMapping, Optional,
                    Sequence, Tuple, Union)
from urllib.parse import urlsplit

import swagger_ui_bundle
from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError, InputFileError
from ..faces import MAX_PHOTO_PIXELS, FaceDetector, read_image
from ..faces.video_io import VideoReader, require_video_decoder, video_suffixes
from ..inference.annotate import LOSSY_QUALITY, annotate_image
from ..inference.classifier import (ClassifierOptions, FaceClassifier, FacePrediction, classify_pairs, face_detector,
                                   load_classifier, resolve_classifier)
from ..inference.report import SkippedInput, UniqueNames
from ..inference.stream import FrameTracker
from ..inference.video import DEFAULT_FPS, predict_video
from ..utils.options import Range, check_fields, option_ranges
from .batching import BatchingClassifier
from .live import LiveSession

__all__ = ['API_KEY_HEADER', 'STATIC_DIR', 'ApiError', 'Classifiers', 'RequestGate', 'ServeLimits', 'create_app',
           'check_served_models', 'is_loopback', 'load_classifiers', 'same_origin', 'serve']

API_KEY_HEADER = 'X-API-Key'
"""The request header that carries the key of a server started with ``--api-key``."""
STATIC_DIR = Path(__file__).resolve().parent / 'static'
"""The web page's files, served at ``/`` (index.html) and ``/static/``."""
DOCS_ASSETS = '/docs-assets'
"""Where Swagger UI's script and style (the ``swagger-ui-bundle`` package's) are served for ``/docs``."""
UPLOAD_PATHS = ('/v1/predict', '/v1/predict/video')
"""The endpoints that take uploads: their bodies are limited in size and their requests in number."""
IMAGE_TYPES = ('image/', 'application/octet-stream')
VIDEO_TYPES = ('video/', 'application/octet-stream')
"""Content types (prefixes) of the parts accepted as images and as clips; a part without one is accepted too."""
MAX_FPS = 30.
"""Most frames per second a clip is sampled at."""
Classifiers = Union[FaceClassifier, Sequence[FaceClassifier], Mapping[str, FaceClassifier]]
"""The models a server answers with: one classifier, several (each named by its ``model_name``), or names mapped to
classifiers (requests choose by these names); the first is the default."""


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server; beyond it, a 4xx answer naming the limit and the fix.

    Attributes:
        max_upload_mb: Most megabytes (2**20 bytes) in one request's body (413).
        max_files: Most images in one request to ``/v1/predict`` (413).
        max_megapixels: Most megapixels (millions of pixels) of one photo or video frame, checked from its header
            before decoding (413); at most :data:`~timm_fer.faces.MAX_PHOTO_PIXELS`, what photos are read at.
        max_video_seconds: Longest clip, by the length its file declares (413).
        max_in_flight: Most upload requests worked on at once; more wait in the queue.
        queue_size: Most upload requests waiting, first come first served, for one of the ``max_in_flight`` places;
            one more is answered 429 with ``Retry-After`` at once (0: no queue, every request over
            ``max_in_flight`` is refused).
        queue_timeout_s: Most seconds a request waits in the queue; then it is answered 429 with ``Retry-After``.
        retry_after: Seconds the 429 answers ask the client to wait.
    """
    max_upload_mb: float = field(default=32., metadata={'range': Range(0, 4096, low_open=True)})
    max_files: int = field(default=16, metadata={'range': Range(1, 1024, integer=True)})
    max_megapixels: float = field(default=64., metadata={'range': Range(0, MAX_PHOTO_PIXELS / 1e6, low_open=True)})
    max_video_seconds: float = field(default=120., metadata={'range': Range(0, 86400, low_open=True)})
    max_in_flight: int = field(default=8, metadata={'range': Range(1, 1024, integer=True)})
    queue_size: int = field(default=256, metadata={'range': Range(0, 65536, integer=True)})
    queue_timeout_s: float = field(default=30., metadata={'range': Range(0, 3600)})
    retry_after: int = field(default=1, metadata={'range': Range(1, 3600, integer=True)})

    def __post_init__(self) -> None:
        """Check every limit against its range (:func:`~timm_fer.utils.options.check_fields`)."""
        check_fields(self)

    @property
    def max_pixels(self) -> int:
        """:attr:`max_megapixels` in pixels."""
        return int(self.max_megapixels * 1e6)

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 2 ** 20)


class ApiError(Exception):
    """A request the server answers with a 4xx status and a one-line ``detail`` naming the problem and the fix."""

    def __init__(self, status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def _error_response(status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({'detail': detail}, status_code=status, headers=headers)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    """A request body grew past the upload limit while it was read."""


class RequestGate:
    """ASGI middleware in front of the API: the API key, then, for uploads, the content type, the body size (declared
    and as read) and the number of requests worked on at once, each refused before any work is done. An upload over
    ``max_in_flight`` waits, first come first served, in a queue of at most ``queue_size`` for at most
    ``queue_timeout_s``; past either, it is answered 429 with ``Retry-After``.

    Args:
        app: The application behind it.
        limits: The limits.
        api_key: The key every ``/v1/`` request must carry in :data:`API_KEY_HEADER` (WebSockets: the query
            parameter ``key``, checked by the endpoint); None: no key.
    """

    def __init__(self, app: ASGIApp, limits: ServeLimits, api_key: Optional[str]) -> None:
        self.app = app
        self.limits = limits
        self.api_key = api_key
        self.in_flight = 0  # requests holding one of the max_in_flight places
        self.waiting: Deque['asyncio.Future[None]'] = deque()  # requests waiting for a place, in their order

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http' or not scope['path'].startswith('/v1/'):
            await self.app(scope, receive, send)
            return
        headers = {k.decode('latin-1').lower(): v.decode('latin-1') for k, v in scope['headers']}
        if self.api_key is not None and not hmac.compare_digest(
                headers.get(API_KEY_HEADER.lower(), '').encode('latin-1'), self.api_key.encode()):
            await _error_response(401, f'this server needs its API key in the {API_KEY_HEADER} header; ask whoever '
                                       f'started it for the key.')(scope, receive, send)
            return
        if scope['path'] not in UPLOAD_PATHS or scope['method'] != 'POST':
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(headers)
        if refusal is None:
            refusal = await self._admit()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            await self._limited(scope, receive, send)
        finally:
            self._release()

    def _refusal(self, headers: Dict[str, str]) -> Optional[JSONResponse]:
        """The answer to an upload refused from its headers alone, or None."""
        content_type = headers.get('content-type', '').split(';')[0].strip().lower()
        if content_type != 'multipart/form-data':
            return _error_response(415, f"uploads are multipart/form-data with one part named 'file' per file, got "
                                        f"{content_type or 'no content type'}; e.g. curl -F file=@photo.jpg URL")
        declared = headers.get('content-length', '')
        if declared.isdigit() and int(declared) > self.limits.max_upload_bytes:
            return self._too_large()
        return None

    async def _admit(self) -> Optional[JSONResponse]:
        """Take one of the ``max_in_flight`` places, after waiting in the queue if they are all taken; the 429
        answer when the queue is full or the wait reaches ``queue_timeout_s``, else None (the place is this
        request's until :meth:`_release`)."""
        limits = self.limits
        if self.in_flight < limits.max_in_flight and not self.waiting:
            self.in_flight += 1
            return None
        if len(self.waiting) >= limits.queue_size:
            return self._busy(f'the server is working on {self.in_flight} requests and {len(self.waiting)} more '
                              f'wait, its limits')
        place: 'asyncio.Future[None]' = asyncio.get_running_loop().create_future()
        self.waiting.append(place)
        try:
            await asyncio.wait([place], timeout=limits.queue_timeout_s)
        except BaseException:  # the request was cancelled while it waited: its place, if handed over, goes on
            if place.done():
                self._release()
            else:
                self.waiting.remove(place)
            raise
        if place.done():  # a finished request handed its place over
            return None
        self.waiting.remove(place)
        return self._busy(f'the request waited {limits.queue_timeout_s:g} s in the queue for one of the server\'s '
                          f'{limits.max_in_flight} places, its limit')

    def _release(self) -> None:
        """Hand a finished request's place to the first request waiting, or free it."""
        if self.waiting:
            self.waiting.popleft().set_result(None)
        else:
            self.in_flight -= 1

    def _busy(self, reason: str) -> JSONResponse:
        """The 429 answer: ``reason``, and when to retry."""
        return _error_response(429, f'{reason}; retry after {self.limits.retry_after} s.',
                               headers={'Retry-After': str(self.limits.retry_after)})

    def _too_large(self) -> JSONResponse:
        return _error_response(413, f'the upload is larger than this server takes ({self.limits.max_upload_mb:g} MB); '
                                    f'send smaller or fewer files.')

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, counting its body as it is read: past the limit, reading stops and the answer is 413."""
        received = 0
        exceeded = False
        answered = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message['type'] == 'http.request':
                received += len(message.get('body', b''))
                if received > self.limits.max_upload_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def checked_send(message: Message) -> None:
            nonlocal answered
            if exceeded:  # the application's own answer to the cut body gives way to the 413
                if not answered:
                    answered = True
                    await self._too_large()(scope, receive, send)
                return
            answered = answered or message['type'] == 'http.response.start'
            await send(message)

        try:
            await self.app(scope, counted_receive, checked_send)
        except _BodyTooLarge:
            if not answered:
                await self._too_large()(scope, receive, send)


def same_origin(origin: str, host: str) -> bool:
    """Whether the web origin ``origin`` (an ``Origin`` header) is the server itself as reached at ``host`` (the
    ``Host`` header): the same host name and port, a missing port being its scheme's default."""
    parts, reached = urlsplit(origin), urlsplit(f'//{host}')
    default = {'http': 80, 'https': 443}.get(parts.scheme)
    try:
        ports = (parts.port or default, reached.port or default)
    except ValueError:  # a port that is no number
        return False
    return default is not None and parts.hostname is not None and parts.hostname == reached.hostname and \
        ports[0] == ports[1]


async def _refuse_websocket(websocket: WebSocket, status: int, detail: str, close_code: int,
                            headers: Optional[Dict[str, str]] = None) -> None:
    """Refuse a WebSocket before accepting it: an HTTP answer ``status`` with ``{"detail": detail}`` where the server
    supports the WebSocket denial response (uvicorn and Starlette's TestClient do), else a close with ``close_code``
    and ``detail`` (cut to the 123 bytes a close reason holds) as its reason."""
    if 'websocket.http.response' in websocket.scope.get('extensions', {}):
        await websocket.send_denial_response(_error_response(status, detail, headers))
    else:
        await websocket.close(code=close_code, reason=detail.encode()[:123].decode(errors='ignore'))


def _data_url(data: bytes, media_type: str) -> str:
    return f'data:{media_type};base64,{base64.b64encode(data).decode("ascii")}'


def _check_part(upload: UploadFile, accepted: Sequence[str], what: str) -> None:
    content_type = (upload.content_type or '').lower()
    if content_type and not content_type.startswith(accepted):
        raise ApiError(415, f"part '{upload.filename}' is {content_type}, not {what}; send {what} as the 'file' "
                            f"part{'s' if what == 'images' else ''}.")


def _save_upload(upload: UploadFile, path: Path) -> Path:
    """Copy an upload to ``path`` (a name the server chose)."""
    upload.file.seek(0)
    with path.open('wb') as out:
        shutil.copyfileobj(upload.file, out)
    return path


def _check_pixels(name: str, width: int, height: int, limits: ServeLimits) -> None:
    if width * height > limits.max_pixels:
        raise ApiError(413, f"'{name}' is {width}x{height} ({width * height / 1e6:.1f} megapixels), above this "
                            f"server's {limits.max_pixels / 1e6:.1f} megapixels; downscale it first.")


class _Service:
    """What the endpoints do, on worker threads: the loaded models, by name (the first is the default), and one
    detector for every request."""

    def __init__(self, classifiers: Dict[str, BatchingClassifier], detector: Optional[FaceDetector],
                 min_face_size: float, limits: ServeLimits, temp_dir: Optional[Path]) -> None:
        self.classifiers = classifiers
        self.default = next(iter(classifiers))
        self.detector = detector
        self.min_face_size = min_face_size
        self.limits = limits
        self.temp_dir = temp_dir

    def folder(self) -> 'tempfile.TemporaryDirectory[str]':
        """A new temporary folder for one request's uploads, removed with everything in it when closed."""
        return tempfile.TemporaryDirectory(prefix='timm-fer-serve-', dir=self.temp_dir)

    def model(self, name: Optional[str]) -> Tuple[str, BatchingClassifier]:
        """The name and classifier of the model a request asks for (None: the default).

        Raises:
            ApiError: 422, no model of that name is loaded.
        """
        if name is None:
            return self.default, self.classifiers[self.default]
        if name not in self.classifiers:
            shown = name if len(name) <= 80 else name[:77] + '...'
            raise ApiError(422, f"model {shown!r} is not loaded on this server, which serves "
                                f"{', '.join(self.classifiers)} (default {self.default}); send one of these, or "
                                f"leave model out for the default.")
        return name, self.classifiers[name]

    def models(self) -> Dict[str, Any]:
        """The loaded models and the default, as ``GET /v1/models`` lists them."""
        models = []
        for name, c in self.classifiers.items():
            models.append({'name': name, 'labels': list(c.labels),
                           'input_size': [1 if c.image_mode == 'L' else 3, *c.size], 'weights': c.weights,
                           'backend': c.backend, 'description': c.description})
        return {'models': models, 'default': self.default}

    def predict_images(self, model: str, uploads: List[UploadFile], top_k: Optional[int], annotate: bool,
                       explain: bool) -> Dict[str, Any]:
        """The answer of ``POST /v1/predict`` by the loaded model ``model``."""
        classifier = self.classifiers[model]
        with classifier.caller(), self.folder() as folder:  # a batch waits for this request's faces
            images, crops, skipped = [], [], []  # one decoded image at a time: annotation reads it again
            for index, upload in enumerate(uploads):
                path = _save_upload(upload, Path(folder) / f'image-{index}')
                image = self._read_image(path, upload.filename or f'file {index}')
                try:
                    image_crops, image_skipped = classifier.crop_faces(path, image, self.detector,
                                                                       self.min_face_size)
                except Exception as e:  # one image that breaks the detector never breaks the request
                    image_crops, image_skipped = [], [SkippedInput(str(path), f'face detection or alignment failed '
                                                                              f'({type(e).__name__}: {e})')]
                images.append((upload.filename or '', path, image.size))
                crops.append(image_crops)
                skipped.append(image_skipped)
            viz_names = UniqueNames(Path(folder) / 'explanations') if explain else None
            everything = [crop for image_crops in crops for crop in image_crops]
            failed: List[SkippedInput] = []
            pairs = classify_pairs(classifier, everything, failed, viz_names=viz_names)
            by_crop = {id(crop): prediction for crop, prediction in pairs}
            by_file: Dict[str, List[SkippedInput]] = {}
            for problem in failed:
                by_file.setdefault(problem.file, []).append(problem)
            answers = []
            for (name, path, size), image_crops, image_skipped in zip(images, crops, skipped):
                found = [by_crop[id(crop)] for crop in image_crops if id(crop) in by_crop]
                problems = image_skipped + by_file.get(str(path), [])
                answer = self._image_answer(name, size, found, problems, top_k)
                if annotate:
                    answer['annotated'] = self._annotated(path, found, classifier.title_suffix)
                answers.append(answer)
        return {'model': model, 'labels': list(classifier.labels), 'images': answers}

    def _read_image(self, path: Path, name: str) -> Image.Image:
        """The upload as an upright RGB image (:func:`~timm_fer.faces.read_image`), its pixels checked first."""
        try:
            with Image.open(path) as opened:
                _check_pixels(name, opened.width, opened.height, self.limits)
        except ApiError:
            raise
        except Image.DecompressionBombError as e:
            raise ApiError(413, f"'{name}' has more pixels than this server takes ({e}); downscale it first.") from e
        except Exception:  # not an image: read_image says so below
            pass
        try:
            return read_image(path)
        except InputFileError as e:
            raise ApiError(400, f"'{name}': {e.reason}") from e

    def _image_answer(self, name: str, size: Tuple[int, int], found: List[FacePrediction],
                      problems: List[SkippedInput], top_k: Optional[int]) -> Dict[str, Any]:
        """One image's part of the answer: its faces (with the pictures asked for) and what was skipped."""
        faces = []
        for prediction in found:
            face: Dict[str, Any] = {'face': prediction.face, 'box': list(prediction.box),
                                    'detector_score': prediction.detector_score,
                                    'expression': prediction.expression, 'probabilities': prediction.probabilities}
            if top_k is not None:
                ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])[:top_k]
                face['top_k'] = [[label, p] for label, p in ranked]
            if prediction.visualization is not None:
                face['explanation'] = _data_url(Path(prediction.visualization).read_bytes(), 'image/png')
            faces.append(face)
        return {'file': name, 'width': size[0], 'height': size[1], 'faces': faces,
                'skipped': '; '.join(p.reason for p in problems) or None}

    def _annotated(self, path: Path, found: List[FacePrediction], suffix: str) -> str:
        """The image with each face's box and top expression drawn (``suffix`` after each label), as a JPEG data
        URL."""
        labels = [(p.box, f'{p.expression} {p.probabilities[p.expression]:.2f}{suffix}') for p in found]
        buffer = io.BytesIO()
        annotate_image(read_image(path), labels).save(buffer, format='JPEG', quality=LOSSY_QUALITY)
        return _data_url(buffer.getvalue(), 'image/jpeg')

    def predict_clip(self, model: str, upload: UploadFile, fps: float) -> Dict[str, Any]:
        """The answer of ``POST /v1/predict/video`` by the loaded model ``model``."""
        name = upload.filename or 'file'
        suffix = Path(name).suffix.lower()
        with self.folder() as folder:
            # The suffix tells the video reader what the file is; only one of the known video suffixes is used.
            path = _save_upload(upload, Path(folder) / f'clip{suffix if suffix in video_suffixes() else ".mp4"}')
            try:
                with VideoReader(path) as reader:
                    info = reader.info
            except InputFileError as e:
                raise ApiError(400, f"'{name}': {e.reason}") from e
            _check_pixels(name, info.width, info.height, self.limits)
            if info.duration is not None and info.duration > self.limits.max_video_seconds:
                raise ApiError(413, f"'{name}' lasts {info.duration:.1f} s, longer than this server's "
                                    f"{self.limits.max_video_seconds:g} s; cut it shorter.")
            report = predict_video([path], self.classifiers[model], detector=self.detector,
                                   aligned=self.detector is None, fps=fps, min_face_size=self.min_face_size,
                                   progress=False)
        if not report.videos:
            raise ApiError(400, f"'{name}': " + '; '.join(s.reason for s in report.skipped))
        video = report.videos[0]
        return {
            'model': model, 'labels': report.labels,
            'video': {'file': name, 'codec': video.codec, 'width': video.width, 'height': video.height,
                      'fps': video.fps, 'duration': video.duration, 'sampled_fps': fps,
                      'frames_decoded': video.frames_decoded, 'frames_sampled': video.frames_sampled,
                      'frames_with_faces': video.frames_with_faces, 'short_tracks': video.short_tracks,
                      'problem': video.problem},
            'tracks': [{'track': t.track, 'frames': t.frames, 'start': t.start, 'end': t.end,
                        'expression': t.expression, 'shares': t.shares, 'mean_probabilities': t.mean_probabilities,
                        'detector_score': t.detector_score} for t in report.tracks],
            'rows': [{'frame': f.frame, 'time': f.time, 'track': f.track, 'box': list(f.box),
                      'detector_score': f.detector_score, 'expression': f.expression,
                      'probabilities': f.probabilities} for f in report.faces],
            'skipped': [s.reason for s in report.skipped],
        }


def _flag(value: Optional[str], name: str) -> bool:
    """A form field meaning yes or no ('true'/'false', '1'/'0', 'yes'/'no', absent: no)."""
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ('true', '1', 'yes', 'on'):
        return True
    if lowered in ('false', '0', 'no', 'off', ''):
        return False
    raise ApiError(422, f"{name} is true or false, got '{value}'.")


def _validation_detail(error: RequestValidationError) -> str:
    """FastAPI's list of validation problems as one line."""
    parts = []
    for problem in error.errors():
        where = '.'.join(str(part) for part in problem.get('loc', ()) if part not in ('body', 'query'))
        if problem.get('type') == 'missing' and where == 'file':
            return "the form has no part named 'file': send each image as one, e.g. curl -F file=@photo.jpg URL"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return '; '.join(parts) + '.'


def _named_classifiers(classifier: Classifiers) -> Dict[str, FaceClassifier]:
    """The classifiers of :data:`Classifiers`, by the names requests choose them by, the default first.

    Raises:
        TypeError: Something that is no classifier.
        ConfigError: No classifier, or two with one name.
    """
    if isinstance(classifier, FaceClassifier):
        return {classifier.model_name: classifier}
    pairs = list(classifier.items()) if isinstance(classifier, Mapping) else \
        [(getattr(one, 'model_name', None), one) for one in classifier]
    named: Dict[str, FaceClassifier] = {}
    for name, one in pairs:
        if not isinstance(one, FaceClassifier) or not isinstance(name, str):
            raise TypeError(f'classifier is a FaceClassifier (from load_classifier), a sequence of them or a mapping '
                            f'of names to them, got {type(one).__name__} named {name!r}.')
        if name in named:
            raise ConfigError(f'two classifiers are named {name}: pass a mapping of distinct names to classifiers.')
        named[name] = one
    if not named:
        raise ConfigError('no classifier to serve: pass one (from load_classifier), or several.')
    return named


def check_served_models(models: Sequence[str], checkpoint: Optional[Union[str, Path]] = None) -> None:
    """Check the model names a server is to load (:func:`load_classifiers`), before anything is loaded.

    Raises:
        ConfigError: A model given twice, or several models with one checkpoint.
    """
    repeated = [model for index, model in enumerate(models) if model in models[:index]]
    if repeated:
        raise ConfigError(f'--model {repeated[0]} is given twice: name each model once.')
    if len(models) > 1 and checkpoint is not None:
        raise ConfigError(f'--checkpoint holds the weights of one model, and {len(models)} --model are given: give one '
                          f'--model with it, or leave --checkpoint out to serve several models.')


def load_classifiers(options: Optional[ClassifierOptions] = None, models: Sequence[str] = (),
                     **changes: Any) -> Dict[str, FaceClassifier]:
    """The models a server answers with, each loaded once (:func:`~timm_fer.inference.classifier.load_classifier`),
    by the name requests choose them by (its ``model_name``); the first is the default.

    Args:
        options: How every model runs and, without ``models``, which one to load.
        models: Model names with their tags (``timm-fer serve --model``), each loaded with the other fields of
            ``options``; none: the one model ``options`` names.
        changes: :class:`~timm_fer.inference.classifier.ClassifierOptions` fields that replace those of ``options``.

    Raises:
        ConfigError: A model given twice or two names that load the same model, several models with one checkpoint,
            or a model that does not load (the loading error).
    """
    options = replace(options or ClassifierOptions(), **changes)
    check_served_models(models, options.checkpoint)
    if not models:
        classifier = load_classifier(options)
        return {classifier.model_name: classifier}
    classifiers: Dict[str, FaceClassifier] = {}
    given: Dict[str, str] = {}
    for model in models:
        classifier = load_classifier(options, model=model)
        if classifier.model_name in classifiers:
            raise ConfigError(f'--model {given[classifier.model_name]} and --model {model} load the same model, '
                              f'{classifier.model_name}: give it once.')
        classifiers[classifier.model_name] = classifier
        given[classifier.model_name] = model
    return classifiers


def create_app(
        classifier: Classifiers,
        *,
        detector: Optional[FaceDetector] = None,
        aligned: bool = False,
        min_face_size: float = 32.,
        limits: ServeLimits = ServeLimits(),
        api_key: Optional[str] = None,
        cors_origins: Sequence[str] = (),
        max_batch: int = 32,
        max_wait_ms: float = 5.,
        temp_dir: Optional[Path] = None,
) -> FastAPI:
    """The web application of ``timm-fer serve``: the REST API, the live WebSocket and the web page.

    Args:
        classifier: The loaded model (:func:`~timm_fer.inference.classifier.load_classifier`; with ``explain=True``
            the API draws explanation pictures), or several (:data:`Classifiers`: a sequence, each named by its
            ``model_name``, or a mapping of names to classifiers, as :func:`load_classifiers` gives). Requests choose
            one by name (the form field or query parameter ``model``), else get the first, the default. Each that
            is not already a :class:`~timm_fer.serve.batching.BatchingClassifier` is wrapped in one of its own with
            ``max_batch`` and ``max_wait_ms``, stopped when the application shuts down.
        detector: Face detector; default :class:`~timm_fer.faces.RetinaFaceDetector` (the ``face`` extra).
        aligned: Uploads are aligned face crops: resize them, detect nothing.
        min_face_size: Faces whose box has a shorter side below this many pixels are skipped, with the reason.
        limits: What one request may ask.
        api_key: A key every ``/v1/`` request must carry (header :data:`API_KEY_HEADER`, or ``?key=`` for the
            WebSocket); ``/healthz``, the page and the docs stay open. None: no key; an empty key is refused.
        cors_origins: Web origins allowed to call the API from their pages, and to open the live WebSocket besides
            the server's own pages (``*``: any); none by default (no CORS headers).
        max_batch: Most faces per forward pass; 1 turns micro-batching off.
        max_wait_ms: Most milliseconds a batch waits for the faces of other requests being worked on (a lone
            request never waits).
        temp_dir: Where the uploads' temporary folders go; default the system's.
    """
    if api_key is not None and not api_key.strip():
        raise ConfigError('api_key is empty, which would leave the API open to anyone: give a key, or None to serve '
                          'without one.')
    named = _named_classifiers(classifier)
    owned = [name for name, one in named.items() if not isinstance(one, BatchingClassifier)]
    classifiers = {name: BatchingClassifier(one, max_batch, max_wait_ms) if name in owned else one
                   for name, one in named.items()}
    service = _Service(classifiers, face_detector(aligned, detector), min_face_size, limits, temp_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for name in owned:
            classifiers[name].close()

    app = FastAPI(title='timm-fer', version='1', lifespan=lifespan, docs_url=None, redoc_url=None,
                  description='Facial expression recognition: faces, boxes and expression probabilities of photos '
                              'and clips.')
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error.status, error.detail, error.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        return _error_response(500, f'the server failed on this request ({type(error).__name__}); its log has the '
                                    f'details.')

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(422, _validation_detail(error))

    @app.get('/healthz', summary='Whether the server is up')
    async def healthz() -> Dict[str, str]:
        return {'status': 'ok'}

    model_field = 'the loaded model to answer with, by name (GET /v1/models); default: the first'

    @app.get('/v1/models', summary='The loaded models and the default')
    async def models() -> Dict[str, Any]:
        return service.models()

    @app.post('/v1/predict', summary='Faces and expressions of one or more photos')
    async def predict(
            file: List[UploadFile] = File(..., description='the images, one part each'),
            model: Optional[str] = Form(None, description=model_field),
            top_k: Optional[int] = Form(None, description="each face's k most probable expressions"),
            annotate: Optional[str] = Form(None, description='"true": the image with the faces drawn, as JPEG'),
            explain: Optional[str] = Form(None, description='"true": a picture of where the model looked per face'),
    ) -> Dict[str, Any]:
        if len(file) > limits.max_files:
            raise ApiError(413, f'{len(file)} files in one request, above this server\'s {limits.max_files}; send '
                                f'them in several requests.')
        name, chosen = service.model(model)
        if top_k is not None and not 1 <= top_k <= len(chosen.labels):
            raise ApiError(422, f'top_k is between 1 and the {len(chosen.labels)} labels, got {top_k}.')
        wants_explanation = _flag(explain, 'explain')
        if wants_explanation and not chosen.can_explain:
            raise ApiError(400, 'explanations need the eager fp32 model: start the server with --explain.')
        for upload in file:
            _check_part(upload, IMAGE_TYPES, 'images')
        return await run_in_threadpool(service.predict_images, name, file, top_k, _flag(annotate, 'annotate'),
                                       wants_explanation)

    @app.post('/v1/predict/video', summary='Face tracks and expressions over time of one clip')
    async def predict_video_clip(
            file: UploadFile = File(..., description='the clip'),
            fps: float = Form(DEFAULT_FPS, description=f'frames sampled per second (at most {MAX_FPS:g})'),
            model: Optional[str] = Form(None, description=model_field),
    ) -> Dict[str, Any]:
        name, _ = service.model(model)
        if not 0 < fps <= MAX_FPS:
            raise ApiError(422, f'fps is a number in (0, {MAX_FPS:g}], got {fps:g}.')
        _check_part(file, VIDEO_TYPES, 'a video')
        try:
            require_video_decoder()
        except ImportError as e:
            raise ApiError(501, f'this server cannot read videos: {e}') from e
        return await run_in_threadpool(service.predict_clip, name, file, fps)

    live_connections = 0

    @app.websocket('/v1/live')
    async def live(websocket: WebSocket, key: Optional[str] = None, model: Optional[str] = None) -> None:
        """Frames in (4-byte big-endian id + JPEG), one JSON answer per frame out (see :mod:`timm_fer.serve.live`),
        by the loaded model that the query parameter ``model`` names (default: the first).

        Refused before it opens, with a one-line reason: a page of another web origin than the server's own and the
        ``cors_origins`` (403; a client that sends no ``Origin``, not a browser, is let in), a missing or wrong key
        (401), a model that is not loaded (422), and more than ``max_in_flight`` live connections (429 with
        ``Retry-After``).
        """
        nonlocal live_connections
        origin = websocket.headers.get('origin')
        if origin is not None and '*' not in cors_origins and origin not in cors_origins and \
                not same_origin(origin, websocket.headers.get('host', '')):
            await _refuse_websocket(websocket, 403, f'pages from {origin} may not open this live WebSocket, only the '
                                                    f"server's own pages; start it with --cors-origin {origin} to let "
                                                    f'them.', 1008)
            return
        if api_key is not None and not hmac.compare_digest((key or '').encode(), api_key.encode()):
            await _refuse_websocket(websocket, 401, 'this server needs its API key as the query parameter ?key=; ask '
                                                    'whoever started it for the key.', 1008)
            return
        try:
            name, chosen = service.model(model)
        except ApiError as e:
            await _refuse_websocket(websocket, e.status, e.detail, 1008)
            return
        if live_connections >= limits.max_in_flight:
            await _refuse_websocket(websocket, 429, f'{live_connections} live connections, this server\'s limit '
                                                    f'(--max-in-flight); retry after {limits.retry_after} s.', 1013,
                                    {'Retry-After': str(limits.retry_after)})
            return
        live_connections += 1
        try:
            await websocket.accept()
            tracker = FrameTracker(chosen, service.detector, aligned=service.detector is None,
                                   min_face_size=min_face_size, source='live')
            await LiveSession(websocket, tracker, limits.max_pixels, limits.max_upload_bytes, name).run()
        finally:
            live_connections -= 1

    @app.get('/', include_in_schema=False)
    async def page() -> Any:
        index = STATIC_DIR / 'index.html'
        if not index.is_file():
            raise ApiError(404, 'the web page is not installed; the API is at /v1/ (see /docs).')
        return FileResponse(index)

    @app.get('/docs', include_in_schema=False)
    async def docs() -> HTMLResponse:  # Swagger UI from the package, not from a CDN: it works offline
        return get_swagger_ui_html(openapi_url=app.openapi_url, title='timm-fer API',
                                   swagger_js_url=f'{DOCS_ASSETS}/swagger-ui-bundle.js',
                                   swagger_css_url=f'{DOCS_ASSETS}/swagger-ui.css', swagger_favicon_url='data:,')

    app.mount('/static', StaticFiles(directory=STATIC_DIR, check_dir=False), name='static')
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name='docs-assets')
    app.add_middleware(RequestGate, limits=limits, api_key=api_key)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=['GET', 'POST'],
                           allow_headers=[API_KEY_HEADER])
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this machine can reach a server bound to it."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn(message: str) -> None:
    print(f'warning: {message}', file=sys.stderr)


@option_ranges(port=Range(0, 65535, integer=True), min_face_size=Range(0))
def serve(
        host: str = '127.0.0.1',
        port: int = 8000,
        classifier: Optional[Classifiers] = None,
        *,
        explain: bool = False,
        detector: Optional[FaceDetector] = None,
        aligned: bool = False,
        min_face_size: float = 32.,
        limits: ServeLimits = ServeLimits(),
        api_key: Optional[str] = None,
        cors_origins: Sequence[str] = (),
        max_batch: int = 32,
        max_wait_ms: float = 5.,
        log_level: str = 'info',
        **options: Any,
) -> None:
    """Load the model once (or take the models given) and answer requests on ``host``:``port`` until interrupted
    (``timm-fer serve``).

    Args:
        host: The address to listen on; the default, loopback, lets only this machine in. Any other address is
            warned about: anyone who reaches it can use the API (set ``api_key``).
        port: The port (0: any free one).
        classifier: The model, from :func:`~timm_fer.inference.classifier.load_classifier`, or several, as for
            :func:`create_app` (:func:`load_classifiers` loads them by name); None loads one from ``options``.
        explain: Load the eager fp32 model so that the API can draw explanation pictures (``explain=true``).
        detector, aligned, min_face_size, limits, api_key, cors_origins, max_batch, max_wait_ms: As for
            :func:`create_app`.
        log_level: uvicorn's log level.
        options: Without ``classifier``: :class:`~timm_fer.inference.classifier.ClassifierOptions` fields, as for
            :func:`~timm_fer.predict`.
    """
    import uvicorn

    if classifier is None:
        served: Classifiers = resolve_classifier(None, options, explain=explain)
    else:
        served = {name: resolve_classifier(one, options, explain=explain)
                  for name, one in _named_classifiers(classifier).items()}
    app = create_app(served, detector=detector, aligned=aligned, min_face_size=min_face_size, limits=limits,
                     api_key=api_key, cors_origins=cors_origins, max_batch=max_batch, max_wait_ms=max_wait_ms)
    if not is_loopback(host):
        _warn(f'listening on {host}: any machine that reaches this address can use the API'
              f'{"" if api_key else "; set --api-key"}. Use --host 127.0.0.1 to keep it to this machine.')
    uvicorn.run(app, host=host, port=port, log_level=log_level)
