"""Hostile and edge-case SMTP against the relay: smuggling, long lines, limits, access."""

from __future__ import annotations
from mailguard.replies import AIOSMTPD_REPLIES, REPLIES

import asyncio
import os
import re

import aiosmtplib
import pytest

from conftest import start_sink

OK, ACCESS_DENIED = REPLIES["ok"].code, REPLIES["client_denied"].code
BAD_SEQUENCE = AIOSMTPD_REPLIES["503 Error: need MAIL command"].code
TOO_MANY_RCPT, TOO_BIG, CLOSING = (REPLIES[n].code for n in ("too_many_recipients", "too_big", "too_many_commands"))
DATA_GO = 354  # aiosmtpd's own "End data with <CR><LF>.<CR><LF>"


async def ehlo(raw, port, name="c.test"):
    c = await raw(port)
    greeting = await c.reply()
    code, lines = await c.cmd(f"EHLO {name}")
    return c, greeting, lines


async def transaction(c, sender="s@x.test", rcpts=("a@example.com",)):
    assert (await c.cmd(f"MAIL FROM:<{sender}>"))[0] == OK
    for r in rcpts:
        assert (await c.cmd(f"RCPT TO:<{r}>"))[0] == OK
    assert (await c.cmd("DATA"))[0] == DATA_GO


# ------------------------------------------------------------------ smuggling

SMUGGLE_TAIL = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n"


@pytest.mark.parametrize(
    "terminator",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r"],
    ids=["LF.LF", "LF.CRLF", "CR.CR", "CRLF.LF", "CRLF.CR", "CR.CRLF", "LF.CR"],
)
async def test_no_smtp_smuggling(relay, upstream, raw, terminator):
    c, _, _ = await ehlo(raw, relay.port)
    await transaction(c)
    body = b"Subject: s\r\n\r\nfirst" + terminator + SMUGGLE_TAIL
    await c.send(body + b"\r\n.\r\n")
    code, _ = await c.reply()
    assert code == OK
    assert (await c.cmd("QUIT"))[0] == 221
    # Exactly one message, carrying the would-be commands as text, to the real recipient.
    assert len(upstream.messages) == 1
    m = upstream.messages[0]
    assert m.mail_from == "s@x.test" and m.rcpt_tos == ["a@example.com"]
    assert b"evil@attacker.test" in m.data and b"smuggled" in m.data
    assert upstream.commands.count("MAIL") == 1


async def test_dot_stuffing_round_trips(relay, upstream, raw):
    c, _, _ = await ehlo(raw, relay.port)
    await transaction(c)
    await c.send(b"Subject: d\r\n\r\n..\r\n...x\r\n.y\r\n\r\n.\r\n")
    assert (await c.reply())[0] == OK
    assert upstream.messages[0].data == b"Subject: d\r\n\r\n.\r\n..x\r\ny\r\n\r\n"


# ------------------------------------------------------------------ long lines


@pytest.mark.parametrize("length", [999, 1001, 5000, 200_000])
async def test_long_lines_never_permanently_rejected(relay, upstream, raw, length):
    line = b"x" * length
    c, _, _ = await ehlo(raw, relay.port)
    await transaction(c)
    await c.send(b"Subject: long\r\n\r\n" + line + b"\r\n." + line + b"\r\n.\r\n")
    code, _ = await c.reply()
    assert code == OK
    assert upstream.messages[0].data == b"Subject: long\r\n\r\n" + line + b"\r\n" + line + b"\r\n"


# ------------------------------------------------------------------ access


async def test_client_outside_allowed_clients_gets_554_before_mail(start_relay, upstream, raw):
    h = await start_relay(server={"allowed_clients": ["192.0.2.0/24", "::1/128"]})
    c = await raw(h.port)
    code, lines = await c.reply()
    assert code == ACCESS_DENIED and lines[0].startswith("554 5.7.1 ")
    for cmd in ("EHLO c.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@example.com>", "DATA"):
        code, lines = await c.cmd(cmd)
        assert code == BAD_SEQUENCE and lines[0].startswith("503 5.7.1 "), (cmd, lines)
    assert (await c.cmd("QUIT"))[0] == 221
    assert upstream.connections == 0 and not upstream.messages


async def test_denied_client_cannot_loop_forever(start_relay, raw):
    h = await start_relay(server={"allowed_clients": ["192.0.2.0/24"]})
    c = await raw(h.port)
    await c.reply()
    codes = []
    for _ in range(20):
        try:
            codes.append((await c.cmd("NOOP"))[0])
        except ConnectionError:
            break
    assert CLOSING in codes and len(codes) <= 12


