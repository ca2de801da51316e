"""``timm-fer predict`` on videos and ``timm_fer.predict_video``: decoding, sampling, face tracks and outputs.

Every video is made here with PyAV: the shipped portrait moved, scaled and mirrored, with one frame without a face.
"""
import csv
import json
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
from drawn_faces import stub_face
from PIL import Image

from timm_fer.cli import main
from timm_fer.errors import UnsupportedCodecError, VideoDecoderUnavailableError, VideoReadError
from timm_fer.faces import DetectedFace, read_image
from timm_fer.faces.io import find_media
from timm_fer.faces.video_io import VideoReader, VideoWriter
from timm_fer.inference.predict import SAMPLE_IMAGE, format_table, predict
from timm_fer.inference.tracking import FaceTracker
from timm_fer.inference.video import format_video_table, predict_video, write_video_report

av = pytest.importorskip('av', reason='the video extra (PyAV) is not installed')

FPS = 10
NO_FACE = 12
"""The frame of the portrait video that shows no face."""
CODECS = {'mp4': 'libx264', 'webm': 'libvpx-vp9', 'avi': 'mjpeg'}

pytestmark = pytest.mark.usefixtures('offline_hub')


def write_video(path: Path, images: Sequence[Image.Image], fps: int = FPS) -> Path:
    """Encode ``images`` with the codec that goes with ``path``'s suffix (H.264, VP9 or MJPEG)."""
    codec = CODECS[path.suffix[1:]]
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = images[0].size
        stream.pix_fmt = 'yuvj420p' if codec == 'mjpeg' else 'yuv420p'
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def portrait_frames(count: int = 24, size: tuple = (320, 240)) -> List[Image.Image]:
    """The portrait moving right and down while it shrinks from 0.9 to 0.6, mirrored for frames 14-19; frame 12
    shows the background only."""
    portrait = read_image(SAMPLE_IMAGE)
    frames = []
    for k in range(count):
        canvas = Image.new('RGB', size, (90, 120, 160))
        if k != NO_FACE:
            side = round(224 * (0.9 - 0.3 * k / count))
            face = portrait.resize((side, side))
            if 14 <= k < 20:
                face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(face, (round(5 + 100 * k / count), round(40 * k / count)))
        frames.append(canvas)
    return frames


def plain_frames(count: int = 24, size: tuple = (160, 120)) -> List[Image.Image]:
    """Frames with a bright square moving over a dark background (no face)."""
    frames = []
    for k in range(count):
        image = Image.new('RGB', size, (30, 30, 30))
        image.paste((230, 200, 40), (4 * k, 40, 4 * k + 30, 70))
        frames.append(image)
    return frames


def fixed_face(image: Image.Image) -> list:
    """A stand-in detector: one face at the same place in every frame."""
    return [stub_face(40, 20, 0.6)]


@pytest.mark.parametrize('suffix', ['mp4', 'webm', 'avi'])
def test_common_codecs_decode_frame_by_frame_on_the_sampling_grid(tmp_path, suffix):
    path = write_video(tmp_path / f'plain.{suffix}', plain_frames())
    with VideoReader(path) as reader:
        assert reader.info.codec == {'mp4': 'h264', 'webm': 'vp9', 'avi': 'mjpeg'}[suffix]
        assert (reader.info.width, reader.info.height, reader.info.fps) == (160, 120, FPS)
        assert reader.info.duration == pytest.approx(2.4, abs=0.05)
        frames = list(reader.frames(fps=5))
        assert reader.problem is None and reader.frames_decoded == 24
    assert [f.index for f in frames] == list(range(0, 24, 2))
    np.testing.assert_allclose([f.time for f in frames], np.arange(12) / 5, atol=1e-6)
    assert frames[3].image.size == (160, 120) and frames[3].image.getpixel((4 * 6 + 15, 55))[0] > 180
    with VideoReader(path) as reader:
        times = [f.time for f in reader.frames(fps=4)]  # off the frame grid: the first frame at or after k / 4 s
    grid = np.arange(len(times)) / 4
    assert len(times) == 10 and np.all(np.array(times) >= grid - 1e-6) and np.all(np.array(times) < grid + 0.1)
    with VideoReader(path) as reader:
        assert len(list(reader.frames())) == 24


