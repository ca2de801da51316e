"""No command writes over a file that is not its own output (issue 35, items 1-6): every output path of a run is
reserved before the work (:class:`~timm_fer.utils.OutputPlan`) against the inputs, the files already on disk and the
other outputs, and named ``STEM.KIND.EXT`` / ``STEM_faceN.KIND.EXT`` so an output folder may be an input folder.

Each test takes the md5 of every file there before a command and compares after. Photos and videos are made here;
``--aligned --backend torch`` runs the shipped weights without the face detector or the ONNX cache.
"""
import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest
from drawn_faces import draw_face
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from timm_fer.cli import main
from timm_fer.errors import ConfigError
from timm_fer.inference.predict import plan_photo_outputs
from timm_fer.inference.stream import plan_live_outputs
from timm_fer.inference.video import plan_video_outputs
from timm_fer.utils import OutputPlan
from timm_fer.utils.outputs import PACKAGE_FOLDER

FAST = ['--aligned', '--backend', 'torch', '--threads', '1']
KINDS = {'annotated': '--save-annotated', 'timeline': '--timeline', 'viz': '--save-viz', 'crops': '--save-crops',
         'rows': '--output'}

pytestmark = pytest.mark.usefixtures('offline_hub')


def md5s(*roots: Path) -> Dict[Path, str]:
    """The md5 of every file below ``roots``."""
    return {path: hashlib.md5(path.read_bytes()).hexdigest()
            for root in roots for path in sorted(root.rglob('*')) if path.is_file()}


def write_photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_face(64).save(path)
    return path


def write_video(path: Path, frames: int = 3) -> Path:
    """A few MJPEG frames of the drawn face (an aligned face in each)."""
    av = pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('mjpeg', rate=5)
        stream.width = stream.height = 64
        stream.pix_fmt = 'yuvj420p'
        for index in range(frames):
            frame = av.VideoFrame.from_image(draw_face(64))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def predict(*args: str) -> int:
    return main(['predict', *map(str, args), *FAST, '--min-track', '0'])


def assert_kept(before: Dict[Path, str]) -> None:
    """Every file of ``before`` is still there, unchanged."""
    assert {path: digest for path, digest in md5s(*{p.parent for p in before}).items() if path in before} == before


def test_item1_annotated_copies_into_the_input_folder_keep_the_photos_and_the_video(tmp_path, capsys):
    folder = tmp_path / 'd'
    write_photo(folder / 'a.png'), write_photo(folder / 'b.jpg'), write_video(folder / 'portrait.avi')
    before = md5s(folder)
    assert predict(folder, '--save-annotated', folder) == 0
    assert_kept(before)
    new = sorted(p.name for p in folder.iterdir() if p not in before)
    assert new == ['a.annotated.png', 'b.annotated.jpg', 'portrait.annotated.mp4']
    assert predict(folder / 'portrait.avi', '--save-annotated', folder) == 2  # its copy is there now
    assert 'portrait.annotated.mp4 already exists; pass --overwrite' in capsys.readouterr().err
    assert_kept(md5s(folder))


def test_item2_a_timeline_never_replaces_a_photo_of_the_same_name(tmp_path):
    folder = tmp_path / 'v2'
    write_video(folder / 'portrait.avi'), write_photo(folder / 'portrait.png')
    before = md5s(folder)
    assert predict(folder, '--timeline', folder) == 0
    assert_kept(before)
    assert (folder / 'portrait.timeline.png').is_file()


@pytest.mark.parametrize('flag, kind', [('--save-viz', 'viz'), ('--save-crops', 'crop')])
def test_item3_per_face_pictures_keep_the_users_own_files(tmp_path, flag, kind, capsys):
    folder = tmp_path / 'dv'
    write_photo(folder / 'a.png'), write_photo(folder / 'a_face0.png')
    (folder / 'a_face0.txt').write_text('notes')
    before = md5s(folder)
    assert predict(folder, flag, folder) == 0
    assert_kept(before)
    assert {p.name for p in folder.iterdir() if p not in before} == {f'a_face0.{kind}.png', f'a_face0_face0.{kind}.png'}
    other = tmp_path / 'other'  # a file of the user's named like an output: refused, then replaced on request
    (other / f'a_face0.{kind}.png').parent.mkdir()
    (other / f'a_face0.{kind}.png').write_text('mine')
    capsys.readouterr()
    assert predict(folder / 'a.png', flag, other) == 2
    assert f'{flag}: {other / f"a_face0.{kind}.png"} already exists; pass --overwrite' in capsys.readouterr().err
    assert (other / f'a_face0.{kind}.png').read_text() == 'mine' and len(list(other.iterdir())) == 1
    assert predict(folder / 'a.png', flag, other, '--overwrite') == 0
    assert Image.open(other / f'a_face0.{kind}.png').size[0] > 0


