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
    assert "SMTP._reader" in smtp_compat.RELIED_ON
    src = inspect.getsource(SMTP)
    # Set when the connection is made, and the very reader command lines come from.
    assert "self._reader = reader" in src, f"aiosmtpd {aiosmtpd.__version__}: SMTP._reader is gone"
    assert "await self._reader.readuntil()" in src, (
        f"aiosmtpd {aiosmtpd.__version__}: command lines no longer come from SMTP._reader")


def test_what_init_smtp_and_getaddr_rely_on_is_there():
    assert set(smtp_compat.RELIED_ON) == {
        "SMTP._reader", "SMTP.__init__", "SMTP._auth_methods", "SMTP._handle_hooks",
        "SMTP._smtp_methods", "SMTP._ehlo_hook_ver", "SMTP._getaddr",
        "aiosmtpd.smtp._AuthMechAttr, login_always_fail, __ident__"}
    import aiosmtpd.smtp as mod
    assert callable(mod._AuthMechAttr) and callable(mod.login_always_fail) and mod.__ident__
    assert list(inspect.signature(SMTP._getaddr).parameters) == ["self", "arg"]
    # The options init_smtp takes over are still SMTP.__init__'s keywords.
    params = inspect.signature(SMTP.__init__).parameters
    for name in ("data_size_limit", "enable_SMTPUTF8", "decode_data", "hostname", "ident",
                 "timeout", "loop"):
        assert name in params, name


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


# ------------------------------------------------------------------ init_smtp, getaddr (issue 15)


class Hooks:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        return "250 OK"


def _comparable(value: object) -> object:
    if inspect.ismethod(value):
        return ("method", value.__func__, id(value.__self__))
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, asyncio.StreamReader):
        return ("reader", value._limit)
    if isinstance(value, asyncio.Future):
        return ("future", value.done())
    return value


async def test_init_smtp_sets_exactly_what_smtp_init_sets():
    # The relay builds its protocol with init_smtp instead of SMTP.__init__ (no
    # reflection per connection); every attribute must come out the same.
    loop = asyncio.get_running_loop()
    handler = Hooks()
    options = dict(data_size_limit=1234, enable_SMTPUTF8=False, decode_data=False,
                   hostname="compat.test", ident="mailguard", timeout=30.0, loop=loop)
    real = DataSMTP(handler, **options)
    fast = DataSMTP.__new__(DataSMTP)
    smtp_compat.init_smtp(fast, handler, **options)
    fast2 = DataSMTP.__new__(DataSMTP)
    smtp_compat.init_smtp(fast2, handler, **options)  # from the cached tables
    skip = {"_stream_reader_wr", "_stream_reader", "_source_traceback", "_task"}
    for proto in (fast, fast2):
        real_vars = {k: v for k, v in vars(real).items() if k not in skip}
        got = {k: v for k, v in vars(proto).items() if k not in skip}
        assert set(got) == set(real_vars)
        for key in real_vars:
            want = _comparable(real_vars[key])
            have = _comparable(got[key])
            if isinstance(want, tuple) and want[:1] == ("method",):
                assert have[:2] == want[:2] and got[key].__self__ in (proto, handler), key
            elif isinstance(want, dict):
                assert set(have) == set(want), key
                for k in want:
                    w, h = want[k], have[k]
                    if isinstance(w, tuple) and w[:1] == ("method",):
                        assert h[:2] == w[:2], (key, k)
                    elif isinstance(w, tuple) and len(w) == 2:  # _AuthMechAttr
                        assert h[0][:2] == w[0][:2] and h[1] == w[1], (key, k)
                    else:
                        assert h == w, (key, k)
            else:
                assert have == want, key
    assert fast._smtp_methods["DATA"].__self__ is fast
    assert fast._handle_hooks["MAIL"].__self__ is handler


ADDRESSES = [
    "", "<>", "<a@b.example>", "<a@b.example> SIZE=100 BODY=8BITMIME", "a@b.example",
    "a@b.example SIZE=1", "<first.last+tag@sub.example.jp>", "<\"quoted local\"@x.example>",
    "<a..b@x.example>", "<a@[192.0.2.1]>", "<@route:a@x.example>", " <a@x.example>",
    "<a@x.example", "<a b@x.example>", "<Ab.C@X.Example>  ", "<a@x.example>SIZE=1",
    "<(comment)a@x.example>", "<ユーザー@例え.jp>", "<a@x.example>>", "<<a@x.example>",
    "junk", "<a@>", "<@x.example>", "<" + "l" * 80 + "@x.example>",
]


def test_getaddr_agrees_with_aiosmtpd_parser():
    plain = SMTP(Handler(), hostname="compat.test", loop=asyncio.new_event_loop())
    limited = SMTP(Handler(), hostname="compat.test", loop=asyncio.new_event_loop())
    limited.local_part_limit = 64
    for proto in (plain, limited):
        for arg in ADDRESSES:
            want = SMTP._getaddr(proto, arg)
            assert smtp_compat.getaddr(proto, arg) == want, arg
    assert smtp_compat.CompatSMTP._getaddr is not SMTP._getaddr
    extra = ["<a@x.example>\tSIZE=1", "<a@x.example> (c) SIZE=1", "<a@x.example>  \t", "<a@x.example>(c)"]
    for arg in extra:
        assert smtp_compat.getaddr(plain, arg) == SMTP._getaddr(plain, arg), arg
