"""Atomic file writing: nothing is lost or half-written when a process dies mid-write."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union

__all__ = ['atomic_write', 'output_folder', 'give_default_mode']


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: Union[str, Path]) -> None:
    """Give ``path`` the permissions a plain ``open(path, 'w')`` would (0666 less the umask): libraries such as
    safetensors create their files 0600, which others on a shared machine cannot read."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path`` in one step.

    The file gets the permissions a plain ``open(path, 'w')`` would give it (0666 less the umask)."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    write(tmp)
    give_default_mode(tmp)
    os.replace(tmp, path)
    return path


def output_folder(path: Union[str, Path], what: str) -> Path:
    """Create the folder ``path`` (and its parents) for writing; a clear error when that is impossible."""
    from .errors import BnasError
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BnasError(f'{what} {path}: exists and is not a folder; expected a folder to write into')
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f'.write_test.{os.getpid()}'
        probe.write_text('ok')
        probe.unlink()
    except OSError as e:
        raise BnasError(f'{what} {path}: cannot write there ({e.strerror or e})') from None
    return path