@pytest.mark.parametrize('suffix', ['mp4', 'webm'])
def test_one_track_id_through_motion_scale_mirroring_and_a_frame_without_face(model, detector, tmp_path, suffix):
    path = write_video(tmp_path / f'portrait.{suffix}', portrait_frames())
    report = predict_video(path, model=model, detector=detector, fps=5, timeline=tmp_path / 'timelines',
                           save_annotated=tmp_path / 'annotated')
    assert not report.skipped
    sampled = [k for k in range(0, 24, 2) if k != NO_FACE]
    assert [f.frame for f in report.faces] == sampled
    assert {f.track for f in report.faces} == {0}
    np.testing.assert_allclose([f.time for f in report.faces], np.array(sampled) / FPS, atol=1e-6)
    widths = [f.box[2] - f.box[0] for f in report.faces]
    assert widths[0] > 1.3 * widths[-1]  # the face shrank while it moved right
    assert report.faces[-1].box[0] > report.faces[0].box[0] + 50
    video = report.videos[0]
    assert (video.frames_decoded, video.frames_sampled, video.frames_with_faces, video.problem) == (24, 12, 11, None)
    (track,) = report.tracks
    assert (track.track, track.start, track.frames) == (0, 0., 11) and track.end == pytest.approx(2.2)
    assert sum(track.shares.values()) == pytest.approx(1.) and track.shares[track.expression] == max(
        track.shares.values())

    timeline = Image.open(video.timeline)
    assert Path(video.timeline).name == 'portrait.timeline.png' and timeline.width == 1000 and timeline.height > 200
    assert len(np.unique(np.asarray(timeline.convert('L')))) > 10  # drawn, not blank
    with VideoReader(video.annotated) as annotated:
        frames = list(annotated.frames())
    assert Path(video.annotated).name == 'portrait.annotated.mp4' and annotated.info.codec == 'h264'
    assert len(frames) == 12 and frames[0].image.size == (320, 240)
    np.testing.assert_allclose([f.time for f in frames], np.arange(12) / 5, atol=0.01)
    x0, y0, x1, y1 = report.faces[0].box
    red, green, blue = np.asarray(frames[0].image)[y1 - 1:y1 + 2, x0 + 8:x1 - 8].astype(int).transpose(2, 0, 1)
    assert ((red > 180) & (green > 150) & (blue < 140)).any(axis=0).mean() > 0.8  # the box's yellow bottom edge


GHOST_FRAME = 8
"""The frame of the shirt clip whose checked patch the stand-in detector takes for a face."""


def shirt_frames(count: int = 24, size: tuple = (160, 120)) -> List[Image.Image]:
    """Dark frames; frame :data:`GHOST_FRAME` shows a bright checked patch (a patterned shirt) at (100, 60)."""
    frames = []
    for k in range(count):
        image = Image.new('RGB', size, (30, 30, 30))
        if k == GHOST_FRAME:
            for i in range(4):
                for j in range(4):
                    image.paste((240, 240, 240) if (i + j) % 2 else (200, 60, 60),
                                (100 + 10 * i, 60 + 10 * j, 110 + 10 * i, 70 + 10 * j))
        frames.append(image)
    return frames


def face_and_shirt(image: Image.Image) -> list:
    """A stand-in detector: the face of :func:`fixed_face` in every frame, and a false face (score 0.948, as a
    patterned shirt scored in a real clip) where the checked patch shows."""
    faces = [stub_face(40, 20, 0.6)]
    if np.asarray(image)[60:100, 100:140].mean() > 120:
        ghost = stub_face(100, 60, 0.36)
        faces.append(DetectedFace(ghost.box, ghost.landmarks, score=0.948))
    return faces


