"""Run one of timm's scripts (``train.py``, ``validate.py``, ``benchmark.py``, ``inference.py``) with the
bnas models registered::

    python -m bnas_zoo.timm_script validate.py --model bnas_mini --data-dir DIR ...
    bnas-zoo timm validate.py --model bnas_mini --data-dir DIR ...

timm's scripts are not installed with timm: take them from timm's repository (the version of the installed
timm). The script runs as ``python SCRIPT ARGS...`` would run it, after ``import bnas_zoo``.
"""
from __future__ import annotations

import os
import runpy
import sys
from typing import List, Optional

from .errors import BnasError, run_cli

__all__ = ['run_timm_script', 'main']

USAGE = ('usage: python -m bnas_zoo.timm_script [--debug] SCRIPT.py [ARGS...]   '
         '(or: bnas-zoo [--debug] timm [--debug] SCRIPT.py [ARGS...])')


def run_timm_script(script: str, args: List[str]) -> int:
    """Import bnas_zoo, then run ``script`` as ``__main__`` with ``sys.argv = [script, *args]``; its exit status."""
    import bnas_zoo  # noqa: F401  (registers the bnas models in timm)

    if not os.path.isfile(script):
        raise BnasError(f'{script}: no such file; expected the path of a timm script (train.py, validate.py, '
                        f"benchmark.py, inference.py from timm's repository)")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` does
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def main(argv: Optional[List[str]] = None, debug: bool = False) -> int:
    """Run ``argv`` = ``SCRIPT.py ARGS...`` (a leading ``--debug`` shows the traceback of an error of ours too)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['--debug']:
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE + '\n\n' + __doc__.strip(), file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    return run_cli('bnas-zoo timm', lambda: run_timm_script(argv[0], argv[1:]), debug)


if __name__ == '__main__':
    sys.exit(main())
