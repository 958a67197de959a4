"""Word lists: the keywords and negative words (mailguard/data/
detect_words.toml plus the policy's extras), every spelling people type, and
one Aho-Corasick automaton that finds them in the original text.

SECURITY: reads untrusted text with a linear regex prefilter and the
automaton; the extra words come from validated policy files.

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import functools
import operator
import re
import tomllib
import unicodedata
from collections.abc import Iterable
from importlib import resources
from typing import NamedTuple

from mailguard.detect.chars import _HYPHEN_MAP


@functools.cache
def _default_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    raw = resources.files("mailguard.data").joinpath("detect_words.toml").read_text("utf-8")
    data = tomllib.loads(raw)
    return tuple(data["keywords"]["words"]), tuple(data["negative"]["words"])


def _halfwidth_table() -> dict[str, str]:
    """Full-width katakana (and marks) -> half-width spelling, from NFKC itself."""
    table: dict[str, str] = {}
    for cp in range(0xFF61, 0xFFA0):
        c = chr(cp)
        table.setdefault(unicodedata.normalize("NFKC", c), c)
        for mark in ("\uff9e", "\uff9f"):
            composed = unicodedata.normalize("NFKC", c + mark)
            if len(composed) == 1:
                table.setdefault(composed, c + mark)
    return table


def _variants(word: str) -> set[str]:
    """The spellings of one word people actually type, so the automaton can run
    over the original text without normalising it first."""
    base = unicodedata.normalize("NFKC", word).translate(_HYPHEN_MAP).replace("-", "ー")
    if not base.strip():
        return set()
    half = _halfwidth_table()
    forms = {
        word,
        base,
        "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c)
                for c in base),
        "".join(half.get(c, c) for c in base),
    }
    cased = set()
    for f in forms:
        cased |= {f, f.lower(), f.upper(), f.title(), f.capitalize()}
    out = set()
    for f in cased:
        out.add(f)
        for h in ("ー", "ｰ", "-", "－", "‐", "−"):
            out.add(f.replace("ー", h).replace("ｰ", h))
    return {v for v in out if v}


class _Hit(NamedTuple):  # a tuple: hundreds per text, made in a loop
    start: int
    end: int
    word: str
    negative: bool


class _Words:
    """One Aho-Corasick automaton over keyword and negative-word variants."""

    def __init__(self, keywords: tuple[str, ...], negative: tuple[str, ...]) -> None:
        import ahocorasick  # a C extension; imported here so `import detect` stays light

        self.automaton = ahocorasick.Automaton()
        longest = 1
        # Negative words first, keywords second: a spelling in both lists is a keyword.
        for negative_kind, words in ((True, negative), (False, keywords)):
            for w in words:
                for v in _variants(w):
                    # With the flags find() needs to tell "TEL" from "HOTEL".
                    self.automaton.add_word(v, (len(v), w, negative_kind, _latin(v[0]), _latin(v[-1])))
                    longest = max(longest, len(v))
        self.longest = longest
        self.empty = len(self.automaton) == 0
        if not self.empty:
            self.automaton.make_automaton()
            self.prefilter = re.compile(_trie_regex(self.automaton.keys()))
            self.anchors = _anchor_chars(self.automaton.keys())

    def find(self, text: str, start: int = 0, end: int | None = None) -> list[_Hit]:
        """Every hit wholly inside text[start:end], sorted by start.

        The automaton walks 20-40 ns per character whatever it finds. A regex
        of the same spellings (a trie, so sre scans for the possible first
        characters in C) skips the long stretches with no word at all; the
        automaton then runs only from each regex match to `longest` past it.
        Exact: finditer's matches do not overlap and no spelling occurs
        between them, so every occurrence starts inside some match and ends
        within `longest` characters of that match's start."""
        if self.empty:
            return []
        end = len(text) if end is None else end
        if end - start >= _ANCHOR_MIN:
            hits = self._find_by_anchors(text, start, end)
            if hits is not None:
                return hits
        hits = []
        ws = we = -_FAR
        reach = self.longest - 1
        for m in self.prefilter.finditer(text, start, end):
            ms, me = m.span()
            if ms <= we + _AUTOMATON_GAP:
                we = max(we, min(end, me + reach))
                continue
            if we > ws:
                self._find(text, ws, we, hits)
            ws, we = ms, min(end, me + reach)
        if we > ws:
            self._find(text, ws, we, hits)
        return hits

    def _find_by_anchors(self, text: str, start: int, end: int) -> list[_Hit] | None:
        """find() over a long range (a whole CSV): the regex class scan costs
        4 ns a character, str.find of one character a fiftieth of that. Every
        spelling holds one of a few anchor characters, so every occurrence
        lies within `longest` of an anchor; the automaton runs around each.
        None when the anchors are too common here (English text): the regex
        path is then cheaper."""
        budget = (end - start) >> 8
        found: list[int] = []
        for ch in self.anchors:
            pos = text.find(ch, start, end)
            while pos >= 0:
                found.append(pos)
                if len(found) > budget:
                    return None
                pos = text.find(ch, pos + 1, end)
        found.sort()
        hits: list[_Hit] = []
        ws = we = -_FAR
        reach = self.longest
        for pos in found:
            lo, hi = max(start, pos - reach + 1), min(end, pos + reach)
            if lo <= we + _AUTOMATON_GAP:
                we = max(we, hi)
                continue
            if we > ws:
                self._find(text, ws, we, hits)
            ws, we = lo, hi
        if we > ws:
            self._find(text, ws, we, hits)
        return hits

    def _find(self, text: str, start: int, end: int, hits: list[_Hit]) -> None:
        # A slice, not iter(text, start, end): pyahocorasick copies the whole
        # string on every call (100 us per MB), the slice only the window.
        found = []
        n = len(text)
        for last, (length, word, negative, latin_first, latin_last) in self.automaton.iter(text[start:end]):
            s, e = start + last + 1 - length, start + last + 1
            # "TEL" inside "HOTEL" or "order" inside "border" names nothing.
            if (latin_first and s > 0 and _latin(text[s - 1])) or (latin_last and e < n and _latin(text[e])):
                continue
            found.append(_Hit(s, e, word, negative))
        found.sort(key=_hit_start)
        hits.extend(found)


