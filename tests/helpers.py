"""Helpers of the training and evaluation tests: a toy dataset, a tiny TransFER, train flags and torchrun."""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_FERPLUS = Path(os.environ.get('TIMM_FER_FERPLUS_DIR') or REPO_ROOT.parent / 'shared' / 'datasets' / 'ferplus')
"""The real FERPlus data (tests/README.md): ``TIMM_FER_FERPLUS_DIR``, else ``../shared/datasets/ferplus`` beside the
repository; the tests that need it are skipped when it is not there."""
TOY_COLOURS = {'blue': (40, 60, 200), 'green': (50, 190, 60), 'red': (210, 50, 40)}
TINY_TRANSFER = ['--model', 'transfer_fer_ir50', '--img-size', '32', '--model-kwargs', 'stem_layers=(1, 1, 1)',
                 'stem_channels=(16, 16, 32)', 'embed_dim=32', 'depth=1', 'num_heads=2']
"""Flags of a TransFER small enough to train on CPU in seconds."""
TINY = dict(stem_layers=(1, 1, 1), stem_channels=(16, 16, 32), embed_dim=32, depth=2, num_heads=2)
"""Constructor arguments of a TransFER at 112x112 small enough for quick tests (the ``model`` fixture)."""


def write_toy_folder(root: Path, train_per_class: int = 8, val_per_class: int = 4) -> Path:
    """Class-per-folder toy faces whose class is their colour; 'blue' has half the images of the others."""
    rng = random.Random(0)
    for split, count in (('train', train_per_class), ('val', val_per_class)):
        for name, colour in TOY_COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count // 2 if name == 'blue' else count):
                image = Image.new('RGB', (24, 24), tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in colour))
                image.putpixel((rng.randrange(24), rng.randrange(24)), (255, 255, 255))
                image.save(folder / f'{i}.png')
    return root


def write_toy_ferplus(root: Path, votes_of: Callable[[int], Sequence[int]], per_class: int = 8,
                      classes: int = 3) -> Path:
    """FERPlus layout (split folders of 48x48 grayscale PNGs, each with a header-less label.csv) of toy faces of
    the first ``classes`` FERPlus classes (neutral, happiness, surprise, ...), whose class is their brightness;
    ``votes_of(label)`` gives a face's ten votes; class ``c`` has ``per_class + c`` training faces."""
    rng = random.Random(0)
    for folder, count in (('FER2013Train', per_class), ('FER2013Valid', per_class // 2)):
        (root / folder).mkdir(parents=True)
        rows = []
        for label in range(classes):
            grey = 40 + label * 180 // max(1, classes - 1)
            count_of_class = count + label if folder == 'FER2013Train' else count
            for i in range(count_of_class):
                name = f'fer{label:03d}{i:04d}.png'
                Image.new('L', (48, 48), max(0, min(255, grey + rng.randint(-25, 25)))).save(root / folder / name)
                rows.append(f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes_of(label)))}\n')
        (root / folder / 'label.csv').write_text(''.join(rows))
    return root


def train_args(data: Path, output: Path, *extra: str) -> list:
    """``timm-fer train`` flags of a quick run on the toy folder ``data``, writing to ``output``."""
    return ['--dataset', 'folder', '--data-dir', str(data), '--output', str(output), '--no-pretrained',
            '--workers', '0', '--batch-size', '8', *extra]


def run_torchrun(argv: list, timeout: float = 120) -> tuple:
    """Run ``torchrun --standalone --nproc-per-node 2 ARGV`` on CPU; on timeout end it and its workers."""
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', *argv]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f'torchrun did not finish in {timeout} s: {err[-3000:]}')
    return process.returncode, out, err
