"""Hold, record, release, reject, expire, purge: every state change of held mail.

    Holder(config)                     the relay's ``holder``
        async hold(mail_from, rcpt_tos, data, decision, *, mail_options=()) -> hold_id
            durable (file fsynced + renamed + directory fsynced, row committed,
            audit record fsynced) before it returns; the held notice is sent
            afterwards in the background, through the store's notice queue (retried). A resend of a message
            held within the hold lifetime (same Message-ID, envelope, sha256)
            returns the first hold's id and stores nothing.
        recover()                        serve's start: store recovery, then every
            hold short of done gets its one hold record and its notice
        async expire_due() -> [hold_id]          held past store.hold_expiry_hours
        async run_expiry(interval)               serve's periodic loop
        async aclose()                           wait for notices in flight
        start()                                  start run_expiry and the notice queue's
                                                 sender (Notifier.run) on the running loop
    Recorder(config)                   the relay's ``recorder``
        async record(mail_from, rcpt_tos, decision, *, data=None, size=None,
                     outcome="", reply="", hold_id=None, **extra)
            the audit record of a pass or block decision (holds: see Holder.hold)
    release_message / reject_message / expire_message / purge_messages / show_raw
            the admin actions behind ``mailguard held``; each takes the message's
            lock, changes the state at most once and writes its audit record
    operator_identity() -> str         MAILGUARD_OPERATOR, else SUDO_USER, else the login user

Release sends the stored bytes and envelope without scanning again and marks the
message released only after the upstream's 250. If the upstream refuses or is
unreachable the message stays held. If it refuses some recipients only, the ones
that took it are done: the stored envelope is narrowed to the refused ones (the
file rewritten the durable way) and the message stays held, so a second release
neither duplicates nor loses a copy.

SECURITY: only masked findings and fingerprints leave the decision into the row,
the audit log and notices. Operator reasons are scrubbed by audit and notices.
Expiry never releases: it rejects with a notice.

DIAGNOSTICS: logs ``held``, ``hold_failed``, ``notice_sent``, ``notice_failed``,
``expired``, ``released``, ``release_failed`` with the hold id; never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import pwd
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, Iterable, Sequence

from mailguard.auditfacts import decision_fields, held_fields
from mailguard.config import Config
from mailguard.errors import AuditError, ForwardError, StoreError, UpstreamRefused
from mailguard.log import get_logger, scrub
from mailguard.mailpolicy import default_header
from mailguard.notices import BLOCKED_NOTICE, EXPIRED_NOTICE, HELD_NOTICE, REJECTED_NOTICE
from mailguard.noticestore import QueuedNotice
from mailguard.parse import header_block
from mailguard.notifier import FAILED, NOT_SENT, SYSTEM_OPERATOR, Notifier, reply_text
from mailguard.web.notify import notify_approvers
from mailguard.holdstore import AuditSink, HoldStore, open_store
from mailguard.faults import fault_point
from mailguard.records import (
    EXPIRED, HELD, HOLD_AUDITED, HOLD_DONE, HOLD_STORED, REJECTED, RELEASED, Decision, Finding, HeldMessage,
    Unscannable,
)

log = get_logger(component="hold")

EXPIRY_INTERVAL = 60.0


def operator_identity() -> str:
    """Who is running the CLI: MAILGUARD_OPERATOR (tests, wrappers), SUDO_USER, the login user."""
    for var in ("MAILGUARD_OPERATOR", "SUDO_USER"):
        v = os.environ.get(var, "").strip()
        if v:
            return v[:64]
    try:
        return os.getlogin()
    except OSError:
        pass
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


def safe_reason(text: str) -> str:
    """An operator's free text as it may be stored: one line, bounded, digits masked."""
    return scrub(" ".join(unicodedata.normalize("NFKC", str(text)).split()))[:500]


# -- evidence from a decision ---------------------------------------------------


