"""The package's layers import only downwards: layers <- models <- hub <- engine / inference <- cli."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import timm_fer

PACKAGE = Path(timm_fer.__file__).resolve().parent
BASE = {'errors', 'constants', 'utils'}
ALLOWED: Dict[str, Set[str]] = {
    'errors': set(),
    'constants': set(),
    'utils': {'errors', 'constants'},
    'layers': BASE,
    'data': BASE,
    'faces': BASE,
    'models': BASE | {'layers'},
    'hub': BASE | {'layers', 'models'},
    'engine': BASE | {'layers', 'models', 'hub', 'data'},
    'inference': BASE | {'layers', 'models', 'hub', 'data', 'faces'},
    'serve': BASE | {'layers', 'models', 'hub', 'data', 'faces', 'inference'},
    'cli': BASE | {'layers', 'models', 'hub', 'data', 'faces', 'engine', 'inference', 'serve'},
}
"""Parts of timm_fer each part may import, besides itself."""
ENTRY_MODULES = {'__init__', '__main__', 'train', 'evaluate', 'run_timm_script'}
"""Top-level modules: the package itself (registers the models) and the command-line entry points."""


def part_of(module: str) -> str:
    """The part of timm_fer a dotted module name belongs to; top-level entry modules count as the command line."""
    parts = module.split('.')
    return 'cli' if len(parts) == 1 or parts[1] in ENTRY_MODULES else parts[1]


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[Tuple[int, str]]:
    """(line, absolute name) of every timm_fer import in ``source``, at module level or inside functions."""
    package = module.split('.') if is_package else module.split('.')[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name.startswith('timm_fer'))
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = '.'.join(package[:len(package) - node.level + 1])
            if node.module:
                yield node.lineno, f'{base}.{node.module}'
            else:
                yield from ((node.lineno, f'{base}.{alias.name}') for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('timm_fer'):
            yield node.lineno, node.module


def violations(source: str, module: str, is_package: bool = False) -> List[str]:
    """The imports of ``source`` that point up the layers or sideways into a part not allowed."""
    own = part_of(module)
    return [f'line {line}: {name} ({part_of(name)})' for line, name in imports_of(source, module, is_package)
            if name != 'timm_fer' and part_of(name) not in ALLOWED[own] | {own}]


def test_every_part_has_its_place():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if p.suffix == '.py' or (p / '__init__.py').exists()}
    assert parts - ENTRY_MODULES <= set(ALLOWED), 'a new part of timm_fer needs its place in ALLOWED'


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    relative = path.relative_to(PACKAGE.parent).with_suffix('')
    is_package = relative.name == '__init__'
    module = '.'.join(relative.parts[:-1] if is_package else relative.parts)
    wrong = violations(path.read_text(encoding='utf-8'), module, is_package)
    assert not wrong, f'{module} ({part_of(module)}) may import only {sorted(ALLOWED[part_of(module)])}: {wrong}'


def test_upward_and_sideways_imports_are_caught():
    assert violations('from ..engine import train', 'timm_fer.models.probe') == ['line 1: timm_fer.engine (engine)']
    assert violations('def f():\n    from timm_fer.cli import main', 'timm_fer.hub.probe') == \
        ['line 2: timm_fer.cli (cli)']
    assert violations('from ..faces import read_image', 'timm_fer.engine.probe') == ['line 1: timm_fer.faces (faces)']
    assert violations('from . import irnet\nfrom ..layers import LANet', 'timm_fer.models.probe') == []
    assert violations('from .hub import load_model', 'timm_fer', is_package=True) == []


def test_import_timm_fer_registers_models_without_the_higher_layers():
    code = ('import sys, timm, timm_fer; '
            'print(len(timm.list_models("transfer_fer*")), '
            '" ".join(sorted({m.split(".")[1] for m in sys.modules if m.startswith("timm_fer.")})))')
    count, *parts = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                   check=True).stdout.split()
    assert int(count) >= 2
    assert not set(parts) & {'hub', 'engine', 'inference', 'cli', 'faces', 'data'}, parts
