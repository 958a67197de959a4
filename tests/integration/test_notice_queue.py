"""Sender notices are not lost (issue 13.5): a real `mailguard serve` and the real CLI
with a sink as the upstream that is down when a notice is due, then comes back.

MAILGUARD_NOTICE_RETRY=1,2 (test only) shortens the retry schedule (30 s, 2 min,
10 min, 1 h, then hourly in production) so the retry happens within seconds.
"""

from __future__ import annotations

import email
import json
import re
import socket
import time
from email.policy import default

import pytest
from hold_support import INTERNAL, NUMBERS, SENDER, Serve, Sink, cli, message_with_numbers, send, write_config

from mailguard.replies import REPLIES

OK = REPLIES["ok"].code
HOLD_ID = re.compile(r"held for review as ([a-z]{16})")
EXTERNAL = "someone@example.com"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("MAILGUARD_NOTICE_RETRY", "1,2")


def notices(sink: Sink, hold_id: str, kind: str = "") -> list[email.message.EmailMessage]:
    out = []
    for _, _, raw in sink.to(SENDER):
        msg = email.message_from_bytes(raw, policy=default)
        if msg["X-Mailguard-Hold-Id"] == hold_id and kind in str(msg["Subject"]):
            out.append(msg)
    return out


def wait_notice(sink: Sink, hold_id: str, kind: str = "", timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = notices(sink, hold_id, kind)
        if got:
            return got
        time.sleep(0.1)
    return []


def status(cfg) -> dict:
    r = cli(cfg, "status", "--json")
    return json.loads(r.stdout)


def audit_records(cfg) -> list[dict]:
    path = cfg.parent / "store" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hold_one(port: int) -> str:
    code, text = send(port, [EXTERNAL], message_with_numbers(NUMBERS[:2]))
    assert code == OK, text
    m = HOLD_ID.search(text)
    assert m, text
    return m.group(1)


def wait_status(cfg, pred, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        queue = status(cfg)["notices"]
        if pred(queue) or time.monotonic() > deadline:
            return queue
        time.sleep(0.2)


def test_a_hold_notice_due_while_the_upstream_is_down_arrives_when_it_is_back(tmp_path):
    # The relay needs its upstream to take mail at all (MAIL is 451 without it), so
    # the sink first refuses the notice's DATA, then goes down, then comes back.
    sink = Sink().start()
    sink.refuse_data = "451 4.3.0 try again later"
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        hold_id = hold_one(srv.port)
        wait_status(cfg, lambda q: "451" in q["last_error"])
        sink.stop()
        sink.refuse_data = ""
        wait_status(cfg, lambda q: q["last_error"] and "451" not in q["last_error"])
        queue = status(cfg)["notices"]
        assert queue["queued"] == 1 and queue["last_error"] and queue["oldest"], queue
        assert "451" not in queue["last_error"]  # down now, not refusing
        text = cli(cfg, "status").stdout.decode()
        assert re.search(r"^notices\s+1 queued", text, re.M) and "last error" in text, text
        sink.start()
        got = wait_notice(sink, hold_id)
        assert got, "the queued hold notice never arrived"
        assert "送信を保留しました" in got[0].get_content()
        assert not any(n in got[0].as_string() for n in NUMBERS)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and status(cfg)["notices"]["queued"]:
            time.sleep(0.2)
        assert status(cfg)["notices"]["queued"] == 0
        records = [r for r in audit_records(cfg) if r["event"] == "notice" and r.get("id") == hold_id]
        assert records[0]["attempt"] == 1 and records[0]["error"] and records[0]["queued"]
        assert records[-1]["attempt"] >= 2 and records[-1]["reply"].startswith("250")
    finally:
        srv.stop()
        sink.stop()


def test_a_reject_while_the_upstream_is_down_is_notified_after_it_is_back(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        hold_id = hold_one(srv.port)
        assert wait_notice(sink, hold_id, "on hold")
        sink.stop()
        r = cli(cfg, "held", "reject", hold_id, "--reason", "wrong list")
        assert r.returncode == 0, r.stderr
        assert b"queued" in r.stdout and b"yourself" not in r.stdout + r.stderr, r.stdout
        assert status(cfg)["notices"]["queued"] == 1
        sink.start()
        got = wait_notice(sink, hold_id, "rejected")
        assert got, "the queued reject notice never arrived"
        assert "wrong list" in got[0].get_content()
        assert len(wait_notice(sink, hold_id, "rejected")) == 1
    finally:
        srv.stop()
        sink.stop()


def test_notice_from_and_ehlo_default_to_postmaster_of_the_first_internal_domain_and_the_fqdn(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    text = cfg.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(hostname|notice_from) = .*\n", "", text)
    cfg.write_text(text, encoding="utf-8")
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        hold_id = hold_one(srv.port)
        (notice,) = wait_notice(sink, hold_id)
        assert notice["From"].addresses[0].addr_spec == f"postmaster@{INTERNAL}"
        helos = [h for h, mail_from in sink.helos if mail_from == f"postmaster@{INTERNAL}"]
        assert helos and helos[0] == socket.getfqdn()
    finally:
        srv.stop()
        sink.stop()


def test_the_example_config_shows_the_notice_sender_and_the_ehlo_name():
    from hold_support import ROOT

    example = (ROOT / "deploy" / "mailguard.toml.example").read_text(encoding="utf-8")
    assert re.search(r"(?m)^# hostname = .*FQDN", example)
    assert re.search(r"(?m)^# notice_from = .*postmaster@<first internal domain>", example)


def test_notice_sender_and_retry_defaults(monkeypatch):
    from mailguard.config import OrganisationConfig, ServerConfig, StoreConfig
    from mailguard.notices import ehlo_name, notice_sender
    from mailguard.notifier import RETRY_SCHEDULE, retry_delay, retry_schedule

    org = OrganisationConfig(internal_domains=("City.Example.lg.jp", "other.example"))
    assert notice_sender(StoreConfig(), ServerConfig(), org) == "postmaster@city.example.lg.jp"
    assert notice_sender(StoreConfig(notice_from="mg@x.example"), ServerConfig(), org) == "mg@x.example"
    assert notice_sender(StoreConfig(), ServerConfig(hostname="mg.x.example")) == "postmaster@mg.x.example"
    assert ehlo_name(ServerConfig()) == socket.getfqdn()
    assert ehlo_name(ServerConfig(hostname="mg.x.example")) == "mg.x.example"
    monkeypatch.delenv("MAILGUARD_NOTICE_RETRY")
    assert retry_schedule() == RETRY_SCHEDULE and RETRY_SCHEDULE[0] < 60  # first retry within a minute
    assert [retry_delay(n) for n in (1, 2, 3, 4, 5, 9)] == [30, 120, 600, 3600, 3600, 3600]
    monkeypatch.setenv("MAILGUARD_NOTICE_RETRY", "1,2,4")
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]
