"""What ships speaks to users: no build-machine paths or run history in the README, the docs and the package."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_PATHS = re.compile(r'/work/|\.\./shared/|/root/|/home/\w|/tmp/|\bcommit [0-9a-f]{7}\b')
"""Absolute paths of a build machine, the project's private data folder, and commit hashes as provenance."""


def shipped_text_files() -> list:
    files = [REPO / 'README.md', *sorted((REPO / 'docs').rglob('*.md'))]
    for suffix in ('*.py', '*.md', '*.json'):
        files += sorted((REPO / 'timm_fer').rglob(suffix))
    return files


@pytest.mark.parametrize('path', shipped_text_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_build_machine_paths(path):
    found = [f'{number}: {line.strip()[:100]}' for number, line in enumerate(path.read_text().splitlines(), 1)
             if BUILD_PATHS.search(line)]
    assert not found, f'{path.name} names build-machine paths or commits (write path/to/DATA, a recipe): {found}'


def test_the_pattern_finds_what_it_is_for():
    assert all(BUILD_PATHS.search(text) for text in ('source: /work/runs/x/last.pth', '--data-dir ../shared/datasets',
                                                      'from one seed (commit 1933d54)', 'out /tmp/a'))
    assert not any(BUILD_PATHS.search(text) for text in ('--data-dir path/to/ferplus', 'runs/ferplus/last.pth'))
