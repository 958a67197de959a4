"""The one place mailguard touches aiosmtpd below its public API.

    read_data(smtp, limit) -> bytes | None     the DATA content up to CRLF "." CRLF,
                                               dot-unstuffed; None when over ``limit``
    init_smtp(smtp, handler, **options)        SMTP.__init__ without its per-connection
                                               reflection (tables cached per class)
    getaddr(smtp, arg) -> (address, rest)      SMTP._getaddr without a class per call
    CompatSMTP                                 SMTP whose _getaddr is getaddr (receive's base)
    RELIED_ON                                  what this module assumes of aiosmtpd;
                                               tests/unit/test_smtp_compat.py checks it

Why a private member: aiosmtpd's own smtp_DATA answers 500 to a line over
``line_length_limit`` and awaits once per line. The relay must keep long lines
(no 5xx for a line over 998 bytes), answer an oversized message 552 5.3.4 from
replies.py, and read fast, so receive.RelaySMTP overrides smtp_DATA (a public
``smtp_<VERB>`` override) and reads the body here from the protocol's
StreamReader, which aiosmtpd keeps as ``SMTP._reader`` (set in
``_cb_client_connected``) and reads every command line from. There is no public
way to reach it. If an aiosmtpd release renames or replaces it, the contract test
fails before any mail does.

SECURITY: the bytes are the client's, hostile. DATA ends only at a line that is
exactly "." CRLF: a bare LF or CR never ends a line, so <LF>.<LF>, <LF>.<CR><LF>
and <CR>.<CR> stay content (no smuggling). Memory is bounded by ``limit``: past
it the rest is drained and dropped.

Why the constructor (issue 15): aiosmtpd's ``SMTP.__init__`` runs
``inspect.getmembers`` over the protocol and the handler, ``dir()`` twice and
``inspect.signature`` on every connection, to build its tables of AUTH
mechanisms, handler hooks and ``smtp_<VERB>`` methods: a fifth of the relay's
CPU per message with a new connection per message. ``init_smtp`` sets exactly
the attributes ``SMTP.__init__`` sets for the options the relay uses (no TLS,
no AUTH, no PROXY, no call limit), from names computed once per (protocol
class, handler class) and bound per connection. The contract test builds one
protocol both ways and compares every attribute. Likewise aiosmtpd's
``_getaddr`` defines a ``typing.Protocol`` class on every MAIL/RCPT (a class
creation per address); ``getaddr`` is the same parse without it, with a fast
path for plain ``<local@domain>`` addresses that the test checks against
aiosmtpd's own parser.

DIAGNOSTICS: none.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
from typing import Any

import aiosmtpd.smtp as aiosmtpd_smtp
from aiosmtpd.smtp import SMTP
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

# aiosmtpd internals this module relies on (name -> what it must be).
RELIED_ON = {
    "SMTP._reader": "the connection's asyncio.StreamReader, set by _cb_client_connected, "
                    "from which _handle_client reads command lines",
    "SMTP.__init__": "sets the attributes init_smtp sets (the contract test compares them)",
    "SMTP._auth_methods": "name -> _AuthMechAttr(method, is_builtin) from auth_* members",
    "SMTP._handle_hooks": "verb -> the handler's bound handle_<VERB>",
    "SMTP._smtp_methods": "verb -> the protocol's bound smtp_<VERB>",
    "SMTP._ehlo_hook_ver": "None, 'old' or 'new' after the handler's handle_EHLO arity",
    "SMTP._getaddr": "(address, rest) of a MAIL/RCPT argument; (None, None) if unparsable",
    "aiosmtpd.smtp._AuthMechAttr, login_always_fail, __ident__": "module names init_smtp uses",
}


def _reader(smtp: SMTP) -> asyncio.StreamReader:
    reader = smtp._reader
    if not isinstance(reader, asyncio.StreamReader):  # an aiosmtpd release changed it
        raise RuntimeError("aiosmtpd's SMTP._reader is not a StreamReader; see mailguard/smtp_compat.py")
    return reader


async def read_data(smtp: SMTP, limit: int | None) -> bytes | None:
    """Read DATA up to the CRLF "." CRLF line; None if over the size limit.

    Fast path: one ``readuntil(CRLF "." CRLF)`` per buffer-full instead of one
    await per line. The only terminator that search can miss is one right at
    the start of the unread buffer (its CRLF already consumed), so whenever what
    was consumed ends a line, the next bytes are looked at one by one first.
    """
    reader = _reader(smtp)
    cap = limit or 0  # None or 0: no limit
    pieces: list[bytes] = []
    received = 0
    too_big = False
    tail = b"\r\n"  # the last two bytes consumed; DATA starts at a line start
    try:
        while True:
            if tail == b"\r\n":
                piece = await reader.readexactly(1)
                if piece == b".":
                    piece += await reader.readexactly(2)
                    if piece == b".\r\n":
                        break
            elif tail.endswith(b"\r"):
                piece = await reader.readexactly(1)  # a CRLF split between reads
            else:
                try:
                    piece = await reader.readuntil(b"\r\n.\r\n")
                except asyncio.LimitOverrunError as e:
                    piece = await reader.read(e.consumed)  # no end yet: take it, go on
                else:
                    piece = piece[:-3]  # keep the last line's CRLF, drop "." CRLF
                    received += len(piece)
                    pieces.append(piece)
                    break
            received += len(piece)
            if not too_big:
                too_big = cap > 0 and received > cap
                pieces.clear() if too_big else pieces.append(piece)  # over: drain, keep nothing
            tail = (tail + piece)[-2:]
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("client closed the connection during DATA") from None
    except asyncio.CancelledError:
        if smtp.transport is not None:
            smtp.transport.close()  # what aiosmtpd's writer.close() does
        raise
    if too_big or (cap > 0 and received > cap):
        return None
    data = b"".join(pieces)
    # RFC 5321 4.5.2: a line starting with "." loses that one dot. Lines end at
    # CRLF only, exactly as the terminator search above sees them.
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


# ------------------------------------------------------------------ constructor

_Tables = tuple[tuple[tuple[str, str, bool], ...], tuple[tuple[str, str], ...],
                tuple[tuple[str, str], ...], "str | None"]
_tables: dict[tuple[type, type], _Tables] = {}


def _class_tables(smtp: SMTP, handler: Any) -> _Tables:
    """The member names aiosmtpd's __init__ finds by reflection, once per class pair."""
    key = (type(smtp), type(handler))
    tables = _tables.get(key)
    if tables is None:
        auth = tuple(
            (getattr(mfunc, "__auth_mechanism_name__", mname.replace("auth_", "").replace("__", "-")),
             mname, obj is smtp)
            for obj in (smtp, handler)
            for mname, mfunc in inspect.getmembers(obj)
            if mname.startswith("auth_")
        )
        hooks = tuple((m.replace("handle_", ""), m) for m in dir(handler) if m.startswith("handle_"))
        ehlo = getattr(handler, "handle_EHLO", None)
        ehlo_ver = None
        if ehlo is not None:
            n = len(inspect.signature(ehlo).parameters)
            if n not in (4, 5):
                raise RuntimeError("Unsupported EHLO Hook")
            ehlo_ver = "old" if n == 4 else "new"
        verbs = tuple((m.replace("smtp_", ""), m) for m in dir(smtp) if m.startswith("smtp_"))
        tables = _tables[key] = (auth, hooks, verbs, ehlo_ver)
    return tables


