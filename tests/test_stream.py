"""Live sources: ``timm_fer.stream``, ``predict_stream`` and ``timm-fer predict`` on a stream, a pipe and a camera.

The streams are MPEG-TS clips made here with PyAV and served on 127.0.0.1 over TCP by a thread, paced as a camera
server sends them; every loop is bounded in time. A physical camera cannot be tested here: ``camera:N`` is tested up
to opening ``/dev/videoN`` (the error when there is none, the V4L2 input it would open).
"""
import csv
import functools
import http.server
import io
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest
from test_video import fixed_face, plain_frames, write_video

import timm_fer
from timm_fer.cli import main
from timm_fer.constants import FERPLUS_LABELS
from timm_fer.errors import ConfigError, StreamError, VideoReadError
from timm_fer.faces.video_io import LiveReader, is_live_source, live_source
from timm_fer.inference.classifier import FaceClassifier, load_classifier
from timm_fer.inference.report import RowWriter
from timm_fer.inference.stream import FrameTracker, live_columns, predict_stream, stream

av = pytest.importorskip('av', reason='the video extra (PyAV) is not installed')

pytestmark = pytest.mark.usefixtures('offline_hub')

FPS = 10
FRAMES = 60
"""Frames of the served clip: 6 s at :data:`FPS`."""
PREROLL = 25
"""Frames whose bytes the server sends at once, as camera servers send the latest seconds to a new client: enough
for FFmpeg to find the stream's parameters without waiting."""


def ts_clip(count: int = FRAMES) -> bytes:
    """An H.264 clip of :func:`plain_frames` in MPEG-TS, the format of live streams."""
    buffer = io.BytesIO()
    with av.open(buffer, 'w', format='mpegts') as container:
        stream_ = container.add_stream('libx264', rate=FPS)
        stream_.width, stream_.height = 160, 120
        stream_.pix_fmt = 'yuv420p'
        for index, image in enumerate(plain_frames(count)):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream_.encode(frame))
        container.mux(stream_.encode(None))
    return buffer.getvalue()


@pytest.fixture(scope='module')
def clip() -> bytes:
    return ts_clip()


class ClipServer:
    """Serve an MPEG-TS clip over TCP on 127.0.0.1 to ``connections`` clients in turn, as a camera server does: the
    bytes of the first :data:`PREROLL` frames at once, then a frame's share of bytes every 1 / :data:`FPS` s.

    Args:
        data: The clip.
        cut: Close each connection after this many frames' bytes (a source that dies); default the whole clip.
        connections: Clients served before the server stops listening (then connecting is refused).
        stall: After ``cut``, keep the connection open and send nothing (a source that stalls).
        frames: Frames in the clip.
    """

    def __init__(self, data: bytes, cut: Optional[int] = None, connections: int = 1, stall: bool = False,
                 frames: int = FRAMES) -> None:
        self.data = data
        self.frames = frames
        self.cut = cut or frames
        self.stall = stall
        self.connections = connections
        self.served = 0
        self.client_left = threading.Event()
        self._stop = threading.Event()
        self._server = socket.create_server(('127.0.0.1', 0))
        self._server.settimeout(0.1)
        self.url = f'tcp://127.0.0.1:{self._server.getsockname()[1]}'
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> 'ClipServer':
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        deadline = time.monotonic() + 30
        while self.served < self.connections and not self._stop.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = self._server.accept()
            except socket.timeout:
                continue
            self.served += 1
            with connection:
                self._send(connection)
        self._server.close()

    def _send(self, connection: socket.socket) -> None:
        step = math.ceil(len(self.data) / self.frames)
        try:
            connection.sendall(self.data[:PREROLL * step])
            for k in range(PREROLL, self.cut):
                if self._stop.is_set():
                    return
                connection.sendall(self.data[k * step:(k + 1) * step])
                time.sleep(1 / FPS)
            if self.stall:  # connected, sending nothing, until the server stops
                self._stop.wait(10)
        except OSError:  # the client closed the connection
            self.client_left.set()


def reader_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith('timm-fer reader')]


