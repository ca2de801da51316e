"""``timm-fer serve``: one process with its models loaded once, answering a REST API, a live WebSocket and a web
page."""
import argparse
import os
from typing import TYPE_CHECKING, Optional, Tuple

from ..constants import SERVED_MODELS
from ..errors import ConfigError
from . import COMMANDS
from .common import add_backend_arguments, add_command, add_runtime_arguments, add_weights_arguments, label_names_of

if TYPE_CHECKING:
    from ..inference.classifier import ClassifierOptions
    from ..serve.app import ServeLimits

__all__ = ['add_serve_parser', 'served_models']

API_KEY_VARIABLE = 'TIMM_FER_API_KEY'
"""The environment variable that gives ``--api-key`` its default (a key on the command line shows in process lists)."""
QUEUE_TIMEOUT_S = 30.
"""``--queue-timeout-s``'s default."""


def _api_key(given: Optional[str]) -> Optional[str]:
    """The key the server asks for: ``--api-key``, else ``$TIMM_FER_API_KEY``, else None (no key).

    Raises:
        ConfigError: the key is empty or blank (an unset shell variable, say), which would leave the API open.
    """
    source, key = ('--api-key', given) if given is not None else (f'${API_KEY_VARIABLE}',
                                                                   os.environ.get(API_KEY_VARIABLE))
    if key is not None and not key.strip():
        fix = 'leave --api-key out' if given is not None else f'unset {API_KEY_VARIABLE}'
        raise ConfigError(f'{source} is empty, which would leave the API open to anyone: give a key (e.g. '
                          f'{API_KEY_VARIABLE}=$(openssl rand -hex 16)), or {fix} to serve without one.')
    return key


def served_models(args: argparse.Namespace) -> Tuple[str, ...]:
    """The models ``timm-fer serve`` loads, by name, the default first: those ``--model`` gives, else none (the one a
    ``--checkpoint`` names), else :data:`~timm_fer.constants.SERVED_MODELS`, both shipped tags."""
    if args.model:
        return tuple(args.model)
    return () if args.checkpoint is not None else SERVED_MODELS


def _serve(args: argparse.Namespace) -> int:
    api_key = _api_key(args.api_key)  # the numeric options were checked before this body ran
    if args.replicas is None and args.ray_address is not None:
        raise ConfigError('--ray-address applies to --replicas: add --replicas N, or leave --ray-address out.')
    from ..serve.extra import require_serve_extra
    require_serve_extra()
    from ..faces import RetinaFaceDetector
    from ..inference.classifier import ClassifierOptions
    from ..serve.app import ServeLimits, load_classifiers, serve

    limits = ServeLimits(max_upload_mb=args.max_upload_mb, max_files=args.max_files,
                         max_megapixels=args.max_megapixels,
                         max_video_seconds=args.max_video_seconds,
                         max_in_flight=args.max_in_flight, queue_size=args.queue_size,
                         queue_timeout_s=args.queue_timeout_s)
    options = ClassifierOptions(
        checkpoint=args.checkpoint, random_weights=args.random_weights, device=args.device,
        amp=args.amp, channels_last=args.channels_last, compile_model=args.compile, backend=args.backend,
        int8=args.int8, threads=args.threads, explain=args.explain, label_names=label_names_of(args),
        use_ema=args.ema)
    if args.replicas is not None:
        return _serve_replicas(args, options, limits, api_key)
    detector = None if args.aligned else RetinaFaceDetector(score_threshold=args.face_threshold, threads=args.threads)
    classifiers = load_classifiers(options, served_models(args))
    serve(args.host, args.port, classifiers, explain=args.explain, detector=detector, aligned=args.aligned,
          min_face_size=args.min_face_size, limits=limits, api_key=api_key,
          cors_origins=args.cors_origin, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
          log_level=args.log_level)
    return 0


