"""Contract with aiosmtpd: what mailguard relies on beyond aiosmtpd's documented API.

smtp_compat.read_data reads DATA from ``SMTP._reader``, a private member; receive
wraps and overrides ``smtp_<VERB>`` methods and raises ``line_length_limit``. When
an aiosmtpd release changes any of that, these tests fail here, by name, before a
message is lost. Connected through a socketpair: no listening socket, no network.
"""

from __future__ import annotations

import asyncio
import inspect
import socket

import aiosmtpd
from aiosmtpd.smtp import SMTP, Envelope

from mailguard import smtp_compat
from mailguard.smtp_compat import read_data

LONG = 70_000  # one line longer than aiosmtpd's own 1001 and our 65536 read chunk


class Handler:
    def __init__(self) -> None:
        self.contents: list[bytes | None] = []


class DataSMTP(SMTP):
    """aiosmtpd's SMTP whose DATA is read by smtp_compat, as receive.RelaySMTP does."""

    line_length_limit = 65536

    async def smtp_DATA(self, arg: str | None) -> None:
        await self.push("354 go ahead")
        self.event_handler.contents.append(await read_data(self, 100_000))
        self.envelope = Envelope()
        await self.push("250 done")


async def converse(*lines: bytes) -> tuple[Handler, list[bytes]]:
    handler = Handler()
    server_sock, client_sock = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.connect_accepted_socket(
        lambda: DataSMTP(handler, hostname="compat.test", loop=loop), server_sock)
    reader, writer = await asyncio.open_connection(sock=client_sock, limit=2**20)
    replies = [await asyncio.wait_for(reader.readline(), 5)]
    for line in lines:
        writer.write(line)
        await writer.drain()
        replies.append(await asyncio.wait_for(reader.readline(), 5))
        while replies[-1][3:4] == b"-":  # multi-line reply
            replies[-1] = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    transport.close()
    return handler, replies


def test_the_private_member_read_data_uses_exists_and_is_a_stream_reader():
    assert set(smtp_compat.RELIED_ON) == {"SMTP._reader"}
    src = inspect.getsource(SMTP)
    # Set when the connection is made, and the very reader command lines come from.
    assert "self._reader = reader" in src, f"aiosmtpd {aiosmtpd.__version__}: SMTP._reader is gone"
    assert "await self._reader.readuntil()" in src, (
        f"aiosmtpd {aiosmtpd.__version__}: command lines no longer come from SMTP._reader")


def test_the_public_surface_receive_uses_is_there():
    assert list(inspect.signature(SMTP.smtp_DATA).parameters) == ["self", "arg"]
    assert list(inspect.signature(SMTP.smtp_EHLO).parameters) == ["self", "hostname"]
    for name in ("push", "handle_exception", "check_helo_needed", "check_auth_needed",
                 "connection_made", "connection_lost"):
        assert callable(getattr(SMTP, name, None)), name
    assert isinstance(SMTP.line_length_limit, int)
    params = inspect.signature(SMTP.__init__).parameters
    for name in ("data_size_limit", "enable_SMTPUTF8", "decode_data", "hostname", "ident", "timeout", "loop"):
        assert name in params, name
    envelope = Envelope()
    assert envelope.rcpt_tos == [] and envelope.mail_options == [] and envelope.rcpt_options == []
    assert hasattr(envelope, "original_content")


async def test_data_is_read_through_the_private_reader_long_lines_kept():
    body = b"Subject: x\r\n\r\n" + b"a" * LONG + b"\r\n..dot\r\nend\r\n"
    handler, replies = await converse(
        b"EHLO client.test\r\n", b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@y.test>\r\n",
        b"DATA\r\n", body + b".\r\n", b"QUIT\r\n")
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"]
    assert handler.contents == [b"Subject: x\r\n\r\n" + b"a" * LONG + b"\r\n.dot\r\nend\r\n"]


async def test_data_over_the_limit_is_drained_and_none():
    handler, replies = await converse(
        b"EHLO client.test\r\n", b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@y.test>\r\n",
        b"DATA\r\n", b"x" * 200_000 + b"\r\n.\r\n", b"NOOP\r\n")
    assert handler.contents == [None]
    assert replies[-2][:3] == b"250" and replies[-1][:3] == b"250"  # the connection reads on in step


async def test_class_level_smtp_verb_overrides_are_what_aiosmtpd_dispatches():
    # receive wraps every smtp_<VERB> on the class (command counting, refusal);
    # aiosmtpd must look its verbs up by attribute, not keep its own table.
    calls: list[str | None] = []

    async def smtp_NOOP(self: SMTP, arg: str | None) -> None:
        calls.append(arg)
        await self.push("250 counted")

    original = DataSMTP.__dict__.get("smtp_NOOP")
    DataSMTP.smtp_NOOP = smtp_NOOP  # type: ignore[method-assign]
    try:
        _, replies = await converse(b"NOOP hello\r\n")
    finally:
        if original is None:
            del DataSMTP.smtp_NOOP
    assert calls == ["hello"] and replies[-1].startswith(b"250 counted")