async def test_allowed_client_ipv6_loopback(start_relay, upstream, raw):
    try:
        h = await start_relay(server={"listen": "[::1]:10025"})
    except OSError:
        pytest.skip("no IPv6 loopback")
    c = await raw(h.port, host="::1")
    assert (await c.reply())[0] == 220


# ------------------------------------------------------------------ limits


async def test_recipient_limit_452_453(start_relay, upstream, client=None):
    h = await start_relay(server={"max_recipients": 3})
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=h.port, start_tls=False) as c:
        errors, _ = await c.sendmail("s@x.test", [f"r{i}@example.com" for i in range(5)], b"Subject: x\r\n\r\nx\r\n")
    assert set(errors) == {"r3@example.com", "r4@example.com"}
    assert all(e.code == TOO_MANY_RCPT and e.message.startswith("4.5.3") for e in errors.values())
    assert upstream.messages[0].rcpt_tos == ["r0@example.com", "r1@example.com", "r2@example.com"]


async def test_default_recipient_limit_is_1000(relay, upstream, raw):
    c, _, _ = await ehlo(raw, relay.port)
    assert (await c.cmd("MAIL FROM:<s@x.test>"))[0] == OK
    # Pipeline the RCPTs: 1001 round trips one by one are slow for no gain.
    await c.send(b"".join(f"RCPT TO:<r{i}@example.com>\r\n".encode() for i in range(1001)))
    codes = [(await c.reply())[0] for _ in range(1001)]
    assert codes[:1000] == [OK] * 1000 and codes[1000] == TOO_MANY_RCPT


async def test_command_limit_closes_connection(start_relay, raw):
    h = await start_relay(server={"max_commands": 5})
    c, _, _ = await ehlo(raw, h.port)
    for _ in range(4):
        assert (await c.cmd("NOOP"))[0] == OK
    code, lines = await c.cmd("NOOP")
    assert code == CLOSING and lines[0].startswith("421 4.7.0 ")
    assert await c.closed()


async def test_size_advertised_and_enforced_at_mail(start_relay, upstream, raw):
    h = await start_relay(server={"max_message_size": 4096})
    c, _, lines = await ehlo(raw, h.port)
    assert "250-SIZE 4096" in lines
    code, lines = await c.cmd("MAIL FROM:<s@x.test> SIZE=5000")
    assert code == TOO_BIG and lines[0].startswith("552 5.3.4 ")


async def test_size_enforced_at_data_without_size_param(start_relay, upstream, raw):
    h = await start_relay(server={"max_message_size": 4096})
    c, _, _ = await ehlo(raw, h.port)
    await transaction(c)
    await c.send(b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100 + b".\r\n")
    code, lines = await c.reply()
    assert code == TOO_BIG and lines[0].startswith("552 5.3.4 ")
    assert not upstream.messages
    # The connection is still usable and the upstream transaction was reset.
    await transaction(c)
    await c.send(b"Subject: small\r\n\r\nok\r\n.\r\n")
    assert (await c.reply())[0] == OK
    assert len(upstream.messages) == 1


# ------------------------------------------------------------------ 8BITMIME / SMTPUTF8


async def test_8bitmime_forwarded(relay, upstream, raw):
    c, _, lines = await ehlo(raw, relay.port)
    assert "250-8BITMIME" in lines
    assert (await c.cmd("MAIL FROM:<s@x.test> BODY=8BITMIME"))[0] == OK
    assert (await c.cmd("RCPT TO:<a@example.com>"))[0] == OK
    assert (await c.cmd("DATA"))[0] == DATA_GO
    body = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n個人番号のテスト\r\n".encode()
    await c.send(body + b".\r\n")
    assert (await c.reply())[0] == OK
    m = upstream.messages[0]
    assert m.data == body and "BODY=8BITMIME" in m.mail_options


async def test_smtputf8_offered_and_forwarded_when_upstream_offers_it(relay, upstream, raw):
    c, _, lines = await ehlo(raw, relay.port)
    assert "250-SMTPUTF8" in lines
    await c.send("MAIL FROM:<送信者@市役所.example> SMTPUTF8\r\n".encode())
    assert (await c.reply())[0] == OK
    await c.send("RCPT TO:<受信者@example.jp>\r\n".encode())
    assert (await c.reply())[0] == OK
    assert (await c.cmd("DATA"))[0] == DATA_GO
    await c.send(b"Subject: u\r\n\r\nx\r\n.\r\n")
    assert (await c.reply())[0] == OK
    m = upstream.messages[0]
    assert m.mail_from == "送信者@市役所.example" and m.rcpt_tos == ["受信者@example.jp"]
    assert "SMTPUTF8" in m.mail_options


