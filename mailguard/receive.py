"""Receiving SMTP: aiosmtpd's SMTP protocol plus the relay's handler hooks.

    RelaySMTP(relay, config)      one per client connection (aiosmtpd SMTP subclass)
    Relay(config, pipeline, pool, holder=None, recorder=None)
                                  the handler: MAIL/RCPT relayed upstream as they
                                  come, DATA -> pipeline.inspect -> DATA or RSET
                                  upstream -> reply

Per transaction the upstream sees exactly the client's envelope: MAIL when the
client sends MAIL, one RCPT per client RCPT (its 5xx relayed to the client for
that recipient only), then DATA (pass) or RSET (hold, block). 250 goes to the
client only after the upstream's 250, or after the hold store has the message.
Every other outcome is a 4xx so the client keeps the mail.

SECURITY: everything from the client is hostile. Only ``server.allowed_clients``
get past the greeting (554 5.7.1). Bounded: commands per connection, recipients
per message (452 4.5.3), message size (SIZE, 552 5.3.4), command timeout. DATA
ends only at CRLF.CRLF (aiosmtpd reads CRLF-terminated lines; a bare LF or CR
never ends a line), long lines are kept (never a 5xx for a line over 998 bytes),
and internal errors are 451 4.3.0, never aiosmtpd's 500. Every reply passes
replies.py and is printable ASCII.

DIAGNOSTICS: structlog events ``connected``, ``client_refused``, ``forwarded``,
``blocked``, ``held``, ``tempfailed``, ``internal_error``, ``disconnected`` with
conn, tx, sender, recipient count, size, decision, rule, upstream reply (code and
sanitised first line) and duration. Never message content.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import time
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from mailguard import replies
from mailguard import metrics
from mailguard.errors import ForwardError, UpstreamTimeout, UpstreamUnreachable
from mailguard.log import get_logger
from mailguard.policy import ACTIONS, BLOCK, HOLD, PASS, Decision
from mailguard.upstream import NO_SMTPUTF8, Link, UpstreamPool, UpstreamReply, begin, needs_smtputf8

log = get_logger()

READ_CHUNK_LIMIT = 65536  # StreamReader limit: longer lines are read in pieces, not refused
DENIED_COMMAND_BUDGET = 10
PROBE_TIMEOUT = 5.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_conn_ids = itertools.count(1)
_PID = os.getpid()


def _new_tx_id() -> str:
    return f"{int(time.time() * 1000):x}-{_PID:x}-{next(_tx_ids):x}"


_tx_ids = itertools.count(1)


class Conversation:
    """Relay state for one client connection (kept on the aiosmtpd Session)."""

    __slots__ = ("conn", "link", "pool", "in_tx", "tx", "started", "transactions", "commands")

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.link: Link | None = None
        self.pool: UpstreamPool | None = None  # the pool the link came from (survives reloads)
        self.in_tx = False  # the upstream has an open MAIL transaction
        self.tx = ""
        self.started = 0.0
        self.transactions = 0
        self.commands = 0


def _conversation(session: Session) -> Conversation:
    conv = getattr(session, "mailguard", None)
    if conv is None:
        conv = session.mailguard = Conversation(next(_conn_ids))
    return conv


def _peer_allowed(peer: Any, networks: tuple) -> bool:
    try:
        addr = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


def _address_problem(address: str, smtputf8: bool) -> str | None:
    """The reply name for an envelope address the relay must not take, else None.

    Control characters (NUL included) never; bytes that are not UTF-8 (aiosmtpd
    hands them over surrogate-escaped) never: no store, log or upstream can
    carry them faithfully. Non-ASCII only in a transaction that declared
    SMTPUTF8 (RFC 6531 3.4), as Postfix answers it."""
    if _CONTROL.search(address):
        return "bad_address"
    if address.isascii():
        return None
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return "bad_address"
    return None if smtputf8 else "address_needs_smtputf8"


def _first_line(text: str) -> str:
    return replies.clean((text or "").split("\n", 1)[0])[:200]


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with the relay's access check, limits, DATA reader and replies."""

    def __init__(self, relay: "Relay", **kwargs: Any) -> None:
        cfg = relay.config.server
        # Set before SMTP.__init__ builds its StreamReader from it. It bounds one
        # read, not a line: smtp_DATA below joins the pieces of longer lines.
        self.line_length_limit = READ_CHUNK_LIMIT
        super().__init__(
            relay,
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=False,  # decided per EHLO from what the upstream offers
            decode_data=False,
            hostname=cfg.hostname or relay.hostname,
            ident="mailguard",
            timeout=cfg.command_timeout,
            loop=asyncio.get_running_loop(),
            **kwargs,
        )
        self.relay = relay
        self.max_commands = cfg.max_commands
        self.networks = cfg.networks
        self.denied = False
        self.in_data = False
        self.conv: Conversation | None = None
        self._closing = False
        # Count every command against the per-connection limit.
        self._smtp_methods = {k: self._counted(v) for k, v in self._smtp_methods.items()}

    # ------------------------------------------------------------ connection
    def connection_made(self, transport: Any) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            return  # STARTTLS re-entry (not offered, but be safe)
        self.conv = _conversation(self.session)
        self.relay.connections.add(self)
        if not _peer_allowed(self.session.peer, self.networks):
            self.denied = True
            self.max_commands = DENIED_COMMAND_BUDGET
            refuse = self._counted(self._refuse)
            self._smtp_methods = {k: (v if k == "QUIT" else refuse) for k, v in self._smtp_methods.items()}

    async def _handle_client(self) -> None:
        structlog.contextvars.bind_contextvars(conn=self.conv.conn if self.conv else 0)
        peer = self.session.peer
        if self.denied:
            log.warning("client_refused", peer=str(peer[0]) if peer else "?")
        else:
            log.info("connected", peer=str(peer[0]) if peer else "?")
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.relay.connections.discard(self)
        if self.conv is not None:
            self.relay.track(self.relay.end_conversation(self.conv))

    @property
    def busy(self) -> bool:
        """A transaction is open: MAIL accepted and not yet finished or reset."""
        return self.in_data or bool(self.envelope and self.envelope.mail_from)

    def close_for_shutdown(self) -> None:
        if self._closing or self.transport is None:
            return
        self._closing = True
        self._writer.write(replies.reply("shutting_down").encode("ascii") + b"\r\n")
        self.transport.close()

    # ------------------------------------------------------------ replies
    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if self.denied and status.startswith("220 "):
                status = replies.reply("client_denied")
            status = replies.sanitise_outgoing(replies.translate(status))
        await super().push(status)
        if self.relay.draining and not self.busy and not str(status).startswith("354"):
            self.close_for_shutdown()

    async def _refuse(self, arg: str | None) -> None:
        await self.push(replies.reply("denied_command"))

    def _counted(self, method: Any) -> Any:
        async def counted(arg: str | None) -> None:
            self.conv.commands += 1
            if self.conv.commands > self.max_commands:
                log.warning("command_limit_reached", limit=self.max_commands)
                await super(RelaySMTP, self).push(replies.reply("too_many_commands"))
                self.transport.close()
                return
            await method(arg)
        return counted

    async def handle_exception(self, error: Exception) -> str:
        # The upstream's state is unknown after an internal error: drop the link
        # and start the client's transaction over (it gets 451 4.3.0 now, not
        # after a QUIT that an unwell upstream may take QUIT_TIMEOUT to answer:
        # the link is closed in a tracked task that stop() waits for).
        if self.conv is not None:
            self.relay.drop_link_soon(self.conv)
        self._set_rset_state()
        return await super().handle_exception(error)

    # ------------------------------------------------------------ EHLO
    async def smtp_EHLO(self, hostname: str) -> None:
        # SMTPUTF8 only when the upstream offers it (maildir does). The pool knows
        # from its last connection; the first EHLO after start asks once, briefly.
        pool = self.relay.pool
        if pool.extensions is None:
            try:
                await asyncio.wait_for(pool.probe(), min(PROBE_TIMEOUT, pool.cfg.timeout))
            except (ForwardError, asyncio.TimeoutError):
                pass  # not offered this time; MAIL will tempfail if it is still down
            except Exception as exc:  # a probe must not break EHLO; MAIL reports it
                log.error("internal_error", stage="probe", error=type(exc).__name__)
        self.enable_SMTPUTF8 = pool.smtputf8
        await super().smtp_EHLO(hostname)

    # ------------------------------------------------------------ DATA
    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA, except: long lines are joined, not refused (no 5xx for
        a line over 998 bytes), and the size limit answers 552 5.3.4 from replies.py.
        Only a line that is exactly "." + CRLF ends the data: bare LF or CR never
        ends a line here, so <LF>.<LF>, <LF>.<CR><LF> and <CR>.<CR> stay content."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.in_data = True
        try:
            content = await self._read_data()
        finally:
            self.in_data = False
        if content is None:
            self._set_post_data_state()
            await self.push(replies.reply("too_big", limit=self.data_size_limit))
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(replies.reply("ok") if status is MISSING else status)

    async def _read_data(self) -> bytes | None:
        """Read DATA up to the CRLF "." CRLF line; None if over the size limit.

        Fast path: one ``readuntil(CRLF "." CRLF)`` per buffer-full instead of one
        await per line. The only terminator that search can miss is one right at
        the start of the unread buffer (its CRLF already consumed), so whenever what
        was consumed ends a line, the next bytes are looked at one by one first.
        """
        reader, limit = self._reader, self.data_size_limit
        pieces: list[bytes] = []
        received = 0
        too_big = False
        tail = b"\r\n"  # the last two bytes consumed; DATA starts at a line start
        try:
            while True:
                if tail == b"\r\n":
                    piece = await reader.readexactly(1)
                    if piece == b".":
                        piece += await reader.readexactly(2)
                        if piece == b".\r\n":
                            break
                elif tail.endswith(b"\r"):
                    piece = await reader.readexactly(1)  # a CRLF split between reads
                else:
                    try:
                        piece = await reader.readuntil(b"\r\n.\r\n")
                    except asyncio.LimitOverrunError as e:
                        piece = await reader.read(e.consumed)  # no end yet: take it, go on
                    else:
                        piece = piece[:-3]  # keep the last line's CRLF, drop "." CRLF
                        received += len(piece)
                        pieces.append(piece)
                        break
                received += len(piece)
                if not too_big:
                    too_big = bool(limit) and received > limit
                    pieces.clear() if too_big else pieces.append(piece)  # over: drain, keep nothing
                tail = (tail + piece)[-2:]
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("client closed the connection during DATA") from None
        except asyncio.CancelledError:
            self._writer.close()
            raise
        if too_big or (limit and received > limit):
            return None
        data = b"".join(pieces)
        # RFC 5321 4.5.2: a line starting with "." loses that one dot. Lines end at
        # CRLF only, exactly as the terminator search above sees them.
        if data.startswith(b"."):
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n")


