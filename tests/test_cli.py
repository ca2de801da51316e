"""The `timm-fer` command line and the runner for timm's own scripts."""
import subprocess
import sys
import textwrap

import pytest

from timm_fer.cli import COMMANDS, main
from timm_fer.models import registered_models
from timm_fer.run_timm_script import main as run_timm_script


def imported_modules(argv: list) -> tuple:
    """The exit status of ``python -m timm_fer ARGV`` and the top-level modules it imported (from -X importtime)."""
    result = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'timm_fer', *argv], capture_output=True,
                            text=True, timeout=120)
    names = {line.rpartition('|')[2].strip().split('.')[0] for line in result.stderr.splitlines()
             if line.startswith('import time:')}
    return result.returncode, names


@pytest.mark.parametrize('argv, status', [([], 0), (['--help'], 0), (['predcit'], 2), (['predict', '--bogus-flag'], 2),
                                          (['train', '--dataset', 'rafdb'], 2),
                                          *(([command, '--help'], 0) for command in COMMANDS),
                                          # an option out of range is refused before the command imports torch
                                          (['predict', '--fps', '0'], 2), (['predict', 'a.png', '--top-k', '0'], 2),
                                          (['serve', '--port', '70000'], 2), (['models', '--batch-size', '0'], 2),
                                          (['eval', 'run/best.pth', '--data-dir', 'd', '--workers', '-1'], 2),
                                          (['export', '--format', 'onnx', '--out', 'm.onnx', '--opset', '1'], 2),
                                          (['train', '--dataset', 'rafdb', '--data-dir', 'd', '--lr', '-1'], 2)])
def test_help_and_argument_errors_import_neither_torch_nor_timm(argv, status):
    returncode, names = imported_modules(argv)
    assert returncode == status and 'timm_fer' in names
    assert not names & {'torch', 'timm', 'torchvision', 'PIL', 'cv2'}, 'the command line imported torch too early'


def test_every_sub_command_parser_builds_without_torch():
    """Building every sub-command's parser, as ``timm-fer COMMAND --help`` does, imports no heavy module."""
    code = textwrap.dedent('''
        import sys
        sys.argv[0] = 'timm-fer'  # as the installed command, so importing timm_fer registers no models
        from timm_fer.cli import COMMANDS, build_parser
        parser = build_parser(COMMANDS)
        args = parser.parse_args(['predict', 'a.png', '--backend', 'onnxruntime', '--fps', '2'])
        assert args.backend == 'onnxruntime' and args.fps == 2 and args.min_track > 0
        assert parser.parse_args(['train', '--dataset', 'rafdb', '--data-dir', 'd']).pretrained_tag
        print(sorted({'torch', 'timm', 'torchvision', 'PIL', 'cv2'} & set(sys.modules)))
    ''')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]', f'building the parsers imported {result.stdout.strip()}'


@pytest.mark.slow
def test_models_command_lists_every_model_with_size_and_prediction(capsys):
    assert main(['models', '--batch-size', '1']) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(registered_models())
    assert rows['transfer_fer_ir50'][1:3] == ['65.22', '15.28']
    label = rows['transfer_fer_ir50'][5]
    assert label in ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
    assert lines[0].endswith('weights (pretrained tags)')
    assert next(line for line in lines if line.startswith('transfer_fer_compact ')).endswith(
        'ferplus (shipped), fer2013 (shipped)')
    assert next(line for line in lines if line.startswith('transfer_fer_ir50 ')).endswith(
        'rafdb (not published), ferplus (not published), ms1m_in1k (not published)')


@pytest.mark.slow
def test_output_piped_into_a_reader_that_left_ends_without_a_traceback():
    process = subprocess.Popen([sys.executable, '-m', 'timm_fer', 'models', '--batch-size', '1'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `timm-fer models | head -1` once head has its line
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1 and b'Traceback' not in stderr and b'BrokenPipeError' not in stderr, stderr


def test_ctrl_c_ends_a_command_with_one_line_and_status_130(monkeypatch, capsys):
    import timm_fer.cli.models

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(timm_fer.cli.models, '_models', interrupted)
    assert main(['models']) == 130
    assert capsys.readouterr().err == 'timm-fer models: interrupted\n'


def test_timm_script_runner_registers_models_and_passes_arguments(tmp_path):
    """A stand-in for timm's train.py: builds the model the way train.py does, then takes an optimiser step."""
    script = tmp_path / 'train.py'
    script.write_text(textwrap.dedent('''
        import sys
        import timm
        import torch
        from timm.data import resolve_data_config
        from timm.optim import create_optimizer_v2

        name, out = sys.argv[1], sys.argv[2]
        model = timm.create_model(
            name, pretrained=False, in_chans=3, num_classes=5, drop_rate=0.1, drop_path_rate=0.1,
            drop_block_rate=None, global_pool=None, bn_momentum=None, bn_eps=None, scriptable=None,
            checkpoint_path='', stem_layers=(1, 1, 1), stem_channels=(16, 16, 32), embed_dim=32, depth=2,
            num_heads=2)
        config = resolve_data_config({}, model=model)
        model.set_grad_checkpointing(True)
        model = model.to(memory_format=torch.channels_last).train()
        optimizer = create_optimizer_v2(model, opt='sgd', lr=0.1, momentum=0.9, weight_decay=0.05,
                                        layer_decay=0.65)
        images = torch.randn(4, *config['input_size']).to(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(images), torch.arange(4))
        loss.backward()
        optimizer.step()
        open(out, 'w').write(f"{config['input_size']} {len(optimizer.param_groups)} {loss.item():.4f}")
    '''))
    out = tmp_path / 'out.txt'
    assert run_timm_script([str(script), 'transfer_fer_ir50', str(out)]) == 0
    input_size, groups, loss = out.read_text().rsplit(' ', 2)
    assert input_size == '(3, 112, 112)'
    assert int(groups) > 4  # layer decay split the parameters into per-block groups via group_matcher
    assert float(loss) > 0


def test_timm_script_runner_reports_a_missing_script(tmp_path, capsys):
    assert run_timm_script([str(tmp_path / 'train.py')]) == 2
    assert 'no script at' in capsys.readouterr().err


@pytest.mark.parametrize('module', ['timm_fer', 'timm_fer.run_timm_script'])
def test_modules_run_with_help(module):
    result = subprocess.run([sys.executable, '-m', module, '--help'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and 'timm' in result.stdout


def test_bare_command_prints_help_and_runs_nothing(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: timm-fer') and 'models' in out and 'params (M)' not in out


@pytest.mark.parametrize('module', ['timm_fer.train', 'timm_fer.evaluate'])
def test_torchrun_entry_modules_still_run(module):
    result = subprocess.run([sys.executable, '-m', module, '--help'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f'python -m {module}' in result.stdout
