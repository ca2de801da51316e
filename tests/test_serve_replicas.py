"""``timm-fer serve --replicas N`` and :mod:`timm_fer.serve.replicas`: the server's application as replicas on Ray
Serve, on a local Ray cluster of 2 CPUs.

The slow tests share one cluster and one server: ``timm-fer serve --replicas 2`` in a process of its own, joining
the cluster with ``--ray-address`` (the cluster, then each replica loading the model, take minutes on two busy cores).
The tests of the options, of the application's settings and of a machine without Ray start no cluster, and come first.
"""
import io
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
from PIL import Image

pytest.importorskip('fastapi', reason='the serve extra is not installed')

from timm_fer.cli import main  # noqa: E402
from timm_fer.errors import ConfigError  # noqa: E402
from timm_fer.inference import SAMPLE_IMAGE  # noqa: E402

MAX_IN_FLIGHT = 2
"""Requests each replica of the shared server works on at once (``--max-in-flight``): the most a killed one holds."""
START_S = 600.
"""Most seconds the shared server may take to answer: the cluster, then two replicas loading the model, on two busy
cores."""


def start_ray():
    """A local Ray cluster of 2 CPUs, for this module (the ray extra; skipped without it).

    Its first node can time out on a busy machine ("The current node timed out during startup", after Ray's fixed 30 s):
    then it is started again, at most three times in all.
    """
    ray = pytest.importorskip('ray', reason='the ray extra is not installed: pip install -e ".[ray]"')
    pytest.importorskip('ray.serve', reason='the ray extra (Ray Serve) is not installed: pip install -e ".[ray]"')
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return ray
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for the timeout
            ray.shutdown()
            if attempt == 2 or 'timed out during startup' not in str(e):
                raise
    raise AssertionError('unreachable')


def default_sigint() -> None:
    """In a child before it runs: the default Ctrl-C, whatever this process does with it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """``timm-fer serve --replicas 2`` running in a process of its own."""
    process: subprocess.Popen
    url: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors='replace')[-4000:]


@pytest.fixture(scope='module')
def ray_cluster(tmp_path_factory):
    """The module's local Ray cluster of 2 CPUs, whose workers look for no weights on the network."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('HF_HUB_OFFLINE', '1')  # the cluster's workers, the replicas among them, inherit it
        patch.setenv('HF_HUB_CACHE', str(tmp_path_factory.mktemp('hub-cache')))
        ray = start_ray()
        try:
            yield ray
        finally:
            ray.shutdown()


def serve_command(ray, port: int, *flags: str) -> List[str]:
    """``timm-fer serve --replicas`` on the module's cluster, at most ``MAX_IN_FLIGHT`` requests per replica, the
    torch backend on one thread per replica."""
    return [sys.executable, '-m', 'timm_fer', 'serve', '--port', str(port), '--ray-address',
            ray.get_runtime_context().gcs_address, '--max-in-flight', str(MAX_IN_FLIGHT), '--backend', 'torch',
            '--threads', '1', *flags]


@pytest.fixture(scope='module')
def replicas_server(ray_cluster, tmp_path_factory) -> Iterator[Server]:
    """Two replicas of the shipped model behind ``http://127.0.0.1:PORT``; stopped (SIGINT, then SIGKILL) after the
    module's tests."""
    port = free_port()
    stderr = tmp_path_factory.mktemp('server') / 'stderr.txt'
    with stderr.open('w') as errors:
        # Ctrl-C reaches the server even where Ray left this process ignoring it (children inherit SIG_IGN)
        process = subprocess.Popen(serve_command(ray_cluster, port, '--replicas', '2'), stdout=subprocess.PIPE,
                                   stderr=errors, text=True, preexec_fn=default_sigint)
    server = Server(process, f'http://127.0.0.1:{port}', stderr)
    lines: 'queue.Queue[str]' = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=START_S)
        except queue.Empty:
            line = ''
        assert line.startswith(f'serving on {server.url}/ with 2 replicas'), server.log()
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()


