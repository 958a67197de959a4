"""Acting on a decision: forward, hold or block one message, and pick the reply.

    Message(mail_from, rcpt_tos, data, ...)   one transaction as the client gave it
    UpstreamLeg(link, pool, in_tx)            a client's leased upstream link:
                                              reset() RSETs an open transaction,
                                              drop() lets the link go
    async act(decision, message, leg, *, holder, recorder) -> Acted
        pass: DATA upstream, its reply relayed (250 only after the upstream's 250);
        hold: RSET upstream, the holder stores it durably, then 250 with the id;
        block: RSET upstream, 550 5.7.1 with the rule and its reasons; the
               holder's notify_blocked (if it has one) tells the sender.
        Then the outcome is logged, audited (recorder) and counted (metrics).
    async inspection_failed(message, leg, exc) -> Acted      451 4.3.0, RSET upstream
    forward_error_reply(exc) / refusal_reply(upstream_reply)  the upstream's failures
                                              as replies (receive uses them for MAIL/RCPT)
    Inspector, HoldSink, AuditSink, LinkPool  what act and receive need of the pipeline,
                                              the holder, the recorder and the pool

No sockets of its own: the upstream is a ``Link`` (upstream.py), so act runs
against an in-memory link in tests. Every reply comes from replies.py. Anything
unexpected is 451 4.3.0 (the client keeps the mail); once the upstream or the
store has the message, a failing log, audit or metric never changes the reply.

SECURITY: the message is opaque bytes here; upstream reply texts are untrusted and
pass replies.py (printable ASCII, bounded) before a client or a log sees them.

DIAGNOSTICS: one event per message, ``forwarded``, ``held``, ``blocked``,
``refused`` or ``tempfailed``, with sender, recipient count, size, decision, rule,
upstream reply (code and sanitised first line), our reply, hold id and duration;
``internal_error`` (stage inspect or hold) and ``audit_failed``. Never content.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from mailguard import metrics, replies
from mailguard.errors import ForwardError, UpstreamBusy, UpstreamTimeout, UpstreamUnreachable
from mailguard.log import get_logger
from mailguard.policy import BLOCK, PASS, Decision
from mailguard.upstream import Link, UpstreamReply

log = get_logger()

# Outcomes, as audit records, logs and the relay-latency metric name them.
FORWARDED, HELD, BLOCKED, REFUSED, TEMPFAIL = "forwarded", "held", "blocked", "refused", "tempfail"


# ------------------------------------------------------------------ what act needs


class Inspector(Protocol):
    """The pipeline as the relay sees it (pipeline.Pipeline, or a test's stand-in)."""

    async def inspect(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> Decision: ...


class HoldSink(Protocol):
    """Where held mail goes (hold.Holder): durable before it returns the id."""

    async def hold(self, mail_from: str, rcpt_tos: list[str], data: bytes, decision: Decision,
                   *, mail_options: list[str] = ...) -> str: ...


class AuditSink(Protocol):
    """The audit hook (recorder.Recorder), called once per message with the outcome."""

    async def record(self, *, mail_from: str, rcpt_tos: list[str], size: int, decision: Decision,
                     outcome: str, reply: str, hold_id: str | None) -> None: ...


class LinkPool(Protocol):
    """Where a leased link goes back (upstream.UpstreamPool)."""

    async def release(self, link: Link, *, reusable: bool = True) -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """One transaction: the envelope the upstream has seen, and the content."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)
    tx: str = ""  # transaction id, quoted in the 250 after a forward
    started: float = 0.0  # time.monotonic() at MAIL: the logged duration
    received: float = 0.0  # time.monotonic() at the end of DATA: the latency metrics

    def log_fields(self) -> dict[str, str | int]:
        return {"sender": self.mail_from, "recipients": len(self.rcpt_tos), "size": len(self.data)}


@dataclass(slots=True)
class UpstreamLeg:
    """A client connection's upstream link, where it came from, and whether the
    upstream has a MAIL transaction open on it."""

    link: Link | None = None
    pool: LinkPool | None = None  # the pool the link came from (survives reloads)
    in_tx: bool = False

    @property
    def ready(self) -> bool:
        """MAIL and RCPT went upstream on a link that is still there."""
        return self.link is not None and self.in_tx

    def detach(self) -> tuple[Link | None, LinkPool | None]:
        """Forget the link and return it with its pool (the caller releases it)."""
        link, pool = self.link, self.pool
        self.link, self.pool, self.in_tx = None, None, False
        return link, pool

    async def drop(self, reusable: bool = False) -> None:
        """Give the link back (reusable) or close it (its state is unknown)."""
        link, pool = self.detach()
        if link is None:
            return
        if pool is not None:
            await pool.release(link, reusable=reusable)
        elif not reusable:
            await link.close()

    async def reset(self) -> None:
        """RSET upstream if a transaction is open there; drop the link if that fails."""
        if self.link is not None and self.in_tx:
            try:
                await self.link.rset()
                self.in_tx = False
            except ForwardError:
                await self.drop()


@dataclass(frozen=True, slots=True)
class Acted:
    """What became of one message and what the client is told."""

    outcome: str  # FORWARDED, HELD, BLOCKED, REFUSED or TEMPFAIL
    reply: str  # the SMTP reply, possibly multi-line ("\r\n" between lines)
    hold_id: str | None = None
    upstream: str = ""  # the upstream's reply to DATA, sanitised, for the log


# ------------------------------------------------------------------ replies


def first_line(text: str) -> str:
    return replies.clean((text or "").split("\n", 1)[0])[:200]


def forward_error_reply(exc: ForwardError) -> str:
    """The upstream could not be reached or went away: a 4xx, counted by kind."""
    metrics.observe_upstream_error(
        "timeout" if isinstance(exc, UpstreamTimeout)
        else "unreachable" if isinstance(exc, UpstreamUnreachable)
        else "busy" if isinstance(exc, UpstreamBusy) else "dropped")
    if isinstance(exc, UpstreamBusy):
        return replies.reply("upstream_busy")
    if isinstance(exc, UpstreamTimeout):
        return replies.reply("upstream_timeout")
    if isinstance(exc, UpstreamUnreachable):
        return replies.reply("upstream_unreachable")
    return replies.reply("upstream_dropped")


def refusal_reply(r: UpstreamReply) -> str:
    """The upstream said no: its 5xx relayed, an auth failure or 4xx as our 451."""
    metrics.observe_upstream_error("tempfail-reply" if r.transient else "refused-reply")
    if r.code in (530, 535, 538, 454):
        return replies.with_upstream("upstream_auth", r.code, r.text)
    if r.transient or not 200 <= r.code < 600:
        return replies.with_upstream("upstream_tempfail", r.code, r.text)
    return replies.relayed(r.code, r.text)


# ------------------------------------------------------------------ acting


async def inspection_failed(message: Message, leg: UpstreamLeg, exc: BaseException) -> Acted:
    """The pipeline raised: never pass what could not be inspected."""
    log.error("internal_error", stage="inspect", error=type(exc).__name__, **message.log_fields(),
              exc_info=exc)
    await leg.reset()
    status = replies.reply("internal_error")
    metrics.observe_transaction(TEMPFAIL, status, time.monotonic() - message.received)
    return Acted(TEMPFAIL, status)


async def act(decision: Decision, message: Message, leg: UpstreamLeg, *,
              holder: HoldSink | None, recorder: AuditSink | None) -> Acted:
    """Forward, hold or block ``message`` as ``decision`` says; log, audit, count."""
    metrics.observe_message(decision, time.monotonic() - message.received)
    if decision.action == PASS:
        acted = await _forward(message, leg)
    elif decision.action == BLOCK:
        await leg.reset()
        acted = Acted(BLOCKED, replies.blocked(decision.rule, decision.reasons, decision.notice))
        _notify_blocked(holder, decision, message)
    else:  # HOLD
        await leg.reset()
        acted = await _hold(decision, message, holder)

    # The outcome is final now (the upstream or the store has the message):
    # bookkeeping that fails must not turn a delivered 250 into a 451, which
    # would make the client send it again.
    try:
        log.info(
            {TEMPFAIL: "tempfailed"}.get(acted.outcome, acted.outcome), **message.log_fields(),
            decision=decision.action, rule=decision.rule, persons=decision.persons, upstream=acted.upstream,
            reply=acted.reply.split("\r\n")[-1][:120], hold_id=acted.hold_id,
            duration_ms=round((time.monotonic() - message.started) * 1000, 1),
        )
    except Exception:  # noqa: BLE001
        pass
    await _record(recorder, decision, message, acted)
    try:
        metrics.observe_transaction(acted.outcome, acted.reply, time.monotonic() - message.received)
    except Exception as exc:  # noqa: BLE001
        log.error("internal_error", stage="metrics", error=type(exc).__name__)
    return acted


def _notify_blocked(holder: HoldSink | None, decision: Decision, message: Message) -> None:
    """The sender's notice of a block (Japanese first), sent in the background by
    the holder; best effort, it never changes the 550."""
    notify = getattr(holder, "notify_blocked", None)
    if notify is None:
        return
    try:
        notify(message.mail_from, list(message.rcpt_tos), message.data, decision)
    except Exception as exc:  # noqa: BLE001
        log.error("internal_error", stage="block_notice", error=type(exc).__name__)


async def _forward(message: Message, leg: UpstreamLeg) -> Acted:
    if leg.link is None:  # receive checks before inspecting; a lost link is a 4xx
        return Acted(TEMPFAIL, replies.reply("upstream_dropped"))
    try:
        r = await leg.link.data(message.data)
    except ForwardError as exc:
        await leg.drop()
        return Acted(TEMPFAIL, forward_error_reply(exc), upstream=str(exc))
    leg.in_tx = False
    upstream = f"{r.code} {first_line(r.text)}"
    if r.ok:
        return Acted(FORWARDED, replies.reply("queued", tx=message.tx), upstream=upstream)
    return Acted(REFUSED if r.permanent else TEMPFAIL, refusal_reply(r), upstream=upstream)


async def _hold(decision: Decision, message: Message, holder: HoldSink | None) -> Acted:
    if holder is None:
        return Acted(TEMPFAIL, replies.reply("hold_unavailable"))
    # The MAIL parameters (SMTPUTF8, BODY=8BITMIME) travel with the held
    # message, so its release declares what the original did.
    opts = {"mail_options": list(message.mail_options)} if message.mail_options else {}
    try:
        hold_id = await holder.hold(message.mail_from, list(message.rcpt_tos), message.data, decision, **opts)
    except Exception as exc:
        log.error("internal_error", stage="hold", error=type(exc).__name__, **message.log_fields(),
                  exc_info=True)
        return Acted(TEMPFAIL, replies.reply("internal_error"))
    return Acted(HELD, replies.reply("held", hold_id=hold_id), hold_id=hold_id)


async def _record(recorder: AuditSink | None, decision: Decision, message: Message, acted: Acted) -> None:
    """Audit hook. A failure here can not undo a delivery, so it is logged loudly
    and the reply stands (a 4xx after an upstream 250 would duplicate the mail)."""
    if recorder is None:
        return
    try:
        await recorder.record(
            mail_from=message.mail_from, rcpt_tos=list(message.rcpt_tos), size=len(message.data),
            decision=decision, outcome=acted.outcome, reply=acted.reply.split("\r\n")[-1],
            hold_id=acted.hold_id,
        )
    except Exception as exc:
        log.error("audit_failed", error=type(exc).__name__, outcome=acted.outcome, exc_info=True)
