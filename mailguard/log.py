"""structlog set-up: one JSON object per line on stderr (journald-friendly).

SECURITY: a last-line scrubber masks any run of 12 or more digits (ASCII or
full-width, optionally grouped 4-4-4) in every string field, so a number can
not reach a log even if a caller forgets to mask it. Field values are cut to a
bounded length so a hostile envelope can not flood the journal.

DIAGNOSTICS: this module is the log pipeline itself.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

MAX_FIELD = 512
_DIGIT_RUN = re.compile(r"[0-9０-９](?:[ \-.\u2010-\u2015\u2212\u30fc\uff0d]?[0-9０-９]){11,}")


def scrub(text: str) -> str:
    """Mask every 12+ digit run, keeping the last four digits."""
    def _mask(m: re.Match[str]) -> str:
        digits = [c for c in m.group(0) if c.isdigit()]
        return "*" * (len(digits) - 4) + "".join(digits[-4:])
    return _DIGIT_RUN.sub(_mask, text)


def _scrub_and_bound(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            value = scrub(value)
            if len(value) > MAX_FIELD:
                value = value[:MAX_FIELD] + "…"
            event[key] = value
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            event[key] = [scrub(v)[:MAX_FIELD] for v in value[:50]]
    return event


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
