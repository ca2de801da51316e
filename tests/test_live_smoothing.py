"""Steady live readings: each live face track's probabilities are smoothed over ``--smoothing`` seconds with the
timeline's moving average in its causal form, in Python (:class:`TrackSmoother`), in a live source's rows
(``predict_stream``), in the ``/v1/live`` answers and on the page, whose control sets the server's window.

The made-up track's raw top probability alternates 0.5, 0.9, 0.5, ... from frame to frame, as a real clip's did.
"""
import csv
import io
import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from drawn_faces import stub_face
from hypothesis import given, settings
from hypothesis import strategies as st
from live_page import browser_missing, chromium, serving, start_live, wait_for, write_fake_camera
from PIL import Image

from timm_fer.errors import ConfigError
from timm_fer.inference.classifier import FaceClassifier, load_classifier
from timm_fer.inference.predict import FacePrediction
from timm_fer.inference.stream import FrameTracker, live_columns, predict_stream, stream
from timm_fer.inference.timeline import TrackSmoother, smooth_probabilities

pytestmark = pytest.mark.usefixtures('offline_hub')

FPS = 5
RAW = (0.5, 0.9)
"""The made-up track's top probability in even and odd frames."""


def alternating(count: int) -> np.ndarray:
    """(count, 2) probabilities whose first column alternates 0.5, 0.9, 0.5, ..."""
    first = np.array([RAW[k % 2] for k in range(count)])
    return np.stack([first, 1 - first], axis=1)


def steady_band(values: List[float], window: float) -> float:
    """The spread of ``values`` (one per frame at :data:`FPS`) after the first ``window`` seconds."""
    settled = values[int(window * FPS) + 1:]
    return max(settled) - min(settled)


@pytest.mark.parametrize('window', [1., 2.])
def test_an_alternating_track_comes_out_steady_online(window):
    smoother = TrackSmoother(window)
    times = np.arange(40) / FPS
    raw = alternating(len(times))
    smoothed = [smoother(t, {3: p})[3] for t, p in zip(times, raw)]
    firsts = [float(s[0]) for s in smoothed]
    assert steady_band(list(raw[:, 0]), window) == pytest.approx(0.4)
    assert steady_band(firsts, window) < 0.05 and abs(np.mean(firsts[10:]) - 0.7) < 0.03
    assert all(s.sum() == pytest.approx(1.) for s in smoothed)


@settings(max_examples=40, deadline=None)
@given(window=st.sampled_from([0.4, 0.8, 2.]), count=st.integers(12, 40), seed=st.integers(0, 2 ** 16))
def test_online_smoothing_is_the_timelines_moving_average_half_a_window_late(window, count, seed):
    """The one moving average: the live form at each frame is the centred one of the frame window / 2 s earlier."""
    times = np.arange(count) / FPS
    probabilities = np.random.default_rng(seed).dirichlet(np.ones(3), size=count)
    smoother = TrackSmoother(window)
    online = np.stack([smoother(t, {0: p})[0] for t, p in zip(times, probabilities)])
    np.testing.assert_allclose(online, smooth_probabilities(times, probabilities, window, causal=True))
    centred = smooth_probabilities(times, probabilities, window)
    late = round(window / 2 * FPS)  # frames in half a window
    np.testing.assert_allclose(online[late:], centred[:count - late])


def test_tracks_are_smoothed_apart_forgotten_when_gone_and_zero_is_off():
    smoother = TrackSmoother(1.)
    first = smoother(0., {0: [0.5, 0.5], 1: [1., 0.]})
    second = smoother(0.2, {0: [0.9, 0.1], 1: [0., 1.]})
    np.testing.assert_allclose(first[0], [0.5, 0.5])
    np.testing.assert_allclose(second[0], [0.7, 0.3])
    np.testing.assert_allclose(second[1], [0.5, 0.5])
    smoother(5., {2: [1., 0.]})
    np.testing.assert_allclose(smoother(5.2, {0: [0.9, 0.1]})[0], [0.9, 0.1])  # its old samples are gone
    smoother.window = 0.
    np.testing.assert_allclose(smoother(5.4, {0: [0.5, 0.5]})[0], [0.5, 0.5])
    np.testing.assert_allclose(smoother(0., {0: [0.2, 0.8]})[0], [0.2, 0.8])  # a clock that went back


