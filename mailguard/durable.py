"""The one durable write: Postfix's mail_stream discipline for every file we promise.

    write_file(final, data, *, tmp, replace=True)                 -> None
    write_locked(final, data, *, tmp, replace=True)               -> fd (flocked; caller closes)
    fsync_dir(path)                                               -> None
    probe_dir(path)                                               -> None (OSError if not writable)
    free_bytes(path)                                              -> bytes an unprivileged writer may use

Steps, in order: create ``tmp`` with O_EXCL (never reuse or follow a name that
is already there) and mode 0600; with ``write_locked`` take an exclusive flock
on it at once; write every byte (short writes retried); fsync; move it to
``final``; fsync the directory of ``final``. A file therefore counts only once
the whole of it is on disk under its final name.

``replace=True`` moves with rename(2) (an existing ``final`` is replaced
atomically); ``replace=False`` links then unlinks the temporary name, so an
existing ``final`` is never overwritten (FileExistsError), as maildir asks.

On any failure the temporary file this call created is removed and the error
propagates unchanged (OSError, or whatever interrupted us); a temporary name
that already existed is left alone, since it is someone else's.

The flock of ``write_locked`` lives on the inode, so it stays held under the
final name until the returned descriptor is closed: a crash-recovery pass can
tell a dead writer's leftovers (lock free) from a live one (lock held).

SECURITY: paths come from callers, who validate ids before they become names.
DIAGNOSTICS: none; callers log.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable
from pathlib import Path

FILE_MODE = 0o600
GROUP_FILE_MODE, GROUP_DIR_MODE = 0o660, 0o2770  # store.group: admins share the store
_group_access = False


def share_with_group(on: bool = True) -> None:
    """Store files 0660 and directories 2770 (setgid: new files take the
    directory's group) from now on, for store.group; set once by the CLI."""
    global _group_access
    _group_access = on


def file_mode() -> int:
    """The mode of a new store file: 0600, or 0660 with store.group."""
    return GROUP_FILE_MODE if _group_access else FILE_MODE


def chmod_own(path: str | os.PathLike[str], mode: int) -> None:
    """chmod ``path`` if this user owns it: an admin of store.group uses a store
    that serve's user owns, and only the owner may (or needs to) set its mode."""
    if os.stat(path).st_uid == os.geteuid():
        os.chmod(path, mode)


def dir_mode() -> int:
    """The mode of a store directory: 0700, or 2770 with store.group."""
    return GROUP_DIR_MODE if _group_access else 0o700


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so a rename or unlink in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _chunks(data: bytes | Iterable[bytes]) -> Iterable[bytes]:
    return (data,) if isinstance(data, bytes) else data


def write_locked(final: str | os.PathLike[str], data: bytes | Iterable[bytes], *,
                 tmp: str | os.PathLike[str], replace: bool = True) -> int:
    """Write ``data`` durably to ``final`` via ``tmp``; return the open, flocked fd.

    The caller owns the descriptor and closes it to release the lock.
    """
    final, tmp = Path(final), Path(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode())
    placed = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for chunk in _chunks(data):
            write_all(fd, chunk)
        os.fsync(fd)
        if replace:
            os.rename(tmp, final)
        else:
            os.link(tmp, final)  # FileExistsError: never overwrite
            placed = True
            os.unlink(tmp)
        placed = True
        fsync_dir(final.parent)
    except BaseException:
        os.close(fd)
        if not placed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    return fd


def write_file(final: str | os.PathLike[str], data: bytes | Iterable[bytes], *,
               tmp: str | os.PathLike[str], replace: bool = True) -> None:
    """Write ``data`` durably to ``final`` via ``tmp`` (see the module doc)."""
    os.close(write_locked(final, data, tmp=tmp, replace=replace))


def probe_dir(path: str | os.PathLike[str]) -> None:
    """Prove a directory takes a durable write: create, fsync and remove one file."""
    probe = Path(path) / f".probe-{os.getpid()}-{time.monotonic_ns()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        write_all(fd, b"ok\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes free for an unprivileged writer on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
