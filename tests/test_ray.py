"""``timm-fer predict --engine ray`` and :mod:`timm_fer.inference.ray_batch`: the local run's rows from a pool of Ray
actors, on a local cluster of 2 CPUs.

The tests that start Ray are slow (the cluster, then each actor loading the model, take tens of seconds on two
cores); those of the options and of a machine without Ray are not.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image

from timm_fer.cli import main
from timm_fer.faces import read_image
from timm_fer.inference import SAMPLE_IMAGE

pytestmark = pytest.mark.usefixtures('offline_hub')

RUN = ['--backend', 'torch', '--threads', '1']
"""The model options of every run here: the torch backend (no ONNX export per actor), one thread per actor."""


@pytest.fixture(scope='module')
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the module's tests (the ray extra; skipped without it)."""
    ray = pytest.importorskip('ray', reason='the ray extra is not installed: pip install -e ".[ray]"')
    pytest.importorskip('pyarrow', reason='the ray extra is not installed: pip install -e ".[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def write_photos(folder: Path, count: int) -> List[Path]:
    """``count`` variants of the sample portrait (turned a little each), one face each."""
    folder.mkdir(parents=True, exist_ok=True)
    portrait = read_image(SAMPLE_IMAGE)
    paths = []
    for i in range(count):
        path = folder / f'portrait{i}.png'
        portrait.rotate(4 * i, fillcolor=(90, 120, 160)).save(path)
        paths.append(path)
    return paths


def media_folder(root: Path) -> Path:
    """Three portraits, a blank image, a broken file and two short videos of the portrait."""
    from test_video import portrait_frames, write_video

    folder = root / 'media'
    write_photos(folder, 3)
    Image.new('RGB', (160, 160), 'white').save(folder / 'blank.png')
    (folder / 'broken.jpg').write_bytes(b'not a JPEG')
    write_video(folder / 'clip0.mp4', portrait_frames(12))
    write_video(folder / 'clip1.webm', portrait_frames(10, size=(288, 224)))
    return folder


def read_rows(path: Path) -> List[Dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.mark.slow
def test_ray_rows_equal_the_local_runs_on_photos_videos_and_a_bad_file(ray_cluster, detector, tmp_path, capsys,
                                                                       monkeypatch):
    pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    from timm_fer.faces.io import find_media
    from timm_fer.inference import load_classifier
    from timm_fer.inference.predict import predict
    from timm_fer.inference.video import predict_video

    media_folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative names, as a user types them
    output = Path('rows.parquet')
    assert main(['predict', 'media', '--engine', 'ray', '--output', str(output), *RUN]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f'wrote {len(read_rows(output))} rows') and 'of 7 inputs to rows.parquet' in summary
    rows = read_rows(output)

    classifier = load_classifier(backend='torch', threads=1)
    images, videos, _ = find_media(['media'])
    photos = predict(images, classifier, detector=detector)
    clips = predict_video(videos, classifier, detector=detector)
    faces = {(r['file'], r['face']): r for r in rows if r['kind'] == 'photo' and r['skipped'] is None}
    assert sorted(faces) == sorted((f.file, f.face) for f in photos.faces) and len(faces) == 3
    for local in photos.faces:
        row = faces[local.file, local.face]
        assert (row['x0'], row['y0'], row['x1'], row['y1']) == local.box and row['expression'] == local.expression
        assert row['detector_score'] == pytest.approx(local.detector_score, abs=1e-4)
        assert {k: row[f'p_{k}'] for k in local.probabilities} == pytest.approx(local.probabilities, abs=1e-4)
    skipped = {(r['file'], r['skipped']) for r in rows if r['kind'] == 'photo' and r['skipped'] is not None}
    assert skipped == {(s.file, s.reason) for s in photos.skipped}
    assert {file for file, _ in skipped} == {str(Path('media/blank.png')), str(Path('media/broken.jpg'))}
    frames = {(r['file'], r['frame'], r['track']): r for r in rows if r['kind'] == 'video' and r['skipped'] is None}
    assert sorted(frames) == sorted((f.file, f.frame, f.track) for f in clips.faces)
    assert {file for file, _, _ in frames} == {str(v) for v in videos}
    for local in clips.faces:
        row = frames[local.file, local.frame, local.track]
        assert (row['x0'], row['y0'], row['x1'], row['y1']) == local.box and row['time'] == pytest.approx(local.time)
        assert {k: row[f'p_{k}'] for k in local.probabilities} == pytest.approx(local.probabilities, abs=1e-4)


@pytest.mark.slow
def test_a_killed_actor_still_gives_every_input_exactly_once(ray_cluster, tmp_path):
    import ray

    from timm_fer.inference.classifier import ClassifierOptions
    from timm_fer.inference.ray_batch import predict_dataset

    paths = [str(p) for p in write_photos(tmp_path, 8)]
    rows = predict_dataset(ray.data.from_items([{'path': p} for p in paths]), actors=2, files_per_batch=1,
                           classifier_options=ClassifierOptions(backend='torch', threads=1))
    files, killed = [], []
    for table in rows.iter_batches(batch_size=None, batch_format='pyarrow'):
        files += table.column('file').to_pylist()
        if not killed:
            killed = actor_pids()[:1]
            assert killed, 'no Ray actor process found'
            os.kill(killed[0], signal.SIGKILL)
    assert sorted(files) == sorted(paths)
    assert killed[0] not in actor_pids()


def actor_pids() -> List[int]:
    """The processes of this cluster's prediction actors (their titles name the map_batches class)."""
    pids = []
    for entry in Path('/proc').iterdir():
        try:
            if entry.name.isdigit() and b'RayPredictor' in (entry / 'cmdline').read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['rows.jsonl', 'rows.csv', 'parts'])
def test_resume_adds_only_the_missing_inputs(ray_cluster, tmp_path, capsys, name):
    photos = tmp_path / 'photos'
    write_photos(photos, 2)
    output = tmp_path / name
    assert main(['predict', str(photos), '--engine', 'ray', '--output', str(output), '--ray-actors', '1', *RUN]) == 0
    before = output.read_bytes() if output.is_file() else None
    (photos / 'portrait0.png').rename(photos / 'later.png')  # one input gone, one new
    write_photos(tmp_path / 'more', 1)[0].rename(photos / 'portrait0.png')
    assert main(['predict', str(photos), '--engine', 'ray', '--output', str(output), *RUN]) == 2
    assert f'--output {output} exists: pass --resume' in capsys.readouterr().err
    assert before is None or output.read_bytes() == before
    assert main(['predict', str(photos), '--engine', 'ray', '--output', str(output), '--resume', '--ray-actors', '1',
                 *RUN]) == 0
    assert '(2 inputs already there)' in capsys.readouterr().out
    if name.endswith('.jsonl'):
        files = [json.loads(line)['file'] for line in output.read_text().splitlines()]
    elif name.endswith('.csv'):
        import csv
        with output.open(newline='') as f:
            files = [row['file'] for row in csv.DictReader(f)]
    else:
        import pyarrow.dataset
        files = pyarrow.dataset.dataset(output, format='parquet').to_table().column('file').to_pylist()
    assert sorted(files) == sorted(str(photos / n) for n in ('portrait0.png', 'portrait1.png', 'later.png'))


def test_an_existing_output_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    pytest.importorskip('ray', reason='the ray extra is not installed: pip install -e ".[ray]"')
    import timm_fer.inference.ray_batch as ray_batch
    monkeypatch.setattr(ray_batch, 'find_media', lambda *args, **kwargs: pytest.fail('the inputs were listed'))
    write_photos(tmp_path / 'photos', 1)
    output = tmp_path / 'rows.parquet'
    output.write_bytes(b'earlier rows')
    for flags, message in (
            ([], f'--output {output} exists: pass --resume to add the inputs not in it yet, or --overwrite to '
                 f'replace it.'),
            (['--resume', '--overwrite'], '--resume adds to the output and --overwrite replaces it: choose one.'),
            (['--save-viz', str(tmp_path / 'viz'), '--top-k', '2'],
             '--save-viz, --top-k apply to the local run, not to --engine ray (it writes rows only); leave them out, '
             'or run without --engine ray.'),
            (['--ray-actors', '0'], '--ray-actors must be an integer >= 1 (or unset), got 0.')):
        assert main(['predict', str(tmp_path / 'photos'), '--engine', 'ray', '--output', str(output), *flags]) == 2
        assert capsys.readouterr().err.strip() == f'timm-fer predict: error: {message}'
    assert main(['predict', str(tmp_path / 'photos'), '--engine', 'ray', '--output', str(tmp_path / 'rows.txt')]) == 2
    assert '--output with --engine ray is a .parquet, .csv, .jsonl file or a folder' in capsys.readouterr().err
    assert output.read_bytes() == b'earlier rows'


def test_the_package_imports_without_ray_and_the_engine_says_how_to_install_it(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "sys.modules['pyarrow'] = None\n"
        "import timm_fer, timm_fer.inference, timm_fer.inference.ray_batch, timm_fer.serve\n"
        "from timm_fer.cli import main\n"
        "sys.exit(main(['predict', 'photos', '--engine', 'ray', '--output', 'rows.parquet']))\n")
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        'timm-fer predict: error: --engine ray needs Ray Data (ray, pyarrow missing): pip install "timm-fer[ray]"']
    assert not (tmp_path / 'rows.parquet').exists()


def test_importing_the_package_loads_no_ray():
    script = "import sys, timm_fer.inference, timm_fer.cli; print('ray' in sys.modules or 'pyarrow' in sys.modules)"
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == 'False', done.stderr

