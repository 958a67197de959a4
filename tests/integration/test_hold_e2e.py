"""Hold and release end to end: SMTP client -> real `mailguard serve` -> real upstream sink,
and the real `mailguard held` / `mailguard audit` CLI as subprocesses beside it.
"""

from __future__ import annotations
from mailguard.replies import REPLIES

import email
import re
import shutil
from email.policy import default

import pytest
from hold_support import (
    INTERNAL,
    NUMBERS,
    ROOT,
    SENDER,
    Serve,
    Sink,
    cli,
    held_list,
    message_with_numbers,
    send,
    write_config,
)

OK, TEMPFAIL = REPLIES["ok"].code, REPLIES["internal_error"].code
EXIT_OK, EXIT_FAILED = 0, 1
HOLD_ID = re.compile(r"held for review as ([a-z]{16})")
EXTERNAL = "someone@example.com"


@pytest.fixture
def sink():
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def env(tmp_path, sink):
    """(config path, serve, sink) with the shipped default policy."""
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    yield cfg, srv, sink
    srv.stop()


def hold_one(srv, rcpts=(EXTERNAL,), count=2) -> tuple[str, bytes]:
    data = message_with_numbers(NUMBERS[:count])
    code, text = send(srv.port, list(rcpts), data)
    assert code == OK, text
    m = HOLD_ID.search(text)
    assert m, text
    return m.group(1), data


def masked(i: int) -> str:
    return "********" + NUMBERS[i][-4:]


def notices(sink, hold_id):
    out = []
    for mail_from, rcpts, raw in sink.to(SENDER):
        msg = email.message_from_bytes(raw, policy=default)
        if msg["X-Mailguard-Hold-Id"] == hold_id:
            out.append(msg)
    return out


def audit_events(cfg, hold_id=None):
    import json

    path = cfg.parent / "store" / "audit.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["event"] for r in recs if hold_id is None or r.get("id") == hold_id]


def test_held_mail_is_not_delivered_and_release_delivers_the_exact_bytes(env):
    cfg, srv, sink = env
    rcpts = [EXTERNAL, f"clerk@{INTERNAL}"]
    hold_id, data = hold_one(srv, rcpts)

    # The sender is told (Japanese first, masked); the recipients get nothing.
    assert sink.wait_for(lambda m: m[1] == [SENDER])
    assert sink.to(EXTERNAL) == [] and sink.to(f"clerk@{INTERNAL}") == []
    (notice,) = notices(sink, hold_id)
    body = notice.get_content()
    assert body.index("[日本語]") < body.index("[English]") and "external-hold" in body
    assert masked(0) in body

    (row,) = held_list(cfg)
    assert row["id"] == hold_id and row["state"] == "held" and row["to"] == rcpts and row["persons"] == 2
    assert row["from"] == SENDER and row["rule"] == "external-hold"

    r = cli(cfg, "held", "show", hold_id)
    assert r.returncode == EXIT_OK and masked(1).encode() in r.stdout

    r = cli(cfg, "held", "release", hold_id, "--reason", "confirmed with the sender by phone")
    assert r.returncode == EXIT_OK, r.stderr
    (delivered,) = [m for m in sink.messages if m[1] == rcpts]
    assert delivered[0] == SENDER and delivered[2] == data
    assert held_list(cfg) == [] and held_list(cfg, "released")[0]["id"] == hold_id
    assert audit_events(cfg, hold_id)[:1] == ["hold"] and "release" in audit_events(cfg, hold_id)

    # Released once: a second release is refused and delivers nothing more.
    r = cli(cfg, "held", "release", hold_id, "--reason", "again")
    assert r.returncode == EXIT_FAILED
    assert len([m for m in sink.messages if m[1] == rcpts]) == 1


def test_release_with_the_upstream_down_or_refusing_keeps_it_held(env):
    cfg, srv, sink = env
    hold_id, data = hold_one(srv)
    sink.wait_for(lambda m: m[1] == [SENDER])

    sink.stop()
    r = cli(cfg, "held", "release", hold_id, "--reason", "ok")
    assert r.returncode == EXIT_FAILED and b"stays held" in r.stderr
    assert held_list(cfg)[0]["state"] == "held"

    sink.start()
    sink.refuse_data = "554 5.7.1 policy says no"
    r = cli(cfg, "held", "release", hold_id, "--reason", "ok")
    assert r.returncode == EXIT_FAILED and b"554" in r.stderr
    assert held_list(cfg)[0]["state"] == "held" and sink.to(EXTERNAL) == []

    sink.refuse_data = ""
    r = cli(cfg, "held", "release", hold_id, "--reason", "upstream fixed")
    assert r.returncode == EXIT_OK, r.stderr
    assert [m[2] for m in sink.to(EXTERNAL)] == [data]
    events = audit_events(cfg, hold_id)
    assert events.count("release-failed") == 2 and events[-1] == "release"


