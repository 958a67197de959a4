"""Robustness over real loopback sockets: notices to SMTPUTF8 senders, the 451 after
an internal error not waiting for an upstream's QUIT, and the pool waiting for the
stale links it closes in the background.
"""

from __future__ import annotations

import asyncio
import email
import json
import time
from email.policy import default

from conftest import Sink, _SinkSMTP, start_sink

from mailguard.config import load_config
from mailguard.hold import Holder
from mailguard.recorder import Recorder
from mailguard.policy import BLOCK, HOLD, Decision
from mailguard.store import HELD
from mailguard.upstream import IDLE_MAX_AGE, UpstreamPool

UTF8_SENDER = "山田@city.example.lg.jp"
MESSAGE = (b"From: staff@city.example.lg.jp\r\nTo: someone@example.com\r\n"
           b"Subject: robustness\r\nMessage-ID: <r1@city.example.lg.jp>\r\n\r\nbody\r\n")


class HoldAll:
    async def inspect(self, mail_from, rcpt_tos, data):
        return Decision(HOLD, "test-hold", reasons=("held for the test",), persons=1)


def _with_holder(config, services):
    services.holder = Holder(config)
    services.recorder = Recorder(config, services.holder.audit)
    return services


def _audit(store_path) -> list[dict]:
    path = store_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def _wait(pred, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    return pred()


# ------------------------------------------------------------- 1. UTF-8 notices


async def test_notice_to_utf8_sender_is_a_utf8_message_sent_with_smtputf8(start_relay, upstream, raw, tmp_path):
    h = await start_relay(pipeline=HoldAll(), services_hook=_with_holder)
    c = await raw(h.port)
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO client.test"))[0] == 250
    assert (await c.cmd(f"MAIL FROM:<{UTF8_SENDER}> SMTPUTF8"))[0] == 250
    assert (await c.cmd("RCPT TO:<someone@example.com>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    code, lines = await c.cmd(MESSAGE + b".\r\n")
    assert code == 250, lines

    notices = await _wait(lambda: [m for m in upstream.messages if m.rcpt_tos == [UTF8_SENDER]])
    assert len(notices) == 1, [m.rcpt_tos for m in upstream.messages]
    notice = notices[0]
    assert "SMTPUTF8" in [o.upper() for o in notice.mail_options]
    msg = email.message_from_string(notice.data.decode("utf-8"), policy=default)  # RFC 6532 headers
    assert [a.addr_spec for a in msg["To"].addresses] == [UTF8_SENDER]
    assert UTF8_SENDER.encode("utf-8") in notice.data  # RFC 6532: the header is UTF-8, not mangled
    assert msg["Auto-Submitted"] == "auto-generated" and "[English]" in msg.get_content()
    records = await _wait(lambda: [r for r in _audit(tmp_path / "store") if r.get("event") == "notice"])
    assert records and records[0].get("reply", "").startswith("250") and "error" not in records[0]


async def test_notice_to_utf8_sender_fails_cleanly_when_upstream_lacks_smtputf8(write_config, tmp_path):
    sink = await start_sink(smtputf8=False)
    try:
        config = load_config(write_config({
            "server": {"listen": "127.0.0.1:10025", "hostname": "mailguard.test"},
            "upstream": {"url": sink.url, "timeout": 5},
            "store": {"path": str(tmp_path / "store")},
            "policy": {"dir": str(tmp_path)},
        }))
        holder = Holder(config)
        decision = Decision(HOLD, "test-hold", reasons=("held for the test",), persons=1)
        hold_id = await holder.hold(UTF8_SENDER, ["someone@example.com"], MESSAGE, decision,
                                    mail_options=["SMTPUTF8"])
        await holder.aclose()

        assert holder.store.get(hold_id).state == HELD  # the hold stands
        assert sink.messages == []  # nothing mangled went out
        assert "MAIL" not in sink.commands  # refused before a byte of it was sent
        events = [r.get("event") for r in _audit(tmp_path / "store")]
        assert events.count("hold") == 1
        notice = [r for r in _audit(tmp_path / "store") if r.get("event") == "notice"]
        assert len(notice) == 1 and notice[0]["id"] == hold_id
        assert "error" in notice[0] and "reply" not in notice[0]
    finally:
        sink.server.close()


async def test_notice_to_ascii_sender_is_sent_without_smtputf8(start_relay, upstream, raw):
    h = await start_relay(pipeline=HoldAll(), services_hook=_with_holder)
    c = await raw(h.port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<staff@city.example.lg.jp>"))[0] == 250
    assert (await c.cmd("RCPT TO:<someone@example.com>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    assert (await c.cmd(MESSAGE + b".\r\n"))[0] == 250
    notices = await _wait(lambda: [m for m in upstream.messages if m.rcpt_tos == ["staff@city.example.lg.jp"]])
    assert notices and notices[0].mail_options == []
    notices[0].data.decode("ascii")  # still 7-bit


# ------------------------------------------------- 2. 451 does not wait for QUIT


class _QuitSlowSMTP(_SinkSMTP):
    """A sink that takes ``quit_delay`` seconds to answer QUIT (forever by default)."""

    quit_delay = 3600.0

    async def smtp_QUIT(self, arg):
        await asyncio.sleep(self.quit_delay)
        await super().smtp_QUIT(arg)


async def _quit_slow_sink(delay: float = 3600.0) -> Sink:
    sink = Sink()
    proto = type("QuitSlow", (_QuitSlowSMTP,), {"quit_delay": delay})
    sink.server = await asyncio.get_running_loop().create_server(lambda: proto(sink), "127.0.0.1", 0)
    sink.port = sink.server.sockets[0].getsockname()[1]
    return sink


class _Exploding:
    def __iter__(self):
        raise RuntimeError("reasons cannot be read")


class BrokenDecision:
    """A pipeline whose decision blows up the relay's reply (an internal error that
    reaches RelaySMTP.handle_exception, not the inspect guard)."""

    async def inspect(self, mail_from, rcpt_tos, data):
        return Decision(BLOCK, "test-block", reasons=_Exploding())


async def test_internal_error_451_is_sent_without_waiting_for_upstream_quit(start_relay, raw):
    sink = await _quit_slow_sink()
    try:
        h = await start_relay(pipeline=BrokenDecision(), upstream_url=sink.url)
        c = await raw(h.port)
        await c.reply()
        await c.cmd("EHLO client.test")
        assert (await c.cmd("MAIL FROM:<staff@city.example.lg.jp>"))[0] == 250
        assert (await c.cmd("RCPT TO:<someone@example.com>"))[0] == 250
        assert (await c.cmd("DATA"))[0] == 354
        started = time.monotonic()
        code, lines = await c.cmd(MESSAGE + b".\r\n")
        elapsed = time.monotonic() - started
        assert code == 451 and lines[-1].startswith("451 4.3.0"), lines
        assert elapsed < 2.0, f"451 took {elapsed:.1f}s: the relay waited for the upstream's QUIT"

        # The connection goes on, on a fresh upstream link.
        assert (await c.cmd("MAIL FROM:<staff@city.example.lg.jp>"))[0] == 250
        assert sink.connections == 2
        assert (await c.cmd("QUIT"))[0] == 221

        # stop waits for the background close (QUIT_TIMEOUT bounds it) and leaves no task.
        await h.app.stop(grace=1)
        assert not h.relay._tasks
        assert await _wait(lambda: all(p.transport is None or p.transport.is_closing() for p in sink.protocols),
                           timeout=2)
    finally:
        sink.server.close()


# ------------------------------------------- 3. stale pooled links are awaited


async def test_pool_close_waits_for_stale_links_closing_in_background(write_config, tmp_path):
    sink = await _quit_slow_sink(delay=0.5)
    try:
        config = load_config(write_config({
            "upstream": {"url": sink.url, "timeout": 5},
            "store": {"path": str(tmp_path / "store")},
            "policy": {"dir": str(tmp_path)},
        }))
        pool = UpstreamPool(config.upstream, local_hostname="mailguard.test")
        stale = await pool.acquire()
        await pool.release(stale)
        stale.idle_since -= IDLE_MAX_AGE + 1  # idle too long: the next acquire replaces it
        fresh = await pool.acquire()
        assert fresh is not stale and sink.connections == 2
        assert stale.alive  # its QUIT is in flight (the sink answers after 0.5 s)

        await pool.close()
        assert not stale.alive, "pool.close() returned before the stale link was closed"
        await pool.release(fresh)  # pool closed: closed, not pooled
        assert not fresh.alive
    finally:
        sink.server.close()
