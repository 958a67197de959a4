"""Review regressions: cancellation, SMTPUTF8, 8-bit addresses, held MAIL parameters."""

from __future__ import annotations

import asyncio

import aiosmtplib

OK, TEMPFAIL = 250, 451

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