def wait_for(condition, seconds: float = 5.) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_tcp_stream_is_read_in_real_time_with_face_tracks(model, clip, one_torch_thread):
    with ClipServer(clip) as server:
        started = time.monotonic()
        with stream(server.url, model=model, detector=fixed_face, fps=5, duration=2.) as frames:
            got = list(frames)
        elapsed = time.monotonic() - started
    assert 1.9 < elapsed < 5  # the clock's 2 s (the first 2.5 s of the clip came at once)
    assert len(got) >= 5 and frames.realtime and frames.problem is None and frames.info.codec == 'h264'
    times = [f.time for f in got]
    assert times == sorted(times) and times[0] == 0. and times[-1] > 3.  # the source's time ran ahead
    assert all(abs(t * 5 - round(t * 5)) < 0.05 for t in times)  # on the 5 frames/s grid of the source's time
    assert [f.index for f in got] == [round(t * FPS) for t in times]
    assert all(len(f.faces) == 1 and f.faces[0].file == server.url for f in got)
    paced = [f.faces[0].track for f in got if f.time > PREROLL / FPS]  # after the burst, frames 0.2 s apart
    assert len(paced) >= 3 and len(set(paced)) == 1  # one track (the burst's jump may be over max_gap)
    assert all(sum(f.faces[0].probabilities.values()) == pytest.approx(1., abs=1e-4) for f in got)
    assert frames.frames_sampled == len(got) + sum(f.dropped for f in got) == len(got) + frames.frames_dropped
    assert wait_for(lambda: not reader_threads())