@pytest.fixture()
def alternating_classifier(model, monkeypatch):
    """A classifier whose every face has the top probability 0.5, 0.9, 0.5, ... call after call (the rest spread
    evenly over the other labels)."""
    calls = []

    def alternating_call(self, crops: list, *args, **kwargs) -> List[FacePrediction]:
        top = RAW[len(calls) % 2]
        calls.append(len(crops))
        rest = [(1 - top) / (len(self.labels) - 1)] * (len(self.labels) - 1)
        return [FacePrediction(file=str(crop.file), face=crop.face, box=crop.box, detector_score=crop.detector_score,
                               expression=self.labels[0], probabilities=dict(zip(self.labels, [top] + rest)))
                for crop in crops]

    monkeypatch.setattr(FaceClassifier, '__call__', alternating_call)
    return load_classifier(model=model, threads=1)


def read_rows(path: Path) -> List[Dict]:
    """The rows of a live run's ``.csv`` (probabilities as numbers) or ``.jsonl`` file."""
    if path.suffix == '.jsonl':
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline='') as f:
        return [{k: float(v) if k.startswith(('p_', 'smoothed_p_')) else v for k, v in row.items()}
                for row in csv.DictReader(f)]


def test_frame_tracker_gives_each_track_its_smoothed_probabilities(alternating_classifier):
    tracker = FrameTracker(alternating_classifier, aligned=True, source='camera:0', smoothing=1.)
    face = Image.new('RGB', (112, 112), (120, 100, 90))
    frames = [tracker(face, k / FPS, k) for k in range(30)]
    label = alternating_classifier.labels[0]
    assert all(list(frame.smoothed) == [frame.faces[0].track] for frame in frames)
    raw = [frame.faces[0].probabilities[label] for frame in frames]
    smoothed = [frame.smoothed[frame.faces[0].track][label] for frame in frames]
    assert steady_band(raw, 1.) == pytest.approx(0.4) and steady_band(smoothed, 1.) < 0.05
    assert frames[-1].smoothed_expression(frames[-1].faces[0].track) == label
    tracker.smoother.window = 0.
    frame = tracker(face, 30 / FPS, 30)
    assert frame.smoothed[frame.faces[0].track] == frame.faces[0].probabilities


@pytest.mark.parametrize('suffix', ['.csv', '.jsonl'])
def test_live_rows_carry_a_steady_smoothed_column_beside_the_raw_one(alternating_classifier, tmp_path, suffix):
    pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    from test_video import write_video

    clip = write_video(tmp_path / 'face.mp4', [Image.new('RGB', (112, 112), (120, 100, 90))] * 60, fps=10)
    output = tmp_path / f'rows{suffix}'
    report = predict_stream(clip, alternating_classifier, output=output, aligned=True, fps=FPS, smoothing=1.,
                            log=lambda message: None)
    labels = report.labels
    rows = read_rows(output)
    assert list(rows[0]) == live_columns(labels)
    assert len(rows) == 30 and live_columns(labels)[-len(labels) - 1:] == (
        ['smoothed_expression'] + [f'smoothed_p_{label}' for label in labels])
    raw = [row[f'p_{labels[0]}'] for row in rows]
    smoothed = [row[f'smoothed_p_{labels[0]}'] for row in rows]
    assert steady_band(raw, 1.) == pytest.approx(0.4) and steady_band(smoothed, 1.) < 0.05
    assert {row['smoothed_expression'] for row in rows} == {labels[0]}
    off = tmp_path / f'off{suffix}'
    predict_stream(clip, alternating_classifier, output=off, aligned=True, fps=FPS, smoothing=0.,
                   log=lambda message: None)
    rows = read_rows(off)
    assert len(rows) == 30 and all(row[f'p_{label}'] == row[f'smoothed_p_{label}'] for row in rows for label in labels)


def test_smoothing_must_not_be_negative_for_a_stream(model):
    with pytest.raises(ConfigError, match='smoothing'):
        stream('camera:63', model=model, smoothing=-1)


def one_face(image: Image.Image) -> list:
    """A stand-in detector: one face in the middle of every frame."""
    return [stub_face(image.width / 2 - 56, image.height / 2 - 56, 1.)]


def jpeg_frame(frame_id: int) -> bytes:
    """A live frame message: the 4-byte big-endian id, then a grey 320x240 JPEG."""
    buffer = io.BytesIO()
    Image.new('RGB', (320, 240), (120, 100, 90)).save(buffer, format='JPEG')
    return frame_id.to_bytes(4, 'big') + buffer.getvalue()


