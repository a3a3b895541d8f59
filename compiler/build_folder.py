"""Build folders that lose nothing: ownership, a lock, and transactional steps.

Invariants every step keeps (docs/DESIGN.md section 4):

- Ownership. xnorflow writes only into a folder it created (it holds the marker ``.xnorflow-build``)
  or one that was empty (apart from the model file being compiled) when it claimed it. Anything else
  is refused, whatever its files are called: xnorflow never deletes what it did not create.
- One writer. A step holds an exclusive lock (``.xnorflow.lock``, fcntl) on the folder for its whole
  run; a second writer gets one line naming the holder.
- Whole or old. A step writes its outputs into a staging folder inside the build folder
  (``.stage-*``, so renames never cross file systems) and swaps them in by renames only: the
  names it replaces move into ``.trash-*`` and the new ones move in, with a journal
  (``.xnorflow-swap.json``) written first. An interrupted swap is rolled forward by the next
  command that takes the lock, so the folder holds either the old outputs or the new ones, never
  neither. The trash is deleted only once the journal is gone.
- No symlinks followed. A step output (sim/, synth/, verilog/, ...) that is a symbolic link is
  refused, so nothing is written or deleted outside the folder.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from xnorflow.errors import XnorflowError

MARKER = ".xnorflow-build"
LOCK = ".xnorflow.lock"
JOURNAL = ".xnorflow-swap.json"
STAGE_PREFIX = ".stage-"
TRASH_PREFIX = ".trash-"


class BuildFolderError(XnorflowError):
    """A build folder xnorflow may not write into, or cannot write into; the message says why."""


def _no_symlink(path: Path, what: str = "") -> None:
    if path.is_symlink():
        raise BuildFolderError(f"{path} is a symbolic link{what}: xnorflow writes only inside the build "
                               "folder; replace the link with a real folder or choose another -o")


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def is_owned(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def check_claimable(folder, *, inputs=()) -> None:
    """Refuse, writing nothing, a folder `claim` would refuse: a link, a file, a path under a file, or
    an existing folder that is neither ours nor empty but for ``inputs``."""
    folder = Path(folder)
    _no_symlink(folder)
    for parent in folder.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise BuildFolderError(f"cannot make the build folder {folder}: {parent} is a file, not a folder; "
                                   "choose another path for -o")
    if folder.exists() and not folder.is_dir():
        raise BuildFolderError(f"{folder} is a file: choose a folder for -o")
    if not folder.is_dir() or is_owned(folder):
        return
    input_names = {Path(p).name for p in inputs if Path(p).absolute().parent == folder.absolute()}
    foreign = [name for name in _entries(folder) if name not in input_names]
    if foreign:
        raise BuildFolderError(f"{folder} holds files xnorflow did not make ({', '.join(foreign[:3])}"
                               f"{', ...' if len(foreign) > 3 else ''}) and is not an xnorflow build folder: "
                               "choose a new or empty folder for -o (xnorflow never deletes what it did not create)")


def claim(folder, *, inputs=()) -> Path:
    """Make ``folder`` an xnorflow build folder, or refuse it; returns its path.

    ``inputs``: files the step reads that may already sit in the folder (the model file being
    compiled); they are never written or deleted. A folder with the marker is ours; an empty one (but
    for ``inputs``) becomes ours; a missing one is made; any other is refused (`check_claimable`).
    """
    folder = Path(folder)
    check_claimable(folder, inputs=inputs)
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as e:
            raise BuildFolderError(f"cannot make the build folder {folder} ({e.strerror}): choose a folder you "
                                   "can write for -o") from e
    if not is_owned(folder):
        write_atomically(folder / MARKER, json.dumps({"created_by": "xnorflow", "format": 1}) + "\n")
    return folder


def require_owned(folder) -> Path:
    """An existing folder that xnorflow made (for simulate, synth, run)."""
    folder = Path(folder)
    _no_symlink(folder)
    if not folder.is_dir():
        raise BuildFolderError(f"build folder {folder} does not exist: run `xnorflow compile MODEL -o {folder}` "
                               "first")
    if not is_owned(folder):
        raise BuildFolderError(f"{folder} is not an xnorflow build folder (no {MARKER}; folders compiled by an "
                               f"older xnorflow have none): run `xnorflow compile MODEL -o {folder}` first")
    return folder


def write_atomically(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` through a fresh temp file in its folder (O_EXCL, never a followed symlink),
    then rename it over the old one: a reader sees the old file or the new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the lock ---------------------------------------------------------------------------------------
_HELD: dict[Path, int] = {}    # folders this process holds the lock of, and how many times


@contextmanager
def locked(folder):
    """Hold the folder's exclusive lock; roll an interrupted swap forward first.

    A second holder gets a BuildFolderError naming the process that holds it. Re-entrant within a
    process (`flow` holds the lock while its steps take it again). The lock file stays (deleting it
    would race a waiting writer); the lock is released when the process ends, however.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    path = folder / LOCK
    _no_symlink(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise BuildFolderError(f"cannot lock the build folder {folder} ({e.strerror}): check that you can "
                               "write into it") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise BuildFolderError(f"{folder} is in use by {holder}: wait for it to finish, or use another "
                                   "build folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} "
                       f"({' '.join(['xnorflow', *sys.argv[1:2]])}, since {time.strftime('%H:%M:%S')})").encode(), 0)
        recover(folder)
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
    finally:
        os.close(fd)


