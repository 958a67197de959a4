"""Messages (top level, attached, digest) and TNEF winmail.dat -> spans.

A message's display headers, its text and HTML bodies (declared charset with
fallbacks) and every attachment (read by real type) are scanned; a
message/rfc822 part or an attachment whose bytes are a message is scanned the
same way one level deeper. TNEF is read with tnefparse (the maintained Python
TNEF reader); its compressed RTF body is inflated here (MS-OXRTFCP LZFu, a
small bounded loop) and reduced to text.

SECURITY: see mailguard.parse (MIME) and extract.dispatch (attachments).

DIAGNOSTICS: none.
"""

from __future__ import annotations

import struct

from mailguard.charsets import decode_text, guess_decode
from mailguard.extract import text
from mailguard.extract.context import Context, Unreadable, clean_name, location_join
from mailguard.extract.sniff import real_type
from mailguard.parse import Message, Part, parse_message
from mailguard.records import Attachment


def extract_message(ctx: Context, data: bytes, prefix: str = "", depth: int = 0) -> None:
    """Top-level (or attached) message bytes -> spans under `prefix`."""
    msg = parse_message(data, max_parts=max(1, ctx.limits.max_parts - ctx.parts),
                        max_depth=ctx.limits.max_depth - depth)
    extract_parsed(ctx, msg, prefix, depth)


def _loc(prefix: str, what: str) -> str:
    return f"{prefix}/{what}" if prefix else what


def extract_parsed(ctx: Context, msg: Message, prefix: str, depth: int) -> None:
    for name, value in msg.headers:
        ctx.add_text(value, _loc(prefix, f"header:{name}"))
    for problem in msg.problems:
        ctx.add_unscannable(prefix or "message", problem)
    used: dict[str, int] = {}
    for part in msg.parts:
        try:
            if not _extract_part(ctx, part, prefix, depth, used):
                return
        finally:
            part.release()  # one decoded part at a time


def _extract_part(ctx: Context, part: Part, prefix: str, depth: int, used: dict[str, int]) -> bool:
    """One leaf of a message; False once the parts limit stops the message."""
    ctx.check_time()
    ctx.parts += 1
    if ctx.parts > ctx.limits.max_parts:
        ctx.add_unscannable(prefix or "message", f"more than {ctx.limits.max_parts} parts or members")
        return False
    if not part.is_attachment:
        _extract_body(ctx, part, _loc(prefix, "body"), depth)
        return True
    name = part.filename or _default_name(part)
    shown = clean_name(name)
    used[shown] = used.get(shown, 0) + 1
    if used[shown] > 1:
        shown = f"{shown}[{used[shown]}]"
    location = _loc(prefix, f"attachment:{shown}")
    payload = part.payload if part.message is None else b""  # decoding may add a problem
    for problem in part.problems:
        ctx.add_unscannable(location, problem)
    if part.message is not None:
        ctx.add_text(name, location + "#name")
        ctx.attachments.append(Attachment(clean_name(name), "message/rfc822", location, 0))
        if depth + 1 > ctx.limits.max_depth:
            ctx.add_unscannable(location, f"nested deeper than {ctx.limits.max_depth} levels")
        else:
            extract_parsed(ctx, part.message, location, depth + 1)
    elif part.content_type.startswith("message/") and not payload.strip():
        ctx.add_text(name, location + "#name")
    else:
        ctx.extract_blob(payload, name, location, depth)
    return True


def _default_name(part: Part) -> str:
    if part.content_type.startswith("message/"):
        return f"part{part.index}.eml"
    return f"part{part.index}"


def _extract_body(ctx: Context, part: Part, location: str, depth: int) -> None:
    """An inline text part. Bytes that are really something else are read as such."""
    data = part.payload  # decoding may add a problem
    for problem in part.problems:
        ctx.add_unscannable(location, problem)
    if b"\x00" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        _mime, kind = real_type(data)
        if kind not in ("text", "html"):
            ctx.extract_blob(data, f"part{part.index}", location, depth)
            return
    if part.content_type == "text/html":
        text.add_html(ctx, text.decode_html(data, part.charset), location)
    elif part.content_type in ("text/rtf", "text/richtext", "text/enriched") and \
            data.lstrip()[:5] == b"{\\rtf":
        ctx.add_text(text.rtf_to_text(data), location)
    else:
        ctx.add_text(decode_text(data, part.charset or None), location)


