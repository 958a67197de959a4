"""Candidate finding: every 12-digit run (contiguous or 4-4-4) in a text,
with its offsets, whether it is grouped and whether its check digit holds,
as five parallel columns (DESIGN §4 "candidates" and "exclude").

SECURITY: reads untrusted text of any size with linear regex scans; the work
per candidate is bounded (a few neighbour lookups, a 40-character window
around a ⑩-like character).

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailguard.detect.chars import (
    _DIGIT_OF,
    _DIGITLIKE_SET,
    _LINE_BREAK,
    _MULTI_SET,
    _SEP_OF,
    _TO_ASCII,
    _cls,
    _digitish,
    _may_hold_astral,
    _may_hold_multi,
    normalise,
)
from mailguard.detect.numbers import _valid, _valid_many, is_corporate_number


# Separators between the groups beyond NFKC's: the katakana middle dot
# (full and half width), which people type as 1234・5678・9012.
_DOTS = {"\u30fb": "\u30fb", "\uff65": "\u30fb"}
_GAP_OF = _SEP_OF | _DOTS
_SPACES = "".join(sorted(c for c, v in _SEP_OF.items() if v == " "))
_MAX_SPACES = 4  # a run of up to this many spaces is one separator


def _fast_pattern(digits: Iterable[str]) -> re.Pattern[str]:
    d = "[" + _cls(sorted(digits)) + "]"
    s = "[" + _cls(sorted(_GAP_OF)) + "]"
    # One separator character, or a short run of them that _gap_kind accepts
    # (a run of spaces, or a hyphen, dot or middle dot with up to two spaces
    # either side: 1234 - 5678 - 9012); a line break may follow it or stand
    # for it. The run is checked in Python, not here: a failing attempt (a
    # date's "/") then costs one class test, as it did before the runs.
    gap = rf"(?:{s}{s}{{0,{_MAX_SPACES}}}(?:\r\n|\r|\n)?|\r\n|\r|\n)"
    # Starts with a bare character class, so sre scans for it with its fast
    # charset prefix search instead of trying the whole pattern at every offset.
    return re.compile(rf"(?P<a>{d}{d}{{3}})(?:(?P<s1>{gap})(?P<b>{d}{{4}})(?P<s2>{gap})(?P<c>{d}{{4}})|(?P<f>{d}{{8}}))")


def _scan_pattern(fast: re.Pattern[str]) -> re.Pattern[str]:
    # The same pattern without its groups, for the scan: sre then saves no
    # marks at each of the (in a CSV, two million) digits where it tries a
    # match, 15 % faster. Same alternatives in the same order, so the same
    # matches; a grouped one is matched again with the groups.
    return re.compile(re.sub(r"\(\?P<\w+>", "(?:", fast.pattern))


# Two compiled forms of one pattern: with astral digits (math bold 𝟏) in the
# class sre falls back to a range list, three times slower, so strings that can
# not hold an astral character (most of them) use the BMP-only form.
_FAST_BMP = _fast_pattern(c for c in _DIGIT_OF if c <= "\uffff")
_FAST_ALL = _fast_pattern(_DIGIT_OF)
_SCAN = {_FAST_BMP: _scan_pattern(_FAST_BMP), _FAST_ALL: _scan_pattern(_FAST_ALL)}
_MULTI_ALL = re.compile("[" + _cls(sorted(_MULTI_SET)) + "]")
_MULTI_BMP = re.compile("[" + _cls(sorted(c for c in _MULTI_SET if c <= "\uffff")) + "]")


# Over normalised text (only used around ⑩-like characters): the exact rule.
_SEP = r"(?:[ .\-](?:\r\n|\r|\n)?|\r\n|\r|\n)"
_CANDIDATE = re.compile(
    r"(?<![A-Za-z\d])(?:"
    r"(?<!\d[.\-])(?P<flat>[0-9]{12})(?![.\-]\d)"
    r"|(?<!\d[ .\-])(?P<g1>[0-9]{4})(?P<s1>" + _SEP + r")(?P<g2>[0-9]{4})"
    r"(?P<s2>" + _SEP + r")(?P<g3>[0-9]{4})(?![ .\-]\d)"
    r")(?![A-Za-z\d])"
)


# ---------------------------------------------------------------- candidates
#
# The candidates of a text are five parallel lists (numbers, starts, ends,
# groupeds, valids), sorted by start: a digit-dense CSV has tens of thousands,
# and columns cost no object per candidate (nor garbage-collector time), and
# let the check digit and the filters run over a whole column at once.

_Columns = tuple[list[str], list[int], list[int], list[bool], list[bool]]


def _candidates(text: str, high: bytes | None = None) -> _Columns:
    """Every 12-digit candidate in `text`, offsets into `text` as given
    (`high`: its UTF-16 high bytes, when the caller has them)."""
    astral = _may_hold_astral(text)
    numbers, starts, ends, groupeds = _fast_candidates(text, _FAST_ALL if astral else _FAST_BMP)
    valids = _valid_many(numbers)
    multi = _MULTI_ALL if astral else _MULTI_BMP
    if not _may_hold_multi(text, astral, high) or multi.search(text) is None:
        return numbers, starts, ends, groupeds, valids
    # ⑩-like characters expand to several characters under NFKC; normalise a
    # window around each and keep the candidates that contain one.
    found = list(zip(numbers, starts, ends, groupeds, valids))
    extra = _multi_candidates(text, multi)
    if extra:
        seen = {(c[1], c[2]) for c in found}
        found.extend(c for c in extra if (c[1], c[2]) not in seen)
        found.sort(key=lambda c: c[1])
    if not found:
        return [], [], [], [], []
    return tuple(map(list, zip(*found)))  # type: ignore[return-value]


def _fast_candidates(text: str, pattern: re.Pattern[str]) -> tuple[list[str], list[int], list[int], list[bool]]:
    """Candidates made of one-character digits and separators, matched in the
    original text with NFKC's equivalence classes, so no normalising and no
    offset map: this is the path every ordinary text takes.

    The loop runs once per 12-digit match (tens of thousands in a CSV), so it
    keeps to local names, tests the neighbours with one dict lookup (the
    commonest, such as a comma or a line break, need nothing more), and
    leaves the check digit to _valid_many, which does a whole column at once."""
    numbers: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    groupeds: list[bool] = []
    n = len(text)
    sep_of = _SEP_OF
    kind_of = _NEIGHBOUR_KIND.get
    plain = _PLAIN_NEIGHBOURS
    search = _SCAN[pattern].search
    pos = 0
    while (m := search(text, pos)) is not None:
        s, e = m.span()
        pos = e
        if e - s == 12:  # the contiguous form: no separator to check
            number = m.group()
            grouped = False
        else:
            _, s1, _, s2, _, _ = groups = pattern.match(text, s).groups()  # type: ignore[union-attr]
            # Until this grouped match is accepted, scan on from its second
            # group: a rejected "2024<LF>1234 5678" must not swallow the real
            # "1234 5678 9018" that starts inside it.
            pos = s + 4 + len(s1)
            c1, c2 = s1.strip(_LINE_BREAK), s2.strip(_LINE_BREAK)
            if c1 != s1 and c2 != s2:
                continue  # two line breaks: a column of 4-digit values, not a number
            if len(c1) > 1 or len(c2) > 1 or c1 in _DOTS or c2 in _DOTS:
                # A separator people type beyond DESIGN's one character: the
                # same kinds on both sides, and no digit beyond a separator
                # on either side (not a slice of a longer chain of groups).
                k1, k2 = _gap_kind(c1), _gap_kind(c2)
                if k1 is None or k2 is None or (c1 and c2 and k1 != k2):
                    continue
                if _chained(text, s, e):
                    continue
            elif c1 and c2 and sep_of[c1] != sep_of[c2]:
                continue  # mixed separators (1234-5678.9012) are not one number
            number = groups[0] + groups[2] + groups[4]
            grouped = True
        # Neighbours: no digit or Latin letter touching; no digit after a
        # separator (any separator for the grouped form; hyphen or dot for the
        # contiguous form, so a space-separated list of numbers still counts).
        # Kinds: 0 none of these (common punctuation), 1 glue (digit-like or
        # Latin letter), 2 a separator that is a space, 3 a hyphen or dot;
        # absent: look closer (a Unicode digit outside NFKC's classes glues).
        space_beside = False
        if s and (before := text[s - 1]) not in plain:
            k = kind_of(before)
            if k:
                if k == 1:
                    continue
                if s >= 2 and _digitish(text[s - 2]):
                    if grouped or k == 3:
                        continue
                    space_beside = True
                elif k == 2:
                    space_beside = True
            elif k is None and before.isdigit():
                continue
        if e < n and (after := text[e]) not in plain:
            k = kind_of(after)
            if k:
                if k == 1:
                    continue
                if e + 1 < n and _digitish(text[e + 1]):
                    if grouped or k == 3:
                        continue
                    space_beside = True
                elif k == 2:
                    space_beside = True
            elif k is None and after.isdigit():
                continue
        if not number.isascii():
            number = number.translate(_TO_ASCII)
        if number == number[0] * 12:
            continue  # 000000000000 passes the check digit; it is a placeholder
        if space_beside and not grouped and _beside_corporate(text, s, e, number):
            continue
        numbers.append(number)
        starts.append(s)
        ends.append(e)
        groupeds.append(grouped)
        pos = e
    return numbers, starts, ends, groupeds


# Characters that glue to a digit run: digits of any kind, and Latin letters
# (ASCII and full-width; NFKC makes the latter ASCII).
_GLUE = _DIGITLIKE_SET | frozenset(
    chr(c) for a, b in ((0x41, 0x5A), (0x61, 0x7A), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)) for c in range(a, b + 1)
)
# The neighbour test of _fast_candidates in one lookup: 1 glue, 2 a separator
# that normalises to a space, 3 one that normalises to a hyphen or dot.
_NEIGHBOUR_KIND = (
    {c: 0 for c in map(chr, range(128)) if not c.isdigit()}
    | {c: 0 for c in "、。，．：；（）「」『』【】［］｛｝〈〉《》・／＼！？＿＝＋＊＆％＄＃＠～｜\t\r\n"}
    | {c: (2 if v == " " else 3) for c, v in _SEP_OF.items()}
    | dict.fromkeys(_GLUE, 1)
)
_PLAIN_NEIGHBOURS = frozenset(c for c, k in _NEIGHBOUR_KIND.items() if k == 0)


def _multi_candidates(text: str, multi: re.Pattern[str]) -> list[tuple[str, int, int, bool, bool]]:
    # A candidate is at most 12 digits and 6 separator characters long, so 40
    # characters either side of an expanding character hold every candidate
    # that includes it, with its neighbours.
    windows: list[list[int]] = []
    for m in multi.finditer(text):
        lo, hi = max(0, m.start() - 40), min(len(text), m.end() + 40)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    out = []
    for lo, hi in windows:
        norm, starts, ends = normalise(text[lo:hi])
        for m in _CANDIDATE.finditer(norm):
            flat = m.group("flat")
            if flat is not None:
                number, grouped = flat, False
            else:
                s1, s2 = m.group("s1"), m.group("s2")
                c1, c2 = s1.strip(_LINE_BREAK), s2.strip(_LINE_BREAK)
                if (c1 != s1 and c2 != s2) or (c1 and c2 and c1 != c2):
                    continue
                number, grouped = m.group("g1") + m.group("g2") + m.group("g3"), True
            s, e = lo + starts[m.start()], lo + ends[m.end() - 1]
            if (s - lo < 2 and lo > 0) or (hi - e < 2 and hi < len(text)):
                continue  # too near a window edge to see its neighbours
            if not any(c in _MULTI_SET for c in text[s:e]):
                continue  # the fast path has it (or rightly rejected it)
            if number == number[0] * 12:
                continue
            out.append((number, s, e, grouped, _valid(number)))
    return out


def _gap_kind(gap: str) -> str | None:
    """The separator a gap stands for: its mark (hyphen, dot, middle dot), or
    a space for a run of up to _MAX_SPACES spaces; "" for no gap (a line
    break alone); None for a run that is no separator ("--", five spaces)."""
    if len(gap) <= 1:
        return _GAP_OF[gap] if gap else ""
    mark = gap.strip(_SPACES)
    if not mark:
        return " " if len(gap) <= _MAX_SPACES else None
    if len(mark) != 1:
        return None
    i = gap.index(mark)
    return _GAP_OF[mark] if i <= 2 and len(gap) - i <= 3 else None


_GAP_CHARS = frozenset(_GAP_OF) | frozenset(_LINE_BREAK)


def _chained(text: str, s: int, e: int) -> bool:
    """A digit within a separator run (up to 6 characters) before s or after e."""
    i, lo = s - 1, max(0, s - 7)
    while i >= lo and text[i] in _GAP_CHARS:
        i -= 1
    if i < s - 1 and i >= 0 and _digitish(text[i]):
        return True
    j, hi = e, min(len(text), e + 7)
    while j < hi and text[j] in _GAP_CHARS:
        j += 1
    return j > e and j < len(text) and _digitish(text[j])


def _beside_corporate(text: str, s: int, e: int, number: str) -> bool:
    """A lone digit one space away that completes a valid Corporate Number
    (`8 700110005901`): the 12 digits are its tail, not a My Number."""
    if s >= 2 and _SEP_OF.get(text[s - 1]) == " " and text[s - 2] in _DIGIT_OF and (
        s < 3 or not _digitish(text[s - 3])
    ):
        if is_corporate_number(_DIGIT_OF[text[s - 2]] + number):
            return True
    if e + 2 <= len(text) and _SEP_OF.get(text[e]) == " " and text[e + 1] in _DIGIT_OF and (
        e + 2 == len(text) or not _digitish(text[e + 2])
    ):
        if is_corporate_number(number + _DIGIT_OF[text[e + 1]]):
            return True
    return False
