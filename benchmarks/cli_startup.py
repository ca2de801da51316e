"""How fast the ``timm-fer`` command answers when it has nothing to compute: its help, no command, a mistyped command,
an argument error and every sub-command's help, each timed as a fresh process (as hyperfine does), min / median / max
of ``--runs``.

None of these import torch or timm: a sub-command's parser takes its choices and defaults from
:mod:`timm_fer.constants`, and its body imports what it runs. Each case must end with its exit status (0 for help, 2
for a mistyped command or a bad flag); one that does not stops the benchmark with what it printed, so a crash is never
timed as a fast answer. ``--pythonpath`` times another copy of the package (e.g. ``git archive`` of an older commit),
run as ``python -m timm_fer``.

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
from typing import Dict, List, Optional, Tuple

Case = Tuple[List[str], int]
"""A command line's arguments and the exit status it must end with."""


def cases(commands: List[str]) -> Dict[str, Case]:
    """The timed cases, by name: the top-level answers, an argument error and each sub-command's help."""
    return {
        'timm-fer --help': (['--help'], 0),
        'timm-fer': ([], 0),
        'timm-fer predcit (a mistyped command)': (['predcit'], 2),
        'timm-fer predict --bogus-flag': (['predict', '--bogus-flag'], 2),
        **{f'timm-fer {name} --help': ([name, '--help'], 0) for name in commands},
    }


def sub_commands(pythonpath: Optional[str]) -> List[str]:
    """The sub-commands of the timed package, read from its ``timm_fer.cli.COMMANDS``."""
    if pythonpath:
        sys.path.insert(0, pythonpath)
    sys.argv[0] = 'timm-fer'  # as the command itself: importing timm_fer then registers no models (no torch)
    from timm_fer.cli import COMMANDS
    return list(COMMANDS)


def command(pythonpath: Optional[str]) -> List[str]:
    """The installed ``timm-fer`` script, or ``python -m timm_fer`` for another copy of the package."""
    script = shutil.which('timm-fer')
    return [script] if script and not pythonpath else [sys.executable, '-m', 'timm_fer']


def time_runs(argv: List[str], status: int, runs: int, env: Dict[str, str], cwd: Optional[str]) -> List[float]:
    """Seconds of each of ``runs`` fresh processes of ``argv``, after one warm-up run (file cache); each must exit
    with ``status``."""
    times = []
    for index in range(runs + 1):
        start = time.perf_counter()
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                check=False)
        elapsed = time.perf_counter() - start
        if result.returncode != status:
            sys.exit(f'{" ".join(argv)} exited with {result.returncode}, not {status}: nothing to time.\n'
                     f'{result.stderr.decode(errors="replace")[-2000:]}')
        if index:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=7, help='timed runs per case, after one warm-up (default: 7)')
    parser.add_argument('--pythonpath', help='time the timm_fer package in this folder instead of the installed one')
    args = parser.parse_args()
    env = dict(os.environ, **({'PYTHONPATH': args.pythonpath} if args.pythonpath else {}))
    base = command(args.pythonpath)
    print(f'{" ".join(base)}, {args.runs} runs each, seconds (min / median / max)')
    for name, (extra, status) in cases(sub_commands(args.pythonpath)).items():
        times = time_runs(base + extra, status, args.runs, env, cwd=args.pythonpath)  # -m puts the cwd first
        print(f'{name:<40} {min(times):6.2f} {statistics.median(times):6.2f} {max(times):6.2f}')


if __name__ == '__main__':
    main()
