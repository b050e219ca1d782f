"""Checkpoint units: the files of one epoch's checkpoint (weights, training state, ...), written so that a
kill or a power cut at any moment leaves an intact unit, and read back checked (the newest intact unit).

Each unit is a folder ``RUN/checkpoints/epoch-NNNN/`` (NNNN: the epochs done) holding its files and a
manifest (the epoch, the sha256 of each file), committed in this order:

1. the files and the manifest are written into ``epoch-NNNN.tmp/`` and each is flushed (``fsync``), then
   that folder;
2. ``epoch-NNNN.tmp`` is renamed to ``epoch-NNNN`` and ``checkpoints/`` is flushed: the commit point;
3. only then are units older than the previous one removed: the previous unit stays until the new one is
   durable.

Reading (``--resume``) takes the newest unit whose manifest and checksums hold and says which epoch it is;
a damaged newer unit (a power cut on a disk that reorders writes, a truncated file) is skipped with the
reason. Run folders of older versions (one unit in the run folder itself) are read too.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from bnas_zoo.errors import CheckpointError, first_line
from bnas_zoo.files import fsync_dir, fsync_file, give_default_mode, remove_tree, rename

__all__ = ['UNITS', 'KEEP', 'unit_dir', 'write_checkpoint_unit', 'read_checkpoint_unit', 'clear_checkpoints',
           'has_checkpoint']

UNITS = 'checkpoints'  # the folder of the units, inside the run folder
KEEP = 2               # units kept: the newest and the one before it
_UNIT = re.compile(r'epoch-(\d{4,})')


def unit_dir(folder: Path, epoch: int) -> Path:
    """The unit of the checkpoint written after ``epoch`` (0-based): ``checkpoints/epoch-NNNN``, NNNN = epoch + 1."""
    return Path(folder) / UNITS / f'epoch-{epoch + 1:04d}'


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def write_checkpoint_unit(folder: Path, manifest: str, writers: Dict[str, Callable[[Path], Any]], epoch: int,
                          keep: int = KEEP, **extra: Any) -> Path:
    """Write ``writers`` (file name -> function writing that file) and ``manifest`` as the unit of ``epoch``,
    durably (see the module's docstring); keep the ``keep`` newest units. Returns the unit's folder."""
    units = Path(folder) / UNITS
    if not units.is_dir():
        units.mkdir(parents=True)
        fsync_dir(folder)
    final = unit_dir(folder, epoch)
    tmp = final.with_name(final.name + '.tmp')
    if tmp.exists():  # left by a process that died while writing it
        remove_tree(tmp)
    tmp.mkdir()
    files = {}
    for name, write in writers.items():
        write(tmp / name)
        give_default_mode(tmp / name)  # safetensors writes 0600: others may read it
        fsync_file(tmp / name)
        files[name] = _sha256(tmp / name)
    (tmp / manifest).write_text(json.dumps(dict(epoch=epoch, files=files, **extra), indent=2) + '\n')
    give_default_mode(tmp / manifest)
    fsync_file(tmp / manifest)
    fsync_dir(tmp)
    if final.exists():  # this epoch again (a run resumed from an older unit): the other one goes aside first
        stale = final.with_name(final.name + '.stale')
        if stale.exists():
            remove_tree(stale)
        rename(final, stale)
    rename(tmp, final)
    fsync_dir(units)  # the commit point
    for old in units.iterdir():
        m = _UNIT.fullmatch(old.name)
        if (m and int(m.group(1)) <= epoch + 1 - keep) or old.name.endswith('.stale'):
            remove_tree(old)
    return final


def _check_unit(unit: Path, manifest: str, what: str, expected_epoch: int = None) -> Dict[str, Any]:
    """The manifest of ``unit`` after checking it and every file it names; a CheckpointError otherwise."""
    path = unit / manifest
    if not path.is_file():
        raise CheckpointError(f'{what} {unit}: no {manifest}, so no complete checkpoint (the run never finished '
                              f'an epoch, or was written by an older bnas_zoo without checkpoint manifests)')
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f'{what} {path}: not valid JSON ({first_line(e)})') from None
    files = info.get('files') if isinstance(info, dict) else None
    if (not isinstance(files, dict) or not files or not isinstance(info.get('epoch'), int)
            or isinstance(info.get('epoch'), bool)
            or not all(isinstance(k, str) and '/' not in k and isinstance(v, str) for k, v in files.items())):
        raise CheckpointError(f"{what} {path}: expected an object with 'epoch' (an integer) and 'files' "
                              f"(file name -> sha256)")
    if expected_epoch is not None and info['epoch'] != expected_epoch:
        raise CheckpointError(f"{what} {path}: names epoch {info['epoch'] + 1}, not {expected_epoch + 1} as its "
                              f"folder says")
    for name, digest in files.items():
        final, new = unit / name, unit / f'{name}.new'
        if final.is_file() and _sha256(final) == digest:
            continue
        if expected_epoch is None and new.is_file() and _sha256(new) == digest:
            # an older version's single unit, killed between its manifest and its renames: finish them
            try:
                os.replace(new, final)
            except FileNotFoundError:  # another process (a torchrun rank) finished it first
                pass
            continue
        raise CheckpointError(f'{what} {unit}: {name} is not the file of the epoch-{info["epoch"] + 1} checkpoint '
                              f'named in {manifest} (missing, or its sha256 differs: modified, truncated or from '
                              f'another epoch); the checkpoint cannot be trusted')
    return info


def _units(folder: Path, manifest: str) -> List[Tuple[Path, Any]]:
    """The units of ``folder``, newest first: (folder of the unit, its epoch or None for an older version's)."""
    found = []
    units = Path(folder) / UNITS
    if units.is_dir():
        for d in units.iterdir():
            m = _UNIT.fullmatch(d.name)
            if m and d.is_dir():
                found.append((d, int(m.group(1)) - 1))
    found.sort(key=lambda u: -u[1])
    if (Path(folder) / manifest).is_file():  # an older version's run folder: one unit in the folder itself
        found.append((Path(folder), None))
    return found


def has_checkpoint(folder: Path, manifest: str) -> bool:
    """Whether ``folder`` holds a checkpoint unit (intact or not)."""
    return bool(_units(folder, manifest))


def read_checkpoint_unit(folder: Path, manifest: str, what: str = '--resume') -> Dict[str, Any]:
    """The manifest of the newest intact unit in ``folder``, with ``unit`` (its folder) and ``skipped`` (one
    line per newer unit that is damaged, with the reason) added; a CheckpointError when none is intact."""
    candidates = _units(folder, manifest)
    if not candidates:
        raise CheckpointError(f'{what} {folder}: no checkpoint ({UNITS}/epoch-NNNN/{manifest}): the run never '
                              f'finished an epoch, or this is not its folder')
    skipped = []
    for unit, epoch in candidates:
        try:
            info = _check_unit(unit, manifest, what, epoch)
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        return dict(info, unit=unit, skipped=skipped)
    if len(skipped) == 1:
        raise CheckpointError(skipped[0])
    raise CheckpointError(f'{what} {folder}: no intact checkpoint: ' + '; '.join(skipped))


def clear_checkpoints(folder: Path, manifest: str, names: List[str]) -> None:
    """Remove the checkpoint units of ``folder`` (a run started again there), and an older version's files."""
    units = Path(folder) / UNITS
    if units.is_dir():
        remove_tree(units)
    for name in [manifest, *names]:
        for path in (Path(folder) / name, Path(folder) / f'{name}.new'):
            if path.is_file():
                path.unlink()
