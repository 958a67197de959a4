"""A hold is one unit (issue 14, item 1): serve killed at exact points of a hold
(MAILGUARD_FAULT, mailguard.faults) is completed by recovery at the next start:
exactly one hold record and one held notice per held message, and the client's
resend (it never saw the 250) is the same hold, not a second copy.
"""

from __future__ import annotations

import json
import smtplib

import pytest
from hold_support import NUMBERS, SENDER, Serve, Sink, held_list, message_with_numbers, write_config

EXTERNAL = "someone@example.com"


def _send(port: int, data: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail(SENDER)
        s.rcpt(EXTERNAL)
        code, text = s.data(data)
    return code, text.decode()


def _audit(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "store" / "audit.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("point", ["after_hold_file", "after_hold_audit"])
def test_a_hold_cut_by_kill9_is_completed_and_its_resend_is_the_same_hold(tmp_path, monkeypatch, point):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    data = message_with_numbers(NUMBERS[:2])
    try:
        monkeypatch.setenv("MAILGUARD_FAULT", point)
        srv = Serve(cfg, tmp_path / "serve.log").start()
        monkeypatch.delenv("MAILGUARD_FAULT")
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
            _send(srv.port, data)  # serve dies at the fault point: no 250
        srv.proc.wait(10)
        assert srv.proc.returncode == 137
        [held] = held_list(cfg)  # the message and its row were durable

        srv = Serve(cfg, tmp_path / "serve2.log").start()  # recovery completes the hold
        try:
            notices = sink.wait_for(lambda m: m[1] == [SENDER], timeout=15)
            assert len(notices) == 1, "the held notice went out once, after recovery"
            code, text = _send(srv.port, data)  # the client's retry
            assert code == 250 and held["id"] in text
        finally:
            srv.stop()
        assert [h["id"] for h in held_list(cfg)] == [held["id"]], "no second copy"
        records = _audit(tmp_path)
        holds = [r for r in records if r["event"] == "hold" and r.get("id") == held["id"]]
        assert len(holds) == 1, f"{len(holds)} hold records"
        notices = [r for r in records if r["event"] == "notice" and r.get("id") == held["id"]]
        assert len(notices) == 1
        assert len(sink.to(SENDER)) == 1 and not sink.to(EXTERNAL)
    finally:
        sink.stop()


def test_a_different_message_is_not_taken_for_a_resend(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        data = message_with_numbers(NUMBERS[:1])
        first = _send(srv.port, data)
        again = _send(srv.port, data)
        other = _send(srv.port, message_with_numbers(NUMBERS[:1]))  # a new Message-ID
        assert first[0] == again[0] == other[0] == 250
        ids = [h["id"] for h in held_list(cfg)]
        assert len(ids) == 2 and ids[0] in first[1] and ids[0] in again[1] and ids[1] in other[1]
    finally:
        srv.stop()
        sink.stop()