# --- transactional steps ----------------------------------------------------------------------------
def recover(folder: Path) -> None:
    """Finish a swap an interrupt left half done, and drop stale staging and trash folders."""
    journal = folder / JOURNAL
    if journal.is_file():
        try:
            entry = json.loads(journal.read_text())
        except (OSError, ValueError):
            entry = None
        if entry:
            _roll_forward(folder, entry)
        journal.unlink(missing_ok=True)
    for item in folder.iterdir():
        if item.name.startswith((STAGE_PREFIX, TRASH_PREFIX)) and item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)


def _roll_forward(folder: Path, entry: dict) -> None:
    """Idempotent: each name moves at most once, so a rerun after any interrupt completes it."""
    stage, trash = folder / entry["stage"], folder / entry["trash"]
    trash.mkdir(exist_ok=True)
    for name in entry["replaces"]:
        target, staged = folder / name, stage / name
        if name in entry["new"] and not (staged.exists() or staged.is_symlink()):
            continue                                  # already moved in
        if target.exists() or target.is_symlink():
            os.replace(target, trash / name)
    for name in entry["new"]:
        staged = stage / name
        if staged.exists():
            os.replace(staged, folder / name)


def check_outputs(folder: Path, names) -> None:
    """Refuse step outputs that are symbolic links (they would lead writes outside the folder)."""
    for name in names:
        _no_symlink(folder / name, " (a build folder's step outputs must be its own)")


@contextmanager
def transaction(folder, replaces):
    """Stage a step's outputs; on success swap them in, replacing the names in ``replaces``.

    Yields the staging folder; whatever the step puts there (top-level names) moves into
    ``folder`` and every name in ``replaces`` that it did not produce is removed (invalidated).
    On an exception nothing in ``folder`` changes. Call inside :func:`locked`.
    """
    folder = Path(folder)
    check_outputs(folder, replaces)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=folder))
    try:
        yield stage
        new = _entries(stage)
        trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=folder))
        entry = {"stage": stage.name, "trash": trash.name, "new": new,
                 "replaces": sorted(set(replaces) | set(new))}
        write_atomically(folder / JOURNAL, json.dumps(entry))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # From here the journal owns the stage and the trash: an interrupt leaves all three for the
    # next command's recover() to roll forward; only a finished swap removes them.
    _roll_forward(folder, entry)
    (folder / JOURNAL).unlink()
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def relocate(value, old: Path, new: Path):
    """Paths written while staging (strings under ``old``) as they are after the swap (under ``new``)."""
    old_text, new_text = str(old), str(new)
    if isinstance(value, str):
        return new_text + value[len(old_text):] if value.startswith(old_text) else value
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    return value


def link_tree(source: Path, target: Path) -> None:
    """A copy of ``source`` at ``target`` made of hard links (a cache carried into a new stage; the
    old files stay untouched, since every writer replaces files rather than editing them)."""
    if source.is_dir() and not source.is_symlink():
        try:
            shutil.copytree(source, target, copy_function=os.link, symlinks=True)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, symlinks=True)


def file_digest(path) -> str | None:
    """sha256 of a file's bytes, or None when it is missing."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["BuildFolderError", "check_claimable", "claim", "file_digest", "link_tree", "locked", "relocate", "require_owned",
           "transaction", "write_atomically"]
