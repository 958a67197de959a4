"""Bytes -> str for Japanese mail: declared charsets, vendor extensions, guessing.

SECURITY: decodes untrusted bytes under untrusted labels. Never raises on bad
input: unknown labels fall back to guessing and undecodable bytes become U+FFFD,
so a part is never dropped because its charset lied.

ISO-2022-JP and EUC-JP are decoded by mapping each JIS X 0208 pair to its
Shift_JIS code and decoding as CP932. That is what Outlook and Japanese mailers
do (CP50220/CP51932), and it makes NEC row 13 (①, ㈱, ㍉) and NEC-selected IBM
extensions (髙, 﨑) come out as the sender saw them, where Python's strict
iso2022_jp codec rejects them.

Ground level: used by parse (MIME headers and parts) and by extract (text
attachments, TNEF, legacy Office); imports nothing of mailguard's.

DIAGNOSTICS: none.
"""

from __future__ import annotations

import codecs
import re

# Labels seen in real Japanese mail, mapped to what they mean in practice.
_ALIASES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "shift_jis-2004": "shift_jis_2004", "ms_kanji": "cp932", "csshiftjis": "cp932",
    "windows-31j": "cp932", "cp932": "cp932", "x-ms-cp932": "cp932",
    "iso-2022-jp": "iso-2022-jp", "csiso2022jp": "iso-2022-jp", "iso-2022-jp-1": "iso-2022-jp",
    "iso-2022-jp-2": "iso-2022-jp", "iso-2022-jp-3": "iso-2022-jp", "iso-2022-jp-ms": "iso-2022-jp",
    "cp50220": "iso-2022-jp", "cp50221": "iso-2022-jp", "cp50222": "iso-2022-jp",
    "euc-jp": "euc-jp", "x-euc-jp": "euc-jp", "eucjp": "euc-jp", "cp51932": "euc-jp",
    "euc-jp-ms": "euc-jp", "ujis": "euc-jp",
    "unicode-1-1-utf-7": "utf-7", "x-unicode-2-0-utf-7": "utf-7", "utf-7": "utf-7",
    "utf8": "utf-8", "x-unknown": "", "unknown-8bit": "", "unknown": "", "none": "",
    "us-ascii": "utf-8", "ascii": "utf-8", "ks_c_5601-1987": "cp949", "gb2312": "gb18030",
    "gbk": "gb18030", "iso-8859-1": "cp1252", "latin1": "cp1252",
}

_ESC_JIS = re.compile(rb"\x1b[\$\(][@BJIDHQO]|\x1b\$\([DOQP]")


def normalise_label(label: str | None) -> str:
    """A charset label -> a Python codec name, or "" when it says nothing useful."""
    if not label:
        return ""
    label = label.strip().strip("\"'").lower()
    if label in _ALIASES:
        return _ALIASES[label]
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return ""


def _jis_pair_to_sjis(b1: int, b2: int) -> bytes:
    """A JIS X 0208 pair (0x21-0x7E each) -> the Shift_JIS/CP932 bytes."""
    s1 = ((b1 + 1) >> 1) + (0x70 if b1 <= 0x5E else 0xB0)
    if b1 & 1:
        s2 = b2 + (0x1F if b2 <= 0x5F else 0x20)
    else:
        s2 = b2 + 0x7E
    return bytes((s1, s2))


def decode_iso2022jp(data: bytes) -> str:
    """ISO-2022-JP (with CP5022x vendor rows and SO/SI katakana) -> str."""
    out: list[str] = []
    mode = "ascii"
    i, n = 0, len(data)
    buf = bytearray()

    def flush() -> None:
        if buf:
            out.append(bytes(buf).decode("cp932", "replace"))
            buf.clear()

    while i < n:
        c = data[i]
        if c == 0x1B:
            m = _ESC_JIS.match(data, i)
            if m:
                seq = m.group(0)
                flush()
                mode = {
                    b"\x1b(B": "ascii", b"\x1b(J": "ascii", b"\x1b(H": "ascii",
                    b"\x1b$@": "jis", b"\x1b$B": "jis", b"\x1b(I": "kana",
                }.get(seq, "other")
                i += len(seq)
                continue
        if c == 0x0E:  # SO: half-width katakana (CP50221)
            flush()
            mode, i = "kana", i + 1
            continue
        if c == 0x0F:  # SI
            flush()
            mode, i = "ascii", i + 1
            continue
        if c in (0x0A, 0x0D):  # line ends reset to ASCII in practice
            if mode in ("jis", "other"):
                flush()
                mode = "ascii"
            buf.append(c)
            i += 1
            continue
        if mode == "jis":
            if i + 1 < n and 0x21 <= c <= 0x7E and 0x21 <= data[i + 1] <= 0x7E:
                buf += _jis_pair_to_sjis(c, data[i + 1])
                i += 2
            else:
                buf += b"?"  # becomes visible junk, never a digit
                i += 1
        elif mode == "kana":
            buf.append(c + 0x80 if 0x21 <= c <= 0x5F else c)
            i += 1
        elif mode == "other":  # JIS X 0212/0213: no CP932 mapping; keep the slot
            flush()
            out.append("\ufffd")
            i += 2
        else:
            buf.append(c)
            i += 1
    flush()
    return "".join(out)


