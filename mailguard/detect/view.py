"""The text as a person reads it: a "view" of a span with the characters a
reader does not see taken out, and an offset map back to the original text
(DESIGN §4 "Layout"; issue 11 item 4).

Taken out, each only where it can hide a number:

    format characters   Unicode Cf that render as nothing: zero-width space,
                        non-joiner, joiner, LRM/RLM, word joiner and the
                        invisible operators, BOM, soft hyphen, the bidi
                        embeddings, overrides and isolates, Arabic letter mark
                        (a number broken by U+200B or U+00AD reads whole)
    quote prefixes      `> `, `>> `, `| ` at a line start, when some quoted line
                        holds a digit (`> 1234 5678` / `> 9012` wrapped across
                        a quoted reply reads as one number)
    folding             RFC 5545 / 6350 line folding (CRLF or LF and one space
                        or tab), only in text that is an iCalendar or vCard
                        object (starts with BEGIN:VCALENDAR / BEGIN:VCARD)

Only removals, so the map is piecewise: kept piece k starts at view offset
vstarts[k] and at original offset ostarts[k]; a finding's start and end are
mapped back with one bisect each and cover the original spelling.

SPEED: ordinary text pays a few memchr-speed checks and nothing else. ASCII
text holds no format character; other text is looked at through the high
bytes of its UTF-16 form, which the candidate scan computes anyway (the
character classes above have high bytes 0x06, 0x20 and 0xFE; U+00AD is one
str.find); the quote check is two one-character finds before any regex; the
folding check reads the first hundred characters. The view itself (a regex
pass and a join) is built only when one of these says it is needed.

SECURITY: reads untrusted text with linear regex scans (no nested quantifiers
over overlapping classes); the view is never longer than the text.

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_right

# Format characters (category Cf) a reader does not see; tests check each is Cf.
FORMAT_CHARS = (
    "\u00ad\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
_FORMAT_HIGH = (b"\x06", b"\x20", b"\xfe")  # UTF-16 high bytes of FORMAT_CHARS other than U+00AD
_FORMAT = re.compile("[" + FORMAT_CHARS + "]+")
# Quote prefixes as mail clients write them (> and |, nested, with or without
# a space). _QUOTED_DIGIT starts with a literal line break so sre searches for
# it in C; the text's first line is matched on its own.
_QUOTE_PREFIX = re.compile(r"(?:^|(?<=\n))[ \t]*(?:[>|][ \t]?)+")
_QUOTED_DIGIT = re.compile(r"\n[ \t]*[>|][^\n0-9\uff10-\uff19]*[0-9\uff10-\uff19]")
_QUOTED_DIGIT_FIRST = re.compile(r"[ \t]*[>|][^\n0-9\uff10-\uff19]*[0-9\uff10-\uff19]")
_FOLD = re.compile(r"\r?\n[ \t]")
_CALENDAR_STARTS = ("BEGIN:VCALENDAR", "BEGIN:VCARD")


class View:
    """A span's text with invisible characters, quote prefixes and folds
    removed, and the map back to the original offsets."""

    __slots__ = ("text", "_vstarts", "_ostarts")

    def __init__(self, text: str, vstarts: list[int], ostarts: list[int]) -> None:
        self.text, self._vstarts, self._ostarts = text, vstarts, ostarts

    def start(self, v: int) -> int:
        """Original offset of view character v."""
        k = bisect_right(self._vstarts, v) - 1
        return self._ostarts[k] + v - self._vstarts[k]

    def end(self, v: int) -> int:
        """Original end offset for a view range ending (exclusively) at v > 0."""
        return self.start(v - 1) + 1


def needs_view(text: str, high: bytes | None) -> tuple[bool, bool, bool]:
    """(format characters, quoted digit lines, folding) that may be present.
    `high` is the UTF-16 high bytes of a non-ASCII text (None: compute)."""
    fmt = quote = fold = False
    if not text.isascii():
        if "\u00ad" in text:
            fmt = True
        else:
            if high is None:
                high = text.encode("utf-16-be", "surrogatepass")[::2]
            fmt = any(b in high for b in _FORMAT_HIGH) and _FORMAT.search(text) is not None
    if ">" in text or "|" in text:
        quote = _QUOTED_DIGIT_FIRST.match(text) is not None or _QUOTED_DIGIT.search(text) is not None
    head = text[:100].lstrip("\ufeff \t\r\n").upper()
    fold = head.startswith(_CALENDAR_STARTS)
    return fmt, quote, fold


def make_view(text: str, high: bytes | None = None) -> View | None:
    """The view of `text`, or None when nothing in it needs removing."""
    fmt, quote, fold = needs_view(text, high)
    if not (fmt or quote or fold):
        return None
    cut: list[tuple[int, int]] = []
    if fmt:
        cut.extend(m.span() for m in _FORMAT.finditer(text))
    if fold:
        cut.extend(m.span() for m in _FOLD.finditer(text))
    if quote:
        # Quote prefixes are read after unfolding and format characters: take
        # them from the text with those removed, mapped back.
        inner = _apply(text, cut) if cut else None
        base = inner.text if inner is not None else text
        for m in _QUOTE_PREFIX.finditer(base):
            s, e = m.span()
            if e > s:
                if inner is None:
                    cut.append((s, e))
                else:
                    cut.append((inner.start(s), inner.end(e)))
    return _apply(text, cut)


def _apply(text: str, cut: list[tuple[int, int]]) -> View | None:
    if not cut:
        return None
    cut.sort()
    pieces: list[str] = []
    vstarts: list[int] = []
    ostarts: list[int] = []
    pos = v = 0
    for s, e in cut:
        if e <= pos:
            continue
        s = max(s, pos)
        if s > pos or not vstarts:
            vstarts.append(v)
            ostarts.append(pos)
            pieces.append(text[pos:s])
            v += s - pos
        pos = e
    vstarts.append(v)
    ostarts.append(pos)
    pieces.append(text[pos:])
    return View("".join(pieces), vstarts, ostarts)
