"""Sending notices to senders through the store's durable queue, and their audit records.

    Notifier(config, audit, store=None)
        async send(kind, held, reason="") -> SENT | QUEUED | FAILED | NOT_SENT
            build the notice, queue it (durable), try it once at once
        queue_now(kind, held, *, hold_done=False) -> QueuedNotice | FAILED | NOT_SENT
            build and queue it (blocking: the hold's worker thread), for ``attempt``
        async attempt(notice) -> SENT | QUEUED   try a queued notice once
        async send_due(limit=50) -> int      one round: the due notices, expired ones given up
        async run(interval=None)             the relay's sender loop (worker 0 / the single serve)
        wake()                               a notice was queued: look now
    retry_schedule() -> (seconds, ...)   30 s, 2 min, 10 min, 1 h, then hourly
    reply_text(reply) -> str             an upstream reply as one bounded line

A notice is at-least-once: it is queued in the hold store (noticestore.py)
before the first attempt, and an attempt the upstream does not confirm (no
answer, a 4xx or 5xx, a dropped connection, a process killed mid-send) is tried
again with backoff until the upstream takes it or NOTICE_EXPIRY_HOURS pass; so
the sender may, rarely, get one twice. Every attempt is audited (``notice`` with
``attempt`` and ``reply`` or ``error``), and a notice given up is
``notice_expired``. Nothing here ever raises into a hold, a reject or a block.

MAILGUARD_NOTICE_RETRY (tests only): the schedule as seconds, e.g. "1,2,4".

SECURITY: the notice carries masked findings only (notices.py builds it); the
reply text recorded is the upstream's, bounded. DIAGNOSTICS: `notice_sent`,
`notice_failed`, `notice_expired`, `notice_queue_failed`, `audit_failed`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import UTC, datetime, timedelta
from typing import Any, Sequence

from mailguard.config import Config
from mailguard.errors import AuditError, ForwardError, UpstreamRefused
from mailguard.groupcommit import LoopBatch
from mailguard.holdstore import AuditSink, HoldStore
from mailguard.log import get_logger
from mailguard.noticestore import QueuedNotice
from mailguard.notices import HELD_NOTICE, build_notice, ehlo_name, held_link, notice_mail_options, notice_sender
from mailguard.records import HeldMessage, UpstreamReply
from mailguard.upstream import UpstreamPool, send_message

log = get_logger()
SYSTEM_OPERATOR = "mailguard"  # the operator of records the relay writes itself

SENT, QUEUED, FAILED, NOT_SENT = "sent", "queued", "failed", "none"
RETRY_SCHEDULE = (30.0, 120.0, 600.0, 3600.0)  # after the 1st, 2nd, ... failure; the last repeats
RETRY_ENV = "MAILGUARD_NOTICE_RETRY"  # tests only: e.g. "1,2,4"
NOTICE_EXPIRY_HOURS = 120.0  # a notice not delivered in 5 days is given up (audited)
CLAIM_SECONDS = 600.0  # a notice being sent is this sender's for so long (then retried)
MAX_POLL = 15.0  # the sender loop looks at the queue at least this often (CLIs queue too)


def reply_text(reply: UpstreamReply | UpstreamRefused) -> str:
    return f"{reply.code} {' '.join(str(reply.text).split())}"[:500]


def retry_schedule() -> tuple[float, ...]:
    raw = os.environ.get(RETRY_ENV, "").strip()
    if raw:
        try:
            values = tuple(float(v) for v in raw.split(",") if v.strip())
            if values and all(v > 0 for v in values):
                return values
        except ValueError:
            pass
    return RETRY_SCHEDULE


def retry_delay(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed attempts (>= 1)."""
    schedule = retry_schedule()
    return schedule[min(max(failures, 1), len(schedule)) - 1]


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def _now() -> datetime:
    return datetime.now(UTC)