def test_partial_refusal_delivers_once_to_each_recipient(env):
    cfg, srv, sink = env
    ok_rcpt, bad_rcpt = EXTERNAL, "nobody@example.org"
    hold_id, data = hold_one(srv, [ok_rcpt, bad_rcpt])
    sink.refuse_rcpts.add(bad_rcpt)
    r = cli(cfg, "held", "release", hold_id, "--reason", "ok")
    assert r.returncode == EXIT_FAILED and bad_rcpt.encode() in r.stderr
    assert len(sink.to(ok_rcpt)) == 1 and held_list(cfg)[0]["state"] == "held"
    sink.refuse_rcpts.clear()
    r = cli(cfg, "held", "release", hold_id, "--reason", "mailbox exists now")
    assert r.returncode == EXIT_OK, r.stderr
    assert len(sink.to(ok_rcpt)) == 1 and [m[2] for m in sink.to(bad_rcpt)] == [data]


def test_reject_notifies_the_sender_and_never_delivers(env):
    cfg, srv, sink = env
    hold_id, _ = hold_one(srv)
    r = cli(cfg, "held", "reject", hold_id, "--reason", "the list must go by registered post")
    assert r.returncode == EXIT_OK, r.stderr
    assert held_list(cfg, "rejected")[0]["id"] == hold_id
    rejected = [n for n in notices(sink, hold_id) if "rejected" in n["Subject"]]
    assert rejected and "registered post" in rejected[0].get_content()
    assert "送信されませんでした" in rejected[0].get_content()
    assert sink.to(EXTERNAL) == []
    assert cli(cfg, "held", "release", hold_id, "--reason", "x").returncode == EXIT_FAILED
    assert sink.to(EXTERNAL) == []


def test_reject_with_the_upstream_down_queues_the_notice(env):
    """Issue 13.5: the notice is queued, not lost; the running relay sends it later
    (tests/integration/test_notice_queue.py waits for it)."""
    cfg, srv, sink = env
    hold_id, _ = hold_one(srv)
    sink.stop()
    r = cli(cfg, "held", "reject", hold_id, "--reason", "wrong list")
    assert r.returncode == EXIT_OK, r.stderr  # the rejection itself stands
    assert held_list(cfg, "rejected")[0]["id"] == hold_id
    assert b"notified" not in r.stdout and b"queued" in r.stdout
    assert b"yourself" not in r.stdout + r.stderr


def test_expiry_notifies_the_sender_and_never_releases(tmp_path, sink):
    cfg = write_config(tmp_path, sink.port, expiry_hours=0.0005)  # 1.8 s
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        hold_id, _ = hold_one(srv)
        import time

        time.sleep(2.5)
        r = cli(cfg, "held", "expire")
        assert r.returncode == EXIT_OK and hold_id.encode() in r.stdout
        assert held_list(cfg, "expired")[0]["id"] == hold_id
        expired = [n for n in notices(sink, hold_id) if "expired" in n["Subject"]]
        assert expired and "保留期限" in expired[0].get_content()
        assert sink.to(EXTERNAL) == []
        assert audit_events(cfg, hold_id)[-2:] == ["expire", "notice"]
    finally:
        srv.stop()


def test_two_person_rule(tmp_path, sink):
    pol = tmp_path / "policies"
    pol.mkdir()
    text = (ROOT / "policies" / "10-default.toml").read_text(encoding="utf-8")
    text = text.replace('name = "external-hold"\n', 'name = "external-hold"\napprovals = 2\n', 1)
    (pol / "10-default.toml").write_text(text, encoding="utf-8")
    for extra in (ROOT / "policies").glob("*.toml"):
        if extra.name != "10-default.toml":
            shutil.copy(extra, pol / extra.name)
    cfg = write_config(tmp_path, sink.port, policy_dir=pol)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        hold_id, data = hold_one(srv)
        r = cli(cfg, "held", "release", hold_id, "--reason", "checked", operator="alice")
        assert r.returncode == EXIT_OK and b"1 of 2" in r.stdout
        assert sink.to(EXTERNAL) == [] and held_list(cfg)[0]["state"] == "held"
        r = cli(cfg, "held", "release", hold_id, "--reason", "me again", operator="alice")
        assert r.returncode == EXIT_FAILED and sink.to(EXTERNAL) == []
        r = cli(cfg, "held", "release", hold_id, "--reason", "second pair of eyes", operator="bob")
        assert r.returncode == EXIT_OK, r.stderr
        assert [m[2] for m in sink.to(EXTERNAL)] == [data]
        assert b'"approvers": ["alice", "bob"]' in b"".join(
            line for line in (cfg.parent / "store" / "audit.jsonl").read_bytes().splitlines()
            if b'"event":"release"' in line).replace(b'","', b'", "').replace(b'":[', b'": [')
    finally:
        srv.stop()


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_audit_verify_names_the_first_bad_line(env, tamper):
    cfg, srv, sink = env
    hold_id, _ = hold_one(srv)
    assert cli(cfg, "held", "reject", hold_id, "--reason", "no").returncode == EXIT_OK
    r = cli(cfg, "audit", "verify")
    assert r.returncode == EXIT_OK, r.stderr
    path = cfg.parent / "store" / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    if tamper == "edit":
        lines[1] = lines[1].replace(b'"operator":"', b'"operator":"x', 1)
    elif tamper == "delete":
        del lines[1]
    else:
        lines[0], lines[1] = lines[1], lines[0]
    path.write_bytes(b"".join(lines))
    r = cli(cfg, "audit", "verify")
    assert r.returncode == EXIT_FAILED
    expected_line = 1 if tamper == "reorder" else 2
    assert f"audit.jsonl:{expected_line}:".encode() in r.stderr, r.stderr