def test_item4_outputs_of_different_kinds_from_inputs_of_one_stem_get_distinct_names(tmp_path):
    video, photo = write_video(tmp_path / 'x' / 'clip.avi'), write_photo(tmp_path / 'z' / 'clip.png')
    out = tmp_path / 'o'
    assert predict(video, photo, '--timeline', out, '--save-annotated', out) == 0
    assert sorted(p.name for p in out.iterdir()) == ['clip.annotated.mp4', 'clip.annotated.png', 'clip.timeline.png']
    with Image.open(out / 'clip.timeline.png') as timeline, Image.open(out / 'clip.annotated.png') as annotated:
        assert timeline.size != annotated.size  # each kind kept its own picture


def test_same_stems_from_two_folders_are_numbered(tmp_path):
    first, second, out = write_photo(tmp_path / 'x' / 'a.png'), write_photo(tmp_path / 'y' / 'a.png'), tmp_path / 'o'
    assert predict(first, second, '--save-viz', out, '--save-annotated', out) == 0
    assert sorted(p.name for p in out.iterdir()) == ['a.annotated.png', 'a_1.annotated.png', 'a_1_face0.viz.png',
                                                      'a_face0.viz.png']


def test_item5_export_writes_over_no_photo_and_never_over_its_checkpoint(tmp_path, capsys):
    photo = write_photo(tmp_path / 'photo.png')
    checkpoint = tmp_path / 'weights.safetensors'
    checkpoint.write_bytes(b'not read: the refusal comes first')
    before = md5s(tmp_path)
    assert main(['export', '--format', 'onnx', '--out', str(photo)]) == 2
    assert f'--out: {photo} already exists; pass --overwrite to replace it' in capsys.readouterr().err
    assert main(['export', '--format', 'onnx', '--checkpoint', str(checkpoint), '--out', str(checkpoint),
                 '--overwrite']) == 2
    assert f'{checkpoint} is an input of this run; timm-fer never writes over an input, even with --overwrite' in \
        capsys.readouterr().err
    assert md5s(tmp_path) == before


def test_item6_eval_writes_in_the_current_folder_not_beside_the_checkpoint(tmp_path, monkeypatch, capsys):
    from helpers import write_toy_ferplus
    data = write_toy_ferplus(tmp_path / 'data', lambda label: [10 if i == label else 0 for i in range(10)], 2)
    checkpoint = tmp_path / 'weights'
    shutil.copytree(PACKAGE_FOLDER / 'weights' / 'transfer_fer_compact.ferplus', checkpoint)
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    before = md5s(checkpoint, data)
    argv = ['eval', str(checkpoint), '--data-dir', str(data), '--dataset', 'ferplus', '--workers', '0']
    assert main(argv) == 0
    assert md5s(checkpoint, data) == before
    assert sorted(p.name for p in work.iterdir()) == ['eval-ferplus-valid.json', 'eval-ferplus-valid.png']
    results = md5s(work)
    capsys.readouterr()
    assert main(argv) == 2  # the results of the last run are not replaced without --overwrite
    assert 'eval-ferplus-valid.json already exists; pass --overwrite to replace it, or choose another --output ' \
           'folder' in capsys.readouterr().err
    assert md5s(work) == results
    assert main(argv + ['--output', str(checkpoint / 'results')]) == 0  # a new folder in it: nothing replaced
    assert_kept(before)


def test_no_output_path_inside_the_installed_package_replaces_its_files(tmp_path):
    sample = PACKAGE_FOLDER / 'assets' / 'astronaut.png'
    plan = OutputPlan(overwrite=True)
    with pytest.raises(ConfigError, match='is an input of this run'):
        plan.file(sample, '--output')
    assert plan.file(tmp_path / 'r.json', '--output') == tmp_path / 'r.json'


@pytest.mark.slow
@pytest.mark.parametrize('where', ['output folder', 'input folder'])
@pytest.mark.parametrize('first, second', list(itertools.combinations(KINDS, 2)))
def test_collision_matrix_every_pair_of_output_kinds_in_one_folder(tmp_path, first, second, where):
    """Two kinds of output into one folder (a new one, or the inputs' own), from a photo and a video of one stem
    beside files named as the outputs were before (``clip.png``, ``clip_face0.png``): all kept, all written."""
    inputs = tmp_path / 'in'
    write_photo(inputs / 'clip.png'), write_video(inputs / 'clip.avi'), write_photo(inputs / 'clip_face0.png')
    (inputs / 'clip.mp4.txt').write_text('notes')
    out = inputs if where == 'input folder' else tmp_path / 'out'
    before = md5s(inputs)
    flags: List[str] = []
    for kind in (first, second):
        flags += [KINDS[kind], str(out / 'rows.json') if kind == 'rows' else str(out)]
    assert predict(inputs, *flags) == 0
    assert_kept(before)
    expected = {'annotated': {'clip.annotated.png', 'clip_face0.annotated.png', 'clip.annotated.mp4'},
                'timeline': {'clip.timeline.png'}, 'rows': {'rows.json', 'rows_video.json'},
                'viz': {'clip_face0.viz.png', 'clip_face0_face0.viz.png'},
                'crops': {'clip_face0.crop.png', 'clip_face0_face0.crop.png'}}
    assert {p.name for p in out.iterdir() if p not in before} == expected[first] | expected[second]