def test_a_false_face_seen_in_one_frame_is_no_track(model, tmp_path):
    video = write_video(tmp_path / 'shirt.avi', shirt_frames())
    report = predict_video(video, model=model, detector=face_and_shirt, fps=5)
    (summary,) = report.videos
    assert [t.track for t in report.tracks] == [0] and {f.track for f in report.faces} == {0}
    assert len(report.faces) == 12 and summary.short_tracks == 1 and summary.frames_with_faces == 12
    assert report.tracks[0].detector_score == pytest.approx(0.99)
    assert 'shirt.avi: mjpeg 160x120 10.00 fps 2.40 s; 12 frames sampled, 12 with faces, 1 track (1 shorter than ' \
           '0.5 s dropped)' in format_video_table(report)
    everything = predict_video(video, model=model, detector=face_and_shirt, fps=5, min_track=0)
    assert [t.frames for t in everything.tracks] == [12, 1] and everything.videos[0].short_tracks == 0
    assert everything.tracks[1].detector_score == pytest.approx(0.948) and len(everything.faces) == 13
    longer = predict_video(video, model=model, detector=face_and_shirt, fps=None, min_track=5.)  # the clip: 2.4 s
    assert [t.frames for t in longer.tracks] == [24]  # a track in every frame is kept, however short the clip
    assert main(['predict', str(video), '--aligned', '--min-track', '-1']) == 2


def test_aligned_inputs_that_look_like_no_face_crop_are_warned_of(model, tmp_path):
    read_image(SAMPLE_IMAGE).resize((1486, 836)).save(tmp_path / 'whole.png')  # a photo, not a face crop
    read_image(SAMPLE_IMAGE).crop((66, 56, 159, 177)).save(tmp_path / 'crop.png')  # 93x121: a face crop
    photos = predict([tmp_path / 'whole.png', tmp_path / 'crop.png'], model=model, aligned=True)
    assert len(photos.faces) == 2 and len(photos.warnings) == 1
    assert 'but 1 look like none: ' in photos.warnings[0] and 'whole.png (1486x836: aspect 1.78, face crops 1.00)' \
        in photos.warnings[0] and 'crop.png' not in photos.warnings[0]
    assert 'WARNING: --aligned takes each image as an aligned face crop' in format_table(photos)
    assert not predict([tmp_path / 'crop.png'], model=model, aligned=True).warnings
    read_image(SAMPLE_IMAGE).resize((1200, 1200)).save(tmp_path / 'large.png')
    (warning,) = predict([tmp_path / 'large.png'], model=model, aligned=True).warnings
    assert 'large.png (1200x1200: larger than aligned faces come, 1024 px at most)' in warning
    clip = write_video(tmp_path / 'clip.avi', shirt_frames(4))
    video = predict_video(clip, model=model, aligned=True)
    assert len(video.warnings) == 1 and 'clip.avi (160x120: aspect 1.33' in video.warnings[0]
    assert 'WARNING: --aligned' in format_video_table(video)
    assert not predict_video(clip, model=model, detector=fixed_face).warnings



def test_cli_warns_when_aligned_video_frames_are_whole_scenes(tmp_path, capsys):
    """``timm-fer predict clip.mp4 --aligned`` on wide whole frames (1920x1080 in the issue; 16:9 here too) says
    that they look like no face crop, in the video table's warning."""
    clip = write_video(tmp_path / 'scene.avi', plain_frames(3, size=(192, 108)))
    assert main(['predict', str(clip), '--aligned', '--backend', 'torch', '--threads', '1']) == 0
    printed = capsys.readouterr().out
    assert 'WARNING: --aligned takes each image as an aligned face crop, but 1 look like none' in printed
    assert 'scene.avi (192x108: aspect 1.78, face crops 1.00)' in printed