class Relay:
    """The aiosmtpd handler: every hook relays to the upstream or answers itself."""

    def __init__(
        self,
        config: Any,
        pipeline: Any,
        pool: UpstreamPool,
        holder: Any = None,
        recorder: Any = None,
        *,
        hostname: str = "",
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.pool = pool
        self.holder = holder
        self.recorder = recorder
        self.hostname = hostname or config.server.hostname or "localhost"
        self.connections: set[RelaySMTP] = set()
        self.draining = False
        self._tasks: set[asyncio.Task] = set()

    def track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ upstream link
    async def _drop_link(self, conv: Conversation, reusable: bool = False) -> None:
        link, pool = conv.link, conv.pool
        conv.link, conv.pool, conv.in_tx = None, None, False
        if link is not None and pool is not None:
            await pool.release(link, reusable=reusable)

    def drop_link_soon(self, conv: Conversation) -> None:
        """Detach the link now (never reused) and close it in the background."""
        link, pool = conv.link, conv.pool
        conv.link, conv.pool, conv.in_tx = None, None, False
        if link is not None and pool is not None:
            self.track(pool.release(link, reusable=False))

    async def _reset_upstream(self, conv: Conversation) -> None:
        """RSET upstream if a transaction is open there; drop the link if that fails."""
        if conv.link is not None and conv.in_tx:
            try:
                await conv.link.rset()
                conv.in_tx = False
            except ForwardError:
                await self._drop_link(conv)

    async def end_conversation(self, conv: Conversation) -> None:
        await self._reset_upstream(conv)
        await self._drop_link(conv, reusable=True)
        log.info("disconnected", commands=conv.commands, transactions=conv.transactions)

    @staticmethod
    def _forward_error_reply(exc: ForwardError) -> str:
        metrics.observe_upstream_error(
            "timeout" if isinstance(exc, UpstreamTimeout)
            else "unreachable" if isinstance(exc, UpstreamUnreachable) else "dropped")
        if isinstance(exc, UpstreamTimeout):
            return replies.reply("upstream_timeout")
        if isinstance(exc, UpstreamUnreachable):
            return replies.reply("upstream_unreachable")
        return replies.reply("upstream_dropped")

    @staticmethod
    def _refusal_reply(r: UpstreamReply) -> str:
        metrics.observe_upstream_error("tempfail-reply" if r.transient else "refused-reply")
        if r.code in (530, 535, 538, 454):
            return replies.with_upstream("upstream_auth", r.code, r.text)
        if r.transient or not 200 <= r.code < 600:
            return replies.with_upstream("upstream_tempfail", r.code, r.text)
        return replies.relayed(r.code, r.text)

    # ------------------------------------------------------------ hooks
    async def handle_HELO(self, server: RelaySMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        await self._reset_upstream(_conversation(session))
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        # EHLO resets the SMTP state (RFC 5321 4.1.4); so must the upstream.
        await self._reset_upstream(_conversation(session))
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        conv = _conversation(session)
        problem = _address_problem(address, needs_smtputf8(mail_options))
        if problem:
            return replies.reply(problem)
        await self._reset_upstream(conv)
        conv.tx = _new_tx_id()
        conv.started = time.monotonic()
        structlog.contextvars.bind_contextvars(tx=conv.tx)
        if any(o.upper() == "SMTPUTF8" for o in mail_options) and not self.pool.smtputf8:
            return replies.reply("smtputf8_unavailable")
        if conv.pool is not self.pool:  # config reloaded: move to the new pool
            await self._drop_link(conv, reusable=True)
        try:
            conv.pool = self.pool
            conv.link, r = await begin(self.pool, conv.link, address, mail_options)
        except ForwardError as exc:
            conv.link = conv.pool = None
            log.warning("tempfailed", stage="MAIL", sender=address, reason=str(exc))
            return self._forward_error_reply(exc)
        if r is NO_SMTPUTF8:
            log.warning("tempfailed", stage="MAIL", sender=address, reason="upstream no longer offers SMTPUTF8")
            return replies.reply("smtputf8_unavailable")
        if not r.ok:
            log.info("sender_refused", sender=address, upstream=f"{r.code} {_first_line(r.text)}")
            return self._refusal_reply(r)
        conv.in_tx = True
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.reply("sender_ok")

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        conv = _conversation(session)
        limit = self.config.server.max_recipients
        if len(envelope.rcpt_tos) >= limit:
            return replies.reply("too_many_recipients", limit=limit)
        problem = _address_problem(address, needs_smtputf8(envelope.mail_options))
        if problem:
            return replies.reply(problem)
        if conv.link is None or not conv.in_tx:
            return replies.reply("upstream_dropped")
        try:
            r = await conv.link.rcpt(address)
        except ForwardError as exc:
            await self._drop_link(conv)
            log.warning("tempfailed", stage="RCPT", reason=str(exc))
            return self._forward_error_reply(exc)
        if not r.ok:
            log.info("recipient_refused", upstream=f"{r.code} {_first_line(r.text)}")
            return self._refusal_reply(r)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.reply("recipient_ok")

    async def handle_RSET(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        await self._reset_upstream(_conversation(session))
        return replies.reply("ok")

    async def handle_QUIT(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        return replies.reply("bye")

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        conv = _conversation(session)
        conv.transactions += 1
        data: bytes = envelope.original_content
        mail_from, rcpt_tos = envelope.mail_from, list(envelope.rcpt_tos)
        mail_options = list(envelope.mail_options)
        fields = dict(sender=mail_from, recipients=len(rcpt_tos), size=len(data))
        data_done = time.monotonic()
        if conv.link is None or not conv.in_tx:
            log.warning("tempfailed", stage="DATA", reason="upstream link lost", **fields)
            return replies.reply("upstream_dropped")

        try:
            decision = await self._inspect(mail_from, rcpt_tos, data)
        except Exception as exc:  # never pass what could not be inspected
            log.error("internal_error", stage="inspect", error=type(exc).__name__, **fields, exc_info=True)
            await self._reset_upstream(conv)
            metrics.observe_transaction("tempfail", replies.reply("internal_error"), time.monotonic() - data_done)
            return replies.reply("internal_error")
        metrics.observe_message(decision, time.monotonic() - data_done)

        hold_id = None
        upstream_reply = ""
        if decision.action == PASS:
            try:
                r = await conv.link.data(data)
            except ForwardError as exc:
                await self._drop_link(conv)
                outcome, status = "tempfail", self._forward_error_reply(exc)
                upstream_reply = str(exc)
            else:
                conv.in_tx = False
                upstream_reply = f"{r.code} {_first_line(r.text)}"
                if r.ok:
                    outcome, status = "forwarded", replies.reply("queued", tx=conv.tx)
                else:
                    outcome = "refused" if r.permanent else "tempfail"
                    status = self._refusal_reply(r)
        elif decision.action == BLOCK:
            await self._reset_upstream(conv)
            outcome, status = "blocked", replies.blocked(decision.rule, decision.reasons, decision.notice)
        else:  # HOLD
            await self._reset_upstream(conv)
            if self.holder is None:
                outcome, status = "tempfail", replies.reply("hold_unavailable")
            else:
                # The MAIL parameters (SMTPUTF8, BODY=8BITMIME) travel with the held
                # message, so its release declares what the original did.
                opts = {"mail_options": list(mail_options)} if mail_options else {}
                try:
                    hold_id = await self.holder.hold(mail_from, rcpt_tos, data, decision, **opts)
                except Exception as exc:
                    log.error("internal_error", stage="hold", error=type(exc).__name__, **fields, exc_info=True)
                    outcome, status = "tempfail", replies.reply("internal_error")
                else:
                    outcome, status = "held", replies.reply("held", hold_id=hold_id)

        # The outcome is final now (the upstream or the store has the message):
        # bookkeeping that fails must not turn a delivered 250 into a 451, which
        # would make the client send it again.
        try:
            log.info(
                {"tempfail": "tempfailed"}.get(outcome, outcome), **fields, decision=decision.action,
                rule=decision.rule, upstream=upstream_reply, reply=status.split("\r\n")[-1][:120],
                hold_id=hold_id, duration_ms=round((time.monotonic() - conv.started) * 1000, 1),
            )
        except Exception:  # noqa: BLE001
            pass
        await self._record(mail_from, rcpt_tos, len(data), decision, outcome, status, hold_id)
        try:
            metrics.observe_transaction(outcome, status, time.monotonic() - data_done)
        except Exception as exc:  # noqa: BLE001
            log.error("internal_error", stage="metrics", error=type(exc).__name__)
        return status

    async def _inspect(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> Decision:
        decision = await self.pipeline.inspect(mail_from, rcpt_tos, data)
        if not isinstance(decision, Decision) or decision.action not in ACTIONS:
            raise TypeError(f"pipeline returned {type(decision).__name__}, not a Decision")
        return decision

    async def _record(self, mail_from: str, rcpt_tos: list[str], size: int, decision: Decision,
                      outcome: str, status: str, hold_id: str | None) -> None:
        """Audit hook. A failure here can not undo a delivery, so it is logged loudly
        and the reply stands (a 4xx after an upstream 250 would duplicate the mail)."""
        if self.recorder is None:
            return
        try:
            await self.recorder.record(
                mail_from=mail_from, rcpt_tos=rcpt_tos, size=size, decision=decision,
                outcome=outcome, reply=status.split("\r\n")[-1], hold_id=hold_id,
            )
        except Exception as exc:
            log.error("audit_failed", error=type(exc).__name__, outcome=outcome, exc_info=True)

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal_error", error=type(error).__name__, exc_info=error)
        return replies.reply("internal_error")
