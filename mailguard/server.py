"""The relay application: services, the listening socket, signals.

    build_services(config) -> Services      pipeline, upstream pool, holder, recorder
    App(config, config_path)                start() -> port, stop(), reload()
    serve(config, config_path) -> int       `mailguard serve`: run until SIGTERM

aiosmtpd's SMTP protocol runs on the application's own asyncio loop
(``loop.create_server``), not in aiosmtpd's threaded Controller.

SIGTERM / SIGINT: stop accepting, close idle connections with 421 4.3.2, let
transactions in flight finish (each connection closes after its current
transaction), then exit 0. After SHUTDOWN_GRACE seconds the rest are cut; they
never got a 250, so their clients still have the mail.

``server.processes`` = N > 1: supervise.py runs N of these on one socket.

SIGHUP: read the configuration file again and build new services. A bad config or
policy is logged and refused; the old services keep running. Connections in
flight finish on the services they started with. ``server.listen`` can not change
without a restart (logged).

SECURITY: the config is validated (config.load_config) before a socket is bound.
DIAGNOSTICS: ``listening``, ``reloaded``, ``reload_refused`` (the whole reason),
``state_write_failed``, ``stopping``, ``stopped``. The start and each reload's
result are also written to <store.path>/relay-state.json for `mailguard status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from mailguard import metrics, supervise
from mailguard.act import Inspector
from mailguard.config import Config, load_config
from mailguard.errors import ConfigError
from mailguard.hold import Holder
from mailguard.recorder import Recorder
from mailguard.log import get_logger
from mailguard.notices import ehlo_name
from mailguard.pipeline import Pipeline
from mailguard.receive import Relay, RelaySMTP
from mailguard.upstream import UpstreamPool

log = get_logger(component="server")

SHUTDOWN_GRACE = 60.0


@dataclass
class Services:
    """What the relay plugs in; rebuilt as a whole on SIGHUP."""

    pipeline: Inspector  # pipeline.Pipeline; tests and benches plug in their own
    pool: UpstreamPool
    holder: Holder | None = None  # None: a hold is 451 4.7.0 (the pass-only relay of benches)
    recorder: Recorder | None = None  # None: no audit record per message

    async def close(self) -> None:
        # Tests and benches plug in holders of their own (act.HoldSink): only a
        # real Holder has expiry to stop and a notice pool to close.
        if isinstance(self.holder, Holder):
            await self.holder.aclose()  # stops expiry, lets notices in flight finish
            if self.holder.notifier.pool is not None:
                await self.holder.notifier.pool.close()
        if hasattr(self.pipeline, "aclose"):
            await self.pipeline.aclose()  # scans in flight finish, then its workers stop
        await self.pool.close()


def build_services(config: Config, *, recover: bool = True, expiry: bool = True) -> Services:
    """Build every service from one config. Raises (ConfigError, PolicyError, ...)
    when something is wrong, so a reload can refuse it and keep the old ones.

    ``recover`` runs the store's crash recovery (serve's start). A SIGHUP reload
    skips it: nothing crashed, and recovery beside this process's own holds in
    flight could take a temporary file in the instant between its O_EXCL create
    and its flock (that hold would then 451), while blocking the event loop
    for a scan of the whole store.

    ``expiry`` runs the periodic expiry here; with ``server.processes`` > 1 only
    worker 0 does (supervise.py)."""
    pipeline = Pipeline(config)
    pool = UpstreamPool(config.upstream, local_hostname=local_hostname(config))
    # The hold store (issue 6): recovery first (safe beside a running CLI: it only
    # touches files nobody holds a lock on), then periodic expiry on this loop.
    holder = Holder(config)
    # Notices reuse links of a pool of their own (not a new connection and pool
    # each); kept apart so they never wait for, or take, a relay transaction's slot.
    holder.notifier.pool = UpstreamPool(config.upstream, local_hostname=ehlo_name(config.server))
    if recover:
        holder.recover()
    if expiry:
        holder.start()
    return Services(pipeline=pipeline, pool=pool, holder=holder, recorder=Recorder(config, holder.audit))


_fqdn: str | None = None
IO_THREADS = 16  # serve's threads for blocking store and audit work


def local_hostname(config: Config) -> str:
    global _fqdn
    if config.server.hostname:
        return config.server.hostname
    if _fqdn is None:
        _fqdn = socket.getfqdn() or "localhost"
    return _fqdn


def quiet_aiosmtpd() -> None:
    # aiosmtpd logs every command line (addresses included) to "mail.log" at INFO;
    # our own structured events replace it.
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.CRITICAL)
    mail_log.propagate = False
    mail_log.addHandler(logging.NullHandler())


class App:
    def __init__(self, config: Config, config_path: str | None = None,
                 services: Services | None = None, *, sock: socket.socket | None = None,
                 worker: int | None = None) -> None:
        self.config = config
        self.config_path = config_path
        # A worker of supervise.py: the parent's socket; store recovery only in
        # worker 0's first start, expiry only in worker 0, metrics in the parent.
        self.sock = sock
        self.worker = worker
        self.expiry = worker in (None, 0)
        self.services = services or build_services(
            config, recover=worker is None or bool(os.environ.get(supervise.ENV_RECOVER)),
            expiry=self.expiry)
        self.relay = Relay(
            config, self.services.pipeline, self.services.pool,
            holder=self.services.holder, recorder=self.services.recorder,
            hostname=local_hostname(config),
        )
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self._stopped = asyncio.Event()
        self.metrics_server: metrics.MetricsServer | None = None

    async def start(self, port: int | None = None) -> int:
        """Bind and start accepting; ``port=0`` picks a free port (tests). Returns the port."""
        quiet_aiosmtpd()
        loop = asyncio.get_running_loop()
        host = self.config.server.host
        port = self.config.server.port if port is None else port
        if self.sock is not None:
            self.server = await loop.create_server(lambda: RelaySMTP(self.relay), sock=self.sock)
        else:
            self.server = await loop.create_server(lambda: RelaySMTP(self.relay), host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("listening", address=f"{host}:{self.port}", upstream=self.config.upstream.url,
                 event_loop=type(loop).__module__.partition(".")[0],
                 **({"worker": self.worker} if self.worker is not None else {}))
        self._record_state("started")
        if self.worker is None:
            self._start_metrics()  # with workers, the parent serves the one endpoint
        else:
            supervise.ready(self.worker)
        return self.port

    def _start_metrics(self) -> None:
        """The Prometheus endpoint (issue 7), only when metrics.listen is set; a
        change of metrics.listen needs a restart, like server.listen."""
        if not self.config.metrics.listen or self.metrics_server is not None:
            return
        self.metrics_server = metrics.start_server(self.config.metrics.listen)
        # Read at scrape time from the current services' store (a CLI release
        # in another process shows up at the next scrape).
        metrics.set_held_source(self._held_counts)

    def _held_counts(self) -> tuple[int, float | None]:
        holder = self.services.holder
        if holder is None:  # the scrape goes on without the held-queue figures
            raise RuntimeError("no hold store in this relay")
        return metrics.held_counts(holder.store)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, let transactions in flight finish, close everything."""
        if self.server is None:
            return
        log.info("stopping", connections=len(self.relay.connections))
        self.relay.draining = True
        self.server.close()
        for conn in list(self.relay.connections):
            if not conn.busy:
                conn.close_for_shutdown()
        deadline = asyncio.get_running_loop().time() + grace
        while self.relay.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.relay.connections):
            conn.abort()
        await self.relay.wait_tasks()
        await self.services.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        self.server = None
        log.info("stopped")
        self._stopped.set()

    def reload(self) -> bool:
        """Re-read the config file and rebuild the services; keep the old on error."""
        try:
            config = load_config(self.config_path)
            services = build_services(config, recover=False, expiry=self.expiry)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running config
            # The whole reason (file:line and why): log.py does not cut this event short.
            log.error("reload_refused", error=type(exc).__name__, reason=str(exc))
            self._record_state("refused", error=f"{type(exc).__name__}: {exc}")
            return False
        if config.server.listen != self.config.server.listen:
            log.warning("restart_needed", key="server.listen", running=self.config.server.listen)
        old = self.services
        self.config, self.services = config, services
        r = self.relay
        r.config, r.pipeline, r.pool = config, services.pipeline, services.pool
        r.holder, r.recorder = services.holder, services.recorder
        # Links in flight go back to the old pool, which now closes them on release.
        r.track(old.close())
        log.info("reloaded", source=config.source, upstream=config.upstream.url)
        self._record_state("reloaded")
        return True

    def _record_state(self, result: str, error: str = "") -> None:
        """Leave the start / reload result and the policy in force where
        `mailguard status` reads it (relaystate.py); a failed write is logged."""
        from mailguard.relaystate import policy_fingerprint, record_state

        policy = getattr(self.services.pipeline, "policy", None)
        try:
            self._state = record_state(
                self.config.store.path, result=result, source=self.config.source, error=error,
                policy=None if result == "refused" or policy is None
                else policy_fingerprint(policy, self.config.policy.dir),
                previous=getattr(self, "_state", None))
        except OSError as exc:
            log.warning("state_write_failed", file=str(exc.filename or self.config.store.path),
                        error=exc.strerror or str(exc))

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        stopping: list[asyncio.Task] = []

        async def stop_once_started() -> None:
            await started.wait()
            await self.stop()

        def on_stop() -> None:
            if not stopping:
                stopping.append(loop.create_task(stop_once_started()))

        def on_reload() -> None:
            if started.is_set():  # before that, the config being started is the newest
                self.reload()

        # Handlers before the socket listens: a SIGTERM right after the port opens
        # (systemd stopping a unit it just started, a test) drains and exits 0 like
        # any other, instead of killing the process with the default action.
        loop.add_signal_handler(signal.SIGTERM, on_stop)
        loop.add_signal_handler(signal.SIGINT, on_stop)
        loop.add_signal_handler(signal.SIGHUP, on_reload)
        try:
            await self.start()
        except BaseException:
            for task in stopping:
                task.cancel()
            raise
        started.set()
        await self._stopped.wait()
        return 0


def serve(config: Config, config_path: str | None = None) -> int:
    """One process, a supervised worker (its parent passed the socket), or,
    with ``server.processes`` > 1, the supervisor of that many workers."""
    inherited = supervise.worker_socket()
    if inherited is None and config.server.processes > 1:
        return supervise.supervise(config, config_path)
    sock, worker = inherited if inherited is not None else (None, None)

    async def main() -> int:
        # Holds and audit records wait on fsync in threads; with the default pool
        # (cores + 4 threads) concurrent transactions queued for a thread instead
        # of sharing an audit write (group commit) and the store's fsyncs.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="mailguard-io"))
        return await App(config, config_path, sock=sock, worker=worker).run()

    with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop, config.source)) as runner:
        return runner.run(main())


def loop_factory(choice: str, config_source: str = "") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """server.event_loop -> a loop factory for asyncio.Runner (None: asyncio's own).

    uvloop's transports and event loop are C: the relay spends a fifth less CPU per
    message (bench/relay.py). "auto" falls back to asyncio when uvloop cannot be
    imported; "uvloop" insists (ConfigError names the key)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(config_source, "server.event_loop",
                              f'"uvloop" is not importable ({exc}); install it or set "auto"') from None
        return None
    return uvloop.new_event_loop
