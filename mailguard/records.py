"""The records passed between the pipeline's stages, in one bottom module.

    detect    Span, Finding, Detection (+ fingerprint, the keyed HMAC they compute when asked)
    scan      Unscannable, Attachment, ScanReport (+ the limit reasons)
    facts     Facts (+ CONFIDENCES, finding_identity)
    policy    Decision (+ the actions PASS, HOLD, BLOCK)
    hold      HeldMessage, Envelope
    upstream  UpstreamReply, DeliveryResult

Every stage reads and writes these types, so a stage's input and output are
visible in its signature and no stage imports another to learn a shape. This
module imports nothing of mailguard's, so any module may import it without
creating a cycle. The old homes (scan, facts,
policy, store, upstream) re-export these names.

SECURITY: plain immutable data. Finding.number holds the clear My Number for the
hold store only (repr=False); every other field, including `reason`, is free of
it, and a message's bytes are never in a repr. A fingerprint is a keyed HMAC: a
plain hash of 12 digits is brute-forced in minutes (DESIGN §3.3).

DIAGNOSTICS: none.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field


# -- detect ------------------------------------------------------------------

# A distribution list (organisation.list_addresses) counts as this many recipients
# (its real size is unknown here): every recipients_min a rule sets is met, and a
# recipients_max meant for "one colleague" is not.
LIST_COUNTS_AS = 1000


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    location: str
    header: str = ""
    group: str = ""
    # Where a table cell sits in the grid its group was read from (0-based);
    # -1 when the span is not a cell of a grid (text, CSV). The detector joins
    # adjacent cells of a grid (mailguard.detect.grid).
    row: int = -1
    col: int = -1


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
    def from_ocr(self) -> bool:
        """Read from an image by OCR (the location says so: " (OCR)" at its end)."""
        return self.location.endswith(OCR_SUFFIX)

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


# -- scan --------------------------------------------------------------------

TIME_LIMIT_REASON = "scan time limit exceeded"
MEMORY_LIMIT_REASON = "memory limit exceeded"


@dataclass(frozen=True, slots=True)
class Unscannable:
    location: str
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """An item deliberately not read, with the reason (issue 12: a tracking
    pixel, an icon, a document's thumbnail). Never a place a number could hide
    unseen: anything that might hold one is read or unscannable."""

    location: str
    reason: str


# A finding read from an image carries this at the end of its location
# ("attachment:IMG_0421.JPG (OCR)", "attachment:scan.pdf p.2 (OCR)");
# extraction keeps it out of every other location (extract.context.clean_name).
OCR_SUFFIX = " (OCR)"


def is_ocr_location(location: str) -> bool:
    return location.endswith(OCR_SUFFIX)


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    mime_type: str  # from libmagic, not the declared type
    location: str
    size: int


@dataclass(frozen=True, slots=True)
class ScanReport:
    findings: tuple[Finding, ...] = ()
    persons: int = 0
    unscannable: tuple[Unscannable, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    # Additive. `findings` keeps at most limits.max_findings (the first found);
    # these count over every finding, kept or not.
    findings_total: int = 0  # findings before the cap
    persons_high: int = 0  # distinct valid numbers at high confidence
    numbers: int = 0  # distinct valid numbers at any confidence
    # Additive (issue 17): column headers and item words (氏名, 住所, ...) seen next
    # to findings, never cell values; what an incident report says was sent with them.
    near_findings: tuple[str, ...] = ()
    # Additive (issue 12): items deliberately not read (decorative images), and
    # distinct numbers by where they were read, as (low, medium, high) counts at
    # that confidence or above: ocr = from images (OCR), text = from everything
    # else. text None: not counted separately (every finding is text).
    skipped: tuple[Skipped, ...] = ()
    ocr_persons: tuple[int, int, int] = (0, 0, 0)
    text_persons: tuple[int, int, int] | None = None


# -- facts -------------------------------------------------------------------

CONFIDENCES = ("low", "medium", "high")  # ascending


def finding_identity(finding: Finding) -> str | tuple[str, str]:
    """What makes two findings the same person: the HMAC fingerprint (the
    number itself when no key was given; masked number and place as a last resort)."""
    return finding.fingerprint or finding.number or (finding.masked, finding.location)


@dataclass(frozen=True, slots=True)
class Facts:
    """What a policy rule can test about one message. Immutable; built once."""

    sender: str = ""
    sender_domain: str = ""
    recipients: tuple[str, ...] = ()
    list_recipients: tuple[str, ...] = ()  # internal distribution lists among recipients
    external_recipients: tuple[str, ...] = ()
    external_domains: tuple[str, ...] = ()  # distinct, sorted
    external_orgs: tuple[str, ...] = ()  # distinct registrable domains (PSL), sorted
    recipient_domains: tuple[str, ...] = ()  # all envelope recipient domains, distinct
    visible: tuple[str, ...] = ()  # distinct To/Cc addresses, lower-cased
    visible_external: tuple[str, ...] = ()
    header_from: tuple[str, ...] = ()
    subject: str = ""
    is_reply: bool = False
    is_reply_all: bool = False
    findings: tuple[Finding, ...] = ()  # masked; the clear number is repr=False
    persons_by_confidence: dict[str, int] = field(
        default_factory=lambda: {"low": 0, "medium": 0, "high": 0}
    )
    unscannable: tuple[Unscannable, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    near_findings: tuple[str, ...] = ()  # ScanReport.near_findings (additive)
    message_id: str = ""  # the Message-ID header (additive), for the audit record
    # Additive (issue 12): distinct numbers by where they were read, per
    # confidence floor like persons_by_confidence. Text None: all from text.
    persons_ocr_by_confidence: dict[str, int] = field(
        default_factory=lambda: {"low": 0, "medium": 0, "high": 0}
    )
    persons_text_by_confidence: dict[str, int] | None = None

    @property
    def persons(self) -> int:
        """Distinct valid numbers at medium or high confidence (DESIGN §4)."""
        return self.persons_by_confidence["medium"]

    def persons_at(self, floor: str) -> int:
        """Distinct numbers found at ``floor`` confidence or above."""
        return self.persons_by_confidence[floor]

    def masked_at(self, floor: str) -> tuple[str, ...]:
        """Masked numbers at ``floor`` or above, one per distinct number, in order found."""
        rank = CONFIDENCES.index(floor)
        seen: set[str | tuple[str, str]] = set()
        out = []
        for f in self.findings:
            if CONFIDENCES.index(f.confidence) < rank:
                continue
            key = finding_identity(f)
            if key not in seen:
                seen.add(key)
                out.append(f.masked)
        return tuple(out)

    @property
    def recipient_count(self) -> int:
        """Envelope recipients, a distribution list counted as LIST_COUNTS_AS
        people: one list address to all staff is never a single recipient."""
        return len(self.recipients) + (LIST_COUNTS_AS - 1) * len(self.list_recipients)

    def ocr_persons_at(self, floor: str) -> int:
        """Distinct numbers read from images (OCR) at ``floor`` or above."""
        return self.persons_ocr_by_confidence.get(floor, 0)

    def text_persons_at(self, floor: str) -> int:
        """Distinct numbers read from text (not OCR) at ``floor`` or above."""
        if self.persons_text_by_confidence is None:
            return self.persons_at(floor)
        return self.persons_text_by_confidence.get(floor, 0)

    @property
    def any_external(self) -> bool:
        return bool(self.external_recipients)

    @property
    def all_internal(self) -> bool:
        return bool(self.recipients) and not self.external_recipients


# -- policy ------------------------------------------------------------------

PASS, HOLD, BLOCK = "pass", "hold", "block"
ACTIONS = (PASS, HOLD, BLOCK)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # one of ACTIONS
    rule: str
    reasons: tuple[str, ...] = ()
    notice: str = ""
    approvals: int = 1
    persons: int = 0
    findings: tuple[Finding, ...] = field(default=(), repr=False, compare=False)
    unscannable: tuple[Unscannable, ...] = field(default=(), compare=False)
    # The facts it was decided on (additive, issue 17): the audit record's envelope,
    # organisations, reply-all and visible addresses. None when built without them.
    facts: Facts | None = field(default=None, repr=False, compare=False)


# -- hold store --------------------------------------------------------------


# A held message's state: held -> released | rejected | expired, exactly once.
HELD, RELEASED, REJECTED, EXPIRED = "held", "released", "rejected", "expired"
STATES = (HELD, RELEASED, REJECTED, EXPIRED)
FINAL_STATES = (RELEASED, REJECTED, EXPIRED)
# How far a hold got (issue 14): stored -> audited -> done (its notice sent or given up).
HOLD_STORED, HOLD_AUDITED, HOLD_DONE = "stored", "audited", "done"


@dataclass(frozen=True)
class HeldMessage:
    id: str
    state: str
    rule: str
    reasons: tuple[str, ...]
    notice: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    persons: int
    findings: tuple[dict[str, str], ...]  # masked, confidence, reason, location, fingerprint
    fingerprints: tuple[str, ...]
    unscannable: tuple[dict[str, str], ...]  # location, reason
    subject: str
    message_id: str
    size: int
    sha256: str
    approvals_required: int
    approvals: tuple[dict[str, str], ...]  # operator, time, reason
    received: str
    updated: str
    decided_at: str | None = None
    decided_by: str | None = None
    decided_reason: str | None = None
    upstream_reply: str | None = None
    release_started: str | None = None
    purged_at: str | None = None
    hold_stage: str = "done"  # stored -> audited -> done (hold record and notice written)
    release_interrupted: str | None = None  # a release died after it began: may have been delivered

    @property
    def approvers(self) -> list[str]:
        seen: list[str] = []
        for a in self.approvals:
            if a["operator"] not in seen:
                seen.append(a["operator"])
        return seen

    def summary(self) -> dict[str, object]:
        """The `held list` fields (DESIGN §8)."""
        return {
            "id": self.id, "state": self.state, "rule": self.rule,
            "from": self.mail_from, "to": list(self.rcpt_tos),
            "persons": self.persons, "received": self.received,
        }

    def detail(self) -> dict[str, object]:
        """The `held show` fields: everything in the row, findings masked."""
        d = self.summary()
        d.update(
            reasons=list(self.reasons), notice=self.notice, subject=self.subject,
            message_id=self.message_id, size=self.size, sha256=self.sha256,
            findings=[dict(f) for f in self.findings], fingerprints=list(self.fingerprints),
            unscannable=[dict(u) for u in self.unscannable],
            approvals_required=self.approvals_required,
            approvals=[dict(a) for a in self.approvals],
            updated=self.updated, decided_at=self.decided_at, decided_by=self.decided_by,
            decided_reason=self.decided_reason, upstream_reply=self.upstream_reply,
            release_started=self.release_started, purged_at=self.purged_at,
        )
        return d


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...] = ()


@dataclass
class Recovery:
    """What HoldStore.recover() found and did at start (counts and ids; no content)."""

    temp_removed: int = 0
    orphans_removed: int = 0
    releases_interrupted: list[str] = field(default_factory=list)


# -- upstream ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """One upstream reply; ``text`` holds continuation lines joined with "\\n"."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True)
class DeliveryResult:
    """What the upstream did with one message.

    ``reply`` is the upstream's final reply to DATA (2xx). ``refused`` maps each
    recipient the upstream refused at RCPT to its reply; those did not get a copy.
    """

    reply: UpstreamReply
    accepted: tuple[str, ...]
    refused: dict[str, UpstreamReply] = field(default_factory=dict)
