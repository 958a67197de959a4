"""The fingerprint key: a random 32-byte secret kept in the store directory.

    load_or_create_key(store_path) -> bytes

Fingerprints (detect.fingerprint) are HMAC-SHA256 under this key, so audit
records, held-mail metadata and metrics can count and correlate My Numbers
without holding them. Without the key, a fingerprint of a 12-digit number
(10^11 valid values) can not be brute-forced; with it, it can, so the key is
as secret as the hold store itself.

Creation is race-safe when two processes start at once (the relay and a CLI
command): each writes a complete key to its own temporary file (O_EXCL, 0600,
fsync) and publishes it with link(2), which fails if the name exists. The
loser reads the winner's key. No process ever sees a half-written key, and no
two processes ever use different keys.

SECURITY: the file is opened with O_NOFOLLOW (a symlink planted in the store
is refused, not followed). A key file that is not exactly 32 bytes, or that
group or others can read, is refused with StoreError rather than replaced:
replacing it would silently break correlation with earlier records, and a
readable key has to be looked at by an admin.

DIAGNOSTICS: logs nothing; errors name the file and what is wrong, never the key.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from mailguard.durable import file_mode
from mailguard.errors import StoreError

KEY_FILE = "fingerprint.key"
KEY_BYTES = 32


def load_or_create_key(store_path: str | os.PathLike[str]) -> bytes:
    """Return the store's fingerprint key, creating it on first use."""
    store = Path(store_path)
    try:
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{store}: cannot create the store directory: {exc.strerror}") from exc
    path = store / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    _publish_new_key(store, path)
    key = _read_key(path)
    if key is None:  # created and then removed under us: refuse rather than guess
        raise StoreError(f"{path}: key file vanished while it was being created")
    return key


def _read_key(path: Path) -> bytes | None:
    """The key, or None when the file does not exist yet."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path}: is a symlink; refusing to follow it") from exc
        raise StoreError(f"{path}: cannot open the fingerprint key: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{path}: not a regular file")
        if st.st_mode & (0o037 if file_mode() & 0o070 else 0o077):  # store.group: the group may read it
            raise StoreError(
                f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read the "
                "fingerprint key; chmod 600 it (and check who read it)"
            )
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise StoreError(
            f"{path}: expected {KEY_BYTES} bytes, found {len(data)}{'+' if len(data) > KEY_BYTES else ''}; "
            "the key is damaged (restore it from backup; a new key breaks correlation "
            "with earlier fingerprints)"
        )
    return data


def _key_mode() -> int:
    """0600; 0640 with store.group, so admins' `audit trace` can read the key."""
    return 0o640 if file_mode() & 0o070 else 0o600


def _publish_new_key(store: Path, path: Path) -> None:
    tmp = store / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, _key_mode())
    except OSError as exc:
        raise StoreError(f"{tmp}: cannot create the fingerprint key: {exc.strerror}") from exc
    try:
        try:
            # fchmod as well: the process umask could have narrowed 0600 further,
            # but a file readable only by nobody is useless to us.
            os.fchmod(fd, _key_mode())
            view = memoryview(secrets.token_bytes(KEY_BYTES))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            return  # the other process's key wins; ours is discarded unused
        except OSError as exc:
            raise StoreError(f"{path}: cannot publish the fingerprint key: {exc.strerror}") from exc
        _fsync_dir(store)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
