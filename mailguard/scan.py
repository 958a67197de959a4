"""Message bytes -> ScanReport: every readable text through the detector.

INTERFACE (fixed; the policy, hold store and CLI code against it):

    Unscannable(location, reason)
    Attachment(name, mime_type, location, size)      mime_type from libmagic
    ScanReport(findings, persons, unscannable, attachments)
        findings     tuple[detect.Finding, ...]
        persons      distinct valid numbers at medium or high confidence
    scan_message(data: bytes, limits: LimitsConfig, keywords=(), negative=()) -> ScanReport
        synchronous, no network; runs in a worker
    scan_file(path, limits, ...) -> ScanReport         an .eml or a bare document
    class Scanner(limits):  async scan(data) -> ScanReport
        off the event loop, bounded by limits.scan_timeout; raises ScanError
        when the scanner itself fails (the relay tempfails, never passes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Unscannable:
    location: str
    reason: str


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    mime_type: str
    location: str
    size: int


@dataclass(frozen=True, slots=True)
class ScanReport:
    findings: tuple[Any, ...] = ()
    persons: int = 0
    unscannable: tuple[Unscannable, ...] = ()
    attachments: tuple[Attachment, ...] = ()

# TODO(issue 4): scan_message, scan_file, Scanner.
