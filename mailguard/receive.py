"""Receiving SMTP: aiosmtpd's SMTP protocol plus the relay's handler hooks.

    RelaySMTP(relay)              one per client connection (aiosmtpd SMTP subclass)
    Relay(config, pipeline, pool, holder=None, recorder=None)
                                  the handler: MAIL/RCPT relayed upstream as they
                                  come, DATA -> pipeline.inspect -> act.act -> reply

Per transaction the upstream sees exactly the client's envelope: MAIL when the
client sends MAIL, one RCPT per client RCPT (its 5xx relayed to the client for
that recipient only), then DATA (pass) or RSET (hold, block): act.py does that
part and picks the reply. 250 goes to the client only after the upstream's 250,
or after the hold store has the message. Every other outcome is a 4xx so the
client keeps the mail.

aiosmtpd is used through its public API: constructor options, the
``line_length_limit`` class attribute, handler hooks, ``smtp_<VERB>`` overrides
(every verb is wrapped to count commands and refuse denied clients),
``push``/``handle_exception``, ``session``/``envelope``/``transport``. The one
exceptions (the DATA reader's access to the connection's StreamReader, the
constructor without per-connection reflection, the address parser) live in
smtp_compat.py with a contract test.

SECURITY: everything from the client is hostile. Only ``server.allowed_clients``
get past the greeting (554 5.7.1). Bounded: commands per connection, recipients
per message (452 4.5.3), message size (SIZE, 552 5.3.4), command timeout. DATA
ends only at CRLF.CRLF (aiosmtpd reads CRLF-terminated lines; a bare LF or CR
never ends a line), long lines are kept (never a 5xx for a line over 998 bytes),
and internal errors are 451 4.3.0, never aiosmtpd's 500. Every reply passes
replies.py and is printable ASCII.

DIAGNOSTICS: structlog events ``connected``, ``client_refused``, ``sender_refused``,
``recipient_refused``, ``tempfailed`` (MAIL, RCPT, DATA before inspection),
``command_limit_reached``, ``internal_error``, ``disconnected`` with conn, tx,
sender, recipient count; act.py logs each message's outcome. Never message content.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import time
from typing import Awaitable, Callable, Coroutine

import structlog
from aiosmtpd.smtp import Envelope, Session

from mailguard import metrics, replies
from mailguard.act import (
    AuditSink,
    HoldSink,
    Inspector,
    Message,
    UpstreamLeg,
    act,
    first_line,
    forward_error_reply,
    inspection_failed,
    refusal_reply,
)
from mailguard.config import Config
from mailguard.durable import free_bytes
from mailguard.errors import ForwardError
from mailguard.log import get_logger
from mailguard.policy import ACTIONS, Decision
from mailguard.smtp_compat import CompatSMTP, init_smtp, read_data
from mailguard.upstream import NO_SMTPUTF8, UpstreamPool, begin, needs_smtputf8

log = get_logger()

READ_CHUNK_LIMIT = 65536  # StreamReader limit: longer lines are read in pieces, not refused
DENIED_COMMAND_BUDGET = 10
PROBE_TIMEOUT = 5.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_conn_ids = itertools.count(1)
_PID = os.getpid()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _new_tx_id() -> str:
    return f"{int(time.time() * 1000):x}-{_PID:x}-{next(_tx_ids):x}"


_tx_ids = itertools.count(1)


class Conversation:
    """Relay state for one client connection (kept on the aiosmtpd Session)."""

    __slots__ = ("conn", "leg", "tx", "started", "transactions", "commands")

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.leg = UpstreamLeg()  # the upstream link this client's transactions use
        self.tx = ""
        self.started = 0.0
        self.transactions = 0
        self.commands = 0


def _conversation(session: Session) -> Conversation:
    conv: Conversation | None = getattr(session, "mailguard", None)
    if conv is None:
        conv = Conversation(next(_conn_ids))
        setattr(session, "mailguard", conv)  # a Session carries its handler's state
    return conv


def _peer_allowed(peer: object, networks: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(peer[0].split("%", 1)[0])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, AttributeError):
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


def _write(transport: asyncio.BaseTransport, line: str) -> None:
    """Write one reply line outside aiosmtpd's push (before or after a session).
    Duck-typed: uvloop's transports are not asyncio.WriteTransport instances."""
    write = getattr(transport, "write", None)
    if write is not None:
        write(line.encode("ascii") + b"\r\n")


