"""Message bytes -> MIME parts, no I/O.

SECURITY: parses untrusted mail. The stdlib parser runs with policy compat32:
policy.default raises on access to some malformed headers (and its address
parser is slow on giant folded To: headers), while compat32 never raises on
access and keeps raw 8-bit as surrogates, which we decode ourselves (see
mailguard.charsets). No part is ever dropped: a part whose structure or transfer
encoding is broken is still returned with what could be decoded, and problems
are listed for the caller to report as unscannable. Nesting and the number of
parts are bounded; a message the parser cannot walk at all comes back as one
raw text part plus a problem.

DIAGNOSTICS: none; problems are returned, not logged.
"""

from __future__ import annotations

import binascii
import email
import email.feedparser
import email.message
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass, field

from mailguard.charsets import decode_header_value, decode_text, guess_decode

# Headers a recipient reads (display names included); each becomes a span.
DISPLAY_HEADERS = (
    "Subject", "From", "To", "Cc", "Reply-To", "Sender", "Comments", "Keywords",
    "Organization", "Content-Description", "Thread-Topic",
)
MAX_NESTING = 50  # multipart inside multipart; deeper is hostile


class Part:
    """One leaf of the MIME tree (multiparts are flattened away).

    The body is transfer-decoded on first use of `payload` (not at parse time),
    and `release()` drops it once extracted, so a message's decoded parts are
    not all held at once.
    """

    __slots__ = ("index", "content_type", "charset", "filename", "disposition", "message",
                 "problems", "_payload", "_raw", "_cte")

    def __init__(self, index: str, content_type: str, charset: str, filename: str,
                 disposition: str, payload: bytes = b"", message: "Message | None" = None,
                 problems: list[str] | None = None, *, raw: str | None = None,
                 cte: str = "") -> None:
        self.index = index  # "1", "2.1", ...
        self.content_type = content_type  # declared, lower case
        self.charset = charset  # declared charset label or ""
        self.filename = filename  # decoded (RFC 2047/2231), "" when none
        self.disposition = disposition  # "attachment", "inline" or ""
        self.message = message  # message/rfc822: the enclosed message
        self.problems = problems if problems is not None else []
        self._payload: bytes | None = None if raw is not None else payload
        self._raw = raw  # the body as the parser kept it, before transfer decoding
        self._cte = cte

    @property
    def payload(self) -> bytes:
        """The transfer-decoded body (a decoding problem is added to `problems`)."""
        if self._payload is None:
            raw, self._raw = self._raw or "", None
            raw_bytes = raw.encode("ascii", "surrogateescape")
            del raw
            self._payload, problem = decode_transfer(raw_bytes, self._cte)
            if problem:
                self.problems.append(problem)
        return self._payload

    @payload.setter
    def payload(self, value: bytes) -> None:
        self._payload, self._raw = value, None

    def release(self) -> None:
        """Drop the body (after extraction)."""
        self._payload, self._raw = b"", None

    def __repr__(self) -> str:
        return (f"Part(index={self.index!r}, content_type={self.content_type!r}, "
                f"filename={self.filename!r}, disposition={self.disposition!r})")

    @property
    def is_attachment(self) -> bool:
        if self.message is not None:
            return True
        if self.disposition == "attachment" or self.filename:
            return True
        return not self.content_type.startswith("text/")


@dataclass
class Message:
    headers: list[tuple[str, str]]  # (name, decoded value) for DISPLAY_HEADERS
    parts: list[Part]
    problems: list[str] = field(default_factory=list)

    def header(self, name: str) -> str:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return ""


class _Budget:
    def __init__(self, max_parts: int) -> None:
        self.left = max_parts
        self.exhausted = False

    def take(self) -> bool:
        if self.left <= 0:
            self.exhausted = True
            return False
        self.left -= 1
        return True