class Notifier:
    def __init__(self, config: Config, audit: AuditSink, store: HoldStore | None = None) -> None:
        self.config = config
        self.audit = audit
        self.store = store
        self.sender = notice_sender(config.store, config.server, config.organisation)
        self._wake = asyncio.Event()
        self._sent_batch: LoopBatch[tuple[QueuedNotice, int, str], None] = LoopBatch(self._sent)
        # serve's pool for notices (server.build_services): links reused across
        # notices; None (the CLI) dials one link per attempt.
        self.pool: UpstreamPool | None = None

    def queue_now(self, kind: str, held: HeldMessage, *, hold_done: bool = False) -> QueuedNotice | str:
        """Build and queue the notice here and now (blocking: a worker thread's
        call). The queued notice for ``attempt``, or NOT_SENT (nobody to tell) /
        FAILED (not built, or the queue could not take it: ``send`` later tries
        again). With ``hold_done`` the hold is marked done in the same transaction.

        The hold path queues its notice in the thread job that stores the hold, so
        a 250 for a hold means its notice is durably on its way, and the attempt
        that follows costs one thread hop instead of three (issue 15)."""
        if not self.config.store.notify_sender or not held.mail_from or held.mail_from == "<>":
            return NOT_SENT
        if self.store is None:
            return FAILED
        try:
            data = self._build(kind, held)
            return self._queue(self._new(kind, held.id, [held.mail_from], data,
                                         notice_mail_options(self.sender, held.mail_from)), hold_done=hold_done)
        except Exception as exc:  # noqa: BLE001 - a notice never undoes a hold
            log.error("notice_queue_failed", id=held.id, kind=kind, error=f"{type(exc).__name__}: {exc}"[:300])
            return FAILED

    def _new(self, kind: str, hold_id: str, rcpt_tos: Sequence[str], data: bytes,
             mail_options: Sequence[str]) -> QueuedNotice:
        """A notice from us, due now, not queued yet (no id)."""
        now = _now()
        return QueuedNotice(id="", kind=kind, hold_id=hold_id, mail_from=self.sender, rcpt_tos=tuple(rcpt_tos),
                            mail_options=tuple(mail_options), data=data, created=_iso(now), attempts=0,
                            next_attempt=_iso(now), expires=_iso(now + timedelta(hours=NOTICE_EXPIRY_HOURS)),
                            last_error="", last_attempt=None)

    def _queue(self, n: QueuedNotice, *, hold_done: bool = False) -> QueuedNotice:
        """Queue ``n`` durably, claimed by this sender for CLAIM_SECONDS (blocking; raises)."""
        assert self.store is not None
        nid = self.store.queue_notice(n.kind, n.hold_id, n.mail_from, list(n.rcpt_tos), n.data, expires=n.expires,
                                      next_attempt=_iso(_now() + timedelta(seconds=CLAIM_SECONDS)),
                                      mail_options=list(n.mail_options), hold_done=hold_done)
        return dataclasses.replace(n, id=nid)

    def _build(self, kind: str, held: HeldMessage, reason: str = "") -> bytes:
        return build_notice(kind, held, sender=self.sender, reason=reason,
                            expiry_hours=self.config.store.hold_expiry_hours,
                            timezone=self.config.organisation.timezone,
                            link=held_link(self.config.web, held.id) if kind == HELD_NOTICE else "")

    async def send(self, kind: str, held: HeldMessage, reason: str = "") -> str:
        """Queue the notice and try it once: SENT, QUEUED (retried later), FAILED (not
        even queued: the store was unavailable and the attempt failed), NOT_SENT."""
        if not self.config.store.notify_sender:
            return NOT_SENT
        if not held.mail_from or held.mail_from == "<>":
            return NOT_SENT  # a bounce: nobody to tell, and no loops
        try:
            data = self._build(kind, held, reason)
        except Exception as exc:  # noqa: BLE001 - a notice never undoes a hold or reject
            log.error("notice_failed", id=held.id, kind=kind, error=f"build: {type(exc).__name__}")
            await asyncio.to_thread(self._audit_quietly, "notice", id=held.id, kind=kind,
                                    to=[held.mail_from], error=f"notice not built: {type(exc).__name__}")
            return FAILED
        return await self.queue_and_send(kind, held.id, [held.mail_from], data,
                                         notice_mail_options(self.sender, held.mail_from))

    async def queue_and_send(self, kind: str, hold_id: str, rcpt_tos: Sequence[str], data: bytes,
                             mail_options: Sequence[str] = ()) -> str:
        """Queue a built notice (claimed by us), then try it once."""
        notice = self._new(kind, hold_id, rcpt_tos, data, mail_options)
        if self.store is not None:
            try:
                notice = await asyncio.to_thread(self._queue, notice)
            except Exception as exc:  # noqa: BLE001 - no queue: still try once
                log.error("notice_queue_failed", id=hold_id, kind=kind, error=str(exc)[:300])
        return await self.attempt(notice)

    async def attempt(self, n: QueuedNotice) -> str:
        """Try a notice once (queued by ``queue_now`` or ``queue_and_send``, or due in
        the queue): SENT, or QUEUED for a retry later."""
        attempt = n.attempts + 1
        to = list(n.rcpt_tos)
        pool = self.pool or UpstreamPool(self.config.upstream, local_hostname=ehlo_name(self.config.server))
        try:
            # A UTF-8 sender address (SMTPUTF8) is sent with SMTPUTF8; an upstream
            # that does not offer it refuses here (451 4.6.7), like any refusal.
            result = await send_message(self.config.upstream, n.mail_from, to, n.data,
                                        mail_options=n.mail_options, pool=pool)
        except Exception as exc:  # noqa: BLE001 - a notice never undoes a hold or reject
            if isinstance(exc, UpstreamRefused):
                error = f"upstream refused: {reply_text(exc)}"
            elif isinstance(exc, ForwardError):
                error = str(exc)
            else:
                error = f"notice failed: {type(exc).__name__}"
            return await self._failed(n, attempt, error[:300])
        finally:
            if pool is not self.pool:
                await pool.close()
        log.info("notice_sent", id=n.hold_id, kind=n.kind, attempt=attempt)
        # Concurrent notices' bookkeeping in one thread hop (groupcommit.LoopBatch).
        await self._sent_batch.submit((n, attempt, reply_text(result.reply)))
        return SENT

    def _sent(self, done: list[tuple[QueuedNotice, int, str]]) -> list[None]:
        """Delivered notices leave the queue (one transaction) and are audited (one commit)."""
        ids = [n.id for n, _, _ in done if n.id]
        if ids and self.store is not None:
            try:
                self.store.notice_sent(*ids)
            except Exception as exc:  # noqa: BLE001 - delivered; a retry later is a duplicate at worst
                log.error("notice_queue_failed", ids=len(ids), error=str(exc)[:300])
        records = [("notice", {"id": n.hold_id, "kind": n.kind, "to": list(n.rcpt_tos), "attempt": attempt,
                               "reply": reply}) for n, attempt, reply in done]
        try:
            results = self.audit.append_many([(event, {"operator": SYSTEM_OPERATOR, **fields})
                                              for event, fields in records])
        except Exception as exc:  # noqa: BLE001 - the whole batch
            results = [exc] * len(records)
        for result in results:
            if isinstance(result, BaseException):
                log.error("audit_failed", audit_event="notice", error=str(result))
        return [None] * len(done)

    async def _failed(self, n: QueuedNotice, attempt: int, error: str) -> str:
        queued = False
        next_at = ""
        if n.id and self.store is not None:
            due = min(_now() + timedelta(seconds=retry_delay(attempt)), datetime.fromisoformat(n.expires))
            next_at = _iso(due)
            try:
                await asyncio.to_thread(self.store.notice_failed, n.id, next_at, error)
                queued = True
            except Exception as exc:  # noqa: BLE001 - the claim runs out: retried all the same
                log.error("notice_queue_failed", id=n.hold_id, kind=n.kind, error=str(exc)[:300])
                queued = True
        log.warning("notice_failed", id=n.hold_id, kind=n.kind, attempt=attempt, error=error,
                    next_attempt=next_at or None)
        await asyncio.to_thread(self._audit_quietly, "notice", id=n.hold_id, kind=n.kind, to=list(n.rcpt_tos),
                                attempt=attempt, error=error, queued=queued, next_attempt=next_at or None)
        return QUEUED if queued else FAILED

    async def send_due(self, limit: int = 50) -> int:
        """One round over the queue: give up the expired, try the due. Returns how many were handled."""
        if self.store is None:
            return 0
        now = _now()
        due = await asyncio.to_thread(self.store.due_notices, _iso(now), limit,
                                      claim_until=_iso(now + timedelta(seconds=CLAIM_SECONDS)))
        for n in due:
            if n.expires <= _iso(_now()):
                await asyncio.to_thread(self.store.notice_expired, n.id)
                log.warning("notice_expired", id=n.hold_id, kind=n.kind, attempts=n.attempts)
                await asyncio.to_thread(self._audit_quietly, "notice_expired", id=n.hold_id, kind=n.kind,
                                        to=list(n.rcpt_tos), attempts=n.attempts, error=n.last_error[:300])
                continue
            await self.attempt(n)
        return len(due)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, interval: float | None = None) -> None:
        """The sender loop: a round whenever woken, at least every ``interval`` seconds
        (default: the first retry delay, at most MAX_POLL)."""
        interval = interval or min(MAX_POLL, retry_schedule()[0])
        while True:
            try:
                while await self.send_due() > 0:
                    pass  # a full batch: there may be more
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad round (store down)
                log.error("notice_round_failed", error=str(exc)[:300])
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    def _audit_quietly(self, event: str, **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        try:
            self.audit.append(event, operator=SYSTEM_OPERATOR, **fields)
        except AuditError as exc:
            log.error("audit_failed", audit_event=event, error=str(exc))  # `event` is structlog's own
