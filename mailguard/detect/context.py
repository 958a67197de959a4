"""Context scoring: the confidence of each candidate and the reason for it,
from keyword and negative-word hits near it, its column header, the list
rule and its own shape (DESIGN §4 "confidence").

SECURITY: reads untrusted text only through the word automaton and bisects
over its hits; reasons name the rule and the word, never the number.

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from mailguard.detect.words import _FAR, _Hit, _Words


HIGH, MEDIUM, LOW = "high", "medium", "low"
KEYWORD_RANGE = 300  # DESIGN §4: a keyword within 300 characters makes it high
NEGATIVE_RANGE = 12  # a negative word this close before the number names it
LIST_MIN, LIST_RATIO = 5, 0.8  # DESIGN §4 list rule


def _context_hits(text: str, starts: list[int], ends: list[int], words: _Words) -> list[_Hit]:
    """Keyword and negative hits near any candidate: one automaton pass over
    the merged windows, so a digit-dense text is scanned once, not per number."""
    reach = KEYWORD_RANGE + words.longest
    if 2 * reach * len(starts) >= len(text):
        # The windows would cover most of the text (a CSV): one pass over all
        # of it finds the same hits near candidates, and the others are too
        # far from every candidate to count, without a Python loop to merge
        # tens of thousands of windows.
        return words.find(text)
    hits: list[_Hit] = []
    ws = we = -_FAR
    for s, e in zip(starts, ends):
        lo, hi = max(0, s - reach), min(len(text), e + reach)
        if lo <= we:
            we = max(we, hi)
            continue
        if we > ws:
            hits.extend(words.find(text, ws, we))
        ws, we = lo, hi
    if we > ws:
        hits.extend(words.find(text, ws, we))
    return hits


def _header_kind(header: str, words: _Words) -> _Hit | None:
    if not header:
        return None
    hits = words.find(header)
    for h in hits:
        if not h.negative:
            return h
    return hits[0] if hits else None


def _header_confidence(header: _Hit) -> tuple[str, str]:
    # The column header is the most specific context there is, so it decides alone.
    if header.negative:
        return LOW, f"column header names another number ({header.word})"
    return HIGH, f"column header ({header.word})"


class _Context:
    """Keyword and negative hits of one span, indexed for bisect."""

    def __init__(self, text: str, words: _Words, hits: list[_Hit]) -> None:
        self.text, self.longest = text, words.longest
        self.kw = [h for h in hits if not h.negative]
        self.neg = [h for h in hits if h.negative]
        self.kw_starts = [h.start for h in self.kw]
        self.neg_starts = [h.start for h in self.neg]
        self.starts = [h.start for h in hits]

    def keyword(self, s: int, e: int) -> tuple[int, _Hit] | None:
        """(gap, hit) of the nearest keyword within KEYWORD_RANGE."""
        if not self.kw:
            return None
        best = None
        i = bisect_left(self.kw_starts, e)
        j = i - 1
        # Hits are sorted by start; walk back until no earlier-starting hit
        # could end within range (no word is longer than `longest`).
        while j >= 0 and self.kw_starts[j] >= s - KEYWORD_RANGE - self.longest:
            h = self.kw[j]
            if h.end <= s and s - h.end <= KEYWORD_RANGE and (best is None or s - h.end < best[0]):
                best = (s - h.end, h)
            j -= 1
        if i < len(self.kw) and self.kw[i].start - e <= KEYWORD_RANGE:
            gap = self.kw[i].start - e
            if best is None or gap < best[0]:
                best = (gap, self.kw[i])
        return best

    def negative(self, s: int) -> tuple[int, _Hit] | None:
        """(gap, hit) of a negative word ending at most NEGATIVE_RANGE before s
        with no digit in between ("TEL 03-1234 ..." names the phone number)."""
        if not self.neg:
            return None
        j = bisect_right(self.neg_starts, s) - 1
        best = None
        while j >= 0 and self.neg_starts[j] >= s - NEGATIVE_RANGE - self.longest:
            h = self.neg[j]
            if h.end <= s and s - h.end <= NEGATIVE_RANGE and (best is None or s - h.end < best[0]):
                best = (s - h.end, h)
            j -= 1
        if best is not None and _ANY_DIGIT.search(self.text, best[1].end, s):
            return None
        return best


_ANY_DIGIT = re.compile(r"\d")


def _list_rule(total: int, n_valid: int) -> tuple[str, str] | None:
    """(HIGH, reason) when a group of `total` candidates, `n_valid` of them
    valid, is a list of My Numbers (DESIGN §4: at least LIST_MIN numbers,
    LIST_RATIO of them valid; 1 in 10 random numbers pass); else None."""
    if total >= LIST_MIN and n_valid >= LIST_RATIO * total:
        return HIGH, f"list rule: {n_valid} of {total} 12-digit numbers pass the check digit"
    return None


# The three outcomes of _without_keyword, made once: they are the reasons of
# most findings in a mail, and the keyword rule tells the date-time one apart.
_GROUPED = (MEDIUM, "grouped 4-4-4, no keyword")
_DATETIME = (LOW, "looks like a date-time (YYYYMMDDhhmm), no list or column header")
_BARE = (LOW, "12 digits, no keyword")


def _without_keyword(number: str, grouped: bool) -> tuple[str, str]:
    """The rules for a number outside a list with no keyword or negative word
    near it: its shape alone decides. The one place these rules live;
    _detect applies them to every number at once, _confidence after the
    context rules."""
    if grouped:
        return _GROUPED
    if _looks_like_datetime(number):
        return _DATETIME
    return _BARE


def _confidence(c, ctx: _Context, listed: tuple[str, str] | None) -> tuple[str, str]:
    """All the rules for a number a keyword or negative word may reach;
    `listed` is _list_rule's answer for its group."""
    number, s, e, grouped, _ = c
    near_kw = ctx.keyword(s, e)
    near_neg = ctx.negative(s)
    if near_neg is not None and (near_kw is None or near_neg[0] < near_kw[0]):
        return LOW, f"next to a word for another number ({near_neg[1].word})"
    if listed is not None:
        # Before the keyword rule: a list is evidence about every row, and it
        # is the only rule a date-shaped value in a real list should obey.
        return listed
    shape = _without_keyword(number, grouped)
    # A date-time shape outranks a keyword too (see _looks_like_datetime).
    if near_kw is not None and shape is not _DATETIME:
        side = "before" if near_kw[1].end <= s else "after"
        return HIGH, f"keyword {near_kw[1].word} {near_kw[0]} characters {side}"
    return shape


def _looks_like_datetime(n: str) -> bool:
    """YYYYMMDDhhmm with a plausible year. About 1 in 10,000 random numbers has
    this shape, so a real My Number is rarely lost, while log lines and file
    names next to the word マイナンバー (system notices) are common."""
    return (
        "1900" <= n[:4] <= "2099"
        and "01" <= n[4:6] <= "12"
        and "01" <= n[6:8] <= "31"
        and n[8:10] <= "23"
        and n[10:12] <= "59"
    )


def _near(hit_starts: list[int], starts: list[int], ends: list[int], back: int, ahead: int) -> Iterable[int]:
    """Indices k, ascending, of the candidates with a hit starting within
    [starts[k] - back, ends[k] + ahead]. Candidates do not overlap, so starts
    and ends both ascend, and so do the index ranges of successive hits."""
    done = 0
    for h in hit_starts:
        lo = max(done, bisect_left(ends, h - ahead))
        hi = bisect_right(starts, h + back)
        if hi > lo:
            yield from range(lo, hi)
            done = hi
