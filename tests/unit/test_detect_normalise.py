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
    missing, extra = [], []
    for c in _all_chars():
        n = unicodedata.normalize("NFKC", c)
        wants = any("0" <= x <= "9" for x in n)
        has = c in detect._DIGITLIKE_SET
        if wants and not has:
            missing.append(f"U+{ord(c):04X}")
        elif has and not wants:
            extra.append(f"U+{ord(c):04X}")
    assert not missing and not extra, f"missing {missing[:20]}, extra {extra[:20]}"


def test_every_digit_like_is_either_one_digit_or_takes_the_normalising_path():
    for c in detect._DIGITLIKE_SET:
        n = unicodedata.normalize("NFKC", c)
        if len(n) == 1:
            assert detect._DIGIT_OF[c] == n and detect._FAST_ALL.fullmatch(c * 12), f"U+{ord(c):04X}"
        else:
            assert c in detect._MULTI_SET and detect._MULTI_ALL.fullmatch(c), f"U+{ord(c):04X}"


def test_separator_table_is_complete():
    missing = [
        f"U+{ord(c):04X}"
        for c in _all_chars()
        if (unicodedata.normalize("NFKC", c) in (" ", "-", ".") or c in HYPHEN_LIKES) and c not in detect._SEP_OF
    ]
    assert all(v in (" ", "-", ".") for v in detect._SEP_OF.values())
    assert not missing, f"missing {missing}"


def test_hyphen_likes_become_hyphen_minus():
    for c in HYPHEN_LIKES | {"\uff0d", "\ufe63"}:
        assert detect.normalise(f"1{c}2")[0] == "1-2", f"U+{ord(c):04X}"
