"""Find My Numbers in text. Pure: text in, findings out, no I/O.

INTERFACE (fixed; other stages code against it):

    Span(text, location, header="", group="")
        text      the readable text of one place in the message
        location  "body", "header:Subject", "attachment:名簿.xlsx/Sheet1!C3", ...
        header    column header of a table cell ("" when not a cell)
        group     spans with the same non-empty group count together for the
                  list rule (one sheet, one CSV); "" = the span is its own group

    detect(spans: Iterable[Span], extra_keywords=(), extra_negative=(), key=None)
        -> Detection

    Finding: masked, confidence ("high"|"medium"|"low"), reason, location,
             start, end (offsets into the span's original text), fingerprint,
             number (the clear number; repr=False; only for the hold store)
    Detection: findings (tuple), persons (int), fingerprints (frozenset of str)
             fingerprints = those of the persons (len(fingerprints) == persons)

    mask(number) -> "********9018"
    fingerprint(number, key) -> hex HMAC-SHA256
    check_digit(first11) -> int;  is_valid(number) -> bool

HOW (DESIGN §4, declared together as a recognizer would):

    normalise   NFKC plus the hyphen-likes NFKC leaves alone (U+2010-2015,
                U+2212, U+30FC, U+FF70) -> "-". Only the few characters around
                digit-like runs are normalised, each with its original offset,
                because NFKC over a whole 1 MB Japanese body costs ~150 ms and
                the whole detector has 10 ms. ASCII text is used as it is.
    candidates  12 ASCII digits, contiguous or 4-4-4 with one separator
                (space, hyphen, dot; a single line break may stand for or follow
                a separator, once per number). Not a candidate when a digit
                touches it, or a digit follows a separator next to it (hyphen
                or dot for the contiguous form, any separator for the grouped
                form), or when an ASCII letter touches it (the digits are then
                part of an identifier such as `f6w643700000000.f6`).
    validate    weights 6,5,4,3,2,7,6,5,4,3,2; r = sum mod 11; check = 0 if
                r <= 1 else 11 - r.
    exclude     one repeated digit; a valid 13-digit Corporate Number (a lone
                digit and one space before or after the 12); `T` + 13 digits
                and grouped Corporate Numbers never become candidates (the
                neighbour rule above rejects them; tests pin it).
    confidence  high: keyword within 300 characters, or a keyword column
                header, or the list rule (>= 5 candidates in a group, >= 80 %
                valid); medium: grouped 4-4-4; low: bare 12 digits, or a
                negative word (伝票番号, TEL, ...) just before the number and
                nearer than any keyword, or a negative column header.

SECURITY: handles untrusted text from mail and attachments of any size. Every
pass over the text is a linear regex or Aho-Corasick scan (no nested
quantifiers over overlapping classes); per-candidate work is bounded. The clear
number is kept only in Finding.number (repr=False) for the hold store; every
other field, including `reason`, is free of it.

DIAGNOSTICS: logs nothing. Callers log masked values or fingerprints only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import tomllib
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

HIGH, MEDIUM, LOW = "high", "medium", "low"
KEYWORD_RANGE = 300  # DESIGN §4: a keyword within 300 characters makes it high
NEGATIVE_RANGE = 12  # a negative word this close before the number names it
LIST_MIN, LIST_RATIO = 5, 0.8  # DESIGN §4 list rule
_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

# Characters whose NFKC form contains an ASCII digit, outside ASCII (full-width,
# super/subscripts, circled and parenthesised numbers, math digits, ...).
# Generated from unicodedata; tests/unit/test_detect_normalise.py recomputes it
# for the running Python and fails if a character is missing.
_DIGITLIKE = (
    "0-9\u00b2-\u00b3\u00b9\u00bc-\u00be\u2070\u2074-\u2079\u2080-\u2089"
    "\u2150-\u215f\u2189\u2460-\u249b\u24ea\u3251-\u325f\u32b1-\u32cb"
    "\u3358-\u3370\u3378-\u3379\u339f-\u33a6\u33a8\u33af\u33e0-\u33fe"
    "\uff10-\uff19\U0001d7ce-\U0001d7ff\U0001f100-\U0001f10a\U0001fbf0-\U0001fbf9"
)
# Characters that normalise to a separator (space, hyphen, dot), plus line breaks.
_SEPLIKE = (
    " .\\-\r\n\u00a0\u2000-\u200a\u2010-\u2015\u2024\u202f\u205f\u2212\u3000"
    "\u30fc\ufe52\ufe63\uff0d-\uff0e\uff70"
)
HYPHENS = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff70"
_HYPHEN_MAP = str.maketrans({c: "-" for c in HYPHENS})

# Pass 1, over the original text: runs of digit-likes joined by short separator
# runs. Disjoint classes, so the engine never backtracks more than 3 characters.
_REGION = re.compile(f"[{_DIGITLIKE}]+(?:[{_SEPLIKE}]{{1,3}}[{_DIGITLIKE}]+)*")
_MULTI = re.compile("[\u00bc-\u00be\u2150-\u215f\u2189\u2469-\u249b\u3251-\u325f"
                    "\u32b1-\u32cb\u3358-\u3370\u3378-\u3379\u339f-\u33a6\u33a8\u33af"
                    "\u33e0-\u33fe\U0001f100-\U0001f10a]")

# Pass 2, over normalised text: the exact candidate rule. `\d` (any Unicode
# digit) for the neighbours, [0-9] for the number itself.
_SEP = r"(?:[ .\-](?:\r\n|\r|\n)?|\r\n|\r|\n)"
_CANDIDATE = re.compile(
    r"(?<![A-Za-z\d])(?:"
    r"(?<!\d[.\-])(?P<flat>[0-9]{12})(?![.\-]\d)"
    r"|(?<!\d[ .\-])(?P<g1>[0-9]{4})(?P<s1>" + _SEP + r")(?P<g2>[0-9]{4})"
    r"(?P<s2>" + _SEP + r")(?P<g3>[0-9]{4})(?![ .\-]\d)"
    r")(?![A-Za-z\d])"
)


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    location: str
    header: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    masked: str
    confidence: str
    reason: str
    location: str
    start: int
    end: int
    fingerprint: str
    number: str = field(repr=False, default="")


@dataclass(frozen=True, slots=True)
class Detection:
    findings: tuple[Finding, ...] = ()
    persons: int = 0
    fingerprints: frozenset[str] = frozenset()


# ---------------------------------------------------------------- check digit


def check_digit(first11: str) -> int:
    """The My Number check digit for the first 11 digits."""
    if len(first11) != 11 or not first11.isascii() or not first11.isdigit():
        raise ValueError("expected 11 ASCII digits")
    r = sum(w * int(d) for w, d in zip(_WEIGHTS, first11)) % 11
    return 0 if r <= 1 else 11 - r


def is_valid(number: str) -> bool:
    """True for 12 ASCII digits whose check digit holds (repeated digits included)."""
    if len(number) != 12 or not number.isascii() or not number.isdigit():
        return False
    return _valid(number)


def _valid(n: str) -> bool:
    # Unrolled over the bytes: this runs for every candidate in a digit-dense
    # CSV, and the generator form is four times slower. 48 * 47 removes the
    # ASCII '0' from each weighted digit (the weights sum to 47).
    b = n.encode("ascii")
    r = (6 * b[0] + 5 * b[1] + 4 * b[2] + 3 * b[3] + 2 * b[4] + 7 * b[5]
         + 6 * b[6] + 5 * b[7] + 4 * b[8] + 3 * b[9] + 2 * b[10] - 48 * 47) % 11
    return b[11] - 48 == (0 if r <= 1 else 11 - r)


def is_corporate_number(number: str) -> bool:
    """True for a 13-digit Corporate Number (法人番号) whose check digit holds."""
    if len(number) != 13 or not number.isascii() or not number.isdigit():
        return False
    body = number[1:]
    s = sum(int(d) * (1 if i % 2 == 0 else 2) for i, d in enumerate(reversed(body)))
    return int(number[0]) == 9 - s % 9


def mask(number: str) -> str:
    """'123456789018' -> '********9018' (eight stars whatever the input length)."""
    return "********" + number[-4:]


def fingerprint(number: str, key: bytes) -> str:
    """Keyed HMAC-SHA256 of the 12 digits, hex. A plain hash would be brute-forced."""
    return hmac.digest(key, number.encode("ascii"), "sha256").hex()


# A fresh key per process when the caller has none: fingerprints then correlate
# within one process only, which is what tests and `mailguard scan` need.
_PROCESS_KEY = secrets.token_bytes(32)


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


# ------------------------------------------------------------------ keywords


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


@dataclass(frozen=True, slots=True)
class _Hit:
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
                    self.automaton.add_word(v, (len(v), w, negative_kind))
                    longest = max(longest, len(v))
        self.longest = longest
        self.empty = len(self.automaton) == 0
        if not self.empty:
            self.automaton.make_automaton()

    def find(self, text: str, start: int = 0, end: int | None = None) -> list[_Hit]:
        if self.empty:
            return []
        end = len(text) if end is None else end
        hits = []
        for last, (length, word, negative) in self.automaton.iter(text, start, end):
            s, e = last + 1 - length, last + 1
            # "TEL" inside "HOTEL" or "order" inside "border" names nothing.
            if (_latin(text[s]) and s > 0 and _latin(text[s - 1])) or (
                _latin(text[e - 1]) and e < len(text) and _latin(text[e])
            ):
                continue
            hits.append(_Hit(s, e, word, negative))
        hits.sort(key=lambda h: h.start)
        return hits


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


# ---------------------------------------------------------------- candidates


@dataclass(slots=True)
class _Candidate:
    number: str
    start: int
    end: int
    grouped: bool
    valid: bool


def _candidates(text: str) -> list[_Candidate]:
    """Every 12-digit candidate in `text`, offsets in `text` (not normalised)."""
    if text.isascii():
        return _match(text, None, 0)
    found: list[_Candidate] = []
    for m in _REGION.finditer(text):
        rs, re_ = m.span()
        if re_ - rs < 12 and not _MULTI.search(text, rs, re_):
            continue  # fewer than 12 digits whatever the separators are
        lo, hi = max(0, rs - 2), min(len(text), re_ + 2)
        piece = text[lo:hi]
        if piece.isascii():
            found.extend(_match(piece, None, lo))
        else:
            norm, starts, ends = normalise(piece)
            found.extend(_match(norm, (starts, ends), lo))
    return found


def _match(norm: str, offsets: tuple[list[int], list[int]] | None, base: int) -> list[_Candidate]:
    out = []
    for m in _CANDIDATE.finditer(norm):
        flat = m.group("flat")
        if flat is not None:
            number, grouped = flat, False
            if _beside_corporate(norm, m.start(), m.end(), number):
                continue
        else:
            s1, s2 = m.group("s1"), m.group("s2")
            c1, c2 = s1.strip("\r\n"), s2.strip("\r\n")
            if c1 != s1 and c2 != s2:
                continue  # two line breaks: a column of 4-digit values, not a number
            if c1 and c2 and c1 != c2:
                continue  # mixed separators (1234-5678.9012) are not one number
            number, grouped = m.group("g1") + m.group("g2") + m.group("g3"), True
        if number == number[0] * 12:
            continue  # 000000000000 passes the check digit; it is a placeholder
        s, e = m.start(), m.end()
        if offsets is not None:
            s, e = offsets[0][s], offsets[1][e - 1]
        out.append(_Candidate(number, base + s, base + e, grouped, _valid(number)))
    return out


def _beside_corporate(norm: str, s: int, e: int, number: str) -> bool:
    """A lone digit one space away that completes a valid Corporate Number
    (`8 700110005901`): the 12 digits are its tail, not a My Number."""
    if s >= 2 and norm[s - 1] == " " and norm[s - 2].isdigit() and (s < 3 or not norm[s - 3].isdigit()):
        if is_corporate_number(norm[s - 2] + number):
            return True
    if e + 2 <= len(norm) and norm[e] == " " and norm[e + 1].isdigit() and (
        e + 2 == len(norm) or not norm[e + 2].isdigit()
    ):
        if is_corporate_number(number + norm[e + 1]):
            return True
    return False


# ---------------------------------------------------------------- confidence


def _context_hits(text: str, cands: list[_Candidate], words: _Words) -> list[_Hit]:
    """Keyword and negative hits near any candidate: one automaton pass over
    the merged windows, so a digit-dense text is scanned once, not per number."""
    reach = KEYWORD_RANGE + words.longest
    hits: list[_Hit] = []
    ws = we = -1
    for c in cands:
        lo, hi = max(0, c.start - reach), min(len(text), c.end + reach)
        if lo <= we:
            we = max(we, hi)
            continue
        if we > ws:
            hits.extend(words.find(text, ws, we))
        ws, we = lo, hi
    if we > ws:
        hits.extend(words.find(text, ws, we))
    return hits


def _nearest(hits: list[_Hit], starts: list[int], c: _Candidate, reach: int, longest: int,
             before_only: bool) -> tuple[int, _Hit] | None:
    """(gap, hit) of the nearest hit within `reach` characters of candidate c."""
    best: tuple[int, _Hit] | None = None
    i = bisect_left(starts, c.end)
    j = i - 1
    # Before: hits are sorted by start, so walk back until no hit starting
    # earlier could end within reach (no word is longer than `longest`).
    while j >= 0 and starts[j] >= c.start - reach - longest:
        h = hits[j]
        if h.end <= c.start and c.start - h.end <= reach:
            if best is None or c.start - h.end < best[0]:
                best = (c.start - h.end, h)
        j -= 1
    if not before_only and i < len(hits) and hits[i].start - c.end <= reach:
        gap = hits[i].start - c.end
        if best is None or gap < best[0]:
            best = (gap, hits[i])
    return best


def _header_kind(header: str, words: _Words) -> _Hit | None:
    if not header:
        return None
    hits = words.find(header)
    for h in hits:
        if not h.negative:
            return h
    return hits[0] if hits else None


# ------------------------------------------------------------------- detect


def detect(
    spans: Iterable[Span],
    extra_keywords: Iterable[str] = (),
    extra_negative: Iterable[str] = (),
    key: bytes | None = None,
) -> Detection:
    """Find check-digit-valid My Numbers in `spans` with confidence and evidence."""
    words = _words(_clean_words(extra_keywords), _clean_words(extra_negative))
    key = _PROCESS_KEY if key is None else key
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError("fingerprint key must be at least 16 bytes")

    # First every span's candidates, because the list rule needs group totals.
    per_span: list[tuple[Span, list[_Candidate], str]] = []
    totals: dict[str, list[int]] = {}
    for i, span in enumerate(spans):
        if not isinstance(span, Span) or not isinstance(span.text, str):
            raise TypeError("detect() takes Span objects with str text")
        cands = _candidates(span.text)
        if not cands:
            continue
        group = "g:" + span.group if span.group else f"s:{i}"
        t = totals.setdefault(group, [0, 0])
        t[0] += len(cands)
        t[1] += sum(c.valid for c in cands)
        per_span.append((span, cands, group))

    findings: list[Finding] = []
    persons: dict[str, str] = {}
    fps: dict[str, str] = {}
    for span, cands, group in per_span:
        valid = [c for c in cands if c.valid]
        if not valid:
            continue
        total, n_valid = totals[group]
        listed = total >= LIST_MIN and n_valid >= LIST_RATIO * total
        header = _header_kind(span.header, words)
        ctx = _Context(span.text, words, _context_hits(span.text, valid, words) if header is None else [])
        for c in valid:
            if header is not None:
                confidence, reason = _header_confidence(header)
            else:
                confidence, reason = _confidence(c, ctx, listed, n_valid, total)
            fp = fps.get(c.number)
            if fp is None:
                fp = fps[c.number] = fingerprint(c.number, key)
            if confidence != LOW:
                persons[c.number] = fp
            findings.append(Finding(mask(c.number), confidence, reason, span.location,
                                    c.start, c.end, fp, c.number))
    return Detection(tuple(findings), len(persons), frozenset(persons.values()))


class _Context:
    """Keyword and negative hits of one span, split and indexed for bisect."""

    def __init__(self, text: str, words: _Words, hits: list[_Hit]) -> None:
        self.text, self.longest = text, words.longest
        self.kw = [h for h in hits if not h.negative]
        self.neg = [h for h in hits if h.negative]
        self.kw_starts = [h.start for h in self.kw]
        self.neg_starts = [h.start for h in self.neg]


def _header_confidence(header: _Hit) -> tuple[str, str]:
    # The column header is the most specific context there is, so it decides alone.
    if header.negative:
        return LOW, f"column header names another number ({header.word})"
    return HIGH, f"column header ({header.word})"


def _confidence(c: _Candidate, ctx: _Context, listed: bool, n_valid: int, total: int) -> tuple[str, str]:
    near_kw = _nearest(ctx.kw, ctx.kw_starts, c, KEYWORD_RANGE, ctx.longest, False) if ctx.kw else None
    near_neg = _nearest(ctx.neg, ctx.neg_starts, c, NEGATIVE_RANGE, ctx.longest, True) if ctx.neg else None
    if near_neg is not None and _has_digit(ctx.text, near_neg[1].end, c.start):
        near_neg = None  # "TEL 03-1234 ..." names the phone number in between, not this one
    if near_neg is not None and (near_kw is None or near_neg[0] < near_kw[0]):
        return LOW, f"next to a word for another number ({near_neg[1].word})"
    if listed:
        # Before the keyword rule: a list is evidence about every row, and it
        # is the only rule a date-shaped value in a real list should obey.
        return HIGH, f"list rule: {n_valid} of {total} 12-digit numbers pass the check digit"
    if not c.grouped and _looks_like_datetime(c.number):
        return LOW, "looks like a date-time (YYYYMMDDhhmm), no list or column header"
    if near_kw is not None:
        side = "before" if near_kw[1].end <= c.start else "after"
        return HIGH, f"keyword {near_kw[1].word} {near_kw[0]} characters {side}"
    if c.grouped:
        return MEDIUM, "grouped 4-4-4, no keyword"
    return LOW, "12 digits, no keyword"


_ANY_DIGIT = re.compile(r"\d")


def _has_digit(text: str, start: int, end: int) -> bool:
    return _ANY_DIGIT.search(text, start, end) is not None


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