def masked_findings(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """detect.Finding objects -> dicts without the number (never ``number``)."""
    return [
        {
            "masked": f.masked or "",
            "confidence": f.confidence or "",
            "reason": scrub(str(f.reason or "")),
            "location": scrub(str(f.location or "")),
            "fingerprint": f.fingerprint or "",
        }
        for f in findings or ()
    ]


def _unscannable(items: Iterable[Unscannable]) -> list[dict[str, str]]:
    return [{"location": scrub(str(u.location or "")), "reason": scrub(str(u.reason or ""))} for u in items or ()]


def _headers(data: bytes) -> tuple[str, str]:
    """(Subject, Message-ID), normalised and masked, for the row and notices."""
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(header_block(data, 262144))
        subject = default_header(msg, "Subject")
        message_id = default_header(msg, "Message-ID")
    except Exception:  # a hostile header must never stop a hold
        return "", ""
    return _shown(subject, message_id)


def _shown(subject: str, message_id: str) -> tuple[str, str]:
    """Subject and Message-ID as rows and notices keep them: normalised, masked."""
    subject = scrub(" ".join(unicodedata.normalize("NFKC", subject).split()))[:200]
    message_id = scrub(message_id.strip())[:250]
    return subject, message_id


def _evidence(mail_from: str, rcpt_tos: Sequence[str], data: bytes, decision: Decision) -> dict[str, Any]:
    findings = masked_findings(decision.findings)
    facts = decision.facts
    if facts is not None:  # the relay's decisions: facts read these headers already, the same way
        subject, message_id = _shown(facts.subject, facts.message_id)
    else:
        subject, message_id = _headers(data)
    return {
        "rule": decision.rule,
        "reasons": [scrub(str(r)) for r in decision.reasons],
        "persons": int(decision.persons or 0),
        "findings": findings,
        "fingerprints": sorted({f["fingerprint"] for f in findings if f["fingerprint"]}),
        "unscannable": _unscannable(decision.unscannable),
        "subject": subject,
        "message_id": message_id,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def blocked_message(mail_from: str, rcpt_tos: Sequence[str], data: bytes, decision: Decision) -> HeldMessage:
    """A blocked message as a notice sees it: the evidence, no id, nothing stored."""
    ev = _evidence(mail_from, rcpt_tos, data, decision)
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    return HeldMessage(
        id="", state="blocked", rule=ev["rule"], reasons=tuple(ev["reasons"]), notice=decision.notice or "",
        mail_from=mail_from, rcpt_tos=tuple(rcpt_tos), persons=ev["persons"],
        findings=tuple(ev["findings"]), fingerprints=tuple(ev["fingerprints"]),
        unscannable=tuple(ev["unscannable"]), subject=ev["subject"], message_id=ev["message_id"],
        size=len(data), sha256=ev["sha256"], approvals_required=0, approvals=(), received=now, updated=now,
    )


def _audit_fields(held: HeldMessage) -> dict[str, Any]:
    return {
        "id": held.id, "from": held.mail_from, "to": list(held.rcpt_tos), "rule": held.rule,
        "persons": held.persons, "findings": [dict(f) for f in held.findings],
        "fingerprints": list(held.fingerprints), **held_fields(held),
    }


# -- the relay's side -----------------------------------------------------------


class Holder:
    def __init__(self, config: Config, store: HoldStore | None = None, audit: AuditSink | None = None) -> None:
        self.config = config
        self.store = store or open_store(config)
        self.audit = audit or self.store.audit
        self.notifier = Notifier(config, self.audit, self.store)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry: asyncio.Task[Any] | None = None
        self._sender: asyncio.Task[Any] | None = None  # the notice queue's sender loop
        self._pending_notices: list[str] = []  # recovered holds whose notice is still due
        self._digest_locks: dict[str, list[Any]] = {}  # sha256 -> [lock, users]
        self._digest_guard = threading.Lock()

    def recover(self) -> None:
        """Run once when serve starts: clean up after a crash, complete every hold."""
        rec = self.store.recover()
        for hold_id in rec.releases_interrupted:
            self.audit.append("release-interrupted", operator=SYSTEM_OPERATOR, id=hold_id,
                              reason="the releasing process stopped before the upstream's reply; still held")
        completed = self._complete_holds()
        if rec.temp_removed or rec.orphans_removed or rec.releases_interrupted or completed:
            log.warning("store_recovered", temp_removed=rec.temp_removed, orphans_removed=rec.orphans_removed,
                        releases_interrupted=rec.releases_interrupted, holds_completed=completed)

    def _complete_holds(self) -> int:
        """A hold is one unit: a crash between the row and the hold record, or before
        the sender's notice, is finished here. Each held message ends with exactly one
        hold record (the log is searched before one is written); the notices go out
        once the loop runs (run_expiry)."""
        short = self.store.incomplete_holds()
        if not short:
            return 0
        ids = {h.id for h in short}
        recorded: set[str] = set()
        noticed: set[str] = set()
        for r in self.audit.records():
            if r.get("id") in ids:
                if r.get("event") == "hold":
                    recorded.add(str(r["id"]))
                elif (r.get("event") == "notice" and r.get("kind") == HELD_NOTICE
                      and (not r.get("error") or r.get("queued"))):
                    noticed.add(str(r["id"]))  # sent, or in the notice queue
        for held in short:
            if held.hold_stage == HOLD_STORED and held.id not in recorded:
                self.audit.append("hold", operator=SYSTEM_OPERATOR, reasons=list(held.reasons),
                                  unscannable=[dict(u) for u in held.unscannable], size=held.size,
                                  sha256=held.sha256,
                                  approvals_required=held.approvals_required, recovered=True,
                                  **_audit_fields(held))
            self.store.set_hold_stage(held.id, HOLD_AUDITED)
            if held.id in noticed or held.state != HELD:
                self.store.set_hold_stage(held.id, HOLD_DONE)
            else:
                self._pending_notices.append(held.id)
        return len(short)

    async def _send_pending_notices(self) -> None:
        pending, self._pending_notices = self._pending_notices, []
        for hold_id in pending:
            try:
                held = await asyncio.to_thread(self.store.get, hold_id)
                await self._notify_held(held)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the rest
                log.error("notice_failed", id=hold_id, kind=HELD_NOTICE, error=type(exc).__name__)

    async def _notify_held(self, held: HeldMessage) -> None:
        """The held notice, then the hold is done once the notice is sent or queued
        (a notice neither sent nor queued is tried again by the next start's recovery)."""
        if await self.notifier.send(HELD_NOTICE, held) != FAILED:
            await asyncio.to_thread(self.store.set_hold_stage, held.id, HOLD_DONE)

    async def hold(self, mail_from: str, rcpt_tos: list[str], data: bytes, decision: Decision,
                   *, mail_options: Sequence[str] = ()) -> str:
        # Shielded: once the store has begun, a cancellation (the client went
        # away, SIGTERM's grace ran out) must not leave a message held with no
        # log line and no notice; the write thread finishes regardless. aclose()
        # waits for it. The client got no 250, so its retry may hold a second
        # copy: a duplicate is acceptable, a silent hold is not.
        task = asyncio.ensure_future(self._hold(mail_from, rcpt_tos, data, decision, mail_options))
        self._tasks.add(task)
        task.add_done_callback(self._hold_done)
        return await asyncio.shield(task)

    def notify_blocked(self, mail_from: str, rcpt_tos: Sequence[str], data: bytes, decision: Decision) -> None:
        """Tell the sender about a block (issue 13.3) in the background: the 550
        reply is ASCII English, and Postfix's bounce never shows the rule's notice.ja."""
        held = blocked_message(mail_from, rcpt_tos, data, decision)
        task = asyncio.create_task(self.notifier.send(BLOCKED_NOTICE, held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hold_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # mark it retrieved: a cancelled caller can no longer re-raise it

    async def _hold(self, mail_from: str, rcpt_tos: list[str], data: bytes, decision: Decision,
                    mail_options: Sequence[str]) -> str:
        ev = _evidence(mail_from, rcpt_tos, data, decision)
        held, duplicate, notice = await asyncio.to_thread(self._hold_once, mail_from, list(rcpt_tos), data,
                                                          decision, ev, tuple(mail_options))
        if duplicate:
            # The client never saw our 250 and sent it again: same id, no second copy.
            log.info("hold_duplicate", id=held.id, rule=held.rule, size=held.size)
            return held.id
        log.debug("held", id=held.id, rule=held.rule, persons=held.persons, size=held.size)
        if isinstance(notice, QueuedNotice):
            task = asyncio.create_task(self.notifier.attempt(notice))  # queued, the hold done: send it
        elif notice == FAILED:
            task = asyncio.create_task(self._notify_held(held))  # not queued: the whole way again
        else:
            task = None  # NOT_SENT: nobody to tell (the stage is done)
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.config.web.approvers:  # the approval page's people hear of it too (issue 18.5)
            task = asyncio.create_task(notify_approvers(self.config, self.notifier, held))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return held.id

    def _hold_once(self, mail_from: str, rcpt_tos: list[str], data: bytes, decision: Decision,
                   ev: dict[str, Any], mail_options: tuple[str, ...]
                   ) -> tuple[HeldMessage, bool, QueuedNotice | str | None]:
        """(held message, whether it was already held, its notice): a resend of a
        message held within the hold lifetime (same Message-ID, envelope and digest)
        is the same hold. The notice is queued here with the hold marked done in the
        same commit (Notifier.queue_now): a queued notice, NOT_SENT or FAILED."""
        digest = ev["sha256"]
        with self._digest_guard:
            entry = self._digest_locks.setdefault(digest, [threading.Lock(), 0])
            entry[1] += 1  # users of this lock; the last one removes it
        try:
            with entry[0]:  # two identical transactions at once: the second finds the first
                if ev["message_id"]:
                    since = (datetime.now(UTC) - timedelta(hours=self.config.store.hold_expiry_hours)).isoformat(
                        timespec="microseconds")
                    copy = self.store.find_held_copy(mail_from, rcpt_tos, digest, ev["message_id"], since)
                    if copy is not None:
                        return copy, True, None
                held = self._hold_durably(mail_from, rcpt_tos, data, decision, ev, mail_options)
                notice = self.notifier.queue_now(HELD_NOTICE, held, hold_done=True)
                if notice == NOT_SENT:
                    self.store.set_hold_stage(held.id, HOLD_DONE)  # nobody to tell: complete now
                return held, False, notice
        finally:
            with self._digest_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    self._digest_locks.pop(digest, None)

    def _hold_durably(self, mail_from: str, rcpt_tos: list[str], data: bytes, decision: Decision,
                      ev: dict[str, Any], mail_options: tuple[str, ...]) -> HeldMessage:
        held = self.store.add(
            mail_from, rcpt_tos, data, rule=ev["rule"], reasons=ev["reasons"],
            notice=decision.notice or "", persons=ev["persons"],
            findings=ev["findings"], fingerprints=ev["fingerprints"], unscannable=ev["unscannable"],
            subject=ev["subject"], message_id=ev["message_id"], sha256=ev["sha256"],
            approvals_required=decision.approvals or 1, mail_options=mail_options,
        )
        fault_point("after_hold_file")
        try:
            self.audit.append("hold", **{
                **decision_fields(decision),
                "operator": SYSTEM_OPERATOR, "reasons": ev["reasons"], "unscannable": ev["unscannable"],
                "size": len(data), "sha256": ev["sha256"], "approvals_required": held.approvals_required,
                **_audit_fields(held)})
        except AuditError:
            # No record, no 250: take the message back so the sender's retry is the only copy.
            self.store.discard(held.id)
            raise
        # No stage write here (one fsync less per hold): until the notice marks the
        # hold done, recovery looks for this record in the log before writing one.
        fault_point("after_hold_audit")
        return held

    async def expire_due(self, operator: str = SYSTEM_OPERATOR) -> list[str]:
        cutoff = (datetime.now(UTC) - timedelta(hours=self.config.store.hold_expiry_hours)).isoformat(
            timespec="microseconds")
        expired = []
        for held in await asyncio.to_thread(self.store.due_for_expiry, cutoff):
            try:
                done = await asyncio.to_thread(expire_message, self.store, self.audit, held.id, operator)
            except StoreError as exc:  # busy (being released) or already finished
                log.info("expiry_skipped", id=held.id, reason=str(exc))
                continue
            log.info("expired", id=held.id)
            await self.notifier.send(EXPIRED_NOTICE, done)
            expired.append(held.id)
        return expired

    async def run_expiry(self, interval: float = EXPIRY_INTERVAL) -> None:
        await self._send_pending_notices()  # holds completed by recovery
        while True:
            try:
                await self.expire_due()
            except Exception as exc:  # the loop must outlive a bad round
                log.error("expiry_failed", error=str(exc))
            await asyncio.sleep(interval)

    def start(self) -> None:
        """Start the periodic expiry on the running loop (serve); no-op without one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._expiry is None:
            self._expiry = loop.create_task(self.run_expiry())
        if self._sender is None:  # retries queued notices (issue 13.5)
            self._sender = loop.create_task(self.notifier.run())

    async def aclose(self, timeout: float = 30.0) -> None:
        """Stop the expiry loop and give notices in flight a chance to finish."""
        for task in (self._expiry, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._expiry = self._sender = None
        # Holds in flight first (each may start a notice), then the notices.
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=left)


# -- admin actions (the CLI) -------------------------------------------------------


@dataclass
class ReleaseOutcome:
    held: HeldMessage
    delivered: bool = False
    approvals: int = 0
    needed: int = 1
    reply: str = ""
    refused: dict[str, str] = field(default_factory=dict)
    error: str = ""


def release_cut_off(held: HeldMessage, *, lock_free: bool) -> bool:
    """Was a release of this message cut off (kill -9) after it began? Then the
    upstream may already have it, and releasing again may deliver it twice.
    ``lock_free``: the caller holds (or could take) the message's lock, so a
    ``release_started`` left on the row belongs to a dead process."""
    return held.state == HELD and bool(held.release_interrupted or (held.release_started and lock_free))


async def release_message(config: Config, store: HoldStore, audit: AuditSink, hold_id: str,
                          operator: str, reason: str, *, force: bool = False) -> ReleaseOutcome:
    """Approve and, once enough distinct operators approved, deliver. See the module doc.

    A message whose earlier release was cut off is released only with ``force``
    (StoreError otherwise): it may already have been delivered."""
    from mailguard.upstream import send_message

    reason = safe_reason(reason)
    with store.locked(hold_id) as held:
        if held.state != HELD:
            raise StoreError(f"{hold_id} is {held.state}, not held")
        cut_off = release_cut_off(held, lock_free=True)
        if cut_off and not force:
            raise StoreError(
                f"an earlier release of {hold_id} was cut off after it began: the upstream may already"
                " have delivered it; check with the recipients, then release with --force to send it again")
        if operator in held.approvers and len(held.approvers) < held.approvals_required:
            raise StoreError(
                f"{operator} already approved {hold_id}; {held.approvals_required - len(held.approvers)}"
                " more distinct operator(s) must approve it"
            )
        if operator not in held.approvers:
            held = await asyncio.to_thread(store.add_approval, hold_id, operator, reason)
            audit.append("approve", operator=operator, reason=reason, approvals=len(held.approvers),
                         approvals_required=held.approvals_required, **_audit_fields(held))
        out = ReleaseOutcome(held, approvals=len(held.approvers), needed=held.approvals_required)
        if len(held.approvers) < held.approvals_required:
            return out
        envelope, data = store.read_message(hold_id)
        store.mark_release_started(hold_id)
        try:
            result = await send_message(config.upstream, envelope.mail_from, list(envelope.rcpt_tos), data,
                                        mail_options=envelope.mail_options)
            fault_point("release_after_upstream")
        except ForwardError as exc:
            store.clear_release_started(hold_id)
            out.error = (f"upstream refused: {reply_text(exc)}" if isinstance(exc, UpstreamRefused)
                         else f"upstream unavailable: {exc}")
            audit.append("release-failed", operator=operator, reason=reason, error=out.error[:500],
                         **_audit_fields(held))
            log.warning("release_failed", id=hold_id, error=out.error)
            return out
        out.reply = reply_text(result.reply)
        if result.refused:
            out.refused = {r: reply_text(rep) for r, rep in result.refused.items()}
            store.narrow_recipients(hold_id, [r for r in envelope.rcpt_tos if r in result.refused])
            store.clear_release_started(hold_id)
            out.error = f"upstream refused {len(out.refused)} recipient(s); they stay held"
            audit.append("release-partial", operator=operator, reason=reason, reply=out.reply,
                         accepted=list(result.accepted), refused=out.refused, **_audit_fields(held))
            out.held = store.get(hold_id)
            return out
        out.held = store.finish(hold_id, RELEASED, operator, reason, reply=out.reply)
        out.delivered = True
        audit.append("release", operator=operator, reason=reason, reply=out.reply,
                     approvers=out.held.approvers, forced=True if cut_off else None,
                     **_audit_fields(out.held))
        log.info("released", id=hold_id)
        return out


async def reject_message(config: Config, store: HoldStore, audit: AuditSink, hold_id: str,
                         operator: str, reason: str) -> tuple[HeldMessage, str]:
    """Reject a held message; returns it and what became of the sender's notice
    (notifier.SENT, QUEUED: the relay retries it, FAILED, NOT_SENT)."""
    reason = safe_reason(reason)
    with store.locked(hold_id) as held:
        if held.state != HELD:
            raise StoreError(f"{hold_id} is {held.state}, not held")
        done = store.finish(hold_id, REJECTED, operator, reason)
        audit.append("reject", operator=operator, reason=reason, **_audit_fields(done))
    log.info("rejected", id=hold_id)
    notice = await Notifier(config, audit, store).send(REJECTED_NOTICE, done, reason=reason)
    return done, notice


def expire_message(store: HoldStore, audit: AuditSink, hold_id: str, operator: str) -> HeldMessage:
    with store.locked(hold_id) as held:
        if held.state != HELD:
            raise StoreError(f"{hold_id} is {held.state}, not held")
        done = store.finish(hold_id, EXPIRED, operator, "hold expired")
        audit.append("expire", operator=operator, reason="hold expired", **_audit_fields(done))
    return done


def purge_messages(store: HoldStore, audit: AuditSink, older_than_days: float, operator: str) -> list[str]:
    cutoff = (datetime.now(UTC) - timedelta(days=older_than_days)).isoformat(timespec="microseconds")
    purged = []
    for held in store.purgeable(cutoff):
        try:
            with store.locked(held.id):
                done = store.purge(held.id)
        except StoreError as exc:
            log.info("purge_skipped", id=held.id, reason=str(exc))
            continue
        audit.append("purge", operator=operator, state=done.state, decided_at=done.decided_at,
                     reason=f"retention: older than {older_than_days:g} days", sha256=done.sha256,
                     **_audit_fields(done))
        purged.append(held.id)
    return purged


def show_raw(store: HoldStore, audit: AuditSink, hold_id: str, operator: str) -> bytes:
    """The exact stored bytes; audited before they are returned."""
    held = store.get(hold_id)
    _, data = store.read_message(hold_id)
    audit.append("show-raw", operator=operator, **_audit_fields(held))
    return data
