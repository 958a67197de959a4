"""Detector properties: every valid number in every form is found, no invalid
one is, offsets map back, and the check digit agrees with python-stdnum.

PYTEST_DONT_REWRITE: assertion introspection would print numbers in the clear
on failure; drawn values carry a masked repr so hypothesis' falsifying
examples do not show them either.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum.jp import in_ as stdnum_in

from mailguard.detect import MEDIUM, Span, check_digit, detect, is_valid, mask, normalise
from mailguard.log import scrub

KEY = b"k" * 32


class Case:
    """A generated text with the number inside it; repr masks every digit run."""

    def __init__(self, number: str, shown: str, text: str, start: int, grouped: bool) -> None:
        self.number, self.shown, self.text, self.start, self.grouped = number, shown, text, start, grouped

    def __repr__(self) -> str:
        return f"Case(number={mask(self.number)}, text={scrub(self.text)!r}, grouped={self.grouped})"


DIGIT_FORMS = {
    "ascii": lambda d: d,
    "fullwidth": lambda d: chr(0xFF10 + int(d)),
    "math-bold": lambda d: chr(0x1D7CE + int(d)),
    "math-monospace": lambda d: chr(0x1D7F6 + int(d)),
}
SEPARATORS = {
    " ": [" ", "\u3000", "\u00a0", "\u2002", "\u202f"],
    "-": ["-", "\uff0d", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212", "\u30fc",
          "\uff70", "\ufe63"],
    ".": [".", "\uff0e", "\ufe52", "\u2024"],
}
# Text that may touch a number: no digits, separators or Latin letters at the edge.
SAFE_EDGE = "あいう番号。、（）「」：；:;,!?@#$%&*=+/\\|~^_<>[]{}\"'\t漢字カナ\u3002"
FILLER = st.text(alphabet=st.sampled_from(list("あいうえおかきくけこ漢字の件、。 \n\tabcXYZ")), max_size=40)


def numbers(valid: bool):
    def build(first11: int) -> str:
        body = f"{first11:011d}"
        cd = check_digit(body)
        return body + str(cd if valid else (cd + 1 + first11 % 9) % 10)

    return st.integers(0, 10**11 - 1).map(build).filter(lambda n: len(set(n)) > 1)


@st.composite
def cases(draw, valid: bool = True) -> Case:
    number = draw(numbers(valid))
    digit_form = DIGIT_FORMS[draw(st.sampled_from(sorted(DIGIT_FORMS)))]
    digits = [digit_form(d) for d in number]
    if draw(st.booleans()):
        shown, grouped = "".join(digits), False
    else:
        kind = draw(st.sampled_from(sorted(SEPARATORS)))
        s1 = draw(st.sampled_from(SEPARATORS[kind]))
        s2 = draw(st.sampled_from(SEPARATORS[kind]))
        breaks = draw(st.sampled_from(["none", "none", "after1", "after2", "instead1", "instead2"]))
        lb = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        if breaks == "after1":
            s1 += lb
        elif breaks == "after2":
            s2 += lb
        elif breaks == "instead1":
            s1 = lb
        elif breaks == "instead2":
            s2 = lb
        shown = "".join(digits[:4]) + s1 + "".join(digits[4:8]) + s2 + "".join(digits[8:])
        grouped = True
    before = draw(FILLER) + draw(st.sampled_from(["", *SAFE_EDGE]))
    after = draw(st.sampled_from(["", *SAFE_EDGE])) + draw(FILLER)
    # The filler may end in a Latin letter; the edge character must not be
    # missing then, or the number would be glued to it (not a candidate by design).
    if before and before[-1].isascii() and before[-1].isalpha():
        before += "。"
    if after and after[0].isascii() and after[0].isalpha():
        after = "。" + after
    return Case(number, shown, before + shown + after, len(before), grouped)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(valid=True))
def test_every_valid_number_is_found_in_every_form(case):
    d = detect([Span(case.text, "body")], key=KEY)
    hits = [f for f in d.findings if f.number == case.number]
    assert len(hits) == 1, f"{case!r}: found {len(hits)} times"
    f = hits[0]
    assert (f.start, f.end) == (case.start, case.start + len(case.shown)), f"{case!r}: offsets {f.start}-{f.end}"
    assert f.masked == mask(case.number)
    if case.grouped:
        assert f.confidence in (MEDIUM, "high"), f"{case!r}: {f.reason}"
    assert len(d.findings) == 1, f"{case!r}: extra findings"


@settings(max_examples=300, deadline=None)
@given(cases(valid=False))
def test_no_invalid_number_is_ever_a_finding(case):
    assert detect([Span(case.text, "body")], key=KEY).findings == (), repr(case)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_and_offsets_map_back(text):
    d = detect([Span(text, "body")], key=KEY)
    for f in d.findings:
        assert 0 <= f.start < f.end <= len(text)
        norm, _, _ = normalise(text[f.start:f.end])
        assert "".join(c for c in norm if c.isascii() and c.isdigit()) == f.number, "offsets off"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789０１２ 　-－ー.．\n\rTａbx①⑫")), max_size=120))
def test_digit_soup_findings_are_valid_and_map_back(text):
    d = detect([Span(text, "body")], key=KEY)
    for f in d.findings:
        assert is_valid(f.number), "a finding must pass the check digit"
        norm, _, _ = normalise(text[f.start:f.end])
        assert "".join(c for c in norm if c.isascii() and c.isdigit()) == f.number, "offsets off"


def test_check_digit_agrees_with_stdnum_over_100k_random_numbers():
    rnd = random.Random(20240401)
    disagreements = 0
    valid_count = 0
    lines = []
    for _ in range(100_000):
        n = f"{rnd.randrange(10**12):012d}"
        ours, theirs = is_valid(n), stdnum_in.is_valid(n)
        disagreements += ours != theirs
        valid_count += ours
        lines.append(n)
    assert disagreements == 0, f"{disagreements} disagreements with stdnum"
    # About 1 in 10 random numbers passes (DESIGN §4).
    assert 8_000 < valid_count < 11_000, f"{valid_count} valid of 100000"
    # And the detector, end to end, finds exactly the valid ones.
    expected = sum(1 for n in lines if is_valid(n) and len(set(n)) > 1)
    d = detect([Span("\n".join(lines), "body")], key=KEY)
    assert len(d.findings) == expected, f"{len(d.findings)} findings, {expected} valid"
    valid_set = {n for n in lines if is_valid(n)}
    assert all(f.number in valid_set for f in d.findings), "a finding that stdnum rejects"


def test_check_digit_agrees_with_stdnum_on_every_check_position():
    # All 10 candidate check digits for 2,000 bodies: exactly one passes each time.
    rnd = random.Random(7)
    for _ in range(2_000):
        body = f"{rnd.randrange(10**11):011d}"
        passing = [d for d in "0123456789" if stdnum_in.is_valid(body + d)]
        assert passing == [str(check_digit(body))], "check digit differs from stdnum"
