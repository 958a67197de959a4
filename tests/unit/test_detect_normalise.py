"""The detector's precomputed character tables match unicodedata of this Python.

detect.py lists, as constants, every character whose NFKC form contains an
ASCII digit and every character that normalises to a separator, because
computing them at import costs half a second. If a Python upgrade brings new
Unicode data, these tests say which characters to add.
"""

from __future__ import annotations

import re
import unicodedata

from mailguard import detect

HYPHEN_LIKES = set(map(chr, [*range(0x2010, 0x2016), 0x2212, 0x30FC, 0xFF70]))


def _all_chars():
    for cp in range(0x110000):
        if not 0xD800 <= cp < 0xE000:
            yield chr(cp)


def test_digit_like_table_is_complete_and_exact():
    table = re.compile(f"[{detect._DIGITLIKE}]")
    missing, extra = [], []
    for c in _all_chars():
        n = unicodedata.normalize("NFKC", c)
        wants = any("0" <= x <= "9" for x in n)
        has = table.fullmatch(c) is not None
        if wants and not has:
            missing.append(f"U+{ord(c):04X}")
        elif has and not wants:
            extra.append(f"U+{ord(c):04X}")
    assert not missing and not extra, f"missing {missing[:20]}, extra {extra[:20]}"


def test_multi_digit_table_covers_every_expanding_digit():
    # Characters that give more than one character: a region shorter than 12
    # characters can still hold 12 digits, so these must not be skipped.
    table = re.compile(f"[{detect._DIGITLIKE}]")
    missing = [
        f"U+{ord(c):04X}"
        for c in _all_chars()
        if table.fullmatch(c) and len(unicodedata.normalize("NFKC", c)) > 1 and not detect._MULTI.fullmatch(c)
    ]
    assert not missing, f"missing {missing[:20]}"


def test_separator_table_is_complete():
    table = re.compile(f"[{detect._SEPLIKE}]")
    missing = [
        f"U+{ord(c):04X}"
        for c in _all_chars()
        if (unicodedata.normalize("NFKC", c) in (" ", "-", ".") or c in HYPHEN_LIKES) and not table.fullmatch(c)
    ]
    assert not missing, f"missing {missing}"


def test_hyphen_likes_become_hyphen_minus():
    for c in HYPHEN_LIKES | {"\uff0d", "\ufe63"}:
        assert detect.normalise(f"1{c}2")[0] == "1-2", f"U+{ord(c):04X}"
