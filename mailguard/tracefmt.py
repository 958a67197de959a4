"""Shared bits of `audit trace`, `audit find` and `incident report`: the store's
fingerprint key (read, never created here), local time, and the text rows.

    trace_key(config) -> bytes | None     None when the store has no key yet
    local_time(iso, config) -> str        "2025-04-01 09:00:00+09:00"
    hit_lines(hit, internal) -> [str]     one message record as text

SECURITY: rows hold masked data only (addresses, ids, counts); the key never
leaves this module's callers. DIAGNOSTICS: none.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mailguard.facts import clean_address, domain_of, is_internal
from mailguard.secret import KEY_FILE, load_or_create_key
from mailguard.trace import Hit

_JST = timezone(timedelta(hours=9), "JST")


def trace_key(config: Any) -> bytes | None:
    """The store's fingerprint key; None if none was ever made (then no record matches)."""
    if not (Path(config.store.path) / KEY_FILE).exists():
        return None
    return load_or_create_key(config.store.path)


def _zone(config: Any):
    name = getattr(getattr(config, "organisation", None), "timezone", "") or "Asia/Tokyo"
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - no tz database: Japan has no DST
        return _JST


def local_time(iso: str, config: Any) -> str:
    try:
        t = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso or "-"
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(_zone(config)).isoformat(sep=" ", timespec="seconds")


def mark(address: str, internal: tuple[str, ...]) -> str:
    inside = is_internal(domain_of(clean_address(address)), internal)
    return f"{address} ({'内部/internal' if inside else '外部/external'})"


def hit_lines(h: Hit, config: Any) -> list[str]:
    internal = tuple(config.organisation.internal_domains)
    return [
        f"{local_time(h.time, config)}  {h.event}  id={h.id or '-'}  message-id={h.message_id or '-'}"
        f"  rule={h.rule or '-'}  persons={h.persons}",
        f"    from: {h.sender or '-'}",
        *(f"    to:   {mark(a, internal)}" for a in h.to),
    ]