def extract_attached_message(ctx: Context, data: bytes, location: str, depth: int) -> None:
    extract_message(ctx, data, location, depth + 1)


# ------------------------------------------------------------------ TNEF

_RTF_PREBUF = (
    b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern "
    b"\\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0"
    b"\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx"
)


def decompress_rtf(data: bytes, limit: int) -> bytes:
    """MS-OXRTFCP compressed RTF -> RTF bytes (at most `limit`)."""
    if len(data) < 16:
        raise Unreadable("truncated compressed RTF")
    _comp, raw_size, magic, _crc = struct.unpack_from("<IIII", data, 0)
    if magic == 0x414C454D:  # "MELA": stored
        return data[16:16 + min(raw_size, limit)]
    if magic != 0x75465A4C:  # "LZFu"
        raise Unreadable("unknown compressed RTF format")
    window = bytearray(4096)
    window[: len(_RTF_PREBUF)] = _RTF_PREBUF
    wp = len(_RTF_PREBUF)
    out = bytearray()
    i, n = 16, len(data)
    cap = min(raw_size, limit)
    while i < n and len(out) < cap:
        control = data[i]
        i += 1
        for bit in range(8):
            if i >= n or len(out) >= cap:
                break
            if control & (1 << bit):
                if i + 1 >= n:
                    return bytes(out)
                word = (data[i] << 8) | data[i + 1]
                i += 2
                offset, length = word >> 4, (word & 0xF) + 2
                if offset == wp:
                    return bytes(out)
                for k in range(length):
                    b = window[(offset + k) & 0xFFF]
                    out.append(b)
                    window[wp] = b
                    wp = (wp + 1) & 0xFFF
            else:
                b = data[i]
                i += 1
                out.append(b)
                window[wp] = b
                wp = (wp + 1) & 0xFFF
    return bytes(out)


def extract_tnef(ctx: Context, data: bytes, location: str, depth: int) -> None:
    import logging

    import tnefparse

    logging.getLogger("tnefparse").setLevel(logging.CRITICAL)
    try:
        tnef = tnefparse.TNEF(data, do_checksum=False)
    except Exception as exc:  # tnefparse raises ValueError, struct.error, ...
        raise Unreadable(f"corrupt TNEF ({type(exc).__name__})") from None
    if tnef.body:
        body = tnef.body if isinstance(tnef.body, str) else guess_decode(tnef.body)
        ctx.add_text(body, f"{location}/body")
    if tnef.htmlbody:
        html = tnef.htmlbody if isinstance(tnef.htmlbody, str) else guess_decode(tnef.htmlbody)
        ctx.add_text(text.html_to_text(html), f"{location}/body.html")
    try:
        rtf = tnef.rtfbody
    except Exception:  # tnefparse decompresses lazily when compressed_rtf is installed
        rtf = None
    if rtf:
        raw = rtf if rtf.lstrip()[:5] == b"{\\rtf" else decompress_rtf(rtf, 64 * 1024 * 1024)
        ctx.charge(len(raw))
        ctx.add_text(text.rtf_to_text(raw), f"{location}/body.rtf")
    for n, att in enumerate(tnef.attachments, 1):
        try:
            name = att.long_filename() or att.name or f"attachment{n}"
        except Exception:
            name = f"attachment{n}"
        if isinstance(name, bytes):
            name = guess_decode(name)
        name = name.strip("\x00") or f"attachment{n}"
        member_loc = location_join(location, name)
        if not ctx.take_part(member_loc):
            return
        blob = att.data or b""
        ctx.charge(len(blob))
        ctx.extract_blob(blob, name, member_loc, depth + 1)
