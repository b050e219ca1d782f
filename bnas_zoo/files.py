"""Atomic file writing: nothing is lost or half-written when a process dies mid-write."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union

__all__ = ['atomic_write']


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path`` in one step."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    write(tmp)
    os.replace(tmp, path)
    return path