def init_smtp(smtp: SMTP, handler: Any, *, data_size_limit: int | None, enable_SMTPUTF8: bool,
              decode_data: bool, hostname: str | None, ident: str | None, timeout: float,
              loop: asyncio.AbstractEventLoop) -> None:
    """What ``SMTP.__init__(handler, ...)`` does with these options and no TLS,
    AUTH, PROXY or call limit, without reflecting over the classes each time."""
    smtp.__ident__ = ident or aiosmtpd_smtp.__ident__  # type: ignore[attr-defined]
    smtp.loop = loop
    asyncio.StreamReaderProtocol.__init__(
        smtp, asyncio.StreamReader(loop=loop, limit=smtp.line_length_limit),
        client_connected_cb=smtp._cb_client_connected, loop=loop)
    smtp.event_handler = handler
    smtp.data_size_limit = data_size_limit
    smtp.enable_SMTPUTF8 = enable_SMTPUTF8
    smtp._decode_data = decode_data
    smtp.command_size_limits.clear()
    smtp.hostname = hostname or socket.getfqdn()
    smtp.tls_context = None
    smtp.require_starttls = None  # aiosmtpd: tls_context and require_starttls
    smtp._timeout_duration = timeout
    smtp._timeout_handle = None
    smtp._tls_handshake_okay = True
    smtp._tls_protocol = None
    smtp._original_transport = None
    smtp.session = None
    smtp.envelope = None
    smtp.transport = None
    smtp._handler_coroutine = None
    smtp._auth_require_tls = True
    smtp._proxy_timeout = None
    smtp._auth_callback = aiosmtpd_smtp.login_always_fail
    smtp._authenticator = None
    smtp._auth_required = False
    auth, hooks, verbs, ehlo_ver = _class_tables(smtp, handler)
    attr = aiosmtpd_smtp._AuthMechAttr
    smtp._auth_methods = {name: attr(getattr(smtp if own else handler, m), own) for name, m, own in auth}
    smtp._handle_hooks = {verb: getattr(handler, m) for verb, m in hooks}
    smtp._ehlo_hook_ver = ehlo_ver
    smtp._smtp_methods = {verb: getattr(smtp, m) for verb, m in verbs}
    smtp._enforce_call_limit = False


# ------------------------------------------------------------------ addresses

# A plain <local@domain> (dot-atoms only, RFC 5321's common case): parsed here
# without email's header parser. Anything else (quoted local parts, comments,
# source routes, spaces) goes to the same parser aiosmtpd uses.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>")


def getaddr(smtp: SMTP, arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's ``SMTP._getaddr``: (address, rest), (None, None) if unparsable."""
    if not arg:
        return "", ""
    m = _PLAIN.match(arg)
    rest = arg[m.end():].lstrip(" \t") if m is not None else ""
    if m is not None and not rest.startswith("("):  # the parser eats trailing blanks, comments
        addr = m.group(1)
    else:
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        addr = address.addr_spec
    limit = smtp.local_part_limit
    if limit and len(addr.rpartition("@")[0]) > limit:
        return None, None
    return addr, rest


class CompatSMTP(SMTP):
    """aiosmtpd's SMTP with ``getaddr`` as its address parser."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return getaddr(self, arg)