SMTPVerb = Callable[["RelaySMTP", "str | None"], Awaitable[None]]


def _counted(verb: str, method: SMTPVerb) -> SMTPVerb:
    """``smtp_<verb>`` that counts against the per-connection command limit and
    answers a denied client 503 (only QUIT goes through for it)."""

    async def smtp_verb(self: RelaySMTP, arg: str | None) -> None:
        if not await self.count_command():
            return
        if self.denied and verb != "QUIT":
            await self.push(replies.reply("denied_command"))
            return
        await method(self, arg)

    # No functools.wraps: aiosmtpd's HELP lists only verbs carrying @syntax help,
    # and the relay has never advertised any.
    smtp_verb.__name__ = smtp_verb.__qualname__ = f"smtp_{verb}"
    return smtp_verb


def _count_commands(cls: type[RelaySMTP]) -> type[RelaySMTP]:
    """Wrap every ``smtp_<VERB>`` the class has (its own and aiosmtpd's) with _counted."""
    for name in [n for n in dir(cls) if n.startswith("smtp_")]:
        setattr(cls, name, _counted(name[len("smtp_"):], getattr(cls, name)))
    return cls


@_count_commands
class RelaySMTP(CompatSMTP):
    """aiosmtpd's SMTP with the relay's access check, limits, DATA reader and replies."""

    # aiosmtpd builds its StreamReader with this limit. It bounds one read, not a
    # line: smtp_DATA below joins the pieces of longer lines.
    line_length_limit = READ_CHUNK_LIMIT

    def __init__(self, relay: Relay) -> None:
        cfg = relay.config.server
        # SMTP.__init__'s work without its per-connection reflection (smtp_compat).
        init_smtp(
            self,
            relay,
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=False,  # decided per EHLO from what the upstream offers
            decode_data=False,
            hostname=cfg.hostname or relay.hostname,
            ident="mailguard",
            timeout=cfg.command_timeout,
            loop=asyncio.get_running_loop(),
        )
        self.relay = relay
        self.max_commands = cfg.max_commands
        self.networks = cfg.networks
        self.denied = False
        self.in_data = False
        self.conv: Conversation | None = None
        self._closing = False
        self.over_limit = False  # refused at connect: server.max_connections were open

    # ------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:  # STARTTLS re-entry (not offered, but be safe)
            super().connection_made(transport)
            return
        limit = self.relay.config.server.max_connections
        if len(self.relay.connections) >= limit:
            # Over server.max_connections: 421 and close, before aiosmtpd starts
            # a session (no banner, no task, nothing held for this client).
            self.over_limit = True
            metrics.observe_connection_refused()
            peer = transport.get_extra_info("peername")
            log.warning("connection_limit_reached", peer=str(peer[0]) if peer else "?", limit=limit)
            _write(transport, replies.reply("too_many_connections"))
            transport.close()
            return
        conv = self.conv = Conversation(next(_conn_ids))
        peer = transport.get_extra_info("peername")
        self.denied = not _peer_allowed(peer, self.networks)
        if self.denied:
            self.max_commands = DENIED_COMMAND_BUDGET
        # Bound here, in this callback's own copy of the context, so the task
        # aiosmtpd starts for the client below inherits the connection id.
        structlog.contextvars.bind_contextvars(conn=conv.conn)
        where = str(peer[0]) if peer else "?"
        if self.denied:
            log.warning("client_refused", peer=where)
        else:
            log.debug("connected", peer=where)  # info: one line per message (act)
        super().connection_made(transport)
        setattr(self.session, "mailguard", conv)  # a Session carries its handler's state
        self.relay.connections.add(self)
        metrics.set_client_connections(len(self.relay.connections), limit)

    def connection_lost(self, error: Exception | None) -> None:
        if self.over_limit:
            return  # never started: nothing of aiosmtpd's to tear down
        super().connection_lost(error)
        self.relay.connections.discard(self)
        metrics.set_client_connections(len(self.relay.connections), self.relay.config.server.max_connections)
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
        _write(self.transport, replies.reply("shutting_down"))
        self.transport.close()

    def abort(self) -> None:
        """Cut the connection now (the client never got a 250 for what is in flight)."""
        cut = getattr(self.transport, "abort", None) or getattr(self.transport, "close", None)
        if cut is not None:
            cut()

    # ------------------------------------------------------------ replies
    async def push(self, status: str | bytes) -> None:  # type: ignore[override]
        if isinstance(status, str):
            if self.denied and status.startswith("220 "):
                status = replies.reply("client_denied")
            status = replies.sanitise_outgoing(replies.translate(status))
            await super().push(status)
        else:
            await super().push(status)
        if self.relay.draining and not self.busy and not str(status).startswith("354"):
            self.close_for_shutdown()

    async def count_command(self) -> bool:
        """Count one command; past the limit answer 421 and close (False)."""
        assert self.conv is not None
        self.conv.commands += 1
        if self.conv.commands <= self.max_commands:
            return True
        log.warning("command_limit_reached", limit=self.max_commands)
        await super().push(replies.reply("too_many_commands"))
        if self.transport is not None:
            self.transport.close()
        return False

    async def handle_exception(self, error: Exception) -> str:
        # The upstream's state is unknown after an internal error: drop the link
        # and start the client's transaction over (it gets 451 4.3.0 now, not
        # after a QUIT that an unwell upstream may take QUIT_TIMEOUT to answer:
        # the link is closed in a tracked task that stop() waits for).
        if self.conv is not None:
            self.relay.drop_link_soon(self.conv)
        self.envelope = Envelope()
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
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.in_data = True
        try:
            content = await read_data(self, self.data_size_limit)
        finally:
            self.in_data = False
        if content is None:
            self.envelope = Envelope()  # the post-DATA state
            await self.push(replies.reply("too_big", limit=self.data_size_limit))
            return
        self.envelope.content = self.envelope.original_content = content
        # The envelope stays until the reply is decided: the transaction is busy
        # (a shutdown lets it finish) while it is inspected and acted on.
        status = await self.relay.handle_DATA(self, self.session, self.envelope)
        self.envelope = Envelope()  # the post-DATA state
        await self.push(status)


