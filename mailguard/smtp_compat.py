"""The one place mailguard touches aiosmtpd below its public API: the DATA reader.

    read_data(smtp, limit) -> bytes | None     the DATA content up to CRLF "." CRLF,
                                               dot-unstuffed; None when over ``limit``
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

DIAGNOSTICS: none.
"""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP

# aiosmtpd internals this module relies on (name -> what it must be).
RELIED_ON = {
    "SMTP._reader": "the connection's asyncio.StreamReader, set by _cb_client_connected, "
                    "from which _handle_client reads command lines",
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
