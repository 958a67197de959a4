"""Which audited messages carried these numbers, or match these criteria (issue 17).

    fingerprints_from_lines(lines, key) -> (set[str], valid, invalid_lines)
        numbers typed one per line, any spelling the detector reads (grouped,
        full-width, ...), each read with a keyword before it; fingerprinted under
        ``key`` and forgotten
    fingerprints_from_file(path, limits, key) -> set[str]
        every number in a CSV / xlsx / ... (scan.scan_file), fingerprinted
    trace(records, fingerprints, since=None) -> [Hit]
    find(records, message_id=, sender=, recipient=, domain=, since=, until=) -> [Hit]
    Hit: time, event, id, message_id, from, to, rule, persons (+ the record itself)
    for_message(records, ref) -> [record]      every record of a Message-ID or hold id

The audit records hold keyed fingerprints only, so the numbers given are turned
into fingerprints under the store's key and compared; a number never leaves
this module, and nothing here logs.

SECURITY: stdin and the file are untrusted; they go through the detector and the
extractors as any mail would. Neither the numbers nor the lines that held them
are ever returned, printed or logged; callers learn counts and line numbers.
DIAGNOSTICS: none.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailguard.audit import _parse_time
from mailguard.detect import Span, detect
from mailguard.facts import clean_address, domain_of, organisation_of
from mailguard.log import scrub

# Events that are a message's decision or a state change of it (the trace's rows).
MESSAGE_EVENTS = frozenset({
    "pass", "hold", "block", "hold-failed", "approve", "release", "release-partial",
    "release-failed", "release-interrupted", "reject", "expire", "purge", "show-raw",
})
# Read before each typed line so a bare number counts as a My Number (high confidence).
_KEYWORD = "個人番号: "
MAX_LINE = 200  # characters of one typed line considered


@dataclass(frozen=True)
class Hit:
    time: str
    event: str
    id: str
    message_id: str
    sender: str
    to: tuple[str, ...]
    rule: str
    persons: int
    record: dict[str, Any] = dataclasses.field(repr=False, compare=False, default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"time": self.time, "event": self.event, "id": self.id, "message_id": self.message_id,
                "from": self.sender, "to": list(self.to), "rule": self.rule, "persons": self.persons}


def fingerprints_from_lines(lines: Iterable[str], key: bytes) -> tuple[set[str], int, list[int]]:
    """(fingerprints, lines with a valid number, line numbers without one); blank lines skipped."""
    found: set[str] = set()
    valid, bad = 0, []
    for n, line in enumerate(lines, 1):
        text = line.strip()[:MAX_LINE]
        if not text:
            continue
        fps = {f.fingerprint for f in detect([Span(_KEYWORD + text, "stdin")], key=key).findings}
        fps.discard("")
        if fps:
            valid += 1
            found |= fps
        else:
            bad.append(n)
    return found, valid, bad


def fingerprints_from_file(path: str | os.PathLike[str], limits: Any, key: bytes) -> set[str]:
    """Every number in a document, whatever its confidence (a list of people to trace)."""
    from mailguard.scan import scan_file

    # Keep every finding: the trace needs each person, not a report's first thousand.
    limits = dataclasses.replace(limits, max_findings=10_000_000)
    report = scan_file(path, limits, key=key)
    return {f.fingerprint for f in report.findings if f.fingerprint}


def _hit(r: dict[str, Any]) -> Hit:
    to = r.get("to") or []
    return Hit(time=str(r.get("time", "")), event=str(r.get("event", "")), id=str(r.get("id") or ""),
               message_id=str(r.get("message_id") or ""), sender=str(r.get("from") or ""),
               to=tuple(str(a) for a in (to if isinstance(to, list) else [to])),
               rule=str(r.get("rule") or ""), persons=int(r.get("persons") or 0), record=r)


def _in_range(r: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    t = _parse_time(str(r.get("time", "")))
    return (since is None or t >= since) and (until is None or t < until)


def trace(records: Iterable[dict[str, Any]], fingerprints: set[str],
          since: datetime | None = None) -> list[Hit]:
    out = []
    for r in records:
        if r.get("event") not in MESSAGE_EVENTS or not _in_range(r, since, None):
            continue
        if fingerprints.intersection(r.get("fingerprints") or ()):
            out.append(_hit(r))
    return out


def _norm_mid(text: str) -> str:
    # Records hold Message-IDs as scrubbed (a 12+ digit run, often a timestamp, is
    # masked like a number), so a clear Message-ID is compared in that form too.
    return scrub(text.strip()).strip("<>").strip().lower()


def find(records: Iterable[dict[str, Any]], *, message_id: str = "", sender: str = "",
         recipient: str = "", domain: str = "", since: datetime | None = None,
         until: datetime | None = None) -> list[Hit]:
    """Message records matching every criterion given (addresses and domains case-insensitive;
    a domain matches its subdomains and an organisation matches all its domains)."""
    mid = _norm_mid(message_id)
    snd, rcpt = clean_address(sender) if sender else "", clean_address(recipient) if recipient else ""
    dom = domain.strip().strip(".").lower()
    out = []
    for r in records:
        if r.get("event") not in MESSAGE_EVENTS or not _in_range(r, since, until):
            continue
        h = _hit(r)
        if mid and _norm_mid(h.message_id) != mid:
            continue
        if snd and clean_address(h.sender) != snd:
            continue
        to = [clean_address(a) for a in h.to]
        if rcpt and rcpt not in to:
            continue
        if dom and not any(_domain_matches(domain_of(a), dom) for a in [clean_address(h.sender), *to]):
            continue
        out.append(h)
    return out


def _domain_matches(d: str, wanted: str) -> bool:
    return bool(d) and (d == wanted or d.endswith("." + wanted) or organisation_of(d) == wanted)


def for_message(records: Iterable[dict[str, Any]], ref: str) -> list[dict[str, Any]]:
    """The records of one message, by hold id or Message-ID (with or without <>), in order.
    A Message-ID that led to a hold also brings the hold's later records (by its id)."""
    want = _norm_mid(ref)
    ids: set[str] = set()
    out = []
    for r in records:
        if r.get("event") not in MESSAGE_EVENTS:
            continue
        rid = str(r.get("id") or "")
        if (rid and (rid == ref.strip() or rid in ids)) or (
                r.get("message_id") and _norm_mid(str(r["message_id"])) == want):
            out.append(r)
            if rid:
                ids.add(rid)
    return out


def records_since(records: Iterable[dict[str, Any]], since: datetime | None) -> Iterator[dict[str, Any]]:
    return (r for r in records if _in_range(r, since, None))