def test_the_options_of_replicas_are_checked_before_ray_starts(capsys):
    for flags, message in (
            (['--replicas', '0'], '--replicas must be an integer in [1, 1024], got 0.'),
            (['--ray-address', '127.0.0.1:6379'],
             '--ray-address applies to --replicas: add --replicas N, or leave --ray-address out.'),
            (['--replicas', '2', '--port', '0'], '--port must be an integer in [1, 65535], got 0.'),
            (['--replicas', '2', '--queue-size', '0'],
             '--queue-size 0 has no counterpart with --replicas (Ray Serve queues at least one request): give '
             '--queue-size 1 or more.'),
            (['--replicas', '2', '--queue-timeout-s', '5'],
             "--queue-timeout-s applies to one process: with --replicas, requests wait in Ray Serve's queue (at most "
             "--queue-size) until a replica is free; leave it out.")):
        assert main(['serve', *flags]) == 2
        assert capsys.readouterr().err.strip() == f'timm-fer serve: error: {message}'


def test_a_taken_port_is_refused_before_a_local_cluster_starts(capsys, monkeypatch):
    ray = pytest.importorskip('ray', reason='the ray extra is not installed: pip install -e ".[ray]"')
    pytest.importorskip('ray.serve', reason='the ray extra (Ray Serve) is not installed: pip install -e ".[ray]"')
    monkeypatch.delenv('RAY_ADDRESS', raising=False)  # a new local cluster, the one whose port is checked first
    assert not ray.is_initialized()  # this test comes before the module's cluster starts
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(['serve', '--replicas', '2', '--port', str(port)]) == 2
    assert capsys.readouterr().err.strip() == (f'timm-fer serve: error: cannot listen on 127.0.0.1:{port} (Address '
                                               f'already in use): choose another --port or --host.')
    assert not ray.is_initialized()


def test_the_serve_run_builder_makes_the_application_of_its_arguments():
    pytest.importorskip('ray.serve', reason='the ray extra (Ray Serve) is not installed: pip install -e ".[ray]"')
    from timm_fer.serve.replicas import app

    application = app({'replicas': '3', 'max_in_flight': '4', 'queue_size': '64', 'backend': 'torch',
                       'aligned': 'true', 'cors_origins': 'https://a.example,https://b.example'})
    deployment = application._bound_deployment  # what `serve run` deploys
    assert (deployment.name, deployment.num_replicas, deployment.ray_actor_options) == ('timm-fer', 3, {'num_cpus': 1})
    # a replica takes the requests it works on at once; the others wait in Ray Serve's queue, then get 429
    assert (deployment.max_ongoing_requests, deployment.max_queued_requests) == (4, 64)
    backpressure = deployment._deployment_config.backpressure_config
    assert (backpressure.status_code, backpressure.retry_after_s) == (429, 1)
    with pytest.raises(ConfigError, match="^serve run timm_fer.serve.replicas:app takes no argument 'replica': give "):
        app({'replica': '2'})
    with pytest.raises(ConfigError, match=r'^--max-in-flight must be an integer in \[1, 1024\], got 0.$'):
        app({'max_in_flight': '0'})


def test_the_package_imports_without_ray_and_replicas_say_how_to_install_it(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "import timm_fer, timm_fer.serve, timm_fer.serve.replicas\n"
        "from timm_fer.cli import main\n"
        "sys.exit(main(['serve', '--replicas', '2']))\n")
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        'timm-fer serve: error: --replicas needs Ray Serve (ray missing): pip install "timm-fer[ray]"']


def test_a_ray_serve_too_old_for_429_answers_says_how_to_upgrade_it(monkeypatch, capsys):
    pytest.importorskip('ray.serve', reason='the ray extra (Ray Serve) is not installed: pip install -e ".[ray]"')
    import ray.serve.config

    monkeypatch.delattr(ray.serve.config, 'BackpressureConfig')  # as in the Ray Serve releases before it
    assert main(['serve', '--replicas', '2']) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("timm-fer serve: error: --replicas needs a newer Ray Serve (cannot import name "
                            "'BackpressureConfig' from 'ray.serve.config'") and '\n' not in error
    assert error.endswith('): pip install -U "ray[serve]"')


def blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new('RGB', (160, 160), 'white').save(buffer, format='PNG')
    return buffer.getvalue()


@dataclass
class Answer:
    """One request: when it was sent and answered (``time.monotonic``), its status, its faces' expressions."""
    sent: float
    answered: float
    status: int
    expressions: Optional[List[str]]


