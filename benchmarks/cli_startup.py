"""How fast the ``timm-fer`` command answers when it has nothing to compute: its help, no command, a mistyped command
and a sub-command's help, each timed as a fresh process (as hyperfine does), min / median / max of ``--runs``.

``timm-fer``, ``timm-fer --help`` and a mistyped command import neither torch nor timm; a sub-command imports its
module, and with it torch and timm, so ``timm-fer predict --help`` still pays for them. ``--pythonpath`` times another
copy of the package (e.g. ``git archive`` of an older commit), run as ``python -m timm_fer``.

    python benchmarks/cli_startup.py --runs 7
    python benchmarks/cli_startup.py --runs 7 --pythonpath /tmp/timm-fer-before
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

CASES = {
    'timm-fer --help': ['--help'],
    'timm-fer': [],
    'timm-fer predcit (a mistyped command)': ['predcit'],
    'timm-fer predict --help': ['predict', '--help'],
}


def command(pythonpath: Optional[str]) -> List[str]:
    """The installed ``timm-fer`` script, or ``python -m timm_fer`` for another copy of the package."""
    script = shutil.which('timm-fer')
    return [script] if script and not pythonpath else [sys.executable, '-m', 'timm_fer']


def time_runs(argv: List[str], runs: int, env: Dict[str, str], cwd: Optional[str]) -> List[float]:
    """Seconds of each of ``runs`` fresh processes of ``argv``, after one warm-up run (file cache)."""
    times = []
    for index in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd, check=False)
        if index:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=7, help='timed runs per case, after one warm-up (default: 7)')
    parser.add_argument('--pythonpath', help='time the timm_fer package in this folder instead of the installed one')
    args = parser.parse_args()
    env = dict(os.environ, **({'PYTHONPATH': args.pythonpath} if args.pythonpath else {}))
    base = command(args.pythonpath)
    print(f'{" ".join(base)}, {args.runs} runs each, seconds (min / median / max)')
    for name, extra in CASES.items():
        times = time_runs(base + extra, args.runs, env, cwd=args.pythonpath)  # -m puts the current folder first
        print(f'{name:<40} {min(times):6.2f} {statistics.median(times):6.2f} {max(times):6.2f}')


if __name__ == '__main__':
    main()
