"""``timm-fer eval``: metrics, flip TTA, checkpoint formats, the confusion matrix picture and sharded evaluation."""
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import TINY_TRANSFER, run_torchrun, train_args, write_toy_folder
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision import transforms

from timm_fer.cli import main as cli_main
from timm_fer.cli.eval import main as eval_main
from timm_fer.cli.train import main as train_main
from timm_fer.data import FerImageFolder
from timm_fer.engine.distributed import DistributedEnv
from timm_fer.engine.evaluate import evaluate_model
from timm_fer.engine.metrics import ClassificationReport, confusion_matrix

CPU = DistributedEnv(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> tuple:
    """A toy dataset and the folder of a 2-epoch run of the tiny TransFER on it."""
    root = tmp_path_factory.mktemp('eval')
    data = write_toy_folder(root / 'toy', train_per_class=16, val_per_class=8)
    torch.set_num_threads(1)
    assert train_main(train_args(data, root / 'run', *TINY_TRANSFER, '--epochs', '2', '--lr', '0.01')) == 0
    return data, root / 'run'


def test_report_of_a_confusion_matrix():
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    confusion = confusion_matrix(targets, predictions, 4)
    assert confusion.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    report = ClassificationReport.from_confusion(confusion, ('a', 'b', 'c', 'd'))
    assert report.accuracy == pytest.approx(5 / 7)
    assert report.per_class_accuracy == [0.75, 0.5, 1.0, None]
    assert report.mean_class_accuracy == pytest.approx(0.75)
    table = report.format_table()
    assert 'mean class accuracy' in table and '75.00' in table and 'd' in table.splitlines()[4]
    assert report.to_dict()['per_class_accuracy'] == {'a': 0.75, 'b': 0.5, 'c': 1.0, 'd': None}


class _LeftRight(nn.Module):
    """Logits (left-half brightness, right-half brightness) x 10: flipping an image swaps them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return 10 * torch.stack([x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))], dim=-1)


def test_flip_tta_averages_the_softmax_of_both_views(tmp_path):
    for name in ('left', 'right'):
        (tmp_path / name).mkdir()
        image = Image.new('RGB', (8, 8))
        image.paste((255, 255, 255), (0, 0, 4, 8) if name == 'left' else (4, 0, 8, 8))
        image.save(tmp_path / name / '0.png')
    dataset = FerImageFolder(str(tmp_path), transform=transforms.ToTensor())
    confusion, loss_sum, _ = evaluate_model(_LeftRight(), dataset, CPU, batch_size=2)
    assert confusion.tolist() == [[1, 0], [0, 1]]
    assert loss_sum == pytest.approx(2 * math.log1p(math.exp(-10)), abs=1e-6)
    _, tta_loss_sum, _ = evaluate_model(_LeftRight(), dataset, CPU, batch_size=2, tta_flip=True)
    assert tta_loss_sum == pytest.approx(2 * math.log(2), rel=1e-5)


def test_eval_of_a_train_checkpoint_writes_json_and_png(trained, tmp_path, capsys):
    data, run = trained
    output = tmp_path / 'results'
    assert cli_main(['eval', str(run / 'last.pth'), '--data-dir', str(data), '--workers', '0',
                     '--output', str(output)]) == 0
    printed = capsys.readouterr().out
    assert 'mean class accuracy' in printed and 'on Image folder val' in printed
    result = json.loads((output / 'eval-folder-val.json').read_text())
    last_epoch = json.loads((run / 'metrics.jsonl').read_text().splitlines()[-1])
    assert result['accuracy'] == pytest.approx(last_epoch['eval_accuracy'])
    assert result['loss'] == pytest.approx(last_epoch['eval_loss'], rel=1e-5)
    assert result['classes'] == ['blue', 'green', 'red'] and result['num_images'] == 20
    assert sum(map(sum, result['confusion_matrix'])) == 20
    with Image.open(output / 'eval-folder-val.png') as picture:
        assert picture.format == 'PNG' and picture.width > 300 and picture.height > 300
    assert eval_main([str(run / 'last.pth'), '--data-dir', str(data), '--workers', '0', '--output', str(output),
                      '--tta-flip']) == 0
    flipped = json.loads((output / 'eval-folder-val-flip.json').read_text())
    assert flipped['tta_flip'] and flipped['num_images'] == 20


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_plain_weights_need_the_model_arguments(trained, tmp_path, capsys, suffix):
    data, run = trained
    state = torch.load(run / 'last.pth', weights_only=True)['model']
    weights = tmp_path / f'weights{suffix}'
    if suffix == '.safetensors':
        save_file({key: value.contiguous() for key, value in state.items()}, str(weights))
    else:
        torch.save({'state_dict': {f'module.{key}': value for key, value in state.items()}}, weights)
    argv = [str(weights), '--data-dir', str(data), '--dataset', 'folder', '--workers', '0', '--output', str(tmp_path)]
    assert eval_main(argv + TINY_TRANSFER[2:]) == 0
    result = json.loads((tmp_path / 'eval-folder-val.json').read_text())
    reference = json.loads((run / 'metrics.jsonl').read_text().splitlines()[-1])
    assert result['accuracy'] == pytest.approx(reference['eval_accuracy'])
    capsys.readouterr()
    assert eval_main(argv + ['--overwrite']) == 2  # the results are there: replacing them needs --overwrite
    error = capsys.readouterr().err
    assert f'{weights} does not fit transfer_fer_ir50 (the default; the file does not say which model it holds)' \
        in error and 'Pass --model' in error


def test_wrong_classes_and_missing_checkpoint(trained, tmp_path, capsys):
    data, run = trained
    other = tmp_path / 'other'
    for name in ('angry', 'calm', 'happy'):
        (other / 'val' / name).mkdir(parents=True)
        Image.new('RGB', (8, 8)).save(other / 'val' / name / '0.png')
    assert eval_main([str(run / 'last.pth'), '--data-dir', str(other), '--classes', 'angry,calm,happy']) == 2
    assert "was trained on classes ['blue', 'green', 'red']" in capsys.readouterr().err
    assert eval_main([str(tmp_path / 'none.pth'), '--data-dir', str(data)]) == 2
    assert 'checkpoint not found' in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_evaluation_shards_match_one_process(trained, tmp_path):
    data, run = trained
    returncode, _, err = run_torchrun(['-m', 'timm_fer.evaluate', str(run / 'last.pth'), '--data-dir', str(data),
                                       '--workers', '0', '--output', str(tmp_path)])
    assert returncode == 0, err[-3000:]
    sharded = json.loads((tmp_path / 'eval-folder-val.json').read_text())
    assert eval_main([str(run / 'last.pth'), '--data-dir', str(data), '--workers', '0', '--output',
                      str(tmp_path / 'one')]) == 0
    single = json.loads((tmp_path / 'one' / 'eval-folder-val.json').read_text())
    assert sharded['confusion_matrix'] == single['confusion_matrix']
    assert sharded['loss'] == pytest.approx(single['loss'], rel=1e-5)


def test_eval_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli_main(['eval', '--help'])
    help_text = capsys.readouterr().out
    assert all(option in help_text for option in ('--tta-flip', '--split', '--model-kwargs', '--img-size'))


def test_results_default_to_the_current_folder_and_leave_the_run_folder_alone(trained, tmp_path, monkeypatch):
    data, run = trained
    kept = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    monkeypatch.chdir(tmp_path)
    assert eval_main([str(run / 'best.pth'), '--data-dir', str(data), '--workers', '0']) == 0
    assert Path(tmp_path / 'eval-folder-val.json').is_file()
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == kept


class _Fixed(nn.Module):
    """Logits that pick the class written in each image's first pixel."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * nn.functional.one_hot(x[:, 0, 0, 0].round().long(), self.num_classes).float()


def test_intended_metric_against_the_original_labels():
    """Known answers on a made-up set: accuracy, per-class recall, expressive faces called neutral, a face without an
    original label left out; the majority metrics unchanged."""
    from timm_fer.data import FerDataset
    from timm_fer.engine.evaluate import describe_intended

    classes = ('neutral', 'happiness', 'anger', 'contempt')
    predicted = [0, 0, 1, 2, 2, 0, 3]
    majority = [0, 0, 1, 2, 2, 0, 3]
    original = [0, 2, 1, 2, 0, 2, -1]   # face 1: intended anger, called neutral; face 6 has no original label

    class Made(FerDataset):
        def load_image(self, index):
            return torch.full((1, 2, 2), float(predicted[index]))

    dataset = Made('.', 'valid', classes, majority, original_targets=original)
    confusion, _, original_confusion = evaluate_model(_Fixed(len(classes)), dataset, CPU, batch_size=3)
    assert ClassificationReport.from_confusion(confusion, classes).accuracy == 1
    intended = ClassificationReport.from_confusion(original_confusion, classes)
    assert intended.num_images == 6
    assert intended.accuracy == pytest.approx(3 / 6)
    assert intended.per_class_accuracy == [0.5, 1.0, pytest.approx(1 / 3), None]  # contempt: no original label
    assert intended.mean_class_accuracy == pytest.approx((0.5 + 1 + 1 / 3) / 3)
    assert intended.share_called('neutral') == pytest.approx(2 / 4)  # of 4 expressive faces, 2 called neutral
    line = describe_intended(intended)
    assert 'accuracy 50.00%' in line and 'anger 33.3' in line and 'called neutral 50.0%' in line
    no_original = Made('.', 'valid', classes, majority)
    assert evaluate_model(_Fixed(len(classes)), no_original, CPU, batch_size=3).original_confusion is None
