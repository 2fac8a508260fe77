"""Files at rest: written whole, private to the service account, and durable once written.

Every side file of the exchange (the gateway's secret, tokens, credentials and logon nonces,
the engine's snapshots, the clearing house's statements) is written through this module, so
that one piece of code decides what "written" means:

* **Atomic replacement** (:func:`write_atomic`): the bytes go to a hidden temporary file in the
  same directory (``.NAME.tmp``: same file system, so the rename is atomic), which is flushed
  and fsynced; ``os.replace`` puts it in place; then the directory is fsynced, because the
  rename is only a change to the directory, and until the directory reaches the disk a power
  loss can bring the old file back (an acknowledged revocation reverting, say). A crash leaves
  the old file or the new one, never a mix, and at most a stray temporary file that the next
  write of the same name overwrites. On a failure the temporary file is removed and the error
  raised. The temporary name is fixed, so one path has one writer at a time (the exchange's
  files each have one owner).
* **Private** (``mode``, 0600 by default): the file is created with the mode and ``fchmod``-ed
  to it, so a stray temporary file left with another mode cannot pass it on. Directories the
  exchange creates get 0700 (:func:`make_private_dir`).
* **New files inside a directory renamed into place later** (:func:`write_new` and
  :func:`replace_durably`): each file is fsynced on its own, then the directory once, then
  the directory is renamed and its parent fsynced (the statements of a trading day).
* **Appends** (:func:`append_durably`): one write with ``O_APPEND``, then an fsync, and an fsync
  of the directory if the append created the file (the logon nonce log).

This module imports nothing from the exchange: any room that writes files may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_atomic(path: str | os.PathLike[str], *chunks: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` with the concatenated ``chunks``, atomically and durably."""
    path = Path(path)
    scratch = path.with_name(f".{path.name}.tmp")
    try:
        write_new(scratch, *chunks, mode=mode)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_new(path: str | os.PathLike[str], *chunks: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write ``path`` (truncating it) and fsync it; its directory entry is the caller's to
    make durable (:func:`fsync_dir` once for many files, or :func:`replace_durably`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask and ignored for a file that exists
        for chunk in chunks:
            _write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(path: str | os.PathLike[str], data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Append ``data`` to ``path`` in one write and fsync it (creating the file, durably, if needed)."""
    path = Path(path)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        if created:
            os.fchmod(fd, mode)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def replace_durably(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """``os.replace(source, target)``, then fsync the directories the rename changed."""
    source, target = Path(source), Path(target)
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent.resolve() != target.parent.resolve():
        fsync_dir(source.parent)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the directory's entries (creations, renames, removals) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(directory: str | os.PathLike[str]) -> Path:
    """The directory, created with mode 0700 (and its entry made durable) if it did not exist;
    an existing directory is left as it is (its mode is the operator's: see the start-up check)."""
    directory = Path(directory)
    if directory.is_dir():
        return directory
    directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is masked by the umask
    fsync_dir(directory.parent)
    return directory


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