def test_live_answers_carry_steady_smoothed_probabilities_and_take_the_window(alternating_classifier, tmp_path):
    pytest.importorskip('fastapi', reason='the serve extra (FastAPI) is not installed')
    from fastapi.testclient import TestClient

    from timm_fer.serve import create_app

    label = alternating_classifier.labels[0]
    with TestClient(create_app(alternating_classifier, detector=one_face, temp_dir=tmp_path)) as client:
        with client.websocket_connect('/v1/live') as live:
            answers = []
            for frame_id in range(1, 13):
                live.send_bytes(jpeg_frame(frame_id))
                answers.append(live.receive_json())
            assert {answer['smoothing'] for answer in answers} == {1.}  # the default, --smoothing's
            faces = [answer['faces'][0] for answer in answers]
            assert [face['probabilities'][label] for face in faces] == pytest.approx([0.5, 0.9] * 6)
            smoothed = [face['smoothed'][label] for face in faces[6:]]  # frames come ms apart: all in the window
            assert max(smoothed) - min(smoothed) < 0.05 and all(abs(p - 0.7) < 0.03 for p in smoothed)
            assert {face['smoothed_expression'] for face in faces} == {label}
            live.send_text(json.dumps({'smoothing': 0}))
            assert live.receive_json() == {'id': None, 'smoothing': 0.}
            for frame_id in (13, 14):
                live.send_bytes(jpeg_frame(frame_id))
                face = live.receive_json()['faces'][0]
                assert face['smoothed'] == face['probabilities']
            for bad in ('hello', '{"smoothing": -1}', '{"smoothing": 31}', '{"smoothing": "2"}', '{"fps": 2}',
                        '{"smoothing": true}', '[1]'):
                live.send_text(bad)
                error = live.receive_json()
                assert error['id'] is None and error['error'].startswith(
                    'text messages set the smoothing, {"smoothing": SECONDS} with SECONDS from 0 to 30, got ')
            live.send_bytes(jpeg_frame(15))
            assert live.receive_json()['smoothing'] == 0.  # the bad settings changed nothing


def shown_probabilities(driver, samples: int) -> List[float]:
    """The probability of the page's live label, read ``samples`` times a quarter of a second apart."""
    values = []
    for _ in range(samples):
        labels = driver.find_element('id', 'live-labels').get_attribute('data-labels')
        values.append(float(labels.rsplit(' ', 1)[1]))
        time.sleep(0.25)
    return values


def set_smoothing(driver, seconds: str) -> None:
    """Type ``seconds`` in the page's smoothing control and leave it (which fires its change event)."""
    from selenium.webdriver.common.keys import Keys

    control = driver.find_element('id', 'smoothing')
    control.clear()
    control.send_keys(seconds, Keys.TAB)


@pytest.mark.slow
def test_the_pages_smoothing_control_sets_the_servers_window(alternating_classifier, tmp_path):
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    pytest.importorskip('fastapi', reason='the serve extra (FastAPI) is not installed')
    pytest.importorskip('uvicorn', reason='the serve extra (uvicorn) is not installed')
    from timm_fer.serve import create_app

    clip = write_fake_camera(tmp_path / 'camera.y4m')
    app = create_app(alternating_classifier, detector=one_face, temp_dir=tmp_path)
    with serving(app) as url, chromium(clip) as driver:
        driver.get(url)
        shown = lambda: driver.find_element('id', 'live-labels').get_attribute('data-smoothing')  # noqa: E731
        set_smoothing(driver, '0')
        start_live(driver)
        wait_for(lambda: shown() == '0', 15, 'the server to take smoothing 0')
        raw = shown_probabilities(driver, 12)
        assert {0.5, 0.9} <= set(raw), raw  # the label shows each frame's own probability
        set_smoothing(driver, '3')
        wait_for(lambda: shown() == '3', 15, 'the server to take smoothing 3')
        time.sleep(1.5)
        smoothed = shown_probabilities(driver, 12)
        assert all(0.62 <= p <= 0.78 for p in smoothed), smoothed
        set_smoothing(driver, '99')
        message = wait_for(lambda: driver.find_element('id', 'message').text, 15, "the server's message")
        assert 'with SECONDS from 0 to 30, got' in message and shown() == '3'
