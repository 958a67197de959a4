"""log.scrub and the structlog processor: no digit run of a number reaches a log."""

from __future__ import annotations

import io
import json
import unicodedata

import pytest

from mailguard import detect
from mailguard.log import _DIGIT_LIKE, configure_logging, get_logger, scrub

NUMBER = "123456789018"  # check-digit valid, made up


def _as(digits: str, text: str = NUMBER) -> str:
    return text.translate(str.maketrans("0123456789", digits))


@pytest.mark.parametrize("text", [
    NUMBER,
    "1234 5678 9018", "1234-5678-9018", "1234.5678.9018",
    "1234\u00a05678\u00a09018",            # no-break space
    "1234\u20135678\u20139018",            # en dash
    "1234\u22125678\u22129018",            # minus sign
    "1234\u30fc5678\u30fc9018",            # katakana prolonged sound mark
    "1234\u30005678\u30009018",            # ideographic space
    "1234\u200b5678\u200b9018",            # zero-width space
    "1234\u00ad5678\u00ad9018",            # soft hyphen
    "1234-\r\n5678-\r\n9018",              # grouped across a line break
    _as("０１２３４５６７８９"),              # full-width
    _as("𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"),                     # mathematical bold
    _as("٠١٢٣٤٥٦٧٨٩"),                      # Arabic-Indic
    _as("⁰¹²³⁴⁵⁶⁷⁸⁹"),                      # superscripts (isdigit, not decimal)
    _as("𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗", "1234 5678\u00a09018"),
], ids=lambda text: "".join("#" if c.isdigit() else c for c in text).encode("unicode_escape").decode())
def test_scrub_masks_every_digit_and_separator_form(text):
    out = scrub(f"before {text} after")
    assert out.startswith("before ********") and out.endswith(" after"), out
    assert sum(c.isdigit() for c in out) == 4


@pytest.mark.parametrize("text", [
    "tel 03-1234-5678", "12345678901", "2026-11-26T07:46:42.123456+00:00", "hold abcdefghjkmnpqrs",
])
def test_scrub_leaves_short_runs(text):
    assert scrub(text) == text


def test_digit_like_list_is_complete_for_this_python():
    import re
    missing = [f"U+{cp:04X}" for cp in range(0x110000)
               if chr(cp).isdigit() and not chr(cp).isdecimal() and not re.fullmatch(f"[{_DIGIT_LIKE}]", chr(cp))]
    assert not missing


def test_scrub_covers_every_digit_and_separator_the_detector_reads():
    digits = [c for c in detect._DIGIT_OF]
    seps = [c for c in detect._SEP_OF]
    assert digits and seps
    bad_digits = [f"U+{ord(c):04X}" for c in digits if scrub(c * 12) == c * 12]
    bad_seps = [f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in seps
                if scrub(f"1234{c}5678{c}9018") != "********9018"]
    assert not bad_digits and not bad_seps, (bad_digits, bad_seps)


def test_processor_scrubs_nested_values_and_objects():
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    try:
        class Thing:
            def __repr__(self) -> str:
                return f"Thing({NUMBER})"

        get_logger().info("event", nested={"a": [NUMBER, {"b": NUMBER}]}, items=(NUMBER, 3),
                          obj=Thing(), error=ValueError(NUMBER), **{NUMBER: "key"})
    finally:
        configure_logging("info")
    line = stream.getvalue()
    assert NUMBER not in line and "9018" in line
    rec = json.loads(line)
    assert rec["nested"] == {"a": ["********9018", {"b": "********9018"}]}
    assert rec["items"] == ["********9018", 3]
