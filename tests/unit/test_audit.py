"""The audit log: hash chain, verify naming the first bad line, concurrent appends, export."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import UTC, datetime

import pytest

from mailguard.audit import GENESIS, AuditLog, parse_since


@pytest.fixture
def log(tmp_path):
    a = AuditLog(tmp_path)
    for i in range(5):
        a.append("hold", operator="mailguard", id=f"id{i}", persons=i, reason="r",
                 findings=[{"masked": "********9018", "location": "body", "fingerprint": "cd" * 32}])
    return a


def lines(a):
    return a.path.read_bytes().splitlines(keepends=True)


def test_chain_is_intact_and_linked(log):
    recs = list(log.records())
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(recs, recs[1:]))
    assert log.verify().ok and log.verify().records == 5
    assert oct(os.stat(log.path).st_mode & 0o777) == "0o600"


def test_an_edited_line_is_named(log):
    ls = lines(log)
    ls[2] = ls[2].replace(b'"persons":2', b'"persons":0')
    log.path.write_bytes(b"".join(ls))
    r = log.verify()
    assert not r.ok and r.bad_line == 3 and "edited" in r.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(log):
    from mailguard.audit import canonical, record_hash

    ls = lines(log)
    rec = json.loads(ls[1])
    rec["operator"] = "someone-else"
    rec["hash"] = record_hash(rec)
    ls[1] = (canonical(rec) + "\n").encode()
    log.path.write_bytes(b"".join(ls))
    r = log.verify()
    assert not r.ok and r.bad_line == 3


def test_a_deleted_line_is_named(log):
    ls = lines(log)
    del ls[1]
    log.path.write_bytes(b"".join(ls))
    r = log.verify()
    assert not r.ok and r.bad_line == 2 and "prev" in r.reason


def test_reordered_lines_are_named(log):
    ls = lines(log)
    ls[2], ls[3] = ls[3], ls[2]
    log.path.write_bytes(b"".join(ls))
    r = log.verify()
    assert not r.ok and r.bad_line == 3


def test_a_torn_tail_is_cut_and_recorded_by_the_next_append(log):
    with open(log.path, "ab") as f:
        f.write(b'{"event":"hold","seq":6')
    assert log.verify().bad_line == 6
    log.append("pass", operator="mailguard")
    recs = list(log.records())
    assert [r["event"] for r in recs[-2:]] == ["audit-repaired", "pass"]
    assert recs[-2]["dropped_bytes"] == len(b'{"event":"hold","seq":6')
    assert log.verify().ok


def test_free_text_is_scrubbed_but_fingerprints_are_not(tmp_path):
    a = AuditLog(tmp_path)
    fp = "0123456789012345" * 4
    a.append("reject", reason="number 1234-5678-9018 inside", fingerprints=[fp],
             findings=[{"masked": "********9018", "fingerprint": fp}])
    rec = next(a.records())
    assert "1234" not in rec["reason"] and rec["reason"].endswith("9018 inside")
    assert rec["fingerprints"] == [fp] and rec["findings"][0]["fingerprint"] == fp


def _appender(path, n):
    a = AuditLog(path)
    for i in range(n):
        a.append("pass", operator=f"p{os.getpid()}", n=i)


def test_two_processes_appending_keep_one_chain(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ps = [ctx.Process(target=_appender, args=(tmp_path, 100)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    r = AuditLog(tmp_path).verify()
    assert r.ok and r.records == 200


def test_export_since_json_and_csv(log):
    assert len(list(log.export(parse_since("2000-01-01"), "json"))) == 5
    assert list(log.export(datetime(2999, 1, 1, tzinfo=UTC), "json")) == []
    rows = "".join(log.export(parse_since("2000-01-01"), "csv")).splitlines()
    assert rows[0].startswith("seq,time,event,operator,id") and len(rows) == 6
    assert "********9018@body" in rows[1]
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_dict_keys_are_scrubbed_too(tmp_path):
    """release-partial records {refused recipient: reply}; an address can hold a number."""
    from mailguard.audit import AuditLog

    log = AuditLog(tmp_path)
    log.append("release-partial", refused={"123456789018@example.jp": "550 5.1.1 no such user"})
    text = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    assert "123456789018" not in text and "********9018@example.jp" in text
    assert log.verify().ok


# -- the tail: checkpoints outside the file (issue 14, item 2) -----------------


def _cut_lines(a, n):
    ls = lines(a)
    a.path.write_bytes(b"".join(ls[:len(ls) - n]))


@pytest.mark.parametrize("cut", [1, 10, "all"])
def test_cutting_the_tail_is_detected(tmp_path, cut):
    from mailguard.audit import Checkpoint

    a = AuditLog(tmp_path)
    for i in range(15):
        a.append("pass", operator="mailguard", n=i)
    assert a.last_checkpoint().seq == 15
    if cut == "all":
        a.path.write_bytes(b"")
    else:
        _cut_lines(a, cut)
    r = AuditLog(tmp_path).verify()
    assert not r.ok and r.bad_line is None and "checkpointed" in r.reason
    assert isinstance(a.last_checkpoint(), Checkpoint)


def test_a_rewrite_with_recomputed_hashes_is_caught_by_a_kept_checkpoint(tmp_path):
    """The attacker rewrites the file and the store database: only a head kept
    elsewhere (syslog, an inspector's notes) shows it."""
    from mailguard.audit import Checkpoint

    a = AuditLog(tmp_path)
    for i in range(5):
        a.append("hold", operator="mailguard", id=f"id{i}")
    kept = a.verify().head
    assert kept == a.last_checkpoint() and kept.seq == 5
    # Rewrite: drop record 3 and rebuild the chain (and its checkpoint) from scratch.
    recs = list(a.records())
    del recs[2]
    a.path.unlink()
    (tmp_path / "meta.sqlite").unlink()
    b = AuditLog(tmp_path)
    for r in recs:
        b.append(r["event"], operator=r["operator"], id=r["id"])
    b.append("hold", operator="mailguard", id="padding")  # same length as before
    assert b.verify().ok  # the file and its own checkpoint agree
    r = b.verify(checkpoint=kept)
    assert not r.ok and r.bad_line == 5 and "checkpoint" in r.reason
    shorter = Checkpoint(kept.seq + 3, kept.hash)
    r = b.verify(checkpoint=shorter)
    assert not r.ok and r.bad_line is None


def test_a_kept_checkpoint_that_matches_passes_and_parses(log):
    from mailguard.audit import Checkpoint

    head = log.verify().head
    assert Checkpoint.parse(str(head)) == head
    r = log.verify(checkpoint=Checkpoint.parse(f"3:{list(log.records())[2]['hash']}"))
    assert r.ok and len(r.checked) == 2
    for bad in ("3", "x:" + "a" * 64, "3:" + "a" * 63, "0:" + "a" * 64):
        with pytest.raises(ValueError):
            Checkpoint.parse(bad)


def test_the_checkpoint_is_logged_as_one_event(tmp_path):
    import io

    import structlog

    from mailguard.log import configure_logging

    out = io.StringIO()
    before = structlog.get_config()
    configure_logging(stream=out)
    try:
        rec = AuditLog(tmp_path).append("pass", operator="mailguard")
    finally:
        structlog.configure(**before)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    cp = [e for e in events if e["event"] == "audit_checkpoint"]
    assert cp and cp[-1]["seq"] == rec["seq"] and cp[-1]["chain_hash"] == rec["hash"]