def post(url: str, data: bytes, name: str = 'photo.png') -> Answer:
    """``POST /v1/predict`` of one image, as a client that never retries."""
    import httpx

    sent = time.monotonic()
    response = httpx.post(f'{url}/v1/predict', files=[('file', (name, data, 'image/png'))], timeout=300)
    expressions = None
    if response.status_code == 200:
        expressions = [face['expression'] for face in response.json()['images'][0]['faces']]
    return Answer(sent, time.monotonic(), response.status_code, expressions)


def replica_pids() -> List[int]:
    """The processes of the replicas (Ray titles them ``ray::ServeReplica:APP:DEPLOYMENT``)."""
    pids = []
    for entry in Path('/proc').iterdir():
        try:
            if entry.name.isdigit() and (entry / 'cmdline').read_bytes().startswith(
                    b'ray::ServeReplica:timm-fer:timm-fer'):
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


@pytest.mark.slow
def test_two_replicas_answer_concurrent_requests_each_with_its_own_photos_answer(replicas_server):
    from ray import serve

    status = serve.status().applications['timm-fer'].deployments['timm-fer']
    assert status.replica_states == {'RUNNING': 2}
    portrait, blank = SAMPLE_IMAGE.read_bytes(), blank_png()
    photos = [portrait if i % 2 == 0 else blank for i in range(16)]  # 16 clients: 4 worked on, 12 in the queue
    with ThreadPoolExecutor(len(photos)) as pool:
        answers = list(pool.map(lambda data: post(replicas_server.url, data), photos))
    assert [a.status for a in answers] == [200] * len(photos), replicas_server.log()
    assert [a.expressions for a in answers] == [['happiness'] if i % 2 == 0 else [] for i in range(len(photos))]


@pytest.mark.slow
def test_a_killed_replica_fails_only_the_requests_it_held_and_the_other_goes_on(replicas_server):
    pids = replica_pids()
    assert len(pids) == 2, pids
    portrait = SAMPLE_IMAGE.read_bytes()
    answers: List[Answer] = []
    lock = threading.Lock()
    stop_at = [float('inf')]

    def client() -> None:  # one request after another, no retry
        while time.monotonic() < stop_at[0]:
            answer = post(replicas_server.url, portrait)
            with lock:
                answers.append(answer)

    clients = [threading.Thread(target=client) for _ in range(3 * MAX_IN_FLIGHT)]  # more than both replicas hold
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 300
    while len(answers) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    stop_at[0] = killed_at + 15
    for thread in clients:
        thread.join()

    failed = [a for a in answers if a.status != 200]
    # Only requests in the killed replica's hands fail: sent before the kill and not answered by then, at most the
    # MAX_IN_FLIGHT it takes at once, each answered 500 by Ray Serve's proxy.
    assert all(a.sent < killed_at < a.answered for a in failed), failed
    assert len(failed) <= MAX_IN_FLIGHT and {a.status for a in failed} <= {500}, failed
    assert all(a.expressions == ['happiness'] for a in answers if a.status == 200)
    after = [a for a in answers if a.sent > killed_at]
    assert len(after) >= 5 and all(a.status == 200 for a in after), after  # the other replica goes on
    assert pids[0] not in replica_pids()


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_removes_its_application(replicas_server):
    from ray import serve

    # a replica killed by an earlier test is started again by Ray Serve: interrupt a service whose replicas all run
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and serve.status().applications['timm-fer'].deployments[
            'timm-fer'].replica_states != {'RUNNING': 2}:
        time.sleep(1)
    replicas_server.process.send_signal(signal.SIGINT)
    assert replicas_server.process.wait(timeout=300) == 130, replicas_server.log()
    assert replicas_server.log().strip().splitlines()[-1] == 'timm-fer serve: interrupted'
    assert 'timm-fer' not in serve.status().applications


@pytest.mark.slow
def test_a_model_the_replicas_cannot_load_stops_the_command_in_one_line(ray_cluster, tmp_path):
    missing = tmp_path / 'missing.pth'
    done = subprocess.run(serve_command(ray_cluster, free_port(), '--replicas', '1', '--checkpoint', str(missing)),
                          capture_output=True, text=True, timeout=START_S)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f'timm-fer serve: error: the replicas could not start: checkpoint '
                                                    f'not found: no file at {missing}; check the path.')
    assert 'serving on' not in done.stdout
