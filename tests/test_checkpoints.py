"""Checkpoints of third-party training scripts load everywhere: timm's ``train.py`` (written by timm's own checkpoint
saver, or by the real script when a clone of timm is at hand), PyTorch Lightning, DDP, ``torch.compile`` and Hugging
Face Trainer output; label names for weights that carry none; hostile pickles inside each shape refused."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict

import pytest
import safetensors.torch
import timm
import torch
from PIL import Image

from timm_fer.cli import main
from timm_fer.errors import CheckpointMismatchError, ConfigError, PretrainedWeightsError
from timm_fer.hub import load_model, read_checkpoint, read_class_map
from timm_fer.inference.predict import SAMPLE_IMAGE

CLASSES = ('happy', 'neutral')
MODEL = 'transfer_fer_compact'
TIMM_REPO = os.environ.get('TIMM_REPO')
"""A clone of huggingface/pytorch-image-models, whose train.py the slow round trip runs (tests/README.md)."""

pytestmark = pytest.mark.usefixtures('offline_hub', 'one_torch_thread')


def write_faces(root: Path, per_class: int = 2) -> Path:
    """timm's ImageFolder layout, ``train`` and ``validation`` splits of two classes, of small aligned faces: the
    sample portrait's face, mirrored for one class."""
    face = Image.open(SAMPLE_IMAGE).convert('RGB').crop((66, 56, 159, 177)).resize((48, 48))
    for split in ('train', 'validation'):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                image = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if label else face
                image.rotate(5 * i).save(folder / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def faces(tmp_path_factory) -> Path:
    return write_faces(tmp_path_factory.mktemp('faces') / 'data')


@pytest.fixture(scope='module')
def trained() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(MODEL, num_classes=len(CLASSES)).eval()


def logits_of(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.inference_mode():
        return model(torch.randn(2, 3, 48, 48))


def train_py_args(data_dir: Path, **changes) -> argparse.Namespace:
    """The arguments of timm's train.py that a checkpoint's ``args`` carries and timm-fer reads (the script saves the
    whole parsed Namespace)."""
    args = dict(model=MODEL, data_dir=str(data_dir), dataset='', train_split='train', val_split='validation',
                class_map='', num_classes=len(CLASSES), model_kwargs={}, in_chans=None, input_size=None, img_size=None,
                mean=None, std=None, interpolation='', crop_pct=None, epochs=1, lr=0.01, model_ema=True)
    return argparse.Namespace(**dict(args, **changes))


def save_like_train_py(model: torch.nn.Module, out: Path, args: argparse.Namespace) -> Path:
    """``model_best.pth.tar`` as timm's train.py writes it: through timm's own CheckpointSaver, with the parsed
    arguments, an optimiser and a weight average (EMA) whose weights differ from the model's."""
    ema = timm.utils.ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for value in ema.module.parameters():
            value.mul_(0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    out.mkdir(parents=True, exist_ok=True)
    saver = timm.utils.CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(out),
                                       recovery_dir=str(out))
    saver.save_checkpoint(epoch=0, metric=50.0)
    return out / 'model_best.pth.tar'


def run_train_py(data_dir: Path, out: Path) -> Path:
    """Fine-tune with timm's real train.py (from ``TIMM_REPO``) for one epoch on the CPU, through timm-fer's runner."""
    command = [sys.executable, '-m', 'timm_fer.run_timm_script', str(Path(TIMM_REPO) / 'train.py'),
               '--data-dir', str(data_dir), '--model', MODEL, '--num-classes', str(len(CLASSES)), '--device', 'cpu',
               '--epochs', '1', '--batch-size', '2', '--workers', '0', '--warmup-epochs', '0', '--lr', '0.01',
               '--model-ema', '--output', str(out), '--experiment', 'fer']
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / 'fer' / 'model_best.pth.tar'


WRITERS = {'timm checkpoint saver': save_like_train_py,
           'timm train.py': lambda model, out, args: run_train_py(Path(args.data_dir), out)}


@pytest.fixture(params=list(WRITERS))
def train_py_checkpoint(request, faces, trained, tmp_path) -> Path:
    if request.param == 'timm train.py' and not (TIMM_REPO and (Path(TIMM_REPO) / 'train.py').is_file()):
        pytest.skip('set TIMM_REPO to a clone of huggingface/pytorch-image-models to run its real train.py')
    return WRITERS[request.param](trained, tmp_path / 'output', train_py_args(faces))


def predicted_labels(argv, out: Path) -> Dict:
    assert main(['predict', *argv, '--aligned', '--backend', 'torch', '--output', str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_a_train_py_checkpoint_predicts_evaluates_pushes_and_exports(train_py_checkpoint, faces, tmp_path, capsys):
    report = predicted_labels([str(faces / 'validation'), '--checkpoint', str(train_py_checkpoint)], tmp_path / 'r.json')
    assert report['labels'] == list(CLASSES) and report['model'] == MODEL
    assert len(report['faces']) == 2 * len(CLASSES)  # one row per face
    assert main(['eval', str(train_py_checkpoint), '--data-dir', str(faces), '--dataset', 'folder', '--split',
                 'validation', '--workers', '0', '--output', str(tmp_path / 'eval')]) == 0
    folder = tmp_path / 'hub' / 'fer'
    assert main(['push', str(folder), '--checkpoint', str(train_py_checkpoint), '--dry-run']) == 0
    assert 'would be pushed to https://huggingface.co/timm-fer/transfer_fer_compact' in capsys.readouterr().out
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == MODEL and config['pretrained_cfg']['label_names'] == list(CLASSES)
    pushed, _ = load_model(checkpoint=folder)
    assert torch.equal(logits_of(pushed), logits_of(load_model(checkpoint=train_py_checkpoint)[0]))
    pytest.importorskip('onnxscript')
    assert main(['export', '--checkpoint', str(train_py_checkpoint), '--format', 'onnx',
                 '--out', str(tmp_path / 'fer.onnx')]) == 0
    assert f'of {MODEL}, weights: checkpoint {train_py_checkpoint}' in capsys.readouterr().out


def test_train_py_checkpoint_names_its_model_classes_and_weight_average(faces, trained, tmp_path):
    path = save_like_train_py(trained, tmp_path / 'output', train_py_args(faces))
    checkpoint = read_checkpoint(path)
    assert checkpoint.model_name == MODEL and checkpoint.labels == CLASSES and checkpoint.ema
    model, source = load_model(checkpoint=path)
    assert source == f'checkpoint {path}' and list(model.pretrained_cfg['label_names']) == list(CLASSES)
    assert torch.equal(logits_of(model), logits_of(trained))
    averaged, _ = load_model(checkpoint=path, use_ema=True)
    ema = timm.create_model(MODEL, num_classes=2)
    ema.load_state_dict(torch.load(path, weights_only=False)['state_dict_ema'])  # the test's own file: trusted
    assert torch.equal(logits_of(averaged), logits_of(ema.eval()))
    assert not torch.equal(logits_of(averaged), logits_of(model))


def test_train_py_classes_come_from_its_class_map_else_label_names_else_generic_names(faces, trained, tmp_path,
                                                                                      capsys):
    class_map = tmp_path / 'classes.txt'
    class_map.write_text('smile\ncalm\n')
    mapped = save_like_train_py(trained, tmp_path / 'mapped', train_py_args(faces, class_map=str(class_map)))
    assert list(load_model(checkpoint=mapped)[0].pretrained_cfg['label_names']) == ['smile', 'calm']
    gone = save_like_train_py(trained, tmp_path / 'gone', train_py_args(tmp_path / 'deleted-data'))
    assert read_checkpoint(gone).labels is None
    report = predicted_labels([str(faces / 'validation'), '--checkpoint', str(gone)], tmp_path / 'generic.json')
    assert report['labels'] == ['class_0', 'class_1']
    assert 'name none of their 2 classes, so they are called class_0 to class_1' in capsys.readouterr().err
    named = predicted_labels([str(faces / 'validation'), '--checkpoint', str(gone), '--label-names', 'joy', 'calm'],
                             tmp_path / 'named.json')
    assert named['labels'] == ['joy', 'calm']
    from_map = predicted_labels([str(faces / 'validation'), '--checkpoint', str(gone), '--class-map', str(class_map)],
                                tmp_path / 'map.json')
    assert from_map['labels'] == ['smile', 'calm']
    with pytest.raises(ConfigError, match='3 label names .* for a model of 2 classes'):
        load_model(checkpoint=gone, label_names=['a', 'b', 'c'])
    tagged, _ = load_model(f'{MODEL}.ferplus', gone)  # an 8-class tag's names never name a 2-class head
    assert list(tagged.pretrained_cfg['label_names']) == ['class_0', 'class_1']


def test_a_class_map_must_name_each_label_once(tmp_path):
    (tmp_path / 'classes.txt').write_text('a\nb\n')
    assert read_class_map(tmp_path / 'classes.txt') == ('a', 'b')
    with pytest.raises(ConfigError, match='cannot read the class map'):
        read_class_map(tmp_path / 'missing.txt')
    (tmp_path / 'twice.txt').write_text('a\na\n')
    with pytest.raises(ConfigError, match='one name each'):
        read_class_map(tmp_path / 'twice.txt')


def test_ema_is_refused_where_the_file_holds_no_average(trained, tmp_path):
    torch.save(trained.state_dict(), tmp_path / 'plain.pth')
    with pytest.raises(PretrainedWeightsError, match='holds no weight average'):
        load_model(MODEL, tmp_path / 'plain.pth', use_ema=True)


def prefixed(state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def hf_trainer_folder(weights_file: str, config: Dict = None) -> Callable[[Dict, Path], Path]:
    """A Hugging Face Trainer output folder: the wrapping module's weights (``model.`` prefix), and a config."""
    def write(state_dict: Dict[str, torch.Tensor], folder: Path) -> Path:
        folder.mkdir()
        wrapped = prefixed(state_dict, 'timm_model.' if config else 'model.')
        if weights_file.endswith('.safetensors'):
            safetensors.torch.save_file(wrapped, folder / weights_file)
        else:
            torch.save(wrapped, folder / weights_file)
        if config:
            (folder / 'config.json').write_text(json.dumps(config))
        (folder / 'trainer_state.json').write_text('{}')
        return folder
    return write


def saved(payload: Callable[[Dict], Dict], name: str = 'weights.pth') -> Callable[[Dict, Path], Path]:
    def write(state_dict: Dict[str, torch.Tensor], folder: Path) -> Path:
        folder.mkdir()
        torch.save(payload(state_dict), folder / name)
        return folder / name
    return write


SHAPES = {
    'plain state dict': saved(lambda sd: sd),
    'lightning': saved(lambda sd: {'state_dict': prefixed(sd, 'model.'), 'epoch': 0, 'global_step': 4,
                                   'pytorch-lightning_version': '2.4.0', 'hyper_parameters': {'lr': 0.01},
                                   'optimizer_states': [], 'lr_schedulers': [], 'loops': {}, 'callbacks': {}},
                       'epoch=0-step=4.ckpt'),
    'lightning, other wrapper': saved(lambda sd: {'state_dict': dict(prefixed(sd, 'net.'),
                                                                     **{'criterion.weight': torch.ones(2)})}),
    'ddp': saved(lambda sd: {'model': prefixed(sd, 'module.')}),
    'torch.compile': saved(lambda sd: prefixed(sd, '_orig_mod.')),
    'ddp under torch.compile': saved(lambda sd: prefixed(sd, '_orig_mod.module.')),
    'hf trainer, safetensors': hf_trainer_folder('model.safetensors'),
    'hf trainer, bin': hf_trainer_folder('pytorch_model.bin'),
    'hf trainer, timm wrapper': hf_trainer_folder('model.safetensors', dict(
        architecture=MODEL, model_type='timm_wrapper', num_labels=2, id2label={'0': 'smile', '1': 'calm'})),
}


@pytest.mark.parametrize('shape', list(SHAPES))
def test_each_shape_loads_and_predicts_as_the_state_dict_it_wraps(shape, trained, tmp_path):
    path = SHAPES[shape](trained.state_dict(), tmp_path / 'saved')
    model, _ = load_model(MODEL, path)
    assert torch.equal(logits_of(model), logits_of(trained))
    names = ('smile', 'calm') if 'wrapper' in shape and 'hf' in shape else ('class_0', 'class_1')
    assert list(model.pretrained_cfg['label_names']) == list(names)


def test_weights_under_two_prefixes_are_refused(trained, tmp_path):
    state_dict = dict(prefixed(trained.state_dict(), 'student.'), **prefixed(trained.state_dict(), 'teacher.'))
    torch.save({'state_dict': state_dict}, tmp_path / 'two.ckpt')
    with pytest.raises(CheckpointMismatchError, match='under several prefixes \\(student., teacher.\\)'):
        load_model(MODEL, tmp_path / 'two.ckpt')


class _RunsCode:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


HOSTILE = {
    'plain state dict': lambda sd, evil: dict(sd, **{'head.bias': evil}),
    'timm train.py args': lambda sd, evil: {'state_dict': sd, 'arch': MODEL, 'args': evil},
    'timm train.py namespace': lambda sd, evil: {'state_dict': sd, 'args': argparse.Namespace(model=MODEL, bad=evil)},
    'lightning hyper_parameters': lambda sd, evil: {'state_dict': prefixed(sd, 'model.'), 'hyper_parameters': evil},
    'ddp': lambda sd, evil: {'model': prefixed(dict(sd, extra=evil), 'module.')},
    'torch.compile': lambda sd, evil: prefixed(dict(sd, extra=evil), '_orig_mod.'),
}


@pytest.mark.parametrize('shape', [*HOSTILE, 'hf trainer folder'])
def test_hostile_pickles_in_every_shape_are_refused_before_anything_runs(shape, trained, tmp_path, capsys):
    marker = tmp_path / 'ran'
    if shape == 'hf trainer folder':
        path = tmp_path / 'trainer-output'
        path.mkdir()
        torch.save(dict(prefixed(trained.state_dict(), 'model.'), evil=_RunsCode(marker)), path / 'pytorch_model.bin')
    else:
        path = tmp_path / 'hostile.pth.tar'
        torch.save(HOSTILE[shape](trained.state_dict(), _RunsCode(marker)), path)
    with pytest.raises(PretrainedWeightsError, match='arbitrary pickled objects are never loaded') as error:
        load_model(MODEL, path)
    message = str(error.value)
    assert 'GLOBAL posix.system' in message and '\n' not in message
    assert 'safe_globals' not in message and 'weights_only=False' not in message  # no torch call to make
    Image.new('RGB', (48, 48), (120, 90, 60)).save(tmp_path / 'face.png')
    assert main(['predict', '--checkpoint', str(path), '--aligned', str(tmp_path / 'face.png')]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()
