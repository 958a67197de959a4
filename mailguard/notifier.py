"""Sending one notice to a sender, and its audit record.

    Notifier(config, audit).send(kind, held, reason="") -> bool
    reply_text(reply) -> str         an upstream reply as one bounded line

Best effort by design: a notice that cannot be sent is logged and audited
(`notice` with `error`), never raised, so it never undoes a hold, a reject or a
block. The notice itself is built by notices.py (Japanese first, English second,
masked) and sent through upstream.send_message.

SECURITY: the notice carries masked findings only (notices.py builds it); the
reply text recorded is the upstream's, bounded. DIAGNOSTICS: `notice_sent`,
`notice_failed`, `audit_failed`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mailguard.config import Config
from mailguard.errors import AuditError, ForwardError, UpstreamRefused
from mailguard.holdstore import AuditSink
from mailguard.log import get_logger
from mailguard.notices import HELD_NOTICE, build_notice, held_link, notice_mail_options, notice_sender
from mailguard.records import HeldMessage, UpstreamReply
from mailguard.upstream import send_message

log = get_logger()
SYSTEM_OPERATOR = "mailguard"  # the operator of records the relay writes itself


def reply_text(reply: UpstreamReply | UpstreamRefused) -> str:
    return f"{reply.code} {' '.join(str(reply.text).split())}"[:500]


class Notifier:
    def __init__(self, config: Config, audit: AuditSink) -> None:
        self.config = config
        self.audit = audit
        self.sender = notice_sender(config.store, config.server)

    async def send(self, kind: str, held: HeldMessage, reason: str = "") -> bool:
        """Best effort: a failed notice is logged and audited, never raised."""
        if not self.config.store.notify_sender:
            return False
        if not held.mail_from or held.mail_from == "<>":
            return False  # a bounce: nobody to tell, and no loops
        try:
            data = build_notice(kind, held, sender=self.sender, reason=reason,
                                expiry_hours=self.config.store.hold_expiry_hours,
                                timezone=self.config.organisation.timezone,
                                link=held_link(self.config.web, held.id) if kind == HELD_NOTICE else "")
            # A UTF-8 sender address (SMTPUTF8) is sent with SMTPUTF8; an upstream
            # that does not offer it refuses here (451 4.6.7), which fails this
            # notice like any other refusal and leaves the hold as it is.
            result = await send_message(self.config.upstream, self.sender, [held.mail_from], data,
                                        mail_options=notice_mail_options(self.sender, held.mail_from))
        except Exception as exc:  # noqa: BLE001 - best effort: a notice never undoes a hold or reject
            if not isinstance(exc, ForwardError):
                exc = ForwardError(f"notice failed: {type(exc).__name__}")
            log.warning("notice_failed", id=held.id, kind=kind, error=str(exc))
            await asyncio.to_thread(self._audit_quietly, "notice", id=held.id, kind=kind,
                                    to=[held.mail_from], error=str(exc)[:300])
            return False
        log.info("notice_sent", id=held.id, kind=kind)
        await asyncio.to_thread(self._audit_quietly, "notice", id=held.id, kind=kind,
                                to=[held.mail_from], reply=reply_text(result.reply))
        return True

    def _audit_quietly(self, event: str, **fields: Any) -> None:
        try:
            self.audit.append(event, operator=SYSTEM_OPERATOR, **fields)
        except AuditError as exc:
            log.error("audit_failed", audit_event=event, error=str(exc))  # `event` is structlog's own
