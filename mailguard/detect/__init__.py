"""Find My Numbers in text. Pure: text in, findings out, no I/O.

INTERFACE (fixed; other stages code against it):

    Span(text, location, header="", group="", row=-1, col=-1)
        text      the readable text of one place in the message
        location  "body", "header:Subject", "attachment:名簿.xlsx/Sheet1!C3", ...
        header    column header of a table cell ("" when not a cell)
        group     spans with the same non-empty group count together for the
                  list rule (one sheet, one CSV); "" = the span is its own group
        row, col  0-based place of a table cell in its group's grid (-1: not
                  a grid cell); adjacent cells may join (detect.grid)

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

LAYOUT (imports run down this list, never up):

    __init__    detect(): orchestration, the findings, the public names
    grid        numbers split over adjacent table cells (Span.row/col)
    context     confidence and reason: keyword/negative hits, column header,
                list rule, the rules for a number no keyword reaches
    forms       box forms and kanji numerals, read only after a label
    candidates  12-digit candidates as columns, the neighbour rules
    words       keyword and negative-word lists, their spellings, the automaton
    view        the text as read: format characters, quote prefixes and
                iCalendar/vCard folding removed, offsets mapped back
    chars       NFKC digit/separator classes, normalise()
    numbers     check digit, Corporate Number, mask, fingerprint
    mailguard.records   Span, Finding, Detection (and the HMAC they compute)

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
                (space, hyphen, dot, katakana middle dot; a run of up to 4
                spaces, or a mark with up to 2 spaces either side; a single
                line break may stand for or follow a separator, once per
                number). A wide or middle-dot separator also needs no digit
                beyond a separator run on either side. Not a candidate when a digit
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

import gc
import secrets
from collections.abc import Iterable
from itertools import compress, repeat

from mailguard.detect.candidates import _candidates
from mailguard.detect.chars import HYPHENS, normalise
from mailguard.detect.context import (
    HIGH,
    KEYWORD_RANGE,
    LIST_MIN,  # noqa: F401 (public constants, named here)
    LIST_RATIO,  # noqa: F401
    LOW,
    MEDIUM,
    NEGATIVE_RANGE,
    _confidence,
    _Context,
    _context_hits,
    _header_confidence,
    _header_kind,
    _list_rule,
    _near,
    _without_keyword,
)
from mailguard.detect.chars import _high_bytes
from mailguard.detect.grid import join_cells
from mailguard.detect.numbers import check_digit, fingerprint, is_corporate_number, is_valid, mask
from mailguard.detect.forms import labelled_forms
from mailguard.detect.view import make_view
from mailguard.detect.words import _clean_words, _words, _Words
from mailguard.records import Detection, Finding, Span

# Internals that tests pin (character tables, prefilters, the column check
# digit, the word automaton), named here so `from mailguard.detect import _x`
# keeps working; the code lives in the modules above.
from mailguard.detect.candidates import _FAST_ALL, _MULTI_ALL  # noqa: F401,E402
from mailguard.detect.chars import _DIGIT_OF, _DIGITLIKE_SET, _MULTI_SET, _SEP_OF, _may_hold_multi  # noqa: F401,E402
from mailguard.detect.numbers import _valid, _valid_many  # noqa: F401,E402

__all__ = [
    "HIGH", "HYPHENS", "KEYWORD_RANGE", "LIST_MIN", "LIST_RATIO", "LOW", "MEDIUM", "NEGATIVE_RANGE",
    "Detection", "Finding", "Span",
    "check_digit", "detect", "fingerprint", "is_corporate_number", "is_valid", "mask", "normalise",
]


# A fresh key per process when the caller has none: fingerprints then correlate
# within one process only, which is what tests and `mailguard scan` need.
_PROCESS_KEY = secrets.token_bytes(32)


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
    cells: list[Span] = []  # table cells with a grid place, for grid.join_cells
    for i, span in enumerate(spans):
        if not isinstance(span, Span) or not isinstance(span.text, str):
            raise TypeError("detect() takes Span objects with str text")
        if span.row >= 0 and len(span.text) <= 24:  # grid.LABEL_MAX: longer cells never join
            cells.append(span)
            if len(span.text) < 12 and span.text.isascii():
                continue  # a short digit or label cell: no 12 digits (no ⑩-like character either)
        text = span.text
        # The text as read: format characters, quote prefixes and folds out
        # (None for ordinary text, which pays only the checks).
        high = None if text.isascii() else _high_bytes(text)
        view = make_view(text, high)
        if view is not None:
            text = view.text
        cands = _candidates(text, high)
        forms = labelled_forms(text, words)
        if not cands[0] and not forms:
            continue
        group = "g:" + span.group if span.group else f"s:{i}"
        t = totals.setdefault(group, [0, 0])
        t[0] += len(cands[0])
        t[1] += sum(cands[4])
        per_span.append((span, text, view, cands, group, forms))

    findings: list[Finding] = []
    persons: set[str] = set()  # the numbers found at medium or high
    for span, text, view, (numbers, starts, ends, groupeds, valids), group, forms in per_span:
        if forms:  # box forms and kanji numerals after a label: high
            f_numbers, f_starts, f_ends, f_reasons = (list(col) for col in zip(*forms))
            if view is not None:
                f_starts, f_ends = list(map(view.start, f_starts)), list(map(view.end, f_ends))
            _add_findings(findings, f_numbers, repeat(HIGH), f_reasons, span.location, f_starts, f_ends, key)
            persons.update(f_numbers)
        n = sum(valids)
        if not n:
            continue
        if n < len(numbers):  # keep the valid ones
            numbers, starts, ends, groupeds = (list(compress(col, valids)) for col in (numbers, starts, ends, groupeds))
        total, n_valid = totals[group]
        listed = _list_rule(total, n_valid)
        header = _header_kind(span.header, words)
        if header is not None:
            confidence, reason = _header_confidence(header)
            confidences, reasons = repeat(confidence, n), repeat(reason, n)
            all_counted = confidence != LOW
        else:
            # The rules without context words, for every number at once ...
            if listed is not None:
                confidences, reasons = [listed[0]] * n, [listed[1]] * n
            else:
                confidences, reasons = (list(col) for col in zip(*map(_without_keyword, numbers, groupeds)))
            # ... then all the rules for the numbers a keyword or negative
            # word could reach: a hit starting within [s - back, e + range].
            ctx = _Context(text, words, _context_hits(text, starts, ends, words))
            for k in _near(ctx.starts, starts, ends, KEYWORD_RANGE + words.longest, KEYWORD_RANGE):
                confidences[k], reasons[k] = _confidence(
                    (numbers[k], starts[k], ends[k], groupeds[k], True), ctx, listed
                )
            all_counted = LOW not in confidences
        if view is not None:  # offsets into the original text
            starts, ends = list(map(view.start, starts)), list(map(view.end, ends))
        _add_findings(findings, numbers, confidences, reasons, span.location, starts, ends, key)
        if all_counted:
            persons.update(numbers)
        elif header is None:
            persons.update(n for n, confidence in zip(numbers, confidences) if confidence != LOW)
    if cells:
        joined, joined_numbers = join_cells(cells, words, key)
        findings.extend(joined)
        persons.update(joined_numbers)
    return Detection(tuple(findings), len(persons), frozenset(persons), key)


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