def test_tracker_keeps_ids_through_missed_detections_and_crossing_faces():
    tracker = FaceTracker(max_gap=1.)
    look_a, look_b = np.eye(2)
    ids = []
    for k in range(12):  # a moves right, b moves left; they cross at frame 5-6; b is missed at frames 3 and 4
        t = k / 5
        a, b = (10 + 20 * k, 50, 70 + 20 * k, 110), (230 - 20 * k, 55, 290 - 20 * k, 115)
        if k in (3, 4):
            ids.append(tracker.update(t, [a], [look_a]) + [None])
        else:
            ids.append(tracker.update(t, [a, b], [look_a, look_b]))
    assert ids == [[0, 1]] * 3 + [[0, None]] * 2 + [[0, 1]] * 7
    assert tracker.update(2.4, [(500, 400, 560, 460)], [look_a]) == [2]  # far away: a new face
    assert tracker.update(4.0, [(230, 50, 290, 110)], [look_a]) == [3]  # after max_gap: tracks have ended


def test_tracker_matches_by_position_without_appearance():
    tracker = FaceTracker()
    assert tracker.update(0., [(0, 0, 50, 50), (200, 0, 250, 50)]) == [0, 1]
    assert tracker.update(0.2, [(210, 5, 260, 55), (8, 2, 58, 52)]) == [1, 0]
    assert tracker.update(0.4, []) == []
    assert tracker.update(0.6, [(16, 4, 66, 54)]) == [0]


def test_truncated_video_keeps_the_rows_of_the_frames_it_decoded(model, tmp_path):
    whole = write_video(tmp_path / 'whole.avi', plain_frames(30))
    data = whole.read_bytes()
    (tmp_path / 'cut.avi').write_bytes(data[:len(data) // 2])
    (tmp_path / 'cut.mp4').write_bytes(write_video(tmp_path / 'm.mp4', plain_frames()).read_bytes()[:3000])
    report = predict_video([whole, tmp_path / 'cut.mp4', tmp_path / 'cut.avi'], model=model, detector=fixed_face,
                           timeline=tmp_path / 'timelines')
    rows = {name: [f for f in report.faces if f.file.endswith(name)] for name in ('whole.avi', 'cut.avi')}
    assert len(rows['whole.avi']) == 15 and 3 <= len(rows['cut.avi']) < 15
    assert [(f.frame, f.time) for f in rows['cut.avi']] == [(f.frame, f.time) for f in rows['whole.avi']][
        :len(rows['cut.avi'])]
    cut = next(v for v in report.videos if v.file.endswith('cut.avi'))
    assert cut.problem.startswith(f'decoding stopped at frame {cut.frames_decoded - 1} ({cut.decoded_until:.2f} s)')
    assert 'declares 30 frames; it is truncated or damaged' in cut.problem
    assert Path(cut.timeline).stat().st_size > 1000
    reasons = {Path(s.file).name: s.reason for s in report.skipped}
    assert reasons['cut.avi'].endswith(f'kept the {len(rows["cut.avi"])} rows of the frames before')
    assert 'MP4/MOV file cut short' in reasons['cut.mp4'] and len(report.videos) == 2
    assert next(v for v in report.videos if v.file.endswith('whole.avi')).problem is None


def test_a_damaged_packet_is_skipped_and_decoding_goes_on(tmp_path):
    noise = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8))
             for i in range(20)]
    path = write_video(tmp_path / 'noise.mp4', noise)
    with av.open(str(path)) as container:
        position, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][10]
    data = bytearray(path.read_bytes())
    data[position:position + size] = bytes(size)
    path.write_bytes(bytes(data))
    with VideoReader(path) as reader:
        assert len(list(reader.frames())) == 19
    assert reader.damaged_packets == 1 and reader.problem == '1 damaged packet skipped'


def test_unsupported_codec_names_the_file_and_codec_and_the_others_go_on(model, tmp_path):
    data = write_video(tmp_path / 'good.avi', plain_frames(10)).read_bytes()
    assert data.count(b'MJPG') >= 1
    (tmp_path / 'odd.avi').write_bytes(data.replace(b'MJPG', b'QQQQ'))
    with pytest.raises(UnsupportedCodecError, match=r"odd\.avi: its video codec 'none \(QQQQ / 0x51515151\)'"):
        VideoReader(tmp_path / 'odd.avi')
    (tmp_path / 'notes.mp4').write_text('not a video')
    report = predict_video([tmp_path], model=model, detector=fixed_face)
    reasons = {Path(s.file).name: s.reason for s in report.skipped}
    assert set(reasons) == {'odd.avi', 'notes.mp4'} and 'QQQQ' in reasons['odd.avi']
    assert 'not a video that FFmpeg can read' in reasons['notes.mp4']
    assert len(report.faces) == 5 and {f.file for f in report.faces} == {str(tmp_path / 'good.avi')}
    with pytest.raises(VideoReadError, match='no such file'):
        VideoReader(tmp_path / 'missing.mp4')


