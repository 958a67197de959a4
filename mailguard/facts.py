"""Envelope + headers + scan report -> Facts, computed once per message.

The policy sees only these facts, never raw bytes (DESIGN §2). Everything a rule
can test is here: who the mail goes to (envelope), what the recipients can see
(To/Cc), whether it is a reply or a reply-all, and what the scanner found.

Envelope recipients decide where mail goes; headers decide what recipients can
see. "External" means not in ``organisation.internal_domains``; a domain covers
its subdomains; comparison is case-insensitive and IDNA-aware (the config
already holds the internal domains lower-cased and IDNA-encoded).

SECURITY: parses headers of untrusted mail. Only the header block is parsed
(never the body); a header that does not parse is read again with a plain
address pattern so a hostile To/Cc cannot hide addresses from the count, and
nothing here raises on malformed input. When in doubt a fact leans to the
stricter side (an unparseable recipient domain is external; an address the
parser lost still counts as visible).

DIAGNOSTICS: none; facts carry masked findings only through the scan report.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Iterable, Sequence
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from functools import lru_cache
from typing import TYPE_CHECKING

# Facts and CONFIDENCES live in records (the bottom module); re-exported here.
from mailguard.mailpolicy import default_value
from mailguard.parse import header_block
from mailguard.records import CONFIDENCES, Facts, ScanReport, finding_identity, is_ocr_location

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

    from mailguard.detect import Finding

__all__ = ["CONFIDENCES", "Facts", "build_facts", "clean_address", "domain_of", "is_internal", "is_list_address",
           "is_reply_subject", "normalise_domain", "organisation_of"]

MAX_ADDRESSES = 10000  # per header set; a hostile To: cannot make facts unbounded
MAX_HEADER_CHARS = 200_000  # per header field considered
MAX_HEADER_BLOCK = 4 * 1024 * 1024  # bytes of header block read at most

# A reply prefix, after NFKC (so "Ｒｅ：" is "Re:"). Mailing-list tags such as
# "[city-list:123]" may come first. Forwards (Fwd:, FW:, WG:, 転送:) are not
# replies, so only the first prefix counts: "Fwd: Re: x" is a forward.
_LIST_TAG = r"(?:\s*[\[【(（][^\]】)）]{0,80}[\]】)）])*"
_REPLY_WORDS = r"re|aw|sv|vs|antw|odp|ynt|atb|res|回复|回覆|答复|返信|返|답장"
_COUNTER = r"(?:\s*(?:\[\d{1,4}\]|\(\d{1,4}\)|\^\d{1,4}))?"
_REPLY_PREFIX = re.compile(rf"^{_LIST_TAG}\s*(?:{_REPLY_WORDS}){_COUNTER}\s*[:：]", re.IGNORECASE)
# Fallback when the address parser gives up: anything shaped like local@domain.
_ADDR_PATTERN = re.compile(r"[^\s<>,;:\"'()\[\]@]+@[^\s<>,;:\"'()\[\]@]+")

_psl: PublicSuffixList | None = None


def build_facts(
    mail_from: str,
    rcpt_tos: Sequence[str],
    data: bytes,
    report: ScanReport,
    internal_domains: Iterable[str],
    list_addresses: Iterable[str] = (),
) -> Facts:
    """Compute the facts for one message.

    ``data`` is the whole message (only its header block is read);
    ``internal_domains`` and ``list_addresses`` (internal distribution lists,
    addresses or glob patterns) as in OrganisationConfig.
    """
    internal = tuple(d for d in internal_domains if d)
    sender = clean_address(mail_from)
    sender_domain = domain_of(sender)

    recipients: list[str] = []
    for r in rcpt_tos:
        a = clean_address(r)
        if a and a not in recipients:
            recipients.append(a)
    external = [r for r in recipients if not is_internal(domain_of(r), internal)]
    lists = tuple(r for r in recipients if r not in external and is_list_address(r, tuple(list_addresses)))
    ext_domains = sorted({domain_of(r) or r for r in external})
    ext_orgs = sorted({organisation_of(d) for d in ext_domains})
    rcpt_domains = sorted({domain_of(r) for r in recipients if domain_of(r)})

    headers, first = _parse_headers(data)
    visible = _addresses(headers, ("to", "cc"))
    visible_external = tuple(a for a in visible if not is_internal(domain_of(a), internal))
    header_from = _addresses(headers, ("from", "sender"))
    subject = _header_value(first, "subject")

    is_reply = bool(headers.get("in-reply-to") or headers.get("references")) or is_reply_subject(
        subject
    )
    senders = {sender, *header_from} - {""}
    others = [a for a in visible if a not in senders]
    is_reply_all = is_reply and len(others) >= 2

    findings = tuple(report.findings)
    return Facts(
        sender=sender,
        sender_domain=sender_domain,
        recipients=tuple(recipients),
        list_recipients=lists,
        external_recipients=tuple(external),
        external_domains=tuple(ext_domains),
        external_orgs=tuple(ext_orgs),
        recipient_domains=tuple(rcpt_domains),
        visible=visible,
        visible_external=visible_external,
        header_from=header_from,
        subject=subject,
        is_reply=is_reply,
        is_reply_all=is_reply_all,
        findings=findings,
        persons_by_confidence=_count_persons(
            findings,
            {"low": report.numbers, "medium": report.persons, "high": report.persons_high},
        ),
        unscannable=tuple(report.unscannable),
        attachments=tuple(report.attachments),
        near_findings=tuple(getattr(report, "near_findings", ()) or ()),
        message_id=_header_value(first, "message-id").strip()[:250],
        persons_ocr_by_confidence=_count_persons(
            [f for f in findings if is_ocr_location(f.location)], dict(zip(CONFIDENCES, report.ocr_persons)),
        ),
        persons_text_by_confidence=None if report.text_persons is None else _count_persons(
            [f for f in findings if not is_ocr_location(f.location)], dict(zip(CONFIDENCES, report.text_persons)),
        ),
    )


# -- addresses and domains -------------------------------------------------


def normalise_domain(domain: str) -> str:
    """Lower-case, strip dots and brackets, IDNA-encode; '' if not a domain."""
    d = unicodedata.normalize("NFKC", domain).strip().strip(".").lower()
    if not d:
        return ""
    if d.startswith("[") and d.endswith("]"):  # address literal: never internal
        return d
    try:
        return d.encode("idna").decode("ascii")
    except UnicodeError:
        # Hostile or unusual label: keep a stable form; it matches no internal domain.
        return d


def domain_of(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return normalise_domain(domain) if at and local else ""


def is_list_address(address: str, patterns: tuple[str, ...]) -> bool:
    """True if ``address`` (lower-cased) is one of ``patterns``: addresses or
    glob patterns (``all-*@city.example.lg.jp``), case-insensitive."""
    return any(fnmatch.fnmatchcase(address, p.lower()) for p in patterns)


def is_internal(domain: str, internal_domains: Iterable[str]) -> bool:
    """True if ``domain`` is one of ``internal_domains`` or a subdomain of one."""
    if not domain:
        return False  # no domain: cannot prove it internal, so it is external
    return any(domain == d or domain.endswith("." + d) for d in internal_domains)


def organisation_of(domain: str) -> str:
    """The registrable domain (PSL): city.example2.lg.jp -> example2.lg.jp."""
    global _psl
    if _psl is None:
        from publicsuffixlist import PublicSuffixList

        _psl = PublicSuffixList()
    return _organisation(domain)


@lru_cache(maxsize=4096)
def _organisation(domain: str) -> str:
    if not domain or domain.startswith("["):
        return domain
    try:
        return _psl.privatesuffix(domain) or domain
    except Exception:  # noqa: BLE001 - a hostile label must not break the facts
        return domain


def clean_address(address: str) -> str:
    a = (address or "").strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    local, at, domain = a.rpartition("@")
    if not at:
        return a.lower()
    # The local part is case-sensitive in theory, never in practice at a
    # municipality; comparing lower-case avoids "Taro@" and "taro@" counting twice.
    return f"{local.lower()}@{normalise_domain(domain)}"


# -- headers ---------------------------------------------------------------


def _parse_headers(data: bytes) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Header block -> ({lower-case name: [values]}, {lower-case name: first raw
    value}); never raises. The raw values keep 8-bit bytes for default_value."""
    out: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    # Only the header block: the parser would otherwise copy the whole body.
    head = header_block(data or b"", MAX_HEADER_BLOCK)
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(head)
        items = msg.items()
        raw_items = msg.raw_items()
    except Exception:  # noqa: BLE001 - hostile header block
        return out, first
    for name, value in items:
        try:
            key = str(name).strip().lower()
            out.setdefault(key, []).append(str(value)[:MAX_HEADER_CHARS])
        except Exception:  # noqa: BLE001
            continue
    for name, value in raw_items:
        if isinstance(value, str):
            first.setdefault(str(name).strip().lower(), value[:MAX_HEADER_CHARS])
    return out, first


