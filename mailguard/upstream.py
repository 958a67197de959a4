"""Delivery to the next hop: an SMTP smarthost or a local maildir.

    send_message(upstream_cfg, mail_from, rcpt_tos, data, *, mail_options=(), pool=None)
        -> DeliveryResult                 one complete delivery (hold release, notices)
    UpstreamPool(upstream_cfg)            a few idle connections kept for reuse; the
        acquire() -> Link                 relay leases one per client connection and
        release(link, reusable=...)       drives MAIL/RCPT/DATA/RSET itself

URLs: ``smtp://HOST:PORT`` (plain), ``smtps://HOST:PORT`` (TLS from the first byte),
``smtp+starttls://HOST:PORT`` (STARTTLS required, never silently skipped),
``maildir:PATH`` (maildir.py: files written the Postfix way: tmp/, fsync, link into new/,
fsync the directory). Certificates are verified unless ``upstream.verify_tls =
false``; ``upstream.ca_file`` adds a private CA.

SECURITY: the next hop comes from the configuration only, never from message data.
Upstream reply texts are untrusted: they are returned as received here and
sanitised by replies.py before a client sees them. AUTH credentials come from
``upstream.auth_file`` (one line ``username:password``), never from argv or the
URL. Message bytes are sent as received; aiosmtplib only canonicalises line
endings to CRLF and dot-stuffs, so a bare LF or CR can never end DATA upstream.

DIAGNOSTICS: logs ``upstream_connect_failed`` (host, port, reason) and
``maildir_written`` (file name); never addresses in bulk or content.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from pathlib import Path
from typing import Iterable, Protocol
from urllib.parse import urlsplit

import aiosmtplib

from mailguard.config import UpstreamConfig
from mailguard.errors import (
    ConfigError,
    ForwardError,
    UpstreamBusy,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from mailguard.log import get_logger
from mailguard.maildir import MAILDIR_EXTENSIONS, MaildirLink
from mailguard.records import DeliveryResult, UpstreamReply  # plain reply records; re-exported

log = get_logger(component="upstream")

IDLE_MAX_AGE = 60.0  # seconds an idle pooled connection is trusted; servers drop idle ones
WARM_SPARES = 2  # links dialled ahead of a growing burst (UpstreamPool: warm links)
IDLE_TRIM = 5.0  # seconds an idle link beyond pool_size stays open after a burst
QUIT_TIMEOUT = 5.0


class Link(Protocol):
    """One upstream conversation, driven command by command by the relay."""

    extensions: frozenset[str]

    @property
    def alive(self) -> bool: ...
    async def mail(self, sender: str, options: Iterable[str] = ()) -> UpstreamReply: ...
    async def rcpt(self, recipient: str) -> UpstreamReply: ...
    async def data(self, data: bytes) -> UpstreamReply: ...
    async def rset(self) -> None: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- SMTP


def _path(address: str) -> bytes:
    # aiosmtpd hands over "<>" for the null sender and the bare address otherwise;
    # surrogateescape gives back exactly the bytes the client sent.
    if address in ("", "<>"):
        return b"<>"
    return b"<" + address.encode("utf-8", "surrogateescape") + b">"


# Not an upstream's words: the answer SMTPLink.mail gives itself, without sending,
# when SMTPUTF8 is asked for and this connection's upstream does not offer it.
NO_SMTPUTF8 = UpstreamReply(451, "4.6.7 the upstream does not offer SMTPUTF8; nothing was sent")


def needs_smtputf8(options: Iterable[str]) -> bool:
    return any(o.upper() == "SMTPUTF8" for o in options)


def forwardable_options(options: Iterable[str], extensions: frozenset[str]) -> list[str]:
    """Keep only MAIL parameters the upstream advertised (BODY, SMTPUTF8, SIZE)."""
    keep = []
    for opt in options:
        name = opt.split("=", 1)[0].upper()
        if name == "BODY" and "8bitmime" in extensions:
            keep.append(opt)
        elif name == "SMTPUTF8" and "smtputf8" in extensions:
            keep.append(opt)
        elif name == "SIZE" and "size" in extensions:
            keep.append(opt)
    return keep


class SMTPLink:
    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        self.extensions = frozenset(k.lower() for k in smtp.esmtp_extensions)
        self.idle_since = time.monotonic()
        self.reused = False

    @property
    def alive(self) -> bool:
        return self.smtp.is_connected

    async def _command(self, *args: bytes) -> UpstreamReply:
        try:
            r = await self.smtp.execute_command(*args)
        except asyncio.CancelledError:
            # Our command is on the wire and its reply is still coming: after
            # this, replies would pair with the wrong commands (a stale 250 read
            # as the next one's). The connection is done; never pool it.
            self.smtp.close()
            raise
        except aiosmtplib.SMTPTimeoutError as exc:
            self.smtp.close()
            raise UpstreamTimeout("upstream did not answer in time") from exc
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            self.smtp.close()
            raise ForwardError(f"upstream connection failed: {type(exc).__name__}") from exc
        return UpstreamReply(r.code, r.message)

    async def mail(self, sender: str, options: Iterable[str] = ()) -> UpstreamReply:
        options = list(options)
        if needs_smtputf8(options) and "smtputf8" not in self.extensions:
            # This connection's EHLO lacks SMTPUTF8 (the upstream changed since
            # the relay offered it): dropping the parameter would send UTF-8
            # addresses and headers to a server that never agreed to them.
            return NO_SMTPUTF8
        opts = [o.encode("ascii") for o in forwardable_options(options, self.extensions)]
        return await self._command(b"MAIL", b"FROM:" + _path(sender), *opts)

    async def rcpt(self, recipient: str) -> UpstreamReply:
        return await self._command(b"RCPT", b"TO:" + _path(recipient))

    async def data(self, data: bytes) -> UpstreamReply:
        try:
            r = await self.smtp.data(data)
        except asyncio.CancelledError:
            # The client went away while the upstream had DATA (or its reply)
            # in flight: close so nothing is pooled out of step. The message
            # and its final dot went out in one write, so the upstream either
            # has all of it or none of it, never a part.
            self.smtp.close()
            raise
        except aiosmtplib.SMTPDataError as exc:
            if 200 <= exc.code < 300:
                # A 2xx where 354 (or the final 250) was due: replies are out of
                # step with commands, so this 2xx is not the upstream taking our
                # message. Never relay it as a 250.
                self.smtp.close()
                raise ForwardError(f"upstream reply out of sequence ({exc.code} to DATA)") from exc
            return UpstreamReply(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError as exc:
            self.smtp.close()
            raise UpstreamTimeout("upstream did not answer DATA in time") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.smtp.close()
            raise ForwardError(f"upstream connection failed during DATA: {type(exc).__name__}") from exc
        return UpstreamReply(r.code, r.message)

    async def rset(self) -> None:
        r = await self._command(b"RSET")
        if not r.ok:
            self.smtp.close()
            raise ForwardError(f"upstream answered RSET with {r.code}")

    async def close(self) -> None:
        if not self.smtp.is_connected:
            return
        try:
            await self.smtp.quit(timeout=QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self.smtp.close()


# --------------------------------------------------------------------------- pool


def read_auth_file(path: str) -> tuple[str, str]:
    """``username:password`` on the first line; ConfigError names the key if not."""
    try:
        line = Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise ConfigError(path, "upstream.auth_file", f"cannot read credentials: {exc}") from None
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise ConfigError(path, "upstream.auth_file", "expected one line 'username:password'")
    return user, password


def tls_context(cfg: UpstreamConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
    if not cfg.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UpstreamPool:
    """Upstream links: at most ``max_connections`` open (leased + idle); ``pool_size``
    of them kept idle for reuse once a burst is over.

    Every link that comes back healthy goes idle, so concurrent clients reuse the
    links of a burst instead of closing them (QUIT) and dialling again (connect,
    banner, EHLO) a moment later: with 20 sessions and pool_size 4 that churn was
    one new upstream connection per five messages (issue 15). Idle links beyond
    ``pool_size`` are closed after IDLE_TRIM seconds unused, the rest after
    IDLE_MAX_AGE; the most recently used link is leased first, so the surplus is
    the one that ages out.

    A lease when every link is in use waits for one to come back (or a slot to
    free) for ``connection_wait`` seconds, then raises UpstreamBusy (451 4.4.5):
    1,500 clients no longer open 1,500 connections to the smarthost. Links that
    ``send_message`` opens without a pool (releases, notices) are not counted.

    Warm links: a lease that must dial while other links are in use (a burst)
    has up to WARM_SPARES more dialled in the background, so the burst's next
    transactions skip connect, banner and EHLO; a lone sender never opens one.
    Idle links are closed once unused for IDLE_MAX_AGE.
    """

    def __init__(self, cfg: UpstreamConfig, *, local_hostname: str | None = None) -> None:
        self.cfg = cfg
        self.scheme = cfg.scheme
        self.closed = False
        self._idle: list[SMTPLink] = []
        self._closing: set[asyncio.Task[None]] = set()  # stale links being closed
        self._tls: ssl.SSLContext | None = None
        self._auth: tuple[str, str] | None = None
        self.extensions: frozenset[str] | None = None  # last seen from the upstream
        self.max_connections = max(1, cfg.max_connections)
        self.open = 0  # SMTP links open now: leased, idle, or being dialled
        self._waiters: list[asyncio.Future[None]] = []
        self._spares: set[asyncio.Task[None]] = set()  # warm links being dialled
        self._leased = 0  # SMTP links dialled or taken from idle, not yet released
        self._reaper: asyncio.Task[None] | None = None  # closes links idle too long
        if self.scheme == "maildir":
            self.extensions = MAILDIR_EXTENSIONS
            return
        parts = urlsplit(cfg.url)
        self.host, self.port = parts.hostname or "", parts.port or 25
        if self.scheme in ("smtps", "smtp+starttls"):
            self._tls = tls_context(cfg)
        if cfg.auth_file:
            self._auth = read_auth_file(cfg.auth_file)
        self.local_hostname = local_hostname or socket.getfqdn() or "localhost"

    @property
    def smtputf8(self) -> bool:
        return bool(self.extensions and "smtputf8" in self.extensions)

    async def acquire(self) -> Link:
        if self.scheme == "maildir":
            return MaildirLink(self.cfg.maildir)
        deadline: float | None = None
        while True:
            now = time.monotonic()
            while self._idle:
                link = self._idle.pop()
                if link.alive and now - link.idle_since < IDLE_MAX_AGE:
                    link.reused = True
                    self._leased += 1
                    return link
                self._close_soon(link)
            if self.open < self.max_connections:
                if self._leased > 0:  # no idle link and others in use: a burst
                    self._warm()
                return await self._dial()
            deadline = deadline or now + self.cfg.connection_wait
            await self._wait(deadline)

    async def _wait(self, deadline: float) -> None:
        """Wait until a link comes back or a slot frees; UpstreamBusy at the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise UpstreamBusy(f"all {self.max_connections} upstream connections stayed in use")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._report()
        try:
            await asyncio.wait_for(fut, left)
        except asyncio.TimeoutError:
            raise UpstreamBusy(f"all {self.max_connections} upstream connections stayed in use"
                               f" for {self.cfg.connection_wait:g} s") from None
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
            self._report()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return

    def _gone(self) -> None:
        """One counted link is closed (or its dial failed): a slot is free."""
        self.open = max(0, self.open - 1)
        self._report()
        self._wake()

    def _report(self) -> None:
        from mailguard import metrics

        metrics.set_upstream_connections(self.open, self.max_connections, len(self._waiters))

    def _close_soon(self, link: SMTPLink) -> None:
        # Referenced until done (the loop keeps only weak references to tasks);
        # close() waits for these. The slot is free at once: the link is done.
        self._gone()
        task = asyncio.ensure_future(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed QUIT is nothing to report

    def _warm(self) -> None:
        # Our own dial comes first: a spare never takes this lease's last slot.
        want = min(WARM_SPARES, self.cfg.pool_size) - len(self._idle) - len(self._spares)
        for _ in range(min(want, self.max_connections - self.open - 1)):
            task = asyncio.ensure_future(self._dial_spare())
            self._spares.add(task)
            task.add_done_callback(self._spares.discard)

    async def _dial_spare(self) -> None:
        with contextlib.suppress(ForwardError):  # logged by _dial_counted; a lease dials again
            await self.release(await self._dial())

    def _expiry(self) -> list[tuple[float, SMTPLink]]:
        """(close-at time, link) for each idle link: the oldest beyond pool_size
        after IDLE_TRIM, the rest after IDLE_MAX_AGE (the list is oldest first)."""
        surplus = max(0, len(self._idle) - self.cfg.pool_size)
        return [(link.idle_since + (min(IDLE_TRIM, IDLE_MAX_AGE) if i < surplus else IDLE_MAX_AGE), link)
                for i, link in enumerate(self._idle)]

    async def _reap(self) -> None:
        """Close idle links past their time (_expiry); ends when none is left."""
        while self._idle and not self.closed:
            first = min(at for at, _ in self._expiry())
            # Links released meanwhile may expire sooner: look again within IDLE_TRIM.
            await asyncio.sleep(max(0.05, min(first - time.monotonic(), IDLE_TRIM)))
            now = time.monotonic()
            for link in [link for at, link in self._expiry() if at <= now]:
                self._idle.remove(link)
                self._close_soon(link)
        self._reaper = None

    async def connect(self) -> SMTPLink:
        """A fresh link (never an idle one), within max_connections: an idle link is
        closed to make room, else this waits like ``acquire``."""
        deadline = time.monotonic() + self.cfg.connection_wait
        while self.open >= self.max_connections:
            if self._idle:
                self._close_soon(self._idle.pop(0))
                continue
            await self._wait(deadline)
        return await self._dial()

    async def _dial(self) -> SMTPLink:
        self.open += 1
        self._report()
        try:
            link = await self._dial_counted()
        except BaseException:
            self._gone()
            raise
        self._leased += 1
        return link

    async def _dial_counted(self) -> SMTPLink:
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.cfg.timeout,
            use_tls=self.scheme == "smtps",
            start_tls=self.scheme == "smtp+starttls",
            tls_context=self._tls,
            username=self._auth[0] if self._auth else None,
            password=self._auth[1] if self._auth else None,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except asyncio.CancelledError:
            smtp.close()  # the client went away mid-connect: leak no socket
            raise
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
            smtp.close()
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            log.warning("upstream_connect_failed", host=self.host, port=self.port, reason=reason)
            if isinstance(exc, aiosmtplib.SMTPTimeoutError):
                raise UpstreamTimeout(f"upstream {self.host}:{self.port} did not answer") from exc
            raise UpstreamUnreachable(f"cannot connect to upstream {self.host}:{self.port}") from exc
        link = SMTPLink(smtp)
        self.extensions = link.extensions
        return link

    async def release(self, link: Link, *, reusable: bool = True) -> None:
        if isinstance(link, SMTPLink):
            self._leased = max(0, self._leased - 1)
        if (
            isinstance(link, SMTPLink)
            and reusable
            and not self.closed
            and link.alive
            and self.cfg.pool_size > 0  # 0: the admin wants no reuse at all
        ):
            link.idle_since = time.monotonic()
            self._idle.append(link)
            if self._reaper is None:
                self._reaper = asyncio.ensure_future(self._reap())
            self._wake()
        elif isinstance(link, SMTPLink):
            try:
                await link.close()
            finally:
                self._gone()
        else:
            await link.close()

    async def probe(self) -> None:
        """Connect once so ``extensions`` is known (for offering SMTPUTF8)."""
        if self.extensions is None:
            await self.release(await self.acquire())

    async def close(self) -> None:
        """Close the idle links and wait for stale ones already being closed.

        Each close is a QUIT bounded by QUIT_TIMEOUT; whatever is still pending
        a little after that is cancelled (SMTPLink.close drops the socket then)."""
        self.closed = True
        stop = [*self._spares, *([self._reaper] if self._reaper else [])]
        for task in stop:
            task.cancel()
        await asyncio.gather(*stop, return_exceptions=True)
        idle, self._idle = self._idle, []
        for link in idle:
            self._close_soon(link)
        pending = set(self._closing)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=QUIT_TIMEOUT + 1.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def begin(pool: UpstreamPool, link: Link | None, sender: str, options: Iterable[str]) -> tuple[Link, UpstreamReply]:
    """MAIL FROM upstream on ``link`` (or a fresh lease); a stale pooled link is replaced once.

    A server may close an idle connection at any time; that shows up only when we
    next write. Nothing of this transaction has been sent then, so one retry on a
    fresh connection is safe.
    """
    options = list(options)
    if link is None or not link.alive:
        if link is not None:
            await pool.release(link, reusable=False)
        link = await pool.acquire()
    try:
        return link, await link.mail(sender, options)
    except ForwardError:
        await pool.release(link, reusable=False)
        if not getattr(link, "reused", False):
            raise
    link = await pool.connect()  # maildir links never fail at MAIL, so SMTP only
    try:
        return link, await link.mail(sender, options)
    except ForwardError:
        await pool.release(link, reusable=False)
        raise


async def send_message(
    upstream_cfg: UpstreamConfig,
    mail_from: str,
    rcpt_tos: list[str],
    data: bytes,
    *,
    mail_options: Iterable[str] = (),
    pool: UpstreamPool | None = None,
) -> DeliveryResult:
    """Deliver one message to the configured upstream and return what it did.

    ``data`` is sent as is (line endings canonicalised to CRLF, dot-stuffed on the
    wire); ``mail_from`` may be ``"<>"`` for bounces and notices; ``mail_options``
    are MAIL parameters such as ``BODY=8BITMIME`` or ``SMTPUTF8`` (dropped when the
    upstream does not advertise them). ``pool`` reuses the relay's connections;
    without one a connection is opened and closed for this message.

    Returns a DeliveryResult once the upstream answered 250 to DATA; recipients it
    refused at RCPT are in ``result.refused`` (they got no copy; the rest did).

    Raises:
        UpstreamRefused: the upstream refused MAIL, every recipient, or DATA
            (``code``/``text`` are the upstream's; 4xx = try again later). When
            every recipient was refused, the code is a 4xx if any refusal was 4xx.
        UpstreamUnreachable / UpstreamTimeout / ForwardError: no connection, no
            answer in time, or the connection dropped. The message may count as
            not delivered; after a drop during DATA it could have been (SMTP's
            usual ambiguity), so a retry may duplicate.
    """
    own = pool is None
    pool = pool or UpstreamPool(upstream_cfg)
    link: Link | None = None
    clean = False
    try:
        link, reply = await begin(pool, None, mail_from, mail_options)
        if not reply.ok:
            await link.rset()
            clean = True
            raise UpstreamRefused(reply.code, reply.text)
        accepted: list[str] = []
        refused: dict[str, UpstreamReply] = {}
        for rcpt in rcpt_tos:
            r = await link.rcpt(rcpt)
            if r.ok:
                accepted.append(rcpt)
            else:
                refused[rcpt] = r
        if not accepted:
            await link.rset()
            clean = True
            worst = next((r for r in refused.values() if r.transient), None)
            worst = worst or next(iter(refused.values()), UpstreamReply(554, "no recipients"))
            raise UpstreamRefused(worst.code, worst.text)
        final = await link.data(data)
        clean = True
        if not final.ok:
            raise UpstreamRefused(final.code, final.text)
        return DeliveryResult(final, tuple(accepted), refused)
    finally:
        if link is not None:
            await pool.release(link, reusable=clean)
        if own:
            await pool.close()