def decode_eucjp(data: bytes) -> str:
    """EUC-JP, including CP51932 NEC rows, -> str (strict codec first)."""
    try:
        return data.decode("euc_jp")
    except UnicodeDecodeError:
        pass
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if 0xA1 <= c <= 0xFE and i + 1 < n and 0xA1 <= data[i + 1] <= 0xFE:
            out += _jis_pair_to_sjis(c - 0x80, data[i + 1] - 0x80)
            i += 2
        elif c == 0x8E and i + 1 < n:  # half-width katakana
            out.append(data[i + 1])
            i += 2
        elif c == 0x8F and i + 2 < n:  # JIS X 0212: no CP932 mapping
            out += b"?"
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out).decode("cp932", "replace")


def decode_with(data: bytes, codec: str) -> str:
    """Decode with a normalised codec name; never raises."""
    if codec == "iso-2022-jp":
        return decode_iso2022jp(data)
    if codec in ("euc-jp", "euc_jp"):
        return decode_eucjp(data)
    try:
        return data.decode(codec, "replace")
    except (LookupError, ValueError):
        return guess_decode(data)


def guess_decode(data: bytes) -> str:
    """Decode bytes with no trustworthy label: BOM, ESC sequences, strict tries, then a guess."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    if b"\x1b$" in data[:65536] or b"\x1b(" in data[:65536]:
        return decode_iso2022jp(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    head = data[:4096]
    # Fixed-width records (NUL-padded fields) before UTF-16: their NUL runs
    # would pass the every-other-byte test and decode to garbage.
    if b"\0\0\0\0" in data[:65536]:
        records = decode_fixed_width(data)
        if records is not None:
            return records
    # UTF-16 without a BOM: every other byte NUL.
    if len(head) >= 8 and head[1::2].count(0) > len(head) // 4:
        return data.decode("utf-16-le", "replace")
    if len(head) >= 8 and head[0::2].count(0) > len(head) // 4:
        return data.decode("utf-16-be", "replace")
    # EUC-JP before CP932: EUC text almost never passes CP932's lead-byte rules
    # for hiragana, while CP932 hiragana (0x82xx) is never valid EUC-JP.
    for codec in ("euc_jp", "cp932"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:262144]).best()
        if best is not None and best.encoding:
            return data.decode(best.encoding, "replace")
    except Exception:  # the guesser is a heuristic; never let it fail a scan
        pass
    return data.decode("cp932", "replace")


_NUL_RUNS = re.compile(rb"\x00+")
_FIELD_NOISE = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f\ufffd]")
FIXED_MIN_FIELDS = 2


def decode_fixed_width(data: bytes) -> str | None:
    """A fixed-width record export (ASCII digits and Shift_JIS or UTF-8 text in
    NUL-padded fields, as legacy systems write them) -> its fields joined by
    tabs; None unless it is one with confidence.

    Four NULs in a row never occur in UTF-16 text (they would be U+0000), so
    long NUL runs between printable fields mean padding, not UTF-16. Confident
    when at least 95 % of the field bytes decode strictly (UTF-8, else CP932,
    per field) to printable text and most field bytes sit in fields of two or
    more bytes; a field that does not decode makes the guess fail.
    """
    if b"\0\0\0\0" not in data[:65536]:
        return None
    fields = [f for f in _NUL_RUNS.split(data) if f]
    if len(fields) < FIXED_MIN_FIELDS:
        return None
    total = sum(len(f) for f in fields)
    if sum(len(f) for f in fields if len(f) >= 2) < 0.8 * total:
        return None  # single bytes between NULs: UTF-16 or binary, not fields
    out: list[str] = []
    bad = 0
    for f in fields:
        try:
            text = f.decode("utf-8") if f.isascii() else _strict_field(f)
        except UnicodeDecodeError:
            bad += len(f)
            text = f.decode("cp932", "replace")
        noise = len(_FIELD_NOISE.findall(text))
        bad += noise
        out.append(text)
    if bad > 0.05 * total:
        return None
    return "\t".join(out)


def _strict_field(f: bytes) -> str:
    try:
        return f.decode("utf-8")
    except UnicodeDecodeError:
        return f.decode("cp932")


_GARBAGE = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\ufffd]")


def looks_garbled(text: str, sample: int = 16384) -> bool:
    """True when a decoded text is not text with confidence: more than 2 % of
    its first `sample` characters are NUL, C0 controls (other than whitespace
    and ESC) or U+FFFD (what binary data or a wrong UTF-16 guess decodes to)."""
    head = text[:sample]
    return bool(head) and len(_GARBAGE.findall(head)) > 0.02 * len(head)


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Decode a text body: the declared charset when it decodes cleanly, else a guess."""
    codec = normalise_label(declared)
    if codec in ("iso-2022-jp", "euc-jp"):
        return decode_with(data, codec)
    if codec == "utf-7" and b"&" in data and b"+" not in data:
        # Some Japanese mailers write IMAP's modified UTF-7 (&...-, "," for "/").
        data = re.sub(rb"&([A-Za-z0-9+,]+)-", lambda m: b"+" + m.group(1).replace(b",", b"/") + b"-",
                      data)
    if codec:
        if codec in ("utf-8", "ascii") and data.startswith(codecs.BOM_UTF8):
            data = data[3:]
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            # Mislabelled (e.g. "us-ascii" on CP932 bytes): guess rather than mangle.
            if codec in ("utf-8", "ascii", "cp1252", "iso8859-1", "latin-1"):
                return guess_decode(data)
            return data.decode(codec, "replace")
        except (LookupError, ValueError):
            pass
    return guess_decode(data)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?]*)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _word_bytes(enc: str, text: str) -> bytes:
    if enc in "Bb":
        import binascii

        raw = re.sub(r"[^A-Za-z0-9+/]", "", text)
        raw += "=" * (-len(raw) % 4)
        try:
            return binascii.a2b_base64(raw)
        except (binascii.Error, ValueError):
            return b""
    raw_b = text.replace("_", " ").encode("ascii", "surrogateescape")
    return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), raw_b)


