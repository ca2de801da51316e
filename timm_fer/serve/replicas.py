"""``timm-fer serve --replicas N``: the application of ``timm-fer serve`` run as N replicas on a Ray cluster.

Each replica is a Ray Serve replica (a Ray actor, one CPU) that loads the models and the face detector once and runs
:func:`~timm_fer.serve.app.create_app`'s application: the same REST API, live WebSocket, web page, limits and
micro-batching as one ``timm-fer serve`` process. Ray Serve's proxy listens on ``host``:``port`` and hands each request
to a replica with a free place; a replica holds at most ``max_in_flight`` requests at once. The others wait in Ray
Serve's queue, at most ``queue_size`` of them (past it: 429 with ``Retry-After``), in no replica's hands: when a
replica's process dies, the requests it was working on fail and every other request goes to the other replicas
while Ray Serve starts a new one.

:func:`serve_replicas` is the command's run, :func:`replica_application` the Ray Serve application (for
``ray.serve.run``), and :func:`app` its builder for ``serve run timm_fer.serve.replicas:app replicas=2``.

Needs the ``ray`` extra (``pip install "timm-fer[ray]"``): Ray Serve is imported only when a function here runs.
"""
import ast
import logging
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass, field, fields
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from fastapi import FastAPI

from ..errors import ConfigError
from ..faces import RetinaFaceDetector
from ..inference.classifier import ClassifierOptions
from ..inference.ray_batch import RAY_INSTALL, RayUnavailableError
from ..utils.options import Range, check_options, option_ranges
from .app import ServeLimits, check_served_models, create_app, is_loopback, load_classifiers
from .app import serve as serve_one_process
from .batching import BatchingClassifier

if TYPE_CHECKING:
    import ray.serve

__all__ = ['APP_NAME', 'ReplicaSettings', 'app', 'build_replica_app', 'replica_application', 'require_ray_serve',
           'serve_replicas']

APP_NAME = 'timm-fer'
"""The name of the Ray Serve application, and of its deployment."""


def require_ray_serve() -> None:
    """Raise :class:`~timm_fer.inference.ray_batch.RayUnavailableError`, naming the install command, unless Ray Serve
    is installed, in a version whose full queue can answer 429 (``ray.serve.config.BackpressureConfig``)."""
    if find_spec('ray') is None:
        raise RayUnavailableError(f'--replicas needs Ray Serve (ray missing): {RAY_INSTALL}')
    try:
        import ray.serve  # noqa: F401
    except ImportError as e:  # Ray without its serve extra
        raise RayUnavailableError(f'--replicas needs Ray Serve ({e}): {RAY_INSTALL}') from e
    try:
        from ray.serve.config import BackpressureConfig  # noqa: F401
    except ImportError as e:  # a Ray Serve older than its 429 answers to a full queue
        raise RayUnavailableError(f'--replicas needs a newer Ray Serve ({e}): pip install -U "ray[serve]"') from e


