"""Durable, atomic file writing: nothing is lost or half-written when a process dies or the power fails
mid-write.

A rename is atomic, but not durable until the directory holding it is flushed, and a file's data are not on
the disk until the file is: :func:`atomic_write` writes a temporary file, flushes it (``fsync``), renames it
over the target and flushes the directory. Every file-system step that makes data durable goes through
:func:`fsync_file`, :func:`fsync_dir`, :func:`rename` and :func:`remove_tree`, so that a test can stop the
sequence at any step and see what a power cut would leave."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Union

__all__ = ['atomic_write', 'output_folder', 'give_default_mode', 'fsync_file', 'fsync_dir', 'rename', 'remove_tree']


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: Union[str, Path]) -> None:
    """Give ``path`` the permissions a plain ``open(path, 'w')`` would (0666 less the umask): libraries such as
    safetensors create their files 0600, which others on a shared machine cannot read."""
    os.chmod(path, 0o666 & ~_umask())


def fsync_file(path: Union[str, Path]) -> None:
    """Flush a file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Union[str, Path]) -> None:
    """Flush a directory (the names created, renamed or removed in it) to the disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot flush a directory (their renames are durable at once)
        pass
    finally:
        os.close(fd)


def rename(src: Union[str, Path], dst: Union[str, Path]) -> None:
    """``os.replace``: atomic, durable once the directory is flushed (:func:`fsync_dir`)."""
    os.replace(src, dst)


def remove_tree(path: Union[str, Path]) -> None:
    """Remove a folder and its files."""
    shutil.rmtree(path)


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it, rename it over ``path`` in one step
    and flush the directory: after a crash or a power cut ``path`` holds the old or the new content, whole.

    The file gets the permissions a plain ``open(path, 'w')`` would give it (0666 less the umask)."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    write(tmp)
    give_default_mode(tmp)
    fsync_file(tmp)
    rename(tmp, path)
    fsync_dir(path.parent)
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
