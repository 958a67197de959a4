"""What an audit record says about a message beyond the decision (issue 17).

    decision_fields(decision) -> dict      for pass / hold / block records
    held_fields(held) -> dict              for release / reject / expire / ... records
    organisations_of(addresses) -> [str]   registrable domains, sorted

So ``audit trace`` and ``incident report`` can answer from the records alone:
the Message-ID, the organisations (registrable domains) the recipients belong to,
the external recipients, the persons by confidence, reply / reply-all, the
addresses visible in To/Cc, and the column headers / item words seen next to the
findings. The fields are additive to the record (DESIGN §8: JSON only grows).

SECURITY: every value is an address, a domain, a count or a header word; the audit
log scrubs each string again. No number in the clear, no cell value.
DIAGNOSTICS: none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mailguard.facts import clean_address, domain_of, organisation_of

if TYPE_CHECKING:
    from mailguard.records import Decision, HeldMessage

MAX_VISIBLE = 200  # addresses kept of a To/Cc; the count is always exact


def organisations_of(addresses: Iterable[str]) -> list[str]:
    return sorted({organisation_of(domain_of(clean_address(a))) or domain_of(clean_address(a))
                   for a in addresses if domain_of(clean_address(a))})


def decision_fields(decision: Decision) -> dict[str, Any]:
    f = decision.facts
    if f is None:
        return {}
    return {
        "message_id": f.message_id,
        "organisations": organisations_of(f.recipients),
        "external": list(f.external_recipients),
        "external_orgs": list(f.external_orgs),
        "persons_by_confidence": dict(f.persons_by_confidence),
        "is_reply": f.is_reply,
        "is_reply_all": f.is_reply_all,
        "visible": list(f.visible[:MAX_VISIBLE]),
        "visible_count": len(f.visible),
        "visible_external": len(f.visible_external),
        "near_findings": list(f.near_findings),
    }


def held_fields(held: HeldMessage) -> dict[str, Any]:
    return {"message_id": held.message_id, "organisations": organisations_of(held.rcpt_tos)}
