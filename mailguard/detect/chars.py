"""Character classes and normalisation: which characters NFKC makes a digit
or a separator, the test for the ⑩-like characters that expand to several,
and normalise() with its offset map (DESIGN §4).

SECURITY: reads untrusted text; every test here is a set lookup or one linear
pass.

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable


# Code point ranges whose NFKC form contains an ASCII digit (ASCII, full-width,
# super/subscripts, circled and parenthesised numbers, math digits, ...), and
# those that normalise to a separator (space, hyphen, dot) or are hyphen-likes.
# Generated from unicodedata, because computing them at import costs half a
# second; tests/unit/test_detect_normalise.py recomputes them for the running
# Python and names any character that is missing.
_DIGIT_RANGES = (
    (0x30, 0x39), (0xB2, 0xB3), (0xB9, 0xB9), (0xBC, 0xBE), (0x2070, 0x2070), (0x2074, 0x2079),
    (0x2080, 0x2089), (0x2150, 0x215F), (0x2189, 0x2189), (0x2460, 0x249B), (0x24EA, 0x24EA),
    (0x3251, 0x325F), (0x32B1, 0x32CB), (0x3358, 0x3370), (0x3378, 0x3379), (0x339F, 0x33A6),
    (0x33A8, 0x33A8), (0x33AF, 0x33AF), (0x33E0, 0x33FE), (0xFF10, 0xFF19), (0x1D7CE, 0x1D7FF),
    (0x1F100, 0x1F10A), (0x1FBF0, 0x1FBF9),
)
_SEP_RANGES = (
    (0x20, 0x20), (0x2D, 0x2E), (0xA0, 0xA0), (0x2000, 0x200A), (0x2010, 0x2015), (0x2024, 0x2024),
    (0x202F, 0x202F), (0x205F, 0x205F), (0x2212, 0x2212), (0x3000, 0x3000), (0x30FC, 0x30FC),
    (0xFE52, 0xFE52), (0xFE63, 0xFE63), (0xFF0D, 0xFF0E), (0xFF70, 0xFF70),
)
HYPHENS = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff70"
_HYPHEN_MAP = str.maketrans({c: "-" for c in HYPHENS})


def _chars(ranges) -> list[str]:
    return [chr(cp) for a, b in ranges for cp in range(a, b + 1)]


def _nfkc(c: str) -> str:
    return unicodedata.normalize("NFKC", c).translate(_HYPHEN_MAP)


def _cls(chars: Iterable[str]) -> str:
    return "".join(re.escape(c) for c in chars)


_DIGITLIKE_SET = frozenset(_chars(_DIGIT_RANGES))
# One character -> one digit (most of them) vs. several characters (⑩ -> "10",
# ⒈ -> "1.", ½ -> "1⁄2", ㎡ -> "m2"): the latter need real normalisation.
_DIGIT_OF = {c: _nfkc(c) for c in _DIGITLIKE_SET if len(_nfkc(c)) == 1}
_MULTI_SET = frozenset(_DIGITLIKE_SET - _DIGIT_OF.keys())
_SEP_OF = {c: _nfkc(c) for c in _chars(_SEP_RANGES)}
_TO_ASCII = str.maketrans(_DIGIT_OF)
_LINE_BREAK = "\r\n"


_PLAIN_STR_SIZE = sys.getsizeof("") + 1

# The ⑩-like characters sit in a few Unicode blocks: ¼½¾, and four high bytes.
_MULTI_LATIN1 = tuple(sorted(c for c in _MULTI_SET if ord(c) < 0x100))
_MULTI_HIGH = tuple(sorted({bytes([ord(c) >> 8]) for c in _MULTI_SET if 0x100 <= ord(c) <= 0xFFFF}))


def _may_hold_multi(text: str, astral: bool, high: bytes | None = None) -> bool:
    """False when `text` surely holds no character of _MULTI_SET. A regex
    class over a 3 MB CSV costs 9 ms; for text without astral characters the
    UTF-16 high bytes answer in half that (memchr over every second byte).
    `high`: those bytes when the caller has them (the view check needs them too)."""
    if text.isascii():
        return False
    if astral:
        return True
    if any(c in text for c in _MULTI_LATIN1):
        return True
    if high is None:
        high = _high_bytes(text)
    return any(b in high for b in _MULTI_HIGH)


def _high_bytes(text: str) -> bytes:
    """The high byte of each UTF-16 code unit of `text` (a non-ASCII text)."""
    return text.encode("utf-16-be", "surrogatepass")[::2]


def _may_hold_astral(text: str) -> bool:
    # CPython stores a str with 1, 2 or 4 bytes per character; only the last can
    # hold U+10000 and above. getsizeof tells which without scanning the text.
    # On another implementation the formula may say yes; that is only slower.
    return sys.getsizeof(text) - _PLAIN_STR_SIZE >= 3 * len(text) + 64 or len(text) < 64


def _digitish(c: str) -> bool:
    return c in _DIGITLIKE_SET or c.isdigit()


# ------------------------------------------------------------- normalisation


def normalise(text: str) -> tuple[str, list[int], list[int]]:
    """NFKC plus hyphen-likes -> '-', with an offset map back to `text`:
    output character k came from text[starts[k]:ends[k]].

    A character is normalised together with the combining marks after it (so
    ﾊﾞ becomes バ, as whole-string NFKC does); digits and separators are NFKC
    starters that never compose, so candidates come out exactly as whole-string
    NFKC would give them.
    """
    n = len(text)
    if text.isascii():
        return text, list(range(n)), list(range(1, n + 1))
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    while i < n:
        j = i + 1
        while j < n and (unicodedata.combining(text[j]) or text[j] in "\uff9e\uff9f"):
            j += 1
        cluster = text[i:j]
        norm = cluster if cluster.isascii() else unicodedata.normalize("NFKC", cluster).translate(_HYPHEN_MAP)
        if norm == cluster:  # unchanged: keep per-character offsets
            out.append(cluster)
            starts.extend(range(i, j))
            ends.extend(range(i + 1, j + 1))
        else:
            out.append(norm)
            starts.extend([i] * len(norm))
            ends.extend([j] * len(norm))
        i = j
    return "".join(out), starts, ends
