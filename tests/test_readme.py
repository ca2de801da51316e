"""Every code block of the README and the docs pages that needs no private file runs; the main job prints what the
README shows; every docs page is in the site's nav; tables are well formed; the weights page and the shipped model
card agree."""
import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
DOCS = REPO / 'docs'
MODEL_CARD = 'timm_fer/weights/transfer_fer_compact.ferplus/README.md'
SKIP = re.compile(r'<!-- readme-test: skip, (?P<reason>[^>]+?) -->\n$')
FENCE = re.compile(r'^```(?P<language>\w+)\n(?P<code>.*?)^```', re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<start>\d+))?"$', re.M)
NEEDS_TIMM = '<!-- readme-test: needs timm\'s train.py -->\n'
"""The marker of a block that runs timm's train.py from a clone of timm (``TIMM_REPO``, tests/README.md), linked into
the block's folder as ``pytorch-image-models``; without the clone the block is skipped and says why."""
TIMM_REPO = os.environ.get('TIMM_REPO')


class Block(NamedTuple):
    """A fenced code block of a Markdown file."""
    file: str
    line: int
    language: str
    code: str
    skip_reason: Optional[str]
    needs_timm: bool = False

    @property
    def name(self) -> str:
        return f'{self.file}:line{self.line}-{self.language}'


def doc_files() -> List[Path]:
    """The README and every docs page, the files whose code blocks run."""
    return [README, *sorted(DOCS.glob('*.md'))]


def code_blocks(path: Path) -> List[Block]:
    """The fenced code blocks of a Markdown file, each with the reason it is not run, if its marker gives one."""
    text = path.read_text(encoding='utf-8')
    file = path.relative_to(REPO).as_posix()
    blocks = []
    for match in FENCE.finditer(text):
        skip = SKIP.search(text, 0, match.start())
        reason = skip['reason'] if skip and skip.end() == match.start() else None
        needs_timm = text.endswith(NEEDS_TIMM, 0, match.start())
        blocks.append(Block(file, text.count('\n', 0, match.start()) + 1, match['language'], match['code'], reason,
                            needs_timm))
    return blocks


def shell_and_python_blocks() -> List[Block]:
    return [b for path in doc_files() for b in code_blocks(path) if b.language in ('bash', 'python')]


RUNNABLE = [b for b in shell_and_python_blocks() if b.skip_reason is None]


def nav_pages(entries: Any) -> Iterator[str]:
    """The Markdown files named anywhere in an mkdocs nav (a list of pages, sections and links)."""
    for entry in entries if isinstance(entries, list) else [entries]:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, (list, dict)):
                yield from nav_pages(value)
            elif isinstance(value, str) and value.endswith('.md'):
                yield value


def test_every_block_is_run_or_says_why_not():
    blocks = shell_and_python_blocks()
    assert len(RUNNABLE) >= 10 and len(blocks) > len(RUNNABLE)
    assert {b.file for b in RUNNABLE} >= {'README.md', 'docs/export.md', 'docs/videos.md'}
    assert all(b.skip_reason.strip() for b in blocks if b not in RUNNABLE)


def test_block_ids_name_the_file_and_line():
    assert RUNNABLE[0].name.startswith('README.md:line')
    assert any(re.fullmatch(r'docs/[\w-]+\.md:line\d+-(bash|python)', b.name) for b in RUNNABLE)


def test_cpu_wheels_advice_comes_before_the_set_up_commands():
    installs = [b for b in code_blocks(README) if b.language == 'bash' and 'pip install' in b.code]
    assert 'download.pytorch.org/whl/cpu' in installs[0].code, [b.line for b in installs]


def markdown_tables(path: Path) -> Iterator[List[str]]:
    """The tables of a Markdown file outside code blocks, each as its lines."""
    text = FENCE.sub(lambda m: '\n' * m[0].count('\n'), path.read_text(encoding='utf-8'))
    table: List[str] = []
    for line in text.splitlines() + ['']:
        if line.startswith('|'):
            table.append(line)
        elif table:
            yield table
            table = []