def test_live_outputs_are_planned_before_the_source_opens(tmp_path):
    (tmp_path / 'rows.csv').write_text('mine')
    with pytest.raises(ConfigError, match='rows.csv already exists; pass --overwrite'):
        plan_live_outputs(OutputPlan(), 'camera:0', tmp_path / 'rows.csv', tmp_path)
    timeline = plan_live_outputs(OutputPlan(overwrite=True), 0, tmp_path / 'rows.csv', tmp_path)
    assert timeline == tmp_path / 'camera_0.timeline.png'
    assert (tmp_path / 'rows.csv').read_text() == 'mine'  # planning writes nothing


def test_a_run_refused_writes_nothing_at_all(tmp_path, capsys):
    """The refusal of the last output comes before the first is written, and before the model loads."""
    inputs, out = tmp_path / 'in', tmp_path / 'out'
    write_photo(inputs / 'a.png'), write_video(inputs / 'b.avi')
    out.mkdir()
    (out / 'b.timeline.png').write_text('mine')
    assert predict(inputs, '--save-annotated', out, '--save-viz', out, '--output', out / 'r.csv',
                   '--timeline', out) == 2
    assert 'b.timeline.png already exists' in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ['b.timeline.png'] and not (out / 'r.csv').exists()


STEMS = ['a', 'a_1', 'a_face0', 'a.annotated', 'clip', 'clip_face0.viz', 'a_face0.crop']


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=st.lists(st.tuples(st.sampled_from(STEMS), st.sampled_from(['.png', '.jpg', '.avi']),
                                 st.sampled_from(['d0', 'd1'])), min_size=1, max_size=6, unique=True),
       folders=st.fixed_dictionaries({kind: st.sampled_from(['d0', 'd1', 'out', None])
                                      for kind in ('annotated', 'timeline', 'viz', 'crops', 'rows')}),
       existing=st.lists(st.sampled_from(['a.annotated.png', 'a_face0.viz.png', 'clip.timeline.png', 'rows.csv',
                                          'a_1.annotated.jpg', 'clip_face0.crop.png']), max_size=3, unique=True),
       overwrite=st.booleans())
def test_property_no_file_changes_and_every_output_is_distinct(inputs, folders, existing, overwrite):
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        files = []
        for stem, suffix, folder in inputs:
            (root / folder).mkdir(exist_ok=True)
            files.append(root / folder / f'{stem}{suffix}')
            files[-1].write_bytes(f'{folder}/{stem}{suffix}'.encode())
        (root / 'out').mkdir()
        for name in existing:
            (root / 'out' / name).write_bytes(name.encode())
        before = md5s(root)
        photos = [f for f in files if f.suffix != '.avi']
        videos = [f for f in files if f.suffix == '.avi']
        plan = OutputPlan(files, overwrite=overwrite)
        where = {kind: root / folder if folder else None for kind, folder in folders.items()}
        try:
            if where['rows'] is not None:
                plan.file(where['rows'] / 'rows.csv', '--output')
            planned = plan_photo_outputs(plan, photos, where['viz'], where['crops'], where['annotated'])
            video_outputs = plan_video_outputs(plan, videos, where['timeline'], where['annotated'])
        except ConfigError:
            assert md5s(root) == before  # refused: nothing written
            return
        paths = list(plan.paths)
        for names in (planned.viz, planned.crops):
            paths += [names.face_path(photo, face) for photo in photos for face in range(3)] if names else []
        assert len(set(paths)) == len(paths), 'two outputs share a path'
        assert not set(paths) & set(files), 'an output is an input'
        assert set(paths) >= set(planned.annotated.values()) | set(video_outputs.timelines.values())
        if not overwrite:
            assert not [p for p in paths if p.exists()], 'an output replaces a file already there'
        plan.create_folders()
        for path in paths:
            path.write_bytes(b'output')
        after = md5s(root)
        assert {p: after[p] for p in files} == {p: before[p] for p in files}
        if not overwrite:
            assert {p: after[p] for p in before} == before


@settings(max_examples=30, deadline=None)
@given(stems=st.lists(st.from_regex(r'[a-z]{1,3}', fullmatch=True), min_size=1, max_size=5, unique=True))
def test_property_plain_names_in_their_own_folder_are_always_planned(stems):
    """Photos and videos without a kind in their names, outputs of every kind into their own folder: never
    refused, and planning writes nothing."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        photos, videos = [root / f'{stem}.png' for stem in stems], [root / f'{stem}.avi' for stem in stems]
        for file in photos + videos:
            file.write_bytes(b'input')
        plan = OutputPlan(photos + videos)
        planned = plan_photo_outputs(plan, photos, root, root, root)
        plan_video_outputs(plan, videos, root, root)
        assert len(set(plan.paths)) == 3 * len(stems) and planned.viz.face_path(photos[0], 0).parent == root
        assert sorted(os.listdir(root)) == sorted(f.name for f in photos + videos)
