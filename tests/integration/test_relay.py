"""The relay against a real upstream sink over loopback: delivery, failures, decisions."""

from __future__ import annotations
from mailguard.replies import REPLIES

import asyncio
import io
import json
import re

import aiosmtplib
import pytest

from mailguard.log import configure_logging
from mailguard.policy import BLOCK, HOLD, Decision
from mailguard.upstream import UpstreamPool

# serve runs on uvloop by default (server.event_loop): the relay's SMTP handling is
# tested on it as well as on asyncio's loop.
pytestmark = pytest.mark.uvloop_too

OK, TEMPFAIL, TOO_MANY_RCPT = REPLIES["ok"].code, REPLIES["internal_error"].code, REPLIES["too_many_recipients"].code
BLOCKED = NOT_TAKEN = 550  # a policy block (replies.blocked) and an upstream 550 relayed as is

MSG = (
    b"From: sender@city.example.lg.jp\r\nTo: a@example.com\r\nSubject: test\r\n"
    b"Message-ID: <1@city.example.lg.jp>\r\n\r\nhello\r\n..leading dot line\r\n"
)


async def session(raw, port, *cmds):
    c = await raw(port)
    assert (await c.reply())[0] == 220
    out = []
    for cmd in cmds:
        out.append(await c.cmd(cmd))
    return c, out


# ------------------------------------------------------------------ delivery


async def test_exact_bytes_and_envelope_forwarded(relay, upstream, client):
    errors, _ = await client.sendmail("sender@city.example.lg.jp", ["a@example.com", "b@example.com"], MSG)
    assert errors == {}
    [m] = upstream.messages
    assert m.data == MSG
    assert m.mail_from == "sender@city.example.lg.jp"
    assert m.rcpt_tos == ["a@example.com", "b@example.com"]


async def test_null_sender_forwarded(relay, upstream, raw):
    c, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<>", "RCPT TO:<a@example.com>", "DATA")
    assert [r[0] for r in out] == [250, 250, 250, 354]
    await c.send(MSG + b".\r\n")
    assert (await c.reply())[0] == OK
    assert upstream.messages[0].mail_from == "<>"


async def test_250_only_after_upstream_250(relay, upstream, raw):
    upstream.delay, upstream.delay_at = 0.5, "DATA"
    c, _ = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>", "DATA")
    await c.send(MSG + b".\r\n")
    with pytest.raises(asyncio.TimeoutError):
        await c.reply(timeout=0.3)  # upstream has not answered yet: neither may we
    code, lines = await c.reply()
    assert code == OK and upstream.messages


async def test_many_messages_one_connection_reuse_one_upstream_link(relay, upstream, client):
    for i in range(5):
        await client.sendmail("s@x.test", [f"r{i}@example.com"], MSG)
    assert len(upstream.messages) == 5
    assert upstream.connections == 1


async def test_pool_reused_across_client_connections(relay, upstream):
    for i in range(4):
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as c:
            await c.sendmail("s@x.test", ["r@example.com"], MSG)
    assert len(upstream.messages) == 4
    assert upstream.connections == 1


async def test_upstream_closing_idle_pooled_connection_is_survived(relay, upstream):
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as c:
        await c.sendmail("s@x.test", ["r@example.com"], MSG)
    await asyncio.sleep(0.05)
    for proto in upstream.protocols:  # the upstream drops its idle connections
        proto.transport.close()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as c:
        errors, _ = await c.sendmail("s@x.test", ["r2@example.com"], MSG)
    assert errors == {} and len(upstream.messages) == 2
    assert upstream.connections == 2


# ------------------------------------------------------------------ upstream failure -> 451 4.4.x