@pytest.mark.parametrize('path', doc_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_tables_have_a_header_and_rows_of_its_width(path):
    for table in markdown_tables(path):
        widths = [len(re.split(r'(?<!\\)\|', row.strip())) for row in table]
        assert len(table) >= 3 and re.fullmatch(r'\|( ?:?-+:? ?\|)+', table[1].strip()), table[:2]
        assert set(widths) == {widths[0]}, f'{path.name}: rows of other widths than the header {table[0]}'


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((REPO / 'mkdocs.yml').read_text(encoding='utf-8'))
    in_nav = list(nav_pages(config['nav']))
    pages = sorted(p.name for p in DOCS.glob('*.md'))
    assert sorted(set(in_nav)) == sorted(in_nav), 'a page is in the nav twice'
    assert [p for p in in_nav if not (DOCS / p).is_file()] == [], 'nav entries without a page'
    assert [p for p in pages if p not in in_nav] == [], 'docs pages missing from the nav in mkdocs.yml'


def test_readme_is_a_landing_page():
    lines = README.read_text(encoding='utf-8').splitlines()
    assert len(lines) <= 350, f'README.md has {len(lines)} lines: move guides and tables into docs/'
    linked = set(re.findall(r'\]\(docs/([\w-]+\.md)', '\n'.join(lines)))
    assert linked >= {p.name for p in DOCS.glob('*.md')} - {'index.md'}, 'every docs page is linked from the README'


def test_ci_runs_the_readmes_test_command():
    blocks = [b for b in code_blocks(README) if b.language == 'bash' and 'pytest' in b.code]
    command = blocks[0].code.strip()
    assert command.startswith('pip install -e ".[') and command.endswith('python -m pytest -q'), command
    ci_lines = (REPO / '.ci' / 'run').read_text(encoding='utf-8').splitlines()
    assert ci_lines[-1] == command, 'the last line of .ci/run must be the README\'s test command'


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip('mkdocs', reason='the docs extra is not installed: pip install -e ".[docs]"')
    result = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir', str(tmp_path / 'site')],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, \
        f'mkdocs build --strict failed (a broken link or reference):\n{result.stderr[-4000:]}'


def model_card_metrics() -> List[List[str]]:
    """The percentages of the shipped model card's two headline metric lines: accuracy, then mean class accuracy."""
    card = (REPO / MODEL_CARD).read_text(encoding='utf-8')
    metrics = card.split('## Metrics\n', 1)[1].split('\n## ', 1)[0].splitlines()
    headline = [line for line in metrics if line.startswith('- FERPlus validation')]
    assert len(headline) == 2, metrics
    return [re.findall(r'\d+\.\d\d %', line) for line in headline]


def test_weights_page_includes_the_shipped_model_card_after_its_front_matter():
    page = (DOCS / 'weights.md').read_text(encoding='utf-8')
    includes = [m for m in SNIPPET.finditer(page) if m['path'] == MODEL_CARD]
    assert len(includes) == 1, 'docs/weights.md must include the model card once with --8<--'
    card_lines = (REPO / MODEL_CARD).read_text(encoding='utf-8').splitlines()
    first = int(includes[0]['start'] or 1)
    # The include starts right after the YAML front matter and the card's title, which the page's heading replaces.
    assert card_lines[0] == '---' and card_lines.index('---', 1) == first - 3, first
    assert card_lines[first - 2].startswith('# Model card for')


def test_weights_page_and_readme_state_the_model_cards_figures():
    accuracy, mean_class = model_card_metrics()
    assert accuracy[0] == '82.98 %' and mean_class[0] == '65.41 %' and len(accuracy + mean_class) == 6
    page = SNIPPET.sub('', (DOCS / 'weights.md').read_text(encoding='utf-8'))
    readme_weights = README.read_text(encoding='utf-8').split('### Weights', 1)[1]
    assert [f for f in accuracy + mean_class if f not in page] == [], 'docs/weights.md disagrees with the model card'
    assert f'FERPlus validation {accuracy[0]}, mean class {mean_class[0]}' in readme_weights, 'README disagrees'


def test_api_reference_writes_sphinx_roles_as_markdown_code():
    pytest.importorskip('griffe', reason='the docs extra builds the API reference')
    spec = importlib.util.spec_from_file_location('sphinx_roles', DOCS / 'extensions' / 'sphinx_roles.py')
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    text = ('See :func:`stream`, :class:`~timm_fer.inference.video.VideoReport`, :meth:`Model.forward` and '
            ':func:`the reader <timm_fer.faces.read_image>`; ``code`` stays.')
    assert roles.markdown_roles(text) == ('See `stream`, `VideoReport`, `Model.forward` and `the reader`; '
                                          '``code`` stays.')


@pytest.fixture(scope='module')
def doc_folders(tmp_path_factory) -> Dict[str, Path]:
    """One folder per file, its blocks run top to bottom as a reader would (the ONNX snippet reads the export)."""
    return {path.relative_to(REPO).as_posix(): tmp_path_factory.mktemp(path.stem) for path in doc_files()}


@pytest.mark.slow
@pytest.mark.parametrize('block', RUNNABLE, ids=lambda b: b.name)
def test_doc_block_runs(block, doc_folders, monkeypatch):
    monkeypatch.chdir(doc_folders[block.file])
    if block.needs_timm:
        if not (TIMM_REPO and (Path(TIMM_REPO) / 'train.py').is_file()):
            pytest.skip("needs timm's train.py: set TIMM_REPO to a clone of huggingface/pytorch-image-models")
        if not Path('pytorch-image-models').exists():
            Path('pytorch-image-models').symlink_to(Path(TIMM_REPO).resolve())
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    if block.language == 'python':
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block.code, f'{block.file}:{block.line}', 'exec'), {'__name__': '__readme__'})
        return
    # The package is installed already (the test command installs it): pip lines are not run again.
    script = 'set -euo pipefail\npip() { :; }\n' + block.code
    result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'{block.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}'


@pytest.mark.slow
def test_main_job_prints_what_the_readme_shows():
    blocks = code_blocks(README)
    index = next(i for i, b in enumerate(blocks) if b.code.startswith('pip install -e ".[face]" && timm-fer predict'))
    main_job = blocks[index]
    shown = blocks[index + 1].code.splitlines()
    command = main_job.code.strip().split('&& ', 1)[1].split()
    # Run where a reader runs it, the checkout (the printed paths are relative to it); the folder it writes goes after.
    viz = README.parent / command[command.index('--save-viz') + 1]
    assert not viz.exists(), f'{viz} is in the way of the README command: move it away and run the test again'
    try:
        result = subprocess.run([sys.executable, '-m', 'timm_fer', *command[1:]], capture_output=True, text=True,
                                timeout=600, cwd=README.parent, env=dict(os.environ, HF_HUB_OFFLINE='1'))
    finally:
        shutil.rmtree(viz, ignore_errors=True)
    printed = result.stdout.splitlines()
    assert result.returncode == 0 and len(printed) == len(shown), result.stderr
    assert printed[0] == shown[0] and printed[1].split() == shown[1].split() and printed[-1] == shown[-1]
    got, expected = printed[2].split(), shown[2].split()
    assert got[:5] == expected[:5]  # file, face, box, expression
    assert [float(v) for v in got[5:]] == pytest.approx([float(v) for v in expected[5:]], abs=0.02)
