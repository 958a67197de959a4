"""The files+SQLite store across processes: the hold lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailguard.errors import StoreError

from store_cases import add, store  # noqa: F401 (store is a fixture)


def test_lock_is_exclusive_across_processes(store):
    held = add(store)
    code = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(store.message_path(held.id))], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"locked"
        with pytest.raises(StoreError, match="busy"):
            with store.locked(held.id):
                pass
    finally:
        p.kill()
        p.wait()
    with store.locked(held.id) as h:
        assert h.id == held.id