def test_folders_and_globs_give_videos_to_the_video_path(model, tmp_path):
    (tmp_path / 'sub').mkdir()
    write_video(tmp_path / 'sub' / 'b.avi', plain_frames(4))
    Image.new('RGB', (8, 8)).save(tmp_path / 'a.png')
    (tmp_path / 'notes.txt').write_text('text')
    assert find_media([str(tmp_path)]) == ([tmp_path / 'a.png'], [tmp_path / 'sub' / 'b.avi'], [])
    assert find_media([f'{tmp_path}/**/*.avi', str(tmp_path / 'notes.txt')]) == (
        [tmp_path / 'notes.txt'], [tmp_path / 'sub' / 'b.avi'], [])
    (tmp_path / 'empty').mkdir()
    assert find_media([str(tmp_path / 'empty')])[2][0][1].startswith('the folder holds no image or video files')
    report = predict_video([str(tmp_path), str(tmp_path / 'notes.txt')], model=model, detector=fixed_face)
    assert len(report.faces) == 2 and [Path(s.file).name for s in report.skipped] == ['a.png', 'notes.txt']
    assert report.skipped[0].reason.startswith('an image, not a video')


def test_display_rotation_is_applied(tmp_path):
    if not hasattr(av.video.stream.VideoStream, 'set_display_rotation'):
        pytest.skip('this PyAV cannot write a display rotation')
    with av.open(str(tmp_path / 'turned.mp4'), 'w') as container:
        stream = container.add_stream('libx264', rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        stream.set_display_rotation(90)  # shown turned a quarter counter-clockwise
        for index in range(3):
            image = Image.new('RGB', (64, 48))
            image.paste((255, 255, 255), (0, 0, 16, 48))  # a white stripe on the left
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with VideoReader(tmp_path / 'turned.mp4') as reader:
        upright = next(reader.frames()).image
    assert upright.size == (48, 64)
    pixels = np.asarray(upright.convert('L'))
    assert pixels[-10:].mean() > 200 and pixels[:40].mean() < 40  # the stripe is now at the bottom


def test_annotated_video_pads_odd_sizes_and_falls_back_to_mpeg4(tmp_path, monkeypatch):
    with VideoWriter(tmp_path / 'odd.mp4', FPS) as writer:
        for k, image in enumerate(plain_frames(3, size=(161, 121))):
            writer.write(image, k / FPS)
    monkeypatch.setattr('timm_fer.faces.video_io.ENCODERS', ('mpeg4',))
    with VideoWriter(tmp_path / 'mpeg4.mp4', FPS) as writer:
        writer.write(plain_frames(1)[0], 0.)
    with VideoReader(tmp_path / 'odd.mp4') as odd, VideoReader(tmp_path / 'mpeg4.mp4') as mpeg4:
        assert (odd.info.codec, odd.info.width, odd.info.height, len(list(odd.frames()))) == ('h264', 162, 122, 3)
        assert mpeg4.info.codec == 'mpeg4'
    assert sorted(p.name for p in tmp_path.glob('*.mp4')) == ['mpeg4.mp4', 'odd.mp4']  # no temporary file left


def test_cli_routes_videos_and_writes_rows_timelines_and_annotated_videos(tmp_path, capsys):
    video = write_video(tmp_path / 'clip.avi', portrait_frames(10, size=(160, 120)))
    out = tmp_path / 'rows.csv'
    args = ['predict', str(video), str(SAMPLE_IMAGE), '--aligned', '--fps', '2.5', '--output', str(out),
            '--timeline', str(tmp_path / 'tl'), '--save-annotated', str(tmp_path / 'ann')]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert 'clip.avi: mjpeg 160x120 10.00 fps 1.00 s; 3 frames sampled, 3 with faces, 1 track' in printed
    assert 'wrote 1 timeline picture to' in printed and 'wrote 1 annotated video to' in printed
    assert 'astronaut.png' in printed and 'wrote 1 annotated image to' in printed
    with open(tmp_path / 'rows_video.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['frame'], r['time'], r['track']) for r in rows] == [('0', '0.0000', '0'), ('4', '0.4000', '0'),
                                                                   ('8', '0.8000', '0')]
    assert sum(float(v) for k, v in rows[0].items() if k.startswith('p_')) == pytest.approx(1., abs=1e-4)
    assert out.exists() and sorted(p.name for p in (tmp_path / 'ann').iterdir()) == ['astronaut.annotated.png',
                                                                                'clip.annotated.mp4']
    assert main(['predict', str(video), '--aligned', '--every-frame', '--output', str(tmp_path / 'all.json')]) == 0
    saved = json.loads((tmp_path / 'all.json').read_text())
    assert len(saved['faces']) == 10 and saved['fps'] is None and saved['tracks'][0]['frames'] == 10
    assert saved['videos'][0]['codec'] == 'mjpeg' and saved['meaningful'] is True
    capsys.readouterr()
    assert main(['predict', str(video), '--aligned', '--fps', '0']) == 2
    assert '--fps must be a number > 0 (or unset), got 0.0.' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['predict', str(video), '--fps', '5', '--every-frame'])


