"""The relay's audit hook: one record per message (pass, block, a hold that failed).

    Recorder(config, audit=None)
        async record(mail_from, rcpt_tos, decision, *, data=None, size=None, outcome="",
                     reply="", hold_id=None, **extra)

A hold that was stored is audited by hold.Holder inside its durability promise, so
it is not recorded here. Records of concurrent transactions go to the sink in one
``append_many`` (see Recorder). SECURITY: records carry masked findings and
fingerprints only (hold.masked_findings). DIAGNOSTICS: none of its own; AuditError
reaches act.py, which logs ``audit_failed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from mailguard.auditfacts import decision_fields
from mailguard.config import Config
from mailguard.groupcommit import LoopBatch
from mailguard.hold import _headers, _unscannable, masked_findings
from mailguard.holdstore import AuditSink, open_audit
from mailguard.log import scrub
from mailguard.notifier import SYSTEM_OPERATOR
from mailguard.records import Decision


class Recorder:
    """The relay's audit hook, called once per message after the reply is decided.

    Records of concurrent transactions reach the sink together: the first waits
    for a worker thread, and whatever is queued meanwhile goes in the next single
    ``append_many`` (one thread hop and one commit for the lot, instead of a hop
    and a wake-up per message: issue 15). Each caller still returns only once its
    own record is durable, and gets its own record's error."""

    def __init__(self, config: Config, audit: AuditSink | None = None) -> None:
        self.audit = audit or open_audit(config)
        self._batch: LoopBatch[tuple[str, dict[str, Any]], Any] = LoopBatch(self.audit.append_many)

    async def record(self, mail_from: str, rcpt_tos: Sequence[str], decision: Decision, *, data: bytes | None = None,
                     size: int | None = None, outcome: str = "", reply: str = "", hold_id: str | None = None,
                     **extra: Any) -> None:
        """Audit a pass or block decision; raises AuditError.

        A hold that was stored is audited by Holder.hold (inside the durability
        promise), so it is not written twice; a hold that could not be stored
        (the client got a 4xx) is recorded as ``hold-failed``.
        """
        event = decision.action
        if event == "hold":
            if hold_id:
                return
            event = "hold-failed"
        fields: dict[str, Any] = {
            "operator": SYSTEM_OPERATOR, "from": mail_from, "to": list(rcpt_tos), "rule": decision.rule,
            "reasons": [scrub(str(r)) for r in decision.reasons],
            "persons": int(decision.persons or 0),
            "unscannable": _unscannable(decision.unscannable),
            "outcome": outcome, "reply": " ".join(str(reply).split())[:300],
        }
        findings = masked_findings(decision.findings)
        fields["findings"] = findings
        fields["fingerprints"] = sorted({f["fingerprint"] for f in findings if f["fingerprint"]})
        for k, v in decision_fields(decision).items():
            fields.setdefault(k, v)
        if data is not None:
            subject, message_id = _headers(data)
            fields.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), message_id=message_id)
        elif size is not None:
            fields["size"] = int(size)
        for k, v in extra.items():
            if v is not None and k not in fields:
                fields[k] = v if isinstance(v, (int, float, bool, list, dict)) else str(v)[:300]
        await self._batch.submit((event, fields))
