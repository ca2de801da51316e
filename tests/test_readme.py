"""Every README code block that needs no private file runs, and the main job prints what the README shows."""
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

README = Path(__file__).resolve().parents[1] / 'README.md'
SKIP = re.compile(r'<!-- readme-test: skip, (?P<reason>[^>]+?) -->\n$')
FENCE = re.compile(r'^```(?P<language>\w+)\n(?P<code>.*?)^```', re.S | re.M)


class Block(NamedTuple):
    """A fenced code block of the README."""
    line: int
    language: str
    code: str
    skip_reason: Optional[str]


def readme_blocks() -> List[Block]:
    text = README.read_text(encoding='utf-8')
    blocks = []
    for match in FENCE.finditer(text):
        skip = SKIP.search(text, 0, match.start())
        reason = skip['reason'] if skip and skip.end() == match.start() else None
        blocks.append(Block(text.count('\n', 0, match.start()) + 1, match['language'], match['code'], reason))
    return blocks


RUNNABLE = [b for b in readme_blocks() if b.language in ('bash', 'python') and b.skip_reason is None]


def test_every_block_is_run_or_says_why_not():
    blocks = [b for b in readme_blocks() if b.language in ('bash', 'python')]
    assert len(RUNNABLE) >= 6 and len(blocks) > len(RUNNABLE)
    assert all(b.skip_reason.strip() for b in blocks if b not in RUNNABLE)


def test_cpu_wheels_advice_comes_before_the_set_up_commands():
    installs = [b for b in readme_blocks() if b.language == 'bash' and 'pip install' in b.code]
    assert 'download.pytorch.org/whl/cpu' in installs[0].code, [b.line for b in installs]


@pytest.fixture(scope='module')
def readme_folder(tmp_path_factory) -> Path:
    """One folder for all blocks, run top to bottom as a reader would (the ONNX snippet reads the exported file)."""
    return tmp_path_factory.mktemp('readme')


@pytest.mark.slow
@pytest.mark.parametrize('block', RUNNABLE, ids=lambda b: f'line{b.line}-{b.language}')
def test_readme_block_runs(block, readme_folder, monkeypatch):
    monkeypatch.chdir(readme_folder)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    if block.language == 'python':
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block.code, f'README.md:{block.line}', 'exec'), {'__name__': '__readme__'})
        return
    # The package is installed already (the test command installs it): pip lines are not run again.
    script = 'set -euo pipefail\npip() { :; }\n' + block.code
    result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'README.md:{block.line} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}'


@pytest.mark.slow
def test_main_job_prints_what_the_readme_shows(tmp_path):
    blocks = readme_blocks()
    index = next(i for i, b in enumerate(blocks) if b.code.startswith('pip install -e ".[face]" && timm-fer predict'))
    main_job = blocks[index]
    shown = blocks[index + 1].code.splitlines()
    command = main_job.code.strip().split('&& ', 1)[1].split()
    result = subprocess.run([sys.executable, '-m', 'timm_fer', *command[1:]], capture_output=True, text=True,
                            timeout=600, cwd=README.parent, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    printed = result.stdout.splitlines()
    assert result.returncode == 0 and len(printed) == len(shown), result.stderr
    assert printed[0] == shown[0] and printed[1].split() == shown[1].split() and printed[-1] == shown[-1]
    got, expected = printed[2].split(), shown[2].split()
    assert got[:5] == expected[:5]  # file, face, box, expression
    assert [float(v) for v in got[5:]] == pytest.approx([float(v) for v in expected[5:]], abs=0.02)