@dataclass(frozen=True)
class ReplicaSettings:
    """What each replica builds its application from; Ray sends it to the replicas, pickled.

    Attributes:
        classifier_options: The model and how it runs (``threads``, the models' and the face detector's,
            default: the replica's CPUs).
        face_threshold: Smallest face detector confidence.
        aligned, min_face_size, limits, api_key, cors_origins, max_batch, max_wait_ms: As for
            :func:`~timm_fer.serve.app.create_app`.
        models: Models each replica loads, by name, the first the default (``timm-fer serve --model``), each with
            the other fields of ``classifier_options``; none: the one ``classifier_options`` names.
    """
    classifier_options: ClassifierOptions = field(default_factory=ClassifierOptions)
    face_threshold: float = 0.9
    aligned: bool = False
    min_face_size: float = 32.
    limits: ServeLimits = field(default_factory=ServeLimits)
    api_key: Optional[str] = None
    cors_origins: Tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 5.
    models: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check the numeric settings against the ranges of the functions that take them, and the models given,
        before any replica starts."""
        check_options(RetinaFaceDetector.__init__, score_threshold=self.face_threshold)
        check_options(serve_one_process, min_face_size=self.min_face_size)
        check_options(BatchingClassifier.__init__, max_batch=self.max_batch, max_wait_ms=self.max_wait_ms)
        check_served_models(self.models, self.classifier_options.checkpoint)


def build_replica_app(settings: ReplicaSettings, num_cpus: float = 1.) -> FastAPI:
    """One replica's application: the models and the face detector loaded once, then
    :func:`~timm_fer.serve.app.create_app`.

    Args:
        settings: What to load and how to answer.
        num_cpus: The replica's CPUs: the models' threads unless ``settings.classifier_options`` sets them.
    """
    options = settings.classifier_options
    threads = options.threads or max(1, int(num_cpus))
    classifiers = load_classifiers(options, settings.models, threads=threads)
    detector = None if settings.aligned else RetinaFaceDetector(score_threshold=settings.face_threshold,
                                                                threads=threads)
    return create_app(classifiers, detector=detector, aligned=settings.aligned, min_face_size=settings.min_face_size,
                      limits=settings.limits, api_key=settings.api_key, cors_origins=settings.cors_origins,
                      max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms)


@option_ranges(replicas=Range(1, 1024, integer=True), num_cpus=Range(0, low_open=True))
def replica_application(settings: Optional[ReplicaSettings] = None, replicas: int = 2,
                        num_cpus: float = 1.) -> 'ray.serve.Application':
    """The Ray Serve application of ``timm-fer serve --replicas``, for ``ray.serve.run``.

    Args:
        settings: What each replica loads and how it answers; default: :class:`ReplicaSettings`' defaults.
        replicas: Replicas, each with the models loaded once.
        num_cpus: CPUs each replica holds.

    Raises:
        RayUnavailableError: Ray Serve is not installed.
        ConfigError: ``settings.limits.queue_size`` is 0 (Ray Serve's queue holds at least one request).
    """
    settings = settings or ReplicaSettings()
    limits = settings.limits
    if limits.queue_size == 0:
        raise ConfigError('--queue-size 0 has no counterpart with --replicas (Ray Serve queues at least one request): '
                          'give --queue-size 1 or more.')
    require_ray_serve()
    from ray import serve
    from ray.serve.config import BackpressureConfig

    def build() -> FastAPI:  # run by Ray Serve on each replica, once
        return build_replica_app(settings, num_cpus)

    deployment = serve.deployment(
        serve.ingress(build)(), name=APP_NAME, num_replicas=replicas, ray_actor_options={'num_cpus': num_cpus},
        max_ongoing_requests=limits.max_in_flight, max_queued_requests=limits.queue_size,
        backpressure_config=BackpressureConfig(status_code=429, retry_after_s=limits.retry_after))
    return deployment.bind()


def _value(text: str) -> Any:
    """A ``key=value`` argument's value: a Python literal (``2``, ``0.5``, ``None``), true or false, else the text."""
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def app(args: Dict[str, str]) -> 'ray.serve.Application':
    """The application builder of ``serve run timm_fer.serve.replicas:app KEY=VALUE ...``.

    The keys are ``replicas`` and ``num_cpus`` (:func:`replica_application`), the fields of :class:`ReplicaSettings`
    but ``classifier_options`` and ``limits`` (``models`` and ``cors_origins`` comma-separated), those of
    :class:`~timm_fer.inference.classifier.ClassifierOptions` (``model``, ``checkpoint``, ``backend``, ``threads``,
    ...) and those of :class:`~timm_fer.serve.app.ServeLimits` (``max_in_flight``, ``queue_size``, ...); e.g. ``serve
    run timm_fer.serve.replicas:app replicas=4 max_in_flight=8``, or with
    ``models=transfer_fer_compact.ferplus,transfer_fer_compact.fer2013`` both shipped tags, the first the default.

    Raises:
        ConfigError: A key that is none of these, or a value out of its range.
    """
    groups: Dict[str, Dict[str, Any]] = {'application': {}, 'settings': {}, 'classifier': {}, 'limits': {}}
    known = {'application': {'replicas', 'num_cpus'},
             'settings': {f.name for f in fields(ReplicaSettings)} - {'classifier_options', 'limits'},
             'classifier': {f.name for f in fields(ClassifierOptions)}, 'limits': {f.name for f in fields(ServeLimits)}}
    for key, text in args.items():
        group = next((name for name, names in known.items() if key in names), None)
        if group is None:
            raise ConfigError(f"serve run timm_fer.serve.replicas:app takes no argument '{key}': give some of "
                              f"{', '.join(sorted(set().union(*known.values())))}.")
        groups[group][key] = _value(str(text))
    for listed in ('cors_origins', 'models'):  # comma-separated
        if listed in groups['settings']:
            groups['settings'][listed] = tuple(str(groups['settings'][listed]).split(','))
    settings = ReplicaSettings(classifier_options=ClassifierOptions(**groups['classifier']),
                               limits=ServeLimits(**groups['limits']), **groups['settings'])
    return replica_application(settings, **groups['application'])


def _check_port_free(host: str, port: int) -> None:
    """Raise :class:`ConfigError` when ``host``:``port`` cannot be listened on here."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f'cannot listen on {host}:{port} ({e.strerror}): choose another --port or --host.') from e


def _start_failure(error: RuntimeError) -> str:
    """Why the replicas failed to start, in one line: the message of the replicas' error, the last line of the
    traceback that the deployment's status holds, else of ``error``."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        message = serve.status().applications[APP_NAME].deployments[APP_NAME].message
    except (KeyError, RayServeException):  # no status to read: the error says what there is
        message = ''
    lines = [line.strip() for line in (message or str(error)).splitlines() if line.strip()]
    return re.sub(r'^(\w+\.)*\w+(Error|Exception): ', '', lines[-1]) if lines else type(error).__name__


@option_ranges(port=Range(1, 65535, integer=True))
def serve_replicas(
        host: str = '127.0.0.1',
        port: int = 8000,
        settings: Optional[ReplicaSettings] = None,
        *,
        replicas: int = 2,
        address: Optional[str] = None,
        num_cpus: float = 1.,
        stop: Optional[threading.Event] = None,
) -> None:
    """Run :func:`replica_application` on a Ray cluster and answer on ``host``:``port`` until interrupted
    (``timm-fer serve --replicas``).

    Args:
        host: The address Ray Serve's proxy listens on; the default, loopback, lets only this machine in. Any other
            address is warned about: anyone who reaches it can use the API (set ``settings.api_key``).
        port: The port.
        settings: What each replica loads and how it answers.
        replicas: Replicas, each with the models loaded once.
        address: The Ray cluster to join (``ray start --head`` prints it); default the one this process is connected
            to, else a new local one with this machine's cores. On a cluster joined, only this application is
            removed at the end; Ray Serve stays.
        num_cpus: CPUs each replica holds.
        stop: Answer until it is set; default until interrupted (Ctrl-C).

    Raises:
        RayUnavailableError: Ray Serve is not installed.
        ConfigError: ``host``:``port`` is taken or the replicas need more CPUs than this machine has (both checked
            when the cluster is a new local one), or the replicas could not load the model.
    """
    application = replica_application(settings, replicas, num_cpus)
    import ray
    from ray import serve

    connected = ray.is_initialized()
    joined = connected or address is not None or bool(os.environ.get('RAY_ADDRESS'))  # else a new local cluster
    if not joined:
        _check_port_free(host, port)
    if not is_loopback(host):
        api_key = settings is not None and settings.api_key
        print(f'warning: listening on {host}: any machine that reaches this address can use the API'
              f'{"" if api_key else "; set --api-key"}. Use --host 127.0.0.1 to keep it to this machine.',
              file=sys.stderr)
    if not connected:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    logging.getLogger('ray.serve').setLevel(logging.WARNING)  # the line below says where it listens, and when
    deploying = False
    try:
        cpus = ray.cluster_resources().get('CPU', 0)
        if not joined and replicas * num_cpus > cpus:
            raise ConfigError(f'{replicas} replicas of {num_cpus:g} CPU need {replicas * num_cpus:g} CPUs, this '
                              f'machine has {cpus:g}: give --replicas {max(1, int(cpus // num_cpus))} or fewer, or '
                              f'join a larger cluster with --ray-address.')
        serve.start(http_options={'host': host, 'port': port})
        deploying = True
        try:
            serve.run(application, name=APP_NAME, route_prefix='/')
        except RuntimeError as e:  # the replicas failed to start
            raise ConfigError(f'the replicas could not start: {_start_failure(e)}') from e
        print(f'serving on http://{host}:{port}/ with {replicas} replicas on Ray; Ctrl-C stops', flush=True)
        (stop or threading.Event()).wait()
    finally:
        if not joined:
            serve.shutdown()
        elif deploying:
            serve.delete(APP_NAME)
        if not connected:
            ray.shutdown()