def test_a_stream_that_dies_is_reported_after_its_frames_and_its_rows_are_kept(model, clip, tmp_path):
    with ClipServer(clip, cut=PREROLL + 10) as server:
        frames = stream(server.url, model=model, aligned=True, fps=5)
        got = []
        with pytest.raises(StreamError, match=r'the stream ended after \d+ frames; --reconnect reopens it') as error:
            for frame in frames:
                got.append(frame)
    assert got and error.value.source == server.url and frames.problem == 'the stream ended'
    with ClipServer(clip, cut=PREROLL + 10) as server:
        report = predict_stream(server.url, model=model, aligned=True, fps=5, min_track=0,
                                output=tmp_path / 'rows.csv', log=lambda message: None)
    (summary,) = report.videos
    assert summary.problem == 'the stream ended' and summary.frames_sampled >= 3
    assert any(s.reason.startswith('the stream ended; kept the') for s in report.skipped)
    with open(tmp_path / 'rows.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report.faces) == summary.frames_sampled and rows[0]['file'] == server.url
    assert list(rows[0])[:4] == ['file', 'frame', 'time', 'track'] and 'p_' + report.labels[0] in rows[0]


def test_a_model_slower_than_the_source_drops_frames_and_counts_them(model, clip, monkeypatch, one_torch_thread):
    classify = FaceClassifier.__call__

    def slow(self, crops, *args, **kwargs):
        time.sleep(0.25)
        return classify(self, crops, *args, **kwargs)

    monkeypatch.setattr(FaceClassifier, '__call__', slow)
    with ClipServer(clip) as server:
        with stream(server.url, model=model, aligned=True, fps=None, duration=2.) as frames:
            got = list(frames)
    dropped = [f.dropped for f in got]
    assert 4 <= len(got) <= 12 and sum(dropped) >= 10 and frames.frames_dropped == sum(dropped)
    assert frames.frames_sampled == len(got) + sum(dropped)
    indexes = [f.index for f in got]
    assert all(b - a == d + 1 for a, b, d in zip(indexes, indexes[1:], dropped[1:]))  # every frame counted once


def test_a_stream_that_stalls_is_reported_after_its_frames(model, clip):
    with ClipServer(clip, cut=PREROLL + 5, stall=True) as server:
        got = []
        with pytest.raises(StreamError, match=r'(no data|no frame) for 0\.5 s: the (stream|source) stalled after'):
            with stream(server.url, model=model, aligned=True, stall_timeout=0.5) as frames:
                for frame in frames:
                    got.append(frame)
    assert got and 'stalled' in frames.problem


def test_closing_the_stream_stops_its_reader_thread_and_releases_the_source(model, clip):
    with ClipServer(clip) as server:
        frames = stream(server.url, model=model, aligned=True)
        for frame, _ in zip(frames, range(2)):
            assert frame.faces
        assert reader_threads()
        frames.close()
        assert wait_for(lambda: not reader_threads(), 3) and server.client_left.wait(3)
    with ClipServer(clip) as server:
        unread = stream(server.url, model=model, aligned=True)
        unread.close()  # never iterated: no thread, and the connection is closed
        assert not reader_threads() and server.client_left.wait(3)


def test_reconnect_reopens_a_stream_that_dropped_out(model, clip):
    events = []  # the notes and the frames, in order
    with ClipServer(clip, cut=PREROLL + 2, connections=2) as server:
        with stream(server.url, model=model, aligned=True, fps=5, reconnect=True, duration=4.5, stall_timeout=1.,
                    log=events.append) as frames:
            for frame in frames:
                events.append(frame)
    notes = [e for e in events if isinstance(e, str)]
    seen = [e if isinstance(e, str) else (e.index, round(e.time, 2)) for e in events]
    assert frames.reconnects == 1 and frames.dropouts == ['the stream ended'] and frames.problem is None, seen
    assert server.served == 2
    assert notes[0].endswith('the stream ended; reopening it') and notes[1].endswith('reopened'), seen
    assert any('reopening failed' in note for note in notes[2:]), seen  # the server stopped listening: refused
    reopened = events.index(notes[1])
    before, after = events[:reopened], [e for e in events[reopened:] if not isinstance(e, str)]
    assert any(not isinstance(e, str) for e in before) and after, seen
    got = [e for e in events if not isinstance(e, str)]
    assert all(b.time > a.time and b.index > a.index for a, b in zip(got, got[1:])), seen  # both go on counting


def test_ctrl_c_ends_a_run_with_the_report_of_the_frames_so_far(model, clip, tmp_path):
    seen = []

    def interrupt_at_the_third(frame):
        seen.append(frame)
        if len(seen) == 3:
            raise KeyboardInterrupt

    notes = []
    with ClipServer(clip) as server:
        report = predict_stream(server.url, model=model, aligned=True, min_track=0, output=tmp_path / 'rows.jsonl',
                                on_frame=interrupt_at_the_third, log=notes.append)
    assert len(seen) == 3 and len(report.faces) == 3 and report.videos[0].problem is None
    assert notes == [f'{server.url}: stopped (Ctrl-C)'] and wait_for(lambda: not reader_threads())
    lines = (tmp_path / 'rows.jsonl').read_text().splitlines()
    assert [json.loads(line)['frame'] for line in lines] == [f.index for f in seen]


def test_a_video_file_streams_every_sampled_frame_none_dropped(model, tmp_path):
    video = write_video(tmp_path / 'clip.avi', plain_frames(10))
    assert timm_fer.stream is stream and 'stream' in timm_fer.__all__
    with stream(video, model=model, detector=fixed_face, fps=5) as frames:
        got = list(frames)
    assert not frames.realtime and [f.index for f in got] == [0, 2, 4, 6, 8] and not any(f.dropped for f in got)
    assert frames.frames_decoded == 10 and got[0].faces[0].file == str(video) and got[0].image is None
    with stream(video, model=model, aligned=True, fps=None, duration=0.5, keep_image=True) as frames:
        got = list(frames)
    assert [f.index for f in got] == [0, 1, 2, 3, 4] and got[0].image.size == (160, 120)


def test_a_url_of_a_file_reads_as_a_file(model, tmp_path):
    write_video(tmp_path / 'clip.avi', plain_frames(10))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/clip.avi'
        with stream(url, model=model, aligned=True, fps=5) as frames:
            got = list(frames)  # its end is the file's end: no StreamError
    finally:
        server.shutdown()
        server.server_close()
    assert not frames.realtime and frames.info.duration == pytest.approx(1.) and frames.problem is None
    assert [f.index for f in got] == [0, 2, 4, 6, 8] and not any(f.dropped for f in got)


def test_frame_tracker_keeps_one_track_per_source_and_reports_failed_detections(model):
    classifier = load_classifier(model=model)
    tracker = FrameTracker(classifier, fixed_face, source='camera:0')
    frames = [tracker(image, k / 5, k) for k, image in enumerate(plain_frames(3))]
    assert [[(f.file, f.frame, f.track) for f in frame.faces] for frame in frames] == [
        [('camera:0', k, 0)] for k in range(3)]
    assert tracker.labels == classifier.labels and all(not frame.skipped for frame in frames)

    def broken(image):
        raise RuntimeError('no detector here')

    frame = FrameTracker(classifier, broken)(plain_frames(1)[0], 0.4, 2)
    assert frame.faces == [] and frame.skipped[0].reason == ('face detection failed on frame 2 (0.40 s): '
                                                             'RuntimeError: no detector here')


def test_live_sources_are_named_and_a_missing_camera_is_a_clear_error(monkeypatch):
    assert [is_live_source(s) for s in ('camera:0', 3, '-', 'rtsp://cam/live', 'HTTPS://x/y.m3u8', 'udp://@:1234',
                                        'srt://host:9000', 'clip.mp4', 'c:/clips/a.mp4', 'ftp://x/y', True)] == [
        True, True, True, True, True, True, True, False, False, False, False]
    assert live_source('rtsp://cam/live').options == {'rtsp_transport': 'tcp'}
    assert (live_source('-').name, live_source('-').target) == ('stdin', 'pipe:0')
    camera = live_source(2)
    assert (camera.name, camera.target, camera.container_format) == ('camera:2', '/dev/video2', 'v4l2')
    with pytest.raises(VideoReadError, match=r'camera:63: no camera at /dev/video63 \(cameras on this machine: '):
        LiveReader('camera:63')
    with pytest.raises(VideoReadError, match='no camera at /dev/video63'):
        stream(63, model='unused')  # the source is opened before the model is loaded
    with pytest.raises(ConfigError, match=r"'camera:front' names no camera: give its number, e\.g\. camera:0"):
        live_source('camera:front')
    with pytest.raises(ConfigError, match='is no live source'):
        live_source('ftp://host/clip.mp4')
    monkeypatch.setattr(sys, 'platform', 'darwin')
    with pytest.raises(ConfigError, match="cameras are read through Linux V4L2, which darwin lacks; pipe ffmpeg's"):
        live_source('camera:0')


def test_a_stream_that_does_not_answer_is_a_clear_error(model):
    listener = socket.create_server(('127.0.0.1', 0))  # accepts, never sends
    with listener:
        url = f'tcp://127.0.0.1:{listener.getsockname()[1]}'
        with pytest.raises(VideoReadError, match=r'no answer within 0\.5 s; check the address'):
            stream(url, model=model, stall_timeout=0.5)


def test_row_writer_flushes_every_write_and_escapes_csv_cells(tmp_path):
    with RowWriter(tmp_path / 'rows.csv', ['file', 'score']) as writer:
        writer.write([{'file': '=cmd', 'score': None}])
        assert (tmp_path / 'rows.csv').read_text() == "file,score\n'=cmd,\n"  # on disk before the writer closes
    with RowWriter(tmp_path / 'rows.jsonl', ['file', 'score']) as writer:
        writer.write([{'file': '=cmd', 'score': 0.1 + 0.2, 'other': 1}])
        assert (tmp_path / 'rows.jsonl').read_text() == '{"file": "=cmd", "score": 0.3}\n'  # 6 decimals
    with pytest.raises(ConfigError, match=r'--output must end in \.csv or \.jsonl for a live source'):
        RowWriter(tmp_path / 'rows.json', ['file'])


@pytest.mark.slow
def test_cli_reads_a_stream_writes_rows_as_they_come_and_reports_a_source_that_dies(clip, tmp_path, capsys):
    with ClipServer(clip) as server:
        code = main(['predict', server.url, '--aligned', '--fps', '5', '--duration', '2', '--output',
                     str(tmp_path / 'rows.jsonl'), '--timeline', str(tmp_path / 'timelines'), '--min-track', '0'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = [json.loads(line) for line in (tmp_path / 'rows.jsonl').read_text().splitlines()]
    assert rows and {row['file'] for row in rows} == {server.url}
    assert f'{server.url}: h264 160x120 ' in printed and ' dropped of ' in printed
    assert f'wrote {tmp_path / "rows.jsonl"} ({len(rows)} rows as they came' in printed
    port = server.url.rsplit(':', 1)[1]
    assert (tmp_path / 'timelines' / f'tcp_127.0.0.1_{port}.timeline.png').stat().st_size > 1000
    with ClipServer(clip, cut=PREROLL + 10) as server:
        code = main(['predict', server.url, '--aligned', '--duration', '10', '--output', str(tmp_path / 'rows.csv')])
    printed = capsys.readouterr()
    assert code == 1 and 'the stream ended; kept the' in printed.out
    assert 'the stream ended after' in printed.err
    with open(tmp_path / 'rows.csv', newline='') as f:
        assert len(list(csv.DictReader(f))) >= 3
    assert main(['predict', 'rtsp://cam/live', str(tmp_path), '--aligned']) == 2
    assert 'a live source runs alone' in capsys.readouterr().err


@pytest.mark.slow
def test_cli_reads_standard_input_from_a_pipe(clip, tmp_path):
    command = [sys.executable, '-m', 'timm_fer', 'predict', '-', '--aligned', '--fps', '5', '--min-track', '0',
               '--output', str(tmp_path / 'rows.csv')]
    result = subprocess.run(command, input=clip, capture_output=True, timeout=120, cwd=tmp_path)
    printed = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert 'stdin: h264 160x120' in printed and ' dropped of ' in printed
    with open(tmp_path / 'rows.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows and {row['file'] for row in rows} == {'stdin'}
    assert [float(row['time']) for row in rows] == sorted(float(row['time']) for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize('how', ['ctrl-c', 'kill'])
def test_cli_ctrl_c_ends_a_live_run_with_the_summary_and_a_kill_loses_no_row_written(tmp_path, how):
    rows = tmp_path / 'rows.csv'
    with ClipServer(ts_clip(FRAMES * 4), frames=FRAMES * 4) as server:  # long enough to outlast a slow start
        command = [sys.executable, '-m', 'timm_fer', 'predict', server.url, '--aligned', '--output', str(rows)]
        # the default Ctrl-C in the child, even where an earlier test (Ray) left this process ignoring it
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert wait_for(lambda: rows.exists() and len(rows.read_text().splitlines()) >= 3, 90), \
                process.stderr.read1().decode() if process.poll() is not None else 'no rows'
            process.send_signal(signal.SIGINT if how == 'ctrl-c' else signal.SIGKILL)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
    with open(rows, newline='') as f:
        written = list(csv.DictReader(f))
    columns = len(live_columns(list(FERPLUS_LABELS)))
    assert len(written) >= 2 and all(len(row) == columns and None not in row.values() for row in written)  # whole
    if how == 'kill':
        assert process.returncode == -signal.SIGKILL
        return
    assert process.returncode == 0, err.decode()[-2000:]
    assert f'{server.url}: stopped (Ctrl-C)' in err.decode() and f'{server.url}: h264 160x120' in out.decode()
    assert f'({len(written)} rows as they came' in out.decode()


def test_cli_checks_live_options_before_loading_anything(tmp_path, capsys):
    assert main(['predict', 'rtsp://cam/live', '--duration', '0']) == 2
    assert '--duration must be a number > 0 (or unset), got 0.0.' in capsys.readouterr().err
    assert main(['predict', 'clip.mp4', '--stall-timeout', '-1']) == 2  # checked for files too
    assert '--stall-timeout must be a number > 0' in capsys.readouterr().err
    assert main(['predict', '--camera', '0', 'rtsp://cam/live']) == 2
    assert 'a live source runs alone, got rtsp://cam/live, --camera 0' in capsys.readouterr().err
    assert main(['predict', '-', '--output', str(tmp_path / 'rows.json')]) == 2
    assert '--output must end in .csv or .jsonl for a live source' in capsys.readouterr().err


def test_stream_options_are_checked_before_the_source_is_opened(model):
    with pytest.raises(ConfigError, match='fps'):
        stream('camera:63', model=model, fps=0)
    with pytest.raises(ConfigError, match='duration'):
        stream('camera:63', model=model, duration=-1)
    with pytest.raises(ConfigError, match=r'--output must end in \.csv or \.jsonl'):
        predict_stream('camera:63', model=model, output=Path('rows.json'))