class Relay:
    """The aiosmtpd handler: every hook relays to the upstream or answers itself."""

    def __init__(
        self,
        config: Config,
        pipeline: Inspector,
        pool: UpstreamPool,
        holder: HoldSink | None = None,
        recorder: AuditSink | None = None,
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
        self._tasks: set[asyncio.Task[None]] = set()

    def track(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ upstream link
    def drop_link_soon(self, conv: Conversation) -> None:
        """Detach the link now (never reused) and close it in the background."""
        link, pool = conv.leg.detach()
        if link is not None and pool is not None:
            self.track(pool.release(link, reusable=False))

    async def end_conversation(self, conv: Conversation) -> None:
        await conv.leg.reset()
        await conv.leg.drop(reusable=True)
        log.debug("disconnected", commands=conv.commands, transactions=conv.transactions)

    # ------------------------------------------------------------ hooks
    async def handle_HELO(self, server: RelaySMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        await _conversation(session).leg.reset()
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        # EHLO resets the SMTP state (RFC 5321 4.1.4); so must the upstream.
        await _conversation(session).leg.reset()
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        conv = _conversation(session)
        leg = conv.leg
        problem = _address_problem(address, needs_smtputf8(mail_options))
        if problem:
            return replies.reply(problem)
        await leg.reset()
        conv.tx = _new_tx_id()
        conv.started = time.monotonic()
        structlog.contextvars.bind_contextvars(tx=conv.tx)
        if any(o.upper() == "SMTPUTF8" for o in mail_options) and not self.pool.smtputf8:
            return replies.reply("smtputf8_unavailable")
        if leg.pool is not self.pool:  # config reloaded: move to the new pool
            await leg.drop(reusable=True)
        try:
            leg.pool = self.pool
            leg.link, r = await begin(self.pool, leg.link, address, mail_options)
        except ForwardError as exc:
            leg.link = leg.pool = None
            log.warning("tempfailed", stage="MAIL", sender=address, reason=str(exc))
            return forward_error_reply(exc)
        if r is NO_SMTPUTF8:
            log.warning("tempfailed", stage="MAIL", sender=address, reason="upstream no longer offers SMTPUTF8")
            return replies.reply("smtputf8_unavailable")
        if not r.ok:
            log.info("sender_refused", sender=address, upstream=f"{r.code} {first_line(r.text)}")
            return refusal_reply(r)
        leg.in_tx = True
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.reply("sender_ok")

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        leg = _conversation(session).leg
        limit = self.config.server.max_recipients
        if len(envelope.rcpt_tos) >= limit:
            return replies.reply("too_many_recipients", limit=limit)
        problem = _address_problem(address, needs_smtputf8(envelope.mail_options))
        if problem:
            return replies.reply(problem)
        if leg.link is None or not leg.in_tx:
            return replies.reply("upstream_dropped")
        try:
            r = await leg.link.rcpt(address)
        except ForwardError as exc:
            await leg.drop()
            log.warning("tempfailed", stage="RCPT", reason=str(exc))
            return forward_error_reply(exc)
        if not r.ok:
            log.info("recipient_refused", upstream=f"{r.code} {first_line(r.text)}")
            return refusal_reply(r)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.reply("recipient_ok")

    async def handle_RSET(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        conv = _conversation(session)
        await conv.leg.reset()
        await self._release_link(conv)
        return replies.reply("ok")

    async def handle_QUIT(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        return replies.reply("bye")

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        """The message is in: inspect it, then let act forward, hold or block it."""
        conv = _conversation(session)
        conv.transactions += 1
        assert envelope.mail_from is not None and isinstance(envelope.original_content, bytes)
        message = Message(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), data=envelope.original_content,
            mail_options=list(envelope.mail_options), tx=conv.tx, started=conv.started,
            received=time.monotonic(),
        )
        if not conv.leg.ready:
            log.warning("tempfailed", stage="DATA", reason="upstream link lost", **message.log_fields())
            return replies.reply("upstream_dropped")
        if not self._room_for(len(message.data)):
            # A full disk: no 250 whose audit record (or held copy) could not be
            # written. The client keeps the mail and retries (Postfix's queue_minfree).
            log.warning("tempfailed", stage="DATA", reason="store disk nearly full", **message.log_fields())
            await conv.leg.reset()
            await self._release_link(conv)
            return replies.reply("insufficient_storage")
        try:
            decision = await self._inspect(message)
        except Exception as exc:  # never pass what could not be inspected
            return (await inspection_failed(message, conv.leg, exc)).reply
        acted = await act(decision, message, conv.leg, holder=self.holder, recorder=self.recorder)
        await self._release_link(conv)
        return acted.reply

    def _room_for(self, size: int) -> bool:
        """Is there room on the store's disk for this message's records (and a held
        copy)? store.min_free bytes stay free; an unreadable disk counts as full."""
        try:
            free = free_bytes(self.config.store.path)
        except FileNotFoundError:
            return True  # no store directory yet: the store creates it (and fails loudly)
        except OSError:
            return False
        return free >= self.config.store.min_free + 2 * size

    async def _release_link(self, conv: Conversation) -> None:
        """Between transactions the link goes back to the pool, so an idle client
        does not keep one of upstream.max_connections; its next MAIL leases again."""
        if conv.leg.link is not None and not conv.leg.in_tx:
            await conv.leg.drop(reusable=True)

    async def _inspect(self, message: Message) -> Decision:
        decision = await self.pipeline.inspect(message.mail_from, list(message.rcpt_tos), message.data)
        if not isinstance(decision, Decision) or decision.action not in ACTIONS:
            raise TypeError(f"pipeline returned {type(decision).__name__}, not a Decision")
        return decision

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal_error", error=type(error).__name__, exc_info=error)
        return replies.reply("internal_error")
