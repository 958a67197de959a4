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
             start, end (offsets into the span's original text), fingerprint
             (a property: HMAC computed when asked), number (the clear number;
             repr=False; only for the hold store), key (repr=False)
    Detection: findings (tuple), persons (int), fingerprints (frozenset of str,
             a property) = those of the persons (len(fingerprints) == persons)

    mask(number) -> "********9018"
    fingerprint(number, key) -> hex HMAC-SHA256
    check_digit(first11) -> int;  is_valid(number) -> bool

HOW (DESIGN §4, declared together as a recognizer would):

    normalise   NFKC plus the hyphen-likes NFKC leaves alone (U+2010-2015,
                U+2212, U+30FC, U+FF70) -> "-". NFKC over a whole 1 MB Japanese
                body costs ~150 ms and the detector has 10 ms, so candidates are
                matched in the ORIGINAL text with NFKC's equivalence classes
                (every character that normalises to one digit or one separator;
                tables generated from unicodedata and checked by a test), and
                offsets need no map. Only around characters that expand to
                several (⑩ -> "10", ⒈ -> "1.") is a window really normalised,
                with an offset map (normalise()). Keywords are matched in the
                original text too: the automaton holds each word's full-width,
                half-width and case variants.
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

SPEED (issue 3: a 4 MB CSV of 45,000 numbers at >= 25 MB/s, a 1 MB mail in
< 10 ms): the per-number Python is the cost, so candidates are columns of
lists, not records; the check digit runs over a whole column at once; the
scan uses a group-free copy of the pattern; keyword hits are searched only
around candidates, and inside those windows only where a trie regex (or, over
a whole long text, a few anchor characters) says a word may be; numbers no
word can reach skip the context rules; fingerprints are computed only when
asked (a Finding carries the key); the cyclic GC is paused (no cycles are made). The output is pinned
by tests/unit/test_detect_golden.py (digests from the plain implementation).

SECURITY: handles untrusted text from mail and attachments of any size. Every
pass over the text is a linear regex or Aho-Corasick scan (no nested
quantifiers over overlapping classes); per-candidate work is bounded. The clear
number is kept only in Finding.number (repr=False) for the hold store; every
other field, including `reason`, is free of it.

DIAGNOSTICS: logs nothing. Callers log masked values or fingerprints only.
"""

from __future__ import annotations

import functools
import operator
import gc
import hashlib
import re
import secrets
import sys
import tomllib
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import compress, repeat
from dataclasses import dataclass, field
from typing import NamedTuple
from importlib import resources

HIGH, MEDIUM, LOW = "high", "medium", "low"
KEYWORD_RANGE = 300  # DESIGN §4: a keyword within 300 characters makes it high
NEGATIVE_RANGE = 12  # a negative word this close before the number names it
LIST_MIN, LIST_RATIO = 5, 0.8  # DESIGN §4 list rule
_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

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


def _fast_pattern(digits: Iterable[str]) -> re.Pattern[str]:
    d = "[" + _cls(sorted(digits)) + "]"
    s = "[" + _cls(sorted(_SEP_OF)) + "]"
    gap = rf"(?:{s}(?:\r\n|\r|\n)?|\r\n|\r|\n)"
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
_PLAIN_STR_SIZE = sys.getsizeof("") + 1


# The ⑩-like characters sit in a few Unicode blocks: ¼½¾, and four high bytes.
_MULTI_LATIN1 = tuple(sorted(c for c in _MULTI_SET if ord(c) < 0x100))
_MULTI_HIGH = tuple(sorted({bytes([ord(c) >> 8]) for c in _MULTI_SET if 0x100 <= ord(c) <= 0xFFFF}))


def _may_hold_multi(text: str, astral: bool) -> bool:
    """False when `text` surely holds no character of _MULTI_SET. A regex
    class over a 3 MB CSV costs 9 ms; for text without astral characters the
    UTF-16 high bytes answer in half that (memchr over every second byte)."""
    if text.isascii():
        return False
    if astral:
        return True
    if any(c in text for c in _MULTI_LATIN1):
        return True
    high = text.encode("utf-16-be", "surrogatepass")[::2]
    return any(b in high for b in _MULTI_HIGH)


def _may_hold_astral(text: str) -> bool:
    # CPython stores a str with 1, 2 or 4 bytes per character; only the last can
    # hold U+10000 and above. getsizeof tells which without scanning the text.
    # On another implementation the formula may say yes; that is only slower.
    return sys.getsizeof(text) - _PLAIN_STR_SIZE >= 3 * len(text) + 64 or len(text) < 64


# Over normalised text (only used around ⑩-like characters): the exact rule.
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
    number: str = field(repr=False, default="")
    key: bytes = field(repr=False, compare=False, default=b"")  # the fingerprint key

    @property
    def fingerprint(self) -> str:
        # Computed when asked, not per match: a scan keeps the first thousand
        # findings of a 50,000-row list, and an HMAC for every match was a
        # fifth of the detector's time on such a list.
        return fingerprint(self.number, self.key) if self.number and self.key else ""


@dataclass(frozen=True, slots=True)
class Detection:
    findings: tuple[Finding, ...] = ()
    persons: int = 0
    person_numbers: frozenset[str] = field(repr=False, compare=False, default=frozenset())
    key: bytes = field(repr=False, compare=False, default=b"")

    @property
    def fingerprints(self) -> frozenset[str]:
        """The persons' fingerprints (len == persons), computed when asked."""
        return frozenset(fingerprint(n, self.key) for n in self.person_numbers)


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



# _valid_many: the check digit of every candidate at once, in C. Position k of
# each number goes through a table to (weight * digit) mod 11, the eleven
# columns are added as big integers with one byte per number (eleven values
# of at most 10 never carry), and the byte sums map to the expected check
# digit. A CSV of 45,000 numbers costs 2 ms instead of 20 ms in a loop.
_MOD11_TABLES = tuple(
    bytes((w * (b - 48)) % 11 if 48 <= b <= 57 else 0 for b in range(256)) for w in _WEIGHTS
)
_EXPECTED_CHECK = bytes(48 + (0 if s % 11 <= 1 else 11 - s % 11) for s in range(256))


def _valid_many(numbers: list[str]) -> list[bool]:
    """_valid for each of a list of 12-ASCII-digit strings."""
    if len(numbers) < 8:
        return [_valid(n) for n in numbers]
    joined = "".join(numbers).encode("ascii")
    total = 0
    for k, table in enumerate(_MOD11_TABLES):
        total += int.from_bytes(joined[k::12].translate(table), "big")
    expected = total.to_bytes(len(numbers), "big").translate(_EXPECTED_CHECK)
    return list(map(int.__eq__, expected, joined[11::12]))


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
    inner, outer = _hmac_pads(key)
    i = inner.copy()
    i.update(number.encode("ascii"))
    o = outer.copy()
    o.update(i.digest())
    return o.hexdigest()


@functools.lru_cache(maxsize=8)
def _hmac_pads(key: bytes):
    # RFC 2104 by hand with the padded-key states computed once: hmac.digest()
    # re-derives them per call and costs three times as much, which matters
    # for a sheet of 10,000 numbers. Tests compare it with the hmac module.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


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


# ---------------------------------------------------------------- candidates
#
# The candidates of a text are five parallel lists (numbers, starts, ends,
# groupeds, valids), sorted by start: a digit-dense CSV has tens of thousands,
# and columns cost no object per candidate (nor garbage-collector time), and
# let the check digit and the filters run over a whole column at once.

_Columns = tuple[list[str], list[int], list[int], list[bool], list[bool]]


def _candidates(text: str) -> _Columns:
    """Every 12-digit candidate in `text`, offsets into `text` as given."""
    astral = _may_hold_astral(text)
    numbers, starts, ends, groupeds = _fast_candidates(text, _FAST_ALL if astral else _FAST_BMP)
    valids = _valid_many(numbers)
    multi = _MULTI_ALL if astral else _MULTI_BMP
    if not _may_hold_multi(text, astral) or multi.search(text) is None:
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
            if c1 and c2 and sep_of[c1] != sep_of[c2]:
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


def _digitish(c: str) -> bool:
    return c in _DIGITLIKE_SET or c.isdigit()



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


# ---------------------------------------------------------------- confidence


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


def _confidence(c, ctx: _Context, listed: bool, list_reason: str) -> tuple[str, str]:
    _, s, e, grouped, _ = c
    near_kw = ctx.keyword(s, e)
    near_neg = ctx.negative(s)
    if near_neg is not None and (near_kw is None or near_neg[0] < near_kw[0]):
        return LOW, f"next to a word for another number ({near_neg[1].word})"
    if listed:
        # Before the keyword rule: a list is evidence about every row, and it
        # is the only rule a date-shaped value in a real list should obey.
        return HIGH, list_reason
    if not grouped and _looks_like_datetime(c[0]):
        return LOW, "looks like a date-time (YYYYMMDDhhmm), no list or column header"
    if near_kw is not None:
        side = "before" if near_kw[1].end <= s else "after"
        return HIGH, f"keyword {near_kw[1].word} {near_kw[0]} characters {side}"
    if grouped:
        return MEDIUM, "grouped 4-4-4, no keyword"
    return LOW, "12 digits, no keyword"


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

    # The cyclic garbage collector would run a few hundred times over the
    # tens of thousands of Finding objects a CSV yields (a quarter of the
    # time), and there is no cycle here to collect: pause it, restoring the
    # caller's setting (scan workers are processes, one detect at a time).
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _detect(spans, words, key)
    finally:
        if paused:
            gc.enable()


def _detect(spans: Iterable[Span], words: _Words, key: bytes) -> Detection:
    # First every span's candidates, because the list rule needs group totals.
    per_span = []
    totals: dict[str, list[int]] = {}
    for i, span in enumerate(spans):
        if not isinstance(span, Span) or not isinstance(span.text, str):
            raise TypeError("detect() takes Span objects with str text")
        cands = _candidates(span.text)
        if not cands[0]:
            continue
        group = "g:" + span.group if span.group else f"s:{i}"
        t = totals.setdefault(group, [0, 0])
        t[0] += len(cands[0])
        t[1] += sum(cands[4])
        per_span.append((span, cands, group))

    findings: list[Finding] = []
    persons: set[str] = set()  # the numbers found at medium or high
    for span, (numbers, starts, ends, groupeds, valids), group in per_span:
        n = sum(valids)
        if not n:
            continue
        if n < len(numbers):  # keep the valid ones
            numbers, starts, ends, groupeds = (list(compress(col, valids)) for col in (numbers, starts, ends, groupeds))
        total, n_valid = totals[group]
        listed = total >= LIST_MIN and n_valid >= LIST_RATIO * total
        list_reason = f"list rule: {n_valid} of {total} 12-digit numbers pass the check digit"
        header = _header_kind(span.header, words)
        if header is not None:
            confidence, reason = _header_confidence(header)
            confidences, reasons = repeat(confidence, n), repeat(reason, n)
            all_counted = confidence != LOW
        else:
            # The rules without context words, for every number at once ...
            if listed:
                confidences, reasons = [HIGH] * n, [list_reason] * n
            else:
                confidences, reasons = [], []
                for number, grouped in zip(numbers, groupeds):
                    if grouped:
                        confidences.append(MEDIUM)
                        reasons.append("grouped 4-4-4, no keyword")
                    elif _looks_like_datetime(number):
                        confidences.append(LOW)
                        reasons.append("looks like a date-time (YYYYMMDDhhmm), no list or column header")
                    else:
                        confidences.append(LOW)
                        reasons.append("12 digits, no keyword")
            # ... then all the rules for the numbers a keyword or negative
            # word could reach: a hit starting within [s - back, e + range].
            ctx = _Context(span.text, words, _context_hits(span.text, starts, ends, words))
            for k in _near(ctx.starts, starts, ends, KEYWORD_RANGE + words.longest, KEYWORD_RANGE):
                confidences[k], reasons[k] = _confidence(
                    (numbers[k], starts[k], ends[k], groupeds[k], True), ctx, listed, list_reason
                )
            all_counted = LOW not in confidences
        _add_findings(findings, numbers, confidences, reasons, span.location, starts, ends, key)
        if all_counted:
            persons.update(numbers)
        elif header is None:
            persons.update(n for n, confidence in zip(numbers, confidences) if confidence != LOW)
    return Detection(tuple(findings), len(persons), frozenset(persons), key)


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


class _FindingShell:
    """Finding's slot layout without its frozen __setattr__. The frozen
    dataclass __init__ sets each field through object.__setattr__ (1 us a
    Finding); _add_findings fills a shell with plain slot stores and then
    makes it a Finding by assigning __class__, which Python allows between
    classes of the same layout (tests compare the result with Finding(...))."""

    __slots__ = Finding.__slots__


def _add_findings(findings: list[Finding], numbers, confidences, reasons, location: str, starts, ends,
                  key: bytes) -> None:
    """Append a Finding per number (this runs 45,000 times for a 4 MB CSV)."""
    new, shell, finding = object.__new__, _FindingShell, Finding
    append = findings.append
    for number, confidence, reason, start, end in zip(numbers, confidences, reasons, starts, ends):
        f = new(shell)
        f.masked = "********" + number[-4:]
        f.confidence = confidence
        f.reason = reason
        f.location = location
        f.start = start
        f.end = end
        f.number = number
        f.key = key
        f.__class__ = finding
        append(f)
