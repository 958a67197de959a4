"""A files+SQLite store and one held message, shared by the store's unit and process tests."""

from __future__ import annotations

import pytest

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
