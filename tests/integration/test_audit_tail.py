"""`mailguard audit verify` catches records cut from the end (issue 14, item 2):
against the checkpoint in the store database, and against one kept elsewhere."""

from __future__ import annotations

import pytest
from hold_support import cli, free_port, write_config

from mailguard.audit import AuditLog
from mailguard.store import Store


@pytest.fixture
def cfg(tmp_path):
    cfg = write_config(tmp_path, free_port())
    Store(tmp_path / "store").close()
    log = AuditLog(tmp_path / "store")
    for i in range(12):
        log.append("pass", operator="mailguard", n=i)
    return cfg


def _verify(cfg, *extra):
    r = cli(cfg, "audit", "verify", *extra)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def _head(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("head "))


def test_intact_log_prints_its_head_and_matches_it(cfg):
    code, out = _verify(cfg)
    assert code == 0 and "chain intact" in out and "checkpoint 12 matches" in out
    head = _head(out)
    code, out = _verify(cfg, "--checkpoint", head)
    assert code == 0, out


@pytest.mark.parametrize("keep", [11, 2, 0])  # the last line, the last ten, all of it
def test_a_cut_tail_fails(cfg, tmp_path, keep):
    path = tmp_path / "store" / "audit.jsonl"
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:keep]))
    code, out = _verify(cfg)
    assert code == 1 and "cut" in out and "12" in out


def test_a_rewritten_log_fails_against_a_kept_checkpoint(cfg, tmp_path):
    code, out = _verify(cfg)
    kept = _head(out)
    store = tmp_path / "store"
    (store / "audit.jsonl").unlink()
    with __import__("sqlite3").connect(store / "meta.sqlite") as db:
        db.execute("DELETE FROM audit_checkpoint")
    log = AuditLog(store)
    for i in range(12):
        log.append("pass", operator="mailguard", n=i)
    assert _verify(cfg)[0] == 0
    code, out = _verify(cfg, "--checkpoint", kept)
    assert code == 1 and "checkpoint" in out


def test_a_malformed_checkpoint_is_a_usage_error(cfg):
    assert _verify(cfg, "--checkpoint", "12")[0] == 2
