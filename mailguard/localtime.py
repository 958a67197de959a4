"""Times shown to people: local (organisation.timezone) and always with the offset.

    show_time(value, tz) -> "2026-12-01 19:06 +09:00"   CLI text, notices, status
    iso_time(value) -> "2026-12-01T10:06:00.123456+00:00"  JSON: ISO 8601 with offset
    zone(name) -> ZoneInfo                                 ValueError if unknown

The store keeps UTC ISO 8601 strings; a string without an offset is read as UTC
(how older rows were written), never as local time: that is the 9-hour trap of
issue 13.9. The zone data comes from the system (/usr/share/zoneinfo) or, where a
slim image has none, the ``tzdata`` package (a dependency).

SECURITY: formats times only. DIAGNOSTICS: none.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Tokyo"


@functools.lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    """The zone called ``name`` ("Asia/Tokyo"); ValueError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"{name!r} is not a time zone (e.g. \"Asia/Tokyo\", \"UTC\")") from exc


def _parse(value: str | datetime | float | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, (int, float)):
        when = datetime.fromtimestamp(value, UTC)
    else:
        try:
            when = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def show_time(value: str | datetime | float | None, tz: str = DEFAULT_TIMEZONE) -> str:
    """``value`` in ``tz`` to the minute, with its offset; "" for no time, and a
    string that is not a time comes back unchanged."""
    when = _parse(value)
    if when is None:
        return "" if value in (None, "") else str(value)
    local = when.astimezone(zone(tz))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}"


def iso_time(value: str | datetime | float | None) -> str | None:
    """ISO 8601 with an offset (UTC as stored) for JSON; None for no time."""
    when = _parse(value)
    return None if when is None else when.isoformat()
