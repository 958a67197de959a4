"""Relay regressions: cancellation, SMTPUTF8, 8-bit addresses, MAIL parameters of held mail."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from conftest import REPO
from mailguard.replies import REPLIES

# serve runs on uvloop by default (server.event_loop): the relay's SMTP handling is
# tested on it as well as on asyncio's loop.
pytestmark = pytest.mark.uvloop_too

OK, TEMPFAIL = REPLIES["ok"].code, REPLIES["internal_error"].code

MSG = (
    b"From: sender@city.example.lg.jp\r\nTo: a@example.com\r\nSubject: test\r\n"
    b"Message-ID: <1@city.example.lg.jp>\r\n\r\nhello\r\n"
)


async def _greet(raw, port):
    c = await raw(port)
    assert (await c.reply())[0] == 220
    return c


async def _wait_for(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def test_client_gone_while_upstream_slow_after_dot_never_desyncs_pooled_link(relay, upstream, raw):
    """The client vanishes after the final dot while the upstream is still answering
    DATA. The upstream link must not go back to the pool with that reply (or the
    RSET's) still in flight: the next transaction would read a stale 250 as its own
    and could answer 250 for a message that never reached the upstream."""
    upstream.delay, upstream.delay_at = 0.5, "DATA"
    c = await _greet(raw, relay.port)
    for cmd in ("EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<first@example.com>"):
        assert (await c.cmd(cmd))[0] == OK
    assert (await c.cmd("DATA"))[0] == 354
    await c.send(MSG + b".\r\n")
    await asyncio.sleep(0.1)  # the relay is waiting for the upstream's DATA reply
    c.close()
    await asyncio.sleep(0.8)  # the upstream answers DATA; the relay cleans up
    upstream.delay = 0
    upstream.refuse["refused@example.com"] = "550 5.1.1 no such user"
    for i in range(3):
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False, timeout=5) as c2:
            errors, reply = await c2.sendmail("s@x.test", [f"next{i}@example.com", "refused@example.com"], MSG)
        assert list(errors) == ["refused@example.com"], (i, errors)
    delivered = [m.rcpt_tos for m in upstream.messages]
    # The first message may or may not count as delivered (SMTP's usual ambiguity:
    # the client never saw a reply and will retry); every later one exactly once.
    assert delivered[-3:] == [["next0@example.com"], ["next1@example.com"], ["next2@example.com"]], delivered
    assert len(delivered) in (3, 4), delivered


# ------------------------------------------------------------------ SMTPUTF8 and 8-bit envelopes


class Returning:
    def __init__(self, decision):
        self.decision = decision

    async def inspect(self, mail_from, rcpt_tos, data):
        return self.decision


async def test_smtputf8_never_silently_dropped_when_upstream_stops_offering_it(relay, upstream, raw):
    """The relay offered SMTPUTF8 (the upstream did, at the last connection); the
    upstream restarts without it. MAIL ... SMTPUTF8 must be a 451, not forwarded
    with the parameter quietly dropped."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as c:
        await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert relay.relay.pool.smtputf8
    upstream.smtputf8 = False
    for proto in upstream.protocols:  # the upstream restarts: pooled links die
        proto.transport.close()
    await asyncio.sleep(0.05)
    c = await _greet(raw, relay.port)
    await c.cmd("EHLO c.test")
    await c.send("MAIL FROM:<送信者@市役所.example> SMTPUTF8\r\n".encode())
    code, lines = await c.reply()
    assert code == TEMPFAIL and lines[0].startswith("451 4.4.0 "), lines
    assert "MAIL" not in upstream.commands[1:] and len(upstream.messages) == 1


async def test_8bit_and_control_characters_in_envelope_addresses_refused_at_smtp(relay, upstream, raw):
    c = await _greet(raw, relay.port)
    await c.cmd("EHLO c.test")
    for line, status in (
        (b"MAIL FROM:<\xff\xfe@x.test> SMTPUTF8\r\n", "553 5.1.3 "),  # not UTF-8
        ("MAIL FROM:<送信者@市役所.example>\r\n".encode(), "553 5.6.7 "),  # UTF-8 without SMTPUTF8
        (b"MAIL FROM:<a\x00b@x.test>\r\n", "553 5.1.3 "),
    ):
        await c.send(line)
        code, lines = await c.reply()
        assert code == 553 and lines[0].startswith(status), (line, lines)
    assert (await c.cmd("MAIL FROM:<s@x.test>"))[0] == OK
    for line, status in (
        (b"RCPT TO:<\xc3(@example.com>\r\n", "553 5.1.3 "),
        ("RCPT TO:<受信者@example.jp>\r\n".encode(), "553 5.6.7 "),
        (b"RCPT TO:<a\x01@example.com>\r\n", "553 5.1.3 "),
    ):
        await c.send(line)
        code, lines = await c.reply()
        assert code == 553 and lines[0].startswith(status), (line, lines)
    assert upstream.commands.count("RCPT") == 0


async def test_held_message_keeps_its_mail_parameters_for_release(start_relay, upstream, raw, tmp_path):
    """A held SMTPUTF8 / 8BITMIME message is released with the same MAIL parameters."""
    from mailguard.hold import Holder, release_message
    from mailguard.policy import HOLD, Decision

    def hook(config, services):
        services.holder = Holder(config)

    h = await start_relay(pipeline=Returning(Decision(HOLD, "test-hold")), services_hook=hook)
    c = await _greet(raw, h.port)
    await c.cmd("EHLO c.test")
    await c.send("MAIL FROM:<送信者@市役所.example> SMTPUTF8 BODY=8BITMIME\r\n".encode())
    assert (await c.reply())[0] == OK
    await c.send("RCPT TO:<受信者@example.jp>\r\n".encode())
    assert (await c.reply())[0] == OK
    assert (await c.cmd("DATA"))[0] == 354
    body = "Subject: 保留\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n本文\r\n".encode()
    await c.send(body + b".\r\n")
    code, lines = await c.reply()
    assert code == OK, lines
    holder = h.app.services.holder
    [held] = holder.store.list()
    envelope, data = holder.store.read_message(held.id)
    assert data == body
    assert set(envelope.mail_options) == {"SMTPUTF8", "BODY=8BITMIME"}
    out = await release_message(h.config, holder.store, holder.audit, held.id, "op", "checked")
    assert out.delivered, out.error
    [m] = [m for m in upstream.messages if m.data == body]
    assert m.mail_from == "送信者@市役所.example" and m.rcpt_tos == ["受信者@example.jp"]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(m.mail_options)


async def test_sighup_reload_does_not_run_store_recovery_beside_live_holds(start_relay, upstream, tmp_path):
    """Recovery takes unlocked temporary files; during traffic one of this
    process's own holds can be in its create-then-lock instant. Only start recovers."""
    h = await start_relay(pipeline=None, store_path=tmp_path / "store", policy_dir=REPO / "policies",
                          organisation={"internal_domains": ["city.example.lg.jp"]})
    in_flight = tmp_path / "store" / "tmp" / "abcdefghjkmnpqrs.1.1.tmp"
    in_flight.write_bytes(b"being written")
    assert h.app.reload()
    assert in_flight.exists()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        await c.sendmail("s@x.test", ["a@city.example.lg.jp"], MSG)


async def test_bookkeeping_failure_after_upstream_250_keeps_the_250(relay, upstream, monkeypatch):
    """After the upstream took the message, a failing metric or log call must not
    answer 451 (the client would resend: a duplicate)."""
    from mailguard import metrics

    def broken(*a, **kw):
        raise RuntimeError("metrics backend broke")

    monkeypatch.setattr(metrics, "observe_transaction", broken)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as c:
        errors, reply = await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert errors == {} and reply.startswith("2.0.0")
    assert len(upstream.messages) == 1