def _serve_replicas(args: argparse.Namespace, options: 'ClassifierOptions', limits: 'ServeLimits',
                    api_key: Optional[str]) -> int:
    """``timm-fer serve --replicas N``: the same application as N replicas on a Ray cluster, until interrupted."""
    from ..serve.replicas import ReplicaSettings, serve_replicas

    if limits.queue_timeout_s != QUEUE_TIMEOUT_S:
        raise ConfigError("--queue-timeout-s applies to one process: with --replicas, requests wait in Ray Serve's "
                          "queue (at most --queue-size) until a replica is free; leave it out.")
    settings = ReplicaSettings(options, face_threshold=args.face_threshold, aligned=args.aligned,
                               min_face_size=args.min_face_size, limits=limits, api_key=api_key,
                               cors_origins=tuple(args.cors_origin), max_batch=args.max_batch,
                               max_wait_ms=args.max_wait_ms, models=served_models(args))
    serve_replicas(args.host, args.port, settings, replicas=args.replicas, address=args.ray_address)
    return 0


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer serve``."""
    parser = add_command(
        subparsers, 'serve', _serve, COMMANDS['serve'].help,
        description='Load the models once and answer POST /v1/predict (photos), POST /v1/predict/video (clips), '
                    'GET /v1/models,\nthe live WebSocket /v1/live and GET /healthz; the web page is at /, the API '
                    'docs at /docs.\nWithout --model or --checkpoint it serves both shipped tags: '
                    f'{SERVED_MODELS[0]} (the default, the\nperceived expression) and {SERVED_MODELS[1]} (the '
                    'intended expression: posed faces, faces pulled at a\ncamera); each request chooses with '
                    'the form field model (WebSocket: ?model=), the page with its selector.\nNeeds the serve '
                    'extra: pip install "timm-fer[serve]".',
        examples=('timm-fer serve   (then open http://127.0.0.1:8000/)',
                  'curl -F file=@photo.jpg -F top_k=3 http://127.0.0.1:8000/v1/predict',
                  f'curl -F file=@photo.jpg -F model={SERVED_MODELS[1]} http://127.0.0.1:8000/v1/predict',
                  f'timm-fer serve --model {SERVED_MODELS[1]}   (that model alone)',
                  f'{API_KEY_VARIABLE}=long-random-key timm-fer serve --host 0.0.0.0 --port 8080',
                  'timm-fer serve --replicas 2   (two replicas on a local Ray cluster, one address)'))
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default: 127.0.0.1, this machine only; any other address is '
                             'warned about)')
    parser.add_argument('--port', type=int, default=8000, help='port to listen on (default: 8000)')
    add_weights_arguments(parser, several=' '.join(SERVED_MODELS))
    parser.add_argument('--device', help='torch device (default: cuda when available, else cpu)')
    parser.add_argument('--explain', action='store_true',
                        help='load the eager fp32 model, so that requests can ask for explanation pictures '
                             '(explain=true)')
    faces = parser.add_argument_group('faces')
    faces.add_argument('--aligned', action='store_true',
                       help='uploads are aligned face crops: resize only, no face detection')
    faces.add_argument('--min-face-size', type=float, default=32.,
                       help='skip faces whose box is smaller than this many pixels (default: 32)')
    faces.add_argument('--face-threshold', type=float, default=0.9,
                       help='smallest face detector confidence, 0-1 (default: 0.9)')
    safety = parser.add_argument_group('safety and limits')
    safety.add_argument('--api-key',
                        help=f'a key every /v1/ request must carry in the X-API-Key header (WebSocket: ?key=); '
                             f'default: ${API_KEY_VARIABLE}, else none; an empty key is refused')
    safety.add_argument('--cors-origin', nargs='+', default=[], metavar='ORIGIN',
                        help='web origins (e.g. https://example.org) whose pages may call the API; default: none')
    safety.add_argument('--max-upload-mb', type=float, default=32.,
                        help='largest request body in megabytes (default: 32)')
    safety.add_argument('--max-files', type=int, default=16, help='most images per request (default: 16)')
    safety.add_argument('--max-megapixels', type=float, default=64.,
                        help='largest photo or video frame in megapixels, checked before decoding (default: 64)')
    safety.add_argument('--max-video-seconds', type=float, default=120.,
                        help='longest clip in seconds (default: 120)')
    safety.add_argument('--max-in-flight', type=int, default=8,
                        help='most upload requests worked on at once; more wait in the queue (default: 8)')
    safety.add_argument('--queue-size', type=int, default=256,
                        help='most upload requests waiting for their turn, first come first served; one more is '
                             'answered 429 with Retry-After; 0: no queue (default: 256)')
    safety.add_argument('--queue-timeout-s', type=float, default=QUEUE_TIMEOUT_S,
                        help='most seconds a request waits in the queue before it is answered 429 (default: 30)')
    batching = parser.add_argument_group('micro-batching')
    batching.add_argument('--max-batch', type=int, default=32,
                          help='most faces of concurrent requests per forward pass; 1: no batching (default: 32)')
    batching.add_argument('--max-wait-ms', type=float, default=5.,
                          help='most milliseconds a batch waits for the faces of other requests being worked on; '
                               'a lone request never waits (default: 5)')
    scale = parser.add_argument_group('at scale (Ray)')
    scale.add_argument('--replicas', type=int, metavar='N',
                       help='run the server as N replicas on a Ray cluster behind one address, each loading the '
                            'models once on one CPU; needs the ray extra: pip install "timm-fer[ray]" (default: one '
                            'process, no Ray)')
    scale.add_argument('--ray-address', metavar='ADDRESS',
                       help="with --replicas: the Ray cluster to join (ray start --head prints it; default: a local "
                            "one with this machine's cores)")
    runtime = parser.add_argument_group('runtime')
    add_backend_arguments(runtime)
    add_runtime_arguments(runtime)
    parser.add_argument('--log-level', default='info', choices=('critical', 'error', 'warning', 'info', 'debug'),
                        help="uvicorn's log level (default: info)")