def test_a_run_of_photos_and_videos_loads_the_model_once(tmp_path, monkeypatch, capsys):
    from timm_fer.inference import classifier
    loads = []

    def counted_load_model(*args, **kwargs):
        loads.append(args)
        return load_model(*args, **kwargs)

    load_model = classifier.load_model
    monkeypatch.setattr(classifier, 'load_model', counted_load_model)
    video = write_video(tmp_path / 'clip.avi', portrait_frames(4, size=(160, 120)))
    assert main(['predict', str(video), str(SAMPLE_IMAGE), '--aligned', '--fps', '5']) == 0
    printed = capsys.readouterr().out
    assert 'astronaut.png' in printed and 'clip.avi: mjpeg' in printed  # a table for the photo and the video
    assert len(loads) == 1


def test_without_pyav_the_error_says_how_to_install_it(model, tmp_path, monkeypatch, capsys):
    video = write_video(tmp_path / 'clip.avi', plain_frames(4))
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(VideoDecoderUnavailableError, match=r'pip install "timm-fer\[video\]"'):
        predict_video(video, model=model, detector=fixed_face)
    assert main(['predict', str(video), '--aligned']) == 2
    assert 'timm-fer[video]' in capsys.readouterr().err


def test_report_outputs_and_dataframe_views(model, tmp_path, monkeypatch):
    video = write_video(tmp_path / 'clip.avi', plain_frames(6))
    report = predict_video(video, model=model, detector=fixed_face, fps=None)
    assert [f.frame for f in report.faces] == list(range(6)) and report.fps is None
    saved = json.loads(write_video_report(report, tmp_path / 'r.json').read_text())
    assert saved['faces'][2]['time'] == pytest.approx(0.2) and saved['tracks'][0]['frames'] == 6
    monkeypatch.setitem(sys.modules, 'pandas', None)
    with pytest.raises(ImportError, match='pip install pandas'):
        report.to_dataframe()
    monkeypatch.undo()
    pytest.importorskip('pandas', reason='pandas is optional')
    frame = report.to_dataframe()
    assert list(frame.columns[:4]) == ['file', 'frame', 'time', 'track'] and len(frame) == 6
    assert frame.filter(like='p_').sum(axis=1).round(4).eq(1).all()
    tracks = report.tracks_dataframe()
    assert len(tracks) == 1 and tracks.filter(like='share_').sum(axis=1).iloc[0] == pytest.approx(1.)
