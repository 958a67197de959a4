"""Numbers written in a form's own way, read only right after a My Number
label (DESIGN §4 "Layout"; issue 11 items 2 and 6):

    box form        one digit per box: `個人番号 1 2 3 4 5 6 7 8 9 0 1 2` as PDF
                    text of a 扶養控除等申告書 comes out, boxes separated by
                    spaces, tabs or `|` (ASCII or full-width digits)
    kanji numerals  〇一二三四五六七八九 and 零 as digits, contiguous or grouped
                    4-4-4 (space, hyphen, ー or ・ between the groups)

Both need the label: runs of single digits (table data, page numbers) and
kanji numerals (一二三) are common without one, so with no label within
FORM_RANGE characters before the first digit nothing is read. A form found
this way is high (the label is the evidence).

SPEED: a text pays three one-character finds (番, ナ, ﾅ: every built-in label
people put before a form holds one); only around those does a short regex look
for a form, and only where it finds one does the word automaton confirm the
label.

SECURITY: reads untrusted text in bounded windows with linear regexes.

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import re

from mailguard.detect.numbers import _valid
from mailguard.detect.words import _Words

FORM_RANGE = 20  # characters from the end of the label to the form's first digit
# (anchor, the character after it) in 個人番号, 共通番号, 個人識別番号, マイナンバー, ﾏｲﾅﾝﾊﾞｰ
_ANCHORS = (("番", "号"), ("ナ", "ン"), ("ﾅ", "ﾝ"))
_LABEL_BACK = 12  # a label holding an anchor starts at most this far before it

_D = "[0-9\uff10-\uff19]"
_BOX_SEP = "[ \t|\uff5c\u3000]"
_K = "[〇一二三四五六七八九零]"
_K_SEP = "[ \u3000\\-\uff0d\u2010\u2212ー・･]"
# Each starts with a bare character class, so sre skips to a possible first
# digit in C; the neighbours are checked in _read (a lookbehind first would
# cost that).
_BOX = re.compile(rf"{_D}(?:{_BOX_SEP}{{1,3}}{_D}){{11}}")
_KANJI = re.compile(rf"{_K}(?:{_K}{{11}}|{_K}{{3}}(?P<ks>{_K_SEP}){_K}{{4}}(?P=ks){_K}{{4}})")
_BOX_AFTER = re.compile(rf"{_BOX_SEP}*{_D}")
_K_GLUE = frozenset("〇一二三四五六七八九零十百千万")
_D_SET = frozenset("0123456789０１２３４５６７８９")
_KANJI_DIGITS = str.maketrans("〇一二三四五六七八九零", "01234567890")
_WIDE_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
BOX_REASON = "one digit per box"
KANJI_REASON = "kanji numerals"


def labelled_forms(text: str, words: _Words) -> list[tuple[str, int, int, str]]:
    """(number, start, end, reason) of each valid box-form or kanji-numeral
    number right after a My Number label in `text`."""
    if not any(a in text for a, _ in _ANCHORS):
        return []
    out: list[tuple[str, int, int, str]] = []
    seen: set[int] = set()
    for anchor, then in _ANCHORS:
        pos = text.find(anchor)
        while pos >= 0:
            # 番 is read only in 番号, ナ in ナン: 番地 in every row of an
            # address list costs a character comparison, not a regex search.
            if text[pos + 1:pos + 2] == then:
                hi = pos + FORM_RANGE + _LABEL_BACK
                for m in (_BOX.search(text, pos, hi + 40), _KANJI.search(text, pos, hi + 20)):
                    if m is not None and m.start() < hi and m.start() not in seen:
                        found = _read(text, m, words, max(0, pos - _LABEL_BACK))
                        if found is not None:
                            out.append(found)
                            seen.add(m.start())
            pos = text.find(anchor, pos + 1)
    out.sort(key=lambda f: f[1])
    return out


def _read(text: str, m: re.Match[str], words: _Words, lo: int) -> tuple[str, int, int, str] | None:
    s, e = m.span()
    box = m.re is _BOX
    if box:
        if (s and text[s - 1] in _D_SET) or _BOX_AFTER.match(text, e):
            return None  # a digit glued on, or a thirteenth box
    elif (s and text[s - 1] in _K_GLUE) or (e < len(text) and text[e] in _K_GLUE):
        return None  # part of a longer numeral
    label = None
    for h in words.find(text, lo, s):
        if not h.negative and 0 <= s - h.end <= FORM_RANGE:
            label = h
    if label is None or _DIGIT_BETWEEN.search(text, label.end, s):
        return None
    if box:
        number = "".join(c for c in m.group() if c not in _BOX_SEP_SET).translate(_WIDE_DIGITS)
        kind = BOX_REASON
    else:
        number = m.group().translate(_KANJI_DIGITS)
        number = "".join(c for c in number if c.isdigit())
        kind = KANJI_REASON
    if len(number) != 12 or not number.isascii() or number == number[0] * 12 or not _valid(number):
        return None
    return number, s, e, f"keyword {label.word} {s - label.end} characters before, {kind}"


_BOX_SEP_SET = frozenset(" \t|\uff5c\u3000")
_DIGIT_BETWEEN = re.compile(r"[0-9\uff10-\uff19〇一二三四五六七八九零]")