def header_bytes(value: str) -> bytes:
    """A header string from the stdlib (raw 8-bit kept as surrogates) -> its bytes."""
    return value.encode("utf-8", "surrogateescape")


def decode_header_value(value: str) -> str:
    """RFC 2047 header text -> str, leniently.

    Adjacent encoded words in the same charset are joined before decoding (a
    mailer may split one multibyte character across two words); whitespace
    between encoded words is dropped as RFC 2047 says; raw 8-bit or raw
    ISO-2022-JP outside encoded words is decoded by guessing.
    """
    value = value.replace("\r", "").replace("\n", "")
    out: list[str] = []
    pending_cs, pending = "", bytearray()
    pos = 0

    def flush() -> None:
        nonlocal pending_cs
        if pending:
            out.append(decode_text(bytes(pending), pending_cs))
            pending.clear()
        pending_cs = ""

    for m in _ENCODED_WORD.finditer(value):
        between = value[pos:m.start()]
        if between and not (between.isspace() and (pending or out)):
            flush()
            out.append(_decode_raw(between))
        elif between and between.isspace() and not pending and not out:
            out.append(between)
        cs = m.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        if pending and normalise_label(cs) != normalise_label(pending_cs):
            flush()
        pending_cs = cs
        pending += _word_bytes(m.group(2), m.group(3))
        pos = m.end()
    flush()
    tail = value[pos:]
    if tail:
        out.append(_decode_raw(tail))
    return "".join(out)


def _decode_raw(text: str) -> str:
    if "\x1b" in text or any("\udc80" <= ch <= "\udcff" for ch in text):
        return guess_decode(header_bytes(text))
    return text