_hit_start = operator.itemgetter(0)
_ANCHOR_MIN = 65536  # find() ranges at least this long try the anchor characters first
# Windows closer than this are searched as one: the automaton costs ~25 ns a
# character, a call ~5 us. No spelling starts in the gap (or it would have a
# window), so the hits are the same.
_AUTOMATON_GAP = 64
_FAR = 1 << 40  # before any window
_COMMON_LATIN = "etaoinshrdlcumwfgypbvkjxqz"  # English letters, commonest first


def _anchor_cost(c: str) -> float:
    """How common a character is in the mail the detector reads (a guess)."""
    o = ord(c)
    if c.isascii():
        if c.isalpha():
            return 2 + 8 * (len(_COMMON_LATIN) - _COMMON_LATIN.index(c.lower())) / len(_COMMON_LATIN)
        return 20  # digits, spaces, punctuation
    if 0xFF01 <= o <= 0xFF5E or 0xFF61 <= o <= 0xFF9F:  # full-width ASCII, half-width katakana
        return 1
    if 0x3040 <= o <= 0x309F:  # hiragana
        return 8
    if 0x30A0 <= o <= 0x30FF and c != "ー":  # katakana
        return 3
    if 0x4E00 <= o <= 0x9FFF:  # kanji
        return 2
    return 20


def _anchor_chars(words: Iterable[str]) -> tuple[str, ...]:
    """A few characters such that every word holds one (greedy weighted set
    cover: most words per unit of _anchor_cost first)."""
    uncovered = {w for w in words if w}
    chosen: list[str] = []
    while uncovered:
        counts: dict[str, int] = {}
        for w in uncovered:
            for ch in set(w):
                counts[ch] = counts.get(ch, 0) + 1
        best = max(sorted(counts), key=lambda ch: counts[ch] / _anchor_cost(ch))
        chosen.append(best)
        uncovered = {w for w in uncovered if best not in w}
    return tuple(chosen)


def _trie_regex(words: Iterable[str]) -> str:
    """One regex matching exactly the given strings, shaped as a trie."""
    trie: dict = {}
    for w in words:
        node = trie
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}

    def build(node: dict) -> str:
        end = "" in node
        branches = [re.escape(c) + build(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if end:
            return "(?:" + body + ")?"
        return body

    return build(trie)


def _latin(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("ａ" <= c <= "ｚ") or ("Ａ" <= c <= "Ｚ")


@functools.lru_cache(maxsize=32)
def _words(extra_keywords: tuple[str, ...], extra_negative: tuple[str, ...]) -> _Words:
    keywords, negative = _default_words()
    return _Words(keywords + extra_keywords, negative + extra_negative)


def _clean_words(words: Iterable[str]) -> tuple[str, ...]:
    if isinstance(words, str):  # a bare string would become one word per character
        words = (words,)
    out = set()
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"context words must be strings, got {type(w).__name__}")
        if w.strip():
            out.add(w.strip())
    return tuple(sorted(out))