async def test_upstream_down_is_451(start_relay, raw):
    h = await start_relay(upstream_url="smtp://127.0.0.1:1")
    _, out = await session(raw, h.port, "EHLO c.test", "MAIL FROM:<s@x.test>")
    code, lines = out[1]
    assert code == TEMPFAIL and lines[0].startswith("451 4.4.1 ")


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_upstream_drops_connection_is_451(relay, upstream, raw, stage):
    upstream.drop_at = stage
    c, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>")
    if stage == "DATA":
        assert (await c.cmd("DATA"))[0] == 354
        await c.send(MSG + b".\r\n")
        code, lines = await c.reply()
    else:
        code, lines = out[1] if stage == "MAIL" else out[2]
    assert code == TEMPFAIL and re.match(r"451 4\.4\.\d ", lines[0]), lines
    assert not upstream.messages


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
async def test_upstream_slow_times_out_451(start_relay, upstream, raw, stage):
    h = await start_relay(upstream_cfg={"timeout": 0.5})
    upstream.delay, upstream.delay_at = 1.5, stage
    c, out = await session(raw, h.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>")
    if stage == "DATA":
        assert (await c.cmd("DATA"))[0] == 354
        await c.send(MSG + b".\r\n")
        code, lines = await c.reply()
    else:
        code, lines = out[1] if stage == "MAIL" else out[2]
    assert code == TEMPFAIL and lines[0].startswith("451 4.4."), lines


@pytest.mark.parametrize("stage", ["MAIL", "DATA"])
async def test_upstream_4xx_is_451(relay, upstream, raw, stage):
    if stage == "MAIL":
        upstream.mail_reply = "421 4.3.2 busy"
    else:
        upstream.data_reply = "452 4.3.1 insufficient storage"
    c, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>")
    if stage == "MAIL":
        code, lines = out[1]
    else:
        assert (await c.cmd("RCPT TO:<a@example.com>"))[0] == OK
        assert (await c.cmd("DATA"))[0] == 354
        await c.send(MSG + b".\r\n")
        code, lines = await c.reply()
    assert code == TEMPFAIL and lines[0].startswith("451-4.4.0 "), lines
    assert lines[-1].startswith("451 4.4.0 ")


async def test_upstream_4xx_to_rcpt_is_451_for_that_recipient(relay, upstream, client):
    upstream.refuse["busy@example.com"] = "450 4.2.1 mailbox busy"
    errors, _ = await client.sendmail("s@x.test", ["ok@example.com", "busy@example.com"], MSG)
    assert errors["busy@example.com"].code == TEMPFAIL
    assert [m.rcpt_tos for m in upstream.messages] == [["ok@example.com"]]


# ------------------------------------------------------------------ partial refusal


async def test_partial_refusal_one_copy_each_no_duplicates(relay, upstream, client):
    upstream.refuse["bad@example.com"] = "550 5.1.1 <bad@example.com>: user unknown"
    errors, _ = await client.sendmail(
        "s@x.test", ["a@example.com", "bad@example.com", "b@example.com"], MSG)
    assert set(errors) == {"bad@example.com"}
    assert errors["bad@example.com"].code == 550
    assert "user unknown" in errors["bad@example.com"].message
    assert len(upstream.messages) == 1
    assert upstream.messages[0].rcpt_tos == ["a@example.com", "b@example.com"]


async def test_all_recipients_refused_nothing_sent(relay, upstream, raw):
    upstream.refuse["x@example.com"] = "550 5.1.1 no"
    c, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>",
                           "RCPT TO:<x@example.com>", "DATA")
    assert out[2][0] == 550 and out[3][0] == 503
    assert not upstream.messages


async def test_multiline_upstream_reply_relayed_as_valid_multiline(relay, upstream, raw):
    upstream.refuse["m@example.com"] = (
        "550-5.1.1 first line\r\n550-5.1.1 second line \x1b[31mred\r\n550 5.1.1 last ユーザー")
    _, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<m@example.com>")
    code, lines = out[2]
    assert code == 550
    assert lines == ["550-5.1.1 first line", "550-5.1.1 second line ?[31mred", "550 5.1.1 last ????"]


async def test_upstream_reply_injection_is_neutralised(relay, upstream, raw):
    # Only the upstream decides what it sends; make it send a bare CR and an
    # embedded fake reply line. The client must see one well-formed reply.
    upstream.refuse["i@example.com"] = "550 5.1.1 bad\r250 2.0.0 fake"
    c, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<i@example.com>")
    code, lines = out[2]
    assert code == 550 and len(lines) == 1 and "\r" not in lines[0]
    assert (await c.cmd("NOOP"))[0] == OK  # still in sync


# ------------------------------------------------------------------ internal errors


class Raising:
    async def inspect(self, mail_from, rcpt_tos, data):
        raise RuntimeError("scanner exploded")


class Returning:
    def __init__(self, decision):
        self.decision = decision

    async def inspect(self, mail_from, rcpt_tos, data):
        return self.decision


async def test_pipeline_exception_is_451_430_never_pass(start_relay, upstream, client):
    h = await start_relay(pipeline=Raising())
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert e.value.code == TEMPFAIL and e.value.message.startswith("4.3.0")
    assert not upstream.messages and "RSET" in upstream.commands


async def test_pipeline_garbage_decision_is_451(start_relay, upstream):
    h = await start_relay(pipeline=Returning("pass"))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert e.value.code == TEMPFAIL and not upstream.messages


class BrokenPool(UpstreamPool):
    async def acquire(self):
        raise RuntimeError("bug")

    async def connect(self):
        raise RuntimeError("bug")


