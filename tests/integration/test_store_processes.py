"""The files+SQLite store across processes: the hold lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailguard.errors import StoreError
from mailguard.store import Store

DATA = b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: test\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


def add(store, **kw):
    args = dict(rule="hold-external", reasons=("1 person",), persons=1,
                findings=[{"masked": "********9018", "confidence": "high", "reason": "keyword",
                           "location": "body", "fingerprint": "ab" * 32}],
                fingerprints=["ab" * 32], approvals_required=1)
    args.update(kw)
    return store.add("a@city.example.lg.jp", ["b@example.com", "c@example.org"], DATA, **args)


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