def _header_value(first: dict[str, str], name: str) -> str:
    """The first ``name`` header as the email package's default policy reads it
    (the same text the hold store and notices show), on one line."""
    value = first.get(name)
    if value is None:
        return ""
    try:
        text = default_value(name, value)
    except Exception:  # noqa: BLE001 - hostile header
        text = _decode(value)
    return text.replace("\r", "").replace("\n", "")


def _decode(value: str) -> str:
    """RFC 2047 decode with replacement; the raw text if it does not decode."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - bad charset names, broken encoded words
        return value


def _addresses(headers: dict[str, list[str]], names: Sequence[str]) -> tuple[str, ...]:
    """Distinct addresses in the named headers, lower-cased, in order of appearance."""
    raw = [v for n in names for v in headers.get(n, [])]
    seen: dict[str, None] = {}
    for value in raw:
        decoded = _decode(value)
        parsed: list[tuple[str, str]] = []
        lost = False
        try:
            parsed = getaddresses([decoded])
        except Exception:  # noqa: BLE001
            lost = True
        for _name, addr in parsed:
            if addr and _ADDR_PATTERN.fullmatch(addr):
                seen.setdefault(clean_address(addr), None)
            elif addr or _name:
                lost = True
        if lost:
            # The parser dropped something: read it again with a plain pattern so a
            # crafted header cannot make external recipients invisible to the policy.
            for m in _ADDR_PATTERN.finditer(decoded):
                seen.setdefault(clean_address(m.group(0)), None)
        if len(seen) >= MAX_ADDRESSES:
            break
    return tuple(list(seen)[:MAX_ADDRESSES])


def is_reply_subject(subject: str) -> bool:
    """Re:, RE:, Re[2]:, Ｒｅ：, 返信:, AW:, SV:, ... (after an optional list tag)."""
    text = unicodedata.normalize("NFKC", subject or "")[:1000]
    return bool(_REPLY_PREFIX.match(text))


# -- findings --------------------------------------------------------------


def _count_persons(findings: Sequence[Finding], reported: dict[str, int]) -> dict[str, int]:
    by_rank: list[set[str | tuple[str, str]]] = [set(), set(), set()]
    for f in findings:
        rank = CONFIDENCES.index(f.confidence) if f.confidence in CONFIDENCES else 0
        for r in range(rank + 1):
            by_rank[r].add(finding_identity(f))
    counts = {c: len(by_rank[i]) for i, c in enumerate(CONFIDENCES)}
    # The scanner counts over every finding, the list here is capped at
    # limits.max_findings: its counts are authoritative; never let ours be lower.
    for conf in CONFIDENCES:
        counts[conf] = max(counts[conf], reported.get(conf) or 0)
    return counts