async def test_exception_inside_a_hook_is_451_not_500(start_relay, upstream, raw):
    def hook(config, services):
        services.pool = BrokenPool(config.upstream)
        return services
    h = await start_relay(services_hook=hook)
    c, out = await session(raw, h.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>")
    assert out[1][0] == TEMPFAIL and out[1][1][0].startswith("451 4.3.0 ")
    assert out[2][0] == 503  # the failed MAIL left no transaction behind
    assert (await c.cmd("QUIT"))[0] == 221


# ------------------------------------------------------------------ decisions


async def test_block_is_550_571_ascii_counts_but_no_numbers_and_upstream_reset(start_relay, upstream, raw):
    d = Decision(BLOCK, "reply-all-external", ("3 persons (********9018) at high confidence",),
                 notice="マイナンバーを含むため送信できません。\nBlocked: the message contains 3 My Numbers.")
    h = await start_relay(pipeline=Returning(d))
    c, out = await session(raw, h.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>", "DATA")
    await c.send(MSG + b".\r\n")
    code, lines = await c.reply()
    assert code == BLOCKED
    assert all(re.match(r"550[- ]5\.7\.1 ", line) for line in lines)
    body = " ".join(line[10:] for line in lines)
    # Counts stay readable; neither a number nor a masked one reaches the bounce.
    assert not re.search(r"\d{4}|\*", body) and body.isascii()
    assert "reply-all-external" in body and "3 persons" in body and "3 My Numbers" in body
    assert not upstream.messages and upstream.commands[-1] == "RSET"


async def test_hold_without_holder_is_451_470(start_relay, upstream, client):
    h = await start_relay(pipeline=Returning(Decision(HOLD, "external")))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert e.value.code == TEMPFAIL and e.value.message.startswith("4.7.0")
    assert not upstream.messages


class Holder:
    def __init__(self, fail=False):
        self.held, self.fail = [], fail

    async def hold(self, mail_from, rcpt_tos, data, decision, **kw):
        if self.fail:
            raise OSError("disk full")
        self.held.append((mail_from, rcpt_tos, data, decision))
        return "H0001"


class Recorder:
    def __init__(self):
        self.records = []

    async def record(self, **kw):
        self.records.append(kw)


async def test_hold_with_holder_is_250_with_id_and_recorded(start_relay, upstream):
    holder, recorder = Holder(), Recorder()
    d = Decision(HOLD, "external")
    h = await start_relay(pipeline=Returning(d), holder=holder, recorder=recorder)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        _, msg = await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert "H0001" in msg
    assert holder.held == [("s@x.test", ["a@example.com"], MSG, d)]
    assert not upstream.messages and upstream.commands[-1] == "RSET"
    [r] = recorder.records
    assert r["outcome"] == "held" and r["hold_id"] == "H0001" and r["size"] == len(MSG)
    assert r["decision"] is d and r["rcpt_tos"] == ["a@example.com"]


async def test_holder_failure_is_451(start_relay, upstream):
    h = await start_relay(pipeline=Returning(Decision(HOLD, "external")), holder=Holder(fail=True))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await c.sendmail("s@x.test", ["a@example.com"], MSG)
    assert e.value.code == TEMPFAIL and e.value.message.startswith("4.3.0")


async def test_pass_is_recorded_with_upstream_reply(start_relay, upstream):
    recorder = Recorder()
    h = await start_relay(recorder=recorder)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        await c.sendmail("s@x.test", ["a@example.com"], MSG)
    [r] = recorder.records
    assert r["outcome"] == "forwarded" and r["reply"].startswith("250 ")


# ------------------------------------------------------------------ transaction hygiene


async def test_client_vanishing_mid_transaction_resets_upstream(relay, upstream, raw):
    c, _ = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>")
    c.close()
    for _ in range(50):
        if "RSET" in upstream.commands:
            break
        await asyncio.sleep(0.02)
    assert upstream.commands[-1] == "RSET"
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as c2:
        await c2.sendmail("s@x.test", ["b@example.com"], MSG)
    assert [m.rcpt_tos for m in upstream.messages] == [["b@example.com"]]
    assert upstream.connections == 1  # the link went back to the pool, clean


@pytest.mark.parametrize("reset", ["RSET", "EHLO again.test"])
async def test_reset_mid_transaction_resets_upstream(relay, upstream, raw, reset):
    c, out = await session(raw, relay.port, "EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>",
                           reset, "MAIL FROM:<s2@x.test>", "RCPT TO:<b@example.com>", "DATA")
    assert [r[0] for r in out] == [250, 250, 250, 250, 250, 250, 354]
    await c.send(MSG + b".\r\n")
    assert (await c.reply())[0] == OK
    [m] = upstream.messages
    assert m.mail_from == "s2@x.test" and m.rcpt_tos == ["b@example.com"]


# ------------------------------------------------------------------ logging


async def test_log_lines_are_json_with_fields_and_never_content(relay, upstream, client):
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    try:
        number = "123456789018"  # check-digit valid
        data = (f"Subject: {number}\r\n\r\nマイナンバー {number}\r\nsecret-body-text\r\n").encode()
        await client.sendmail(f"u{number}@x.test", ["a@example.com"], data)
        await client.quit()
        await asyncio.sleep(0.1)
    finally:
        configure_logging("info")
    out = stream.getvalue()
    events = [json.loads(line) for line in out.splitlines()]
    fwd = next(e for e in events if e["event"] == "forwarded")
    for key in ("conn", "tx", "sender", "recipients", "size", "decision", "upstream", "duration_ms"):
        assert key in fwd, key
    assert fwd["recipients"] == 1 and fwd["size"] == len(data) and fwd["upstream"].startswith("250")
    assert number not in out and "secret-body-text" not in out and "マイナンバー" not in out