async def test_smtputf8_not_offered_when_upstream_lacks_it(start_relay, raw):
    sink = await start_sink(smtputf8=False)
    try:
        h = await start_relay(upstream_url=sink.url)
        c, _, lines = await ehlo(raw, h.port)
        assert not any("SMTPUTF8" in line for line in lines)
        code, lines = await c.cmd("MAIL FROM:<s@x.test> SMTPUTF8")
        assert code >= 500 and re.match(r"5\d\d 5\.6\.7 ", lines[0])
    finally:
        sink.server.close()


async def test_maildir_upstream_offers_smtputf8_and_writes_durably(start_relay, tmp_path, raw):
    outbox = tmp_path / "outbox"
    h = await start_relay(upstream_url=f"maildir:{outbox}")
    c, _, lines = await ehlo(raw, h.port)
    assert "250-SMTPUTF8" in lines
    await transaction(c, rcpts=("a@example.com", "b@example.com"))
    body = b"Subject: m\r\n\r\nhello\r\n"
    await c.send(body + b".\r\n")
    assert (await c.reply())[0] == OK
    [name] = os.listdir(outbox / "new")
    assert os.listdir(outbox / "tmp") == []
    path = outbox / "new" / name
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == (
        b"Return-Path: <s@x.test>\r\nX-Envelope-To: <a@example.com>\r\n"
        b"X-Envelope-To: <b@example.com>\r\n" + body)


# ------------------------------------------------------------------ garbage


async def test_garbage_commands_never_500_from_exception_and_replies_stay_ascii(relay, raw):
    c, _, _ = await ehlo(raw, relay.port)
    for junk in (b"\x00\x01\x02\r\n", b"FOO\rBAR\r\n", b"RCPT TO:<x@y>\r\n",
                 b"\xff\xfe\r\n", b"DATA\r\n", b"MAIL FROM:<s@x.test> BODY=BINARYMIME\r\n"):
        await c.send(junk)
        code, lines = await c.reply()
        assert 400 <= code < 600 and all(line.isascii() and line.isprintable() for line in lines)
    assert (await c.cmd("NOOP"))[0] == OK


async def test_unicode_in_ascii_session_is_refused_cleanly(start_relay, raw):
    sink = await start_sink(smtputf8=False)
    try:
        h = await start_relay(upstream_url=sink.url)
        c, _, _ = await ehlo(raw, h.port)
        await c.send("MAIL FROM:<送信者@example.jp>\r\n".encode())
        code, lines = await c.reply()
        assert code == 500 and lines[0].isascii()
    finally:
        sink.server.close()


async def test_client_timeout_closes_idle_connection(start_relay, raw):
    h = await start_relay(server={"command_timeout": 0.3})
    c, _, _ = await ehlo(raw, h.port)
    assert await c.closed(timeout=3)


# ------------------------------------------------------------------ DATA framing, generated

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from aiosmtplib.protocol import normalize_message_line_endings  # noqa: E402

# serve runs on uvloop by default (server.event_loop): the relay's SMTP handling is
# tested on it as well as on asyncio's loop.
pytestmark = pytest.mark.uvloop_too


def stuff(body: bytes) -> bytes:
    """What a correct client sends: CRLF-delimited lines starting with "." get one more."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=40).map(lambda b: bytes(b"a.\r\n"[x % 4] for x in b)),
       split=st.integers(min_value=1, max_value=60))
async def test_data_framing_matches_line_semantics(relay, upstream, raw, body, split):
    upstream.messages.clear()
    c, _, _ = await ehlo(raw, relay.port)
    await transaction(c)
    wire = stuff(body) + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n"
    for i in range(0, len(wire), split):  # arbitrary TCP segmentation
        await c.send(wire[i:i + split])
        await asyncio.sleep(0)
    assert (await c.reply())[0] == OK
    await c.cmd("QUIT")
    sent = body if body.endswith(b"\r\n") else body + b"\r\n"
    assert [m.data for m in upstream.messages] == [normalize_message_line_endings(sent)]
