"""structlog set-up: one JSON object per line on stderr (journald-friendly).

SECURITY: a last-line scrubber masks any run of 12 or more digits in every string
field, nested lists and dicts included, so a number can not reach a log even if
a caller forgets to mask it. "Digit" is any Unicode decimal digit (ASCII,
full-width, math bold 𝟏, Arabic-Indic, ...) or digit-like character (¹, ①, ⒈),
and the digits may be split by a short run of separators: any space (U+00A0,
U+3000, ...), hyphen or dash (U+2010-2015, U+2212, ー, ...), dot, middle dot,
box rule, format character (zero-width, soft hyphen, bidi), or a line break
with a quote prefix or folding space after it: a superset of every spelling
the detector (mailguard/detect/) reads, box forms and kanji numerals included. Field values are cut to a bounded length so a hostile envelope can
not flood the journal.

DIAGNOSTICS: this module is the log pipeline itself.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

MAX_FIELD = 512
MAX_ITEMS = 50
# Events whose fields come from the admin's own files, not from a client, and
# whose whole text is the point: a refused reload's file:line and reason.
LONG_EVENTS = {"reload_refused": 8192}

# \d (Unicode decimal digits, Nd) plus every character str.isdigit() accepts
# beyond them (superscripts, circled and full-stop digits; tests/unit/test_log.py
# recomputes this list for the running Python).
_DIGIT_LIKE = (
    "\u00b2\u00b3\u00b9\u1369-\u1371\u19da\u2070\u2074-\u2079\u2080-\u2089\u2460-\u2468"
    "\u2474-\u247c\u2488-\u2490\u24ea\u24f5-\u24fd\u24ff\u2776-\u277e\u2780-\u2788"
    "\u278a-\u2792\U00010a40-\U00010a43\U00010e60-\U00010e68\U00011052-\U0001105a"
    "\U0001f100-\U0001f10a"
)
_DIGIT = rf"[\d{_DIGIT_LIKE}]"
# Spaces (Zs), hyphens and dashes (Pd), minus, prolonged sound marks, dots,
# katakana middle dots, box rules (|), tab, and the format characters (Cf) the
# detector reads through (zero-width characters, soft hyphen, bidi marks, BOM).
_SEPARATOR = (
    "[\t \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
    "\\-\u058a\u05be\u1400\u1806\u2010-\u2015\u2043\u2212\u2e17\u2e1a\u2e3a\u2e3b\u2e40"
    "\u2e5d\u301c\u3030\u30a0\u30fc\ufe31\ufe32\ufe58\ufe63\uff0d\uff70\U00010ead"
    ".\u2024\ufe52\uff0e\u3002\uff61\u30fb\uff65|\uff5c"
    "\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
# A gap between two digits: a run of up to five separators (1234 - 5678,
# "1 | 2", "1234  5678"), a line break, or both; after a line break a quote
# prefix ("> ", ">> ", "| ") or one folding space. A superset of what the
# detector joins (detect/candidates.py, detect/view.py, detect/forms.py).
_LINE = r"(?:\r\n|\r|\n)(?:[ \t]*[>|](?:[ \t]?[>|])*[ \t]?|[ \t])?"
_GAP = rf"(?:{_SEPARATOR}{{1,5}}(?:{_LINE})?|{_LINE})?"
_DIGIT_RUN = re.compile(rf"{_DIGIT}(?:{_GAP}{_DIGIT}){{11,}}")
# Kanji numerals (the detector reads them after a label; masked wherever 12 or
# more stand together, which ordinary prose never has).
_KANJI = "[〇一二三四五六七八九零]"
_KANJI_RUN = re.compile(rf"{_KANJI}(?:{_GAP}{_KANJI}){{11,}}")
_KANJI_DIGIT = frozenset("〇一二三四五六七八九零")


def scrub(text: str) -> str:
    """Mask every 12+ digit run, keeping the last four digits."""
    def _mask(m: re.Match[str]) -> str:
        digits = [c for c in m.group(0) if c.isdigit()]
        return "*" * (len(digits) - 4) + "".join(digits[-4:])

    def _mask_kanji(m: re.Match[str]) -> str:
        digits = [c for c in m.group(0) if c in _KANJI_DIGIT]
        return "*" * (len(digits) - 4) + "".join(digits[-4:])

    if len(text) < 12:
        return text  # a run needs 12 digits
    if text.isascii():
        # Cheap precheck (scrub runs on every log field and notice line): ASCII
        # text with fewer than twelve 0-9 has no run, and no kanji numerals.
        if sum(map(text.count, "0123456789")) < 12:
            return text
        return _DIGIT_RUN.sub(_mask, text)
    text = _DIGIT_RUN.sub(_mask, text)
    if not text.isascii():
        text = _KANJI_RUN.sub(_mask_kanji, text)
    return text


def _scrubbed(value: Any, depth: int = 0, limit: int = MAX_FIELD) -> Any:
    """A log value scrubbed and bounded; containers item by item, other objects
    as the repr the JSON renderer would have written unscrubbed."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        value = scrub(value)
        return value if len(value) <= limit else value[:limit] + "…"
    if depth < 4:
        if isinstance(value, dict):
            return {scrub(str(k))[:MAX_FIELD]: _scrubbed(v, depth + 1, limit)
                    for k, v in list(value.items())[:MAX_ITEMS]}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_scrubbed(v, depth + 1, limit) for v in list(value)[:MAX_ITEMS]]
    return _scrubbed(repr(value), depth, limit)


# A SHA-256 of the audit chain is hex, not a number: it may hold a 12-digit run
# by chance, and masking it would make the logged checkpoint useless.
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _scrub_and_bound(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    limit = LONG_EVENTS.get(str(event.get("event", "")), MAX_FIELD)
    return {scrub(str(key)): value if key == "chain_hash" and isinstance(value, str)
            and _HEX_DIGEST.fullmatch(value) else _scrubbed(value, 0, limit) for key, value in event.items()}


def configure_logging(level: str = "info", stream: Any = None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_and_bound,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    # A lazy proxy: a module-level logger made at import time still follows a later
    # configure_logging() (``.bind()`` here would freeze the default console config).
    return structlog.get_logger("mailguard", **bind)
