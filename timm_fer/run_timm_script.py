"""Run one of timm's own scripts (``train.py``, ``validate.py``, ``inference.py``) with timm-fer's models registered.

timm has no plugin discovery, so its scripts only see models whose module was imported. This runner imports
``timm_fer`` and then executes the script as ``__main__`` with the remaining arguments::

    python -m timm_fer.run_timm_script path/to/pytorch-image-models/train.py --model transfer_fer_ir50 ...
"""
import runpy
import sys
from pathlib import Path
from typing import List, Optional

import timm_fer  # noqa: F401  (registers the models with timm)


def main(argv: Optional[List[str]] = None) -> int:
    """Execute ``argv[0]`` as a script with ``argv[1:]`` as its command line."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if argv else 2
    script = Path(argv[0])
    if not script.is_file():
        print(f'error: no script at {script}; pass the path of timm\'s train.py (from a clone of '
              f'huggingface/pytorch-image-models), then its arguments.', file=sys.stderr)
        return 2
    saved_argv = sys.argv
    sys.argv = [str(script), *argv[1:]]
    try:
        runpy.run_path(str(script), run_name='__main__')
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == '__main__':
    sys.exit(main())
