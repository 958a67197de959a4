"""The records passed between the stages. Imports nothing of mailguard's.

    Span       one place of readable text (extract -> detect)
    Finding    one My Number found, with its evidence (detect -> facts, hold)
    Detection  the findings of a message and its person count (detect -> scan)

Frozen, slotted dataclasses: stages share them and never change them.

SECURITY: Finding.number holds the clear My Number for the hold store only
(repr=False); every other field, including `reason`, is free of it. The
fingerprint key is kept out of repr too. A fingerprint is a keyed HMAC: a plain
hash of 12 digits is brute-forced in minutes (DESIGN §3.3).

DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field


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


# The fingerprint lives with the records because Finding and Detection compute
# it when asked and this module imports nothing of ours; mailguard.detect
# names it as one of its number rules.
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
