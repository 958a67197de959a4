"""Hold path over loopback: a cancelled client and a notice that cannot be sent."""

from __future__ import annotations

import asyncio

from mailguard.hold import Holder
from mailguard.policy import HOLD, Decision

MSG = b"From: s@city.example.lg.jp\r\nTo: a@example.com\r\nSubject: hold me\r\n\r\nbody\r\n"


class Returning:
    def __init__(self, decision):
        self.decision = decision

    async def inspect(self, mail_from, rcpt_tos, data):
        return self.decision


async def test_client_gone_while_hold_is_being_written_still_logs_and_notifies(start_relay, upstream, raw):
    """The client disconnects after the final dot while the store is fsyncing. The
    message ends up held (the thread can't be stopped); it must then be a complete
    hold: its notice goes out, rather than a silent held copy nobody hears of."""
    holders = []

    def hook(config, services):
        holder = Holder(config)
        durably = holder._hold_durably

        def slow(*a, **kw):
            import time
            time.sleep(0.4)
            return durably(*a, **kw)

        holder._hold_durably = slow
        services.holder = holder
        holders.append(holder)

    h = await start_relay(pipeline=Returning(Decision(HOLD, "test-hold")), services_hook=hook)
    c = await raw(h.port)
    await c.reply()
    for cmd in ("EHLO c.test", "MAIL FROM:<staff@city.example.lg.jp>", "RCPT TO:<a@example.com>", "DATA"):
        await c.cmd(cmd)
    await c.send(MSG + b".\r\n")
    await asyncio.sleep(0.1)
    c.close()
    for _ in range(100):
        if upstream.messages:
            break
        await asyncio.sleep(0.05)
    [held] = holders[0].store.list()
    [notice] = upstream.messages
    assert notice.rcpt_tos == ["staff@city.example.lg.jp"] and held.id.encode() in notice.data


async def test_notice_that_cannot_be_built_never_breaks_the_hold(start_relay, upstream, raw, monkeypatch):
    import mailguard.notifier as notifier_mod

    def broken(*a, **kw):
        raise ValueError("hostile header")

    monkeypatch.setattr(notifier_mod, "build_notice", broken)
    holders = []

    def hook(config, services):
        services.holder = Holder(config)
        holders.append(services.holder)

    h = await start_relay(pipeline=Returning(Decision(HOLD, "test-hold")), services_hook=hook)
    c = await raw(h.port)
    await c.reply()
    for cmd in ("EHLO c.test", "MAIL FROM:<staff@city.example.lg.jp>", "RCPT TO:<a@example.com>", "DATA"):
        await c.cmd(cmd)
    await c.send(MSG + b".\r\n")
    code, lines = await c.reply()
    assert code == 250 and "held" in lines[0]
    await holders[0].aclose()
    events = [r["event"] for r in holders[0].audit.records()]
    assert events == ["hold", "notice"]
    assert "error" in list(holders[0].audit.records())[-1]