def header_block(data: bytes, limit: int | None = None) -> bytes:
    """The message's header block through its first empty line (CRLF CRLF or LF LF),
    at most ``limit`` bytes; all of ``data`` when there is no empty line. A header
    parser given this sees exactly the headers it sees in the whole message (it
    stops at the first empty line, never later), without walking the body."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    end = min(ends) + 4 if ends else len(data)
    return data[:end if limit is None else min(end, limit)]


def parse_message(data: bytes, max_parts: int = 5000, max_depth: int = 5) -> Message:
    """Parse message bytes into display headers and leaf parts."""
    budget = _Budget(max_parts)
    return _parse(data, budget, max_depth, "")


def _parse(data: bytes, budget: _Budget, depth: int, prefix: str) -> Message:
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM before the headers
        data = data[3:]
    try:
        msg = _feed(data)
        return _from_email(msg, budget, depth, prefix)
    except RecursionError:
        pass
    # The parser could not build or walk the tree: keep the text, say so.
    part = Part(prefix + "1", "text/plain", "", "", "", payload=data)
    return Message([], [part], ["message structure could not be parsed"])


FEED_CHUNK = 1 << 16


def _feed(data: bytes) -> email.message.Message:
    """email.message_from_bytes(data, policy=compat32): the same tree, by the
    fast path when it applies, else by the full feed."""
    msg = _feed_fast(data)
    return msg if msg is not None else _feed_full(data)


def _feed_full(data: bytes) -> email.message.Message:
    """email.message_from_bytes(data, policy=compat32), fed in chunks: the same
    tree, without first decoding the whole message into one more str."""
    parser = email.feedparser.BytesFeedParser(policy=email.policy.compat32)
    view = memoryview(data)
    for i in range(0, len(data), FEED_CHUNK):
        parser.feed(bytes(view[i:i + FEED_CHUNK]))
    return parser.close()


def _feed_fast(data: bytes) -> email.message.Message | None:
    """The tree of a single-part message with CRLF headers, parsing only the
    header block; None when the full feed is needed.

    Why this is the full feed's tree (CPython 3.11 email/feedparser.py): the
    parser splits lines at CRLF, CR and LF; with no bare CR or LF before the
    first CRLF CRLF, the header lines it reads are exactly those of the header
    block, in either feed. If it ends the headers on our blank line, it drops
    that line and, for a type that is neither multipart/* nor message/*, makes
    the payload the rest of the input joined back unchanged ("".join of the
    lines): here nothing, in the full feed the body, decoded per byte as
    BytesFeedParser does ('ascii', 'surrogateescape'). Any other end of the
    headers (a non-header line, a unix-from pushed back, a leading blank line)
    leaves text in the payload or a defect, and we fall back. Body lines create
    no defects for such types, and close() adds one only for multipart.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    stripped = data[:end].replace(b"\r\n", b"")
    if b"\r" in stripped or b"\n" in stripped:
        return None  # a bare CR or LF: the parser's lines differ from ours
    del stripped
    try:
        parser = email.feedparser.BytesFeedParser(policy=email.policy.compat32)
        parser.feed(data[:end + 4])
        msg = parser.close()
        if (msg.defects or msg.get_content_maintype() in ("multipart", "message")
                or msg.get_payload() != ""):
            return None
    except Exception:  # whatever stops the fast path, the full feed decides
        return None
    msg.set_payload(str(memoryview(data)[end + 4:], "ascii", "surrogateescape"))
    return msg


def _from_email(msg: email.message.Message, budget: _Budget, depth: int, prefix: str) -> Message:
    headers = [(name, decode_header_value(raw)) for name in DISPLAY_HEADERS
               if (raw := _raw_header(msg, name)) is not None]
    problems: list[str] = []
    parts: list[Part] = []
    # Iterative walk: a hostile nesting must not blow the Python stack.
    stack: list[tuple[email.message.Message, str, int]] = [(msg, "1", 0)]
    while stack:
        node, index, level = stack.pop()
        if level > MAX_NESTING:
            problems.append(f"MIME nesting deeper than {MAX_NESTING} (part {prefix}{index})")
            continue
        if not budget.take():
            if "too many MIME parts" not in problems:
                problems.append("too many MIME parts")
            break
        ctype = _content_type(node)
        payload = node.get_payload()
        if node.is_multipart() and isinstance(payload, list):
            if ctype.startswith("message/"):
                parts.append(_nested(node, payload, prefix + index, budget, depth))
                continue
            children = [(child, f"{index}.{i}", level + 1) for i, child in enumerate(payload, 1)
                        if isinstance(child, email.message.Message)]
            stack.extend(reversed(children))
            continue
        parts.extend(_leaf(node, prefix + index, ctype))
    if budget.exhausted and "too many MIME parts" not in problems:
        problems.append("too many MIME parts")
    return Message(headers, parts, problems)


def _nested(node: email.message.Message, payload: list, index: str, budget: _Budget,
            depth: int) -> Part:
    part = Part(index, _content_type(node), "", _filename(node), _disposition(node))
    if depth <= 0:
        part.problems.append("attached messages nested too deep")
        return part
    inner = payload[0] if payload else None
    if isinstance(inner, email.message.Message):
        try:
            part.message = _from_email(inner, budget, depth - 1, index + ".")
        except RecursionError:
            part.problems.append("attached message structure could not be parsed")
    return part


def _content_type(node: email.message.Message) -> str:
    try:
        return node.get_content_type().lower()
    except Exception:  # compat32 rarely raises; a hostile header must not stop the walk
        return "application/octet-stream"


def _disposition(node: email.message.Message) -> str:
    raw = str(node.get("content-disposition", "") or "")
    return raw.split(";", 1)[0].strip().lower()


def _raw_header(node: email.message.Message, name: str) -> str | None:
    """The header as received (compat32 would wrap raw 8-bit in a lossy Header object)."""
    lname = name.lower()
    for key, value in node._headers:  # noqa: SLF001 - stdlib attribute, stable
        if key.lower() == lname:
            return value if isinstance(value, str) else str(value)
    return None


def _param(node: email.message.Message, name: str, header: str) -> str:
    raw = _raw_header(node, header)
    if raw is None:
        return ""
    if "\x1b" in raw or any("\udc80" <= ch <= "\udcff" for ch in raw):
        # Raw 8-bit or raw ISO-2022-JP inside the parameters: decode the
        # header first, then let the stdlib split the parameters.
        raw = guess_decode(raw.encode("utf-8", "surrogateescape"))
    holder = email.message.Message()
    holder[header] = raw
    try:
        value = holder.get_param(name, header=header)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text)
        charset, _lang, text = value
        raw = text.encode("latin-1", "surrogateescape") if isinstance(text, str) else text
        return decode_text(raw, charset or None)
    return decode_header_value(email.utils.unquote(str(value)))


def _filename(node: email.message.Message) -> str:
    name = _param(node, "filename", "content-disposition") or _param(node, "name", "content-type")
    return name.replace("\x00", "").strip()


def _charset(node: email.message.Message) -> str:
    try:
        cs = node.get_param("charset")
    except Exception:
        return ""
    if isinstance(cs, tuple):
        cs = cs[2]
    return str(cs or "").strip().strip("\"'")


def _leaf(node: email.message.Message, index: str, ctype: str) -> list[Part]:
    # The raw payload: compat32's get_payload() would already decode 8-bit text
    # with the declared charset (lossily); we want the bytes, decoded when used.
    raw = node._payload  # noqa: SLF001 - stdlib attribute, stable since Python 3.2
    if isinstance(raw, list):  # a message/* we did not recognise as multipart
        raw = ""
    if not isinstance(raw, str):
        raw = bytes(raw or b"").decode("ascii", "surrogateescape")
    cte = str(node.get("content-transfer-encoding", "") or "").split(";", 1)[0].strip().lower()
    part = Part(index, ctype, _charset(node), _filename(node), _disposition(node), raw=raw,
                cte=cte)
    out = [part]
    if ctype.startswith("text/") and not part.filename:
        out.extend(_uuencoded_parts(part))
    return out


def decode_transfer(raw: bytes, cte: str) -> tuple[bytes, str]:
    """Undo a Content-Transfer-Encoding leniently; (bytes, problem or "")."""
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return binascii.a2b_base64(cleaned), ""
        except (binascii.Error, ValueError):
            return raw, "base64 body could not be decoded"
    if cte == "quoted-printable":
        return quopri.decodestring(raw), ""
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        files = uudecode_blocks(raw)
        if files:
            return files[0][1], ""
        return raw, ""
    return raw, ""


_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} (.*)$", re.M)


def uudecode_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every `begin NNN name ... end` block -> (raw name, bytes)."""
    out = []
    for m in _UU_BEGIN.finditer(data):
        body = bytearray()
        for line in data[m.end():].splitlines()[1:]:
            s = line.strip(b"\r")
            if s == b"end":
                break
            if not s or s == b"`":
                continue
            try:
                body += binascii.a2b_uu(s)
            except binascii.Error:
                # Some encoders pad short lines wrongly; decode what the length byte says.
                try:
                    n = (s[0] - 32) & 63
                    body += binascii.a2b_uu(s[: 1 + (n + 2) // 3 * 4])
                except (binascii.Error, IndexError):
                    break
        out.append((m.group(1).strip(), bytes(body)))
    return out


def _uuencoded_parts(part: Part) -> list[Part]:
    """uuencoded files pasted into a text body become parts of their own."""
    if b"begin " not in part.payload:
        return []
    out = []
    for n, (name, blob) in enumerate(uudecode_blocks(part.payload), 1):
        decoded = decode_header_value(guess_decode(name))
        out.append(Part(f"{part.index}.uu{n}", "application/octet-stream", "", decoded or f"uu{n}",
                        "attachment", payload=blob))
    return out
