"""`[server] processes = N`: N serve processes on one listening socket (issue 15).

    supervise(config, config_path) -> int    the parent: bind, start N workers,
                                             restart a worker that dies, pass
                                             SIGHUP and SIGTERM/SIGINT on
    worker_socket() -> (socket, index) | None   in a worker: the inherited socket

The parent binds ``server.listen`` once and starts each worker as a fresh
``python -m mailguard serve`` with the socket inherited (pass_fds) and its
index in the environment; the kernel spreads accepted connections over the
workers. The parent holds no store or audit handle while workers run except a
read-only count for the metrics page. Store recovery runs once, in worker 0's
first start, before any other worker is started; periodic expiry runs in
worker 0 only (a restarted worker 0 takes it up again). The hold store
(flock + SQLite) and the audit log (flock around each append) already take
several writers: the CLI is one.

Metrics: workers write prometheus_client's multiprocess files under a private
directory; the parent alone serves ``metrics.listen``, summing them, plus the
held-queue gauges read from the store at scrape time.

SIGTERM / SIGINT: passed to every worker, which drains as a single serve does;
the parent exits 0 when all have. SIGHUP: passed to every worker (each
re-reads the config; ``server.processes`` itself needs a restart).

DIAGNOSTICS: ``workers_started``, ``worker_exited`` (index, pid, status),
``worker_restarted``, ``stopping``, ``stopped``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from mailguard.config import Config
from mailguard.log import get_logger

log = get_logger(component="supervise")

ENV_FD = "MAILGUARD_LISTEN_FD"
ENV_WORKER = "MAILGUARD_WORKER"
ENV_READY_FD = "MAILGUARD_READY_FD"
ENV_RECOVER = "MAILGUARD_RECOVER"
ENV_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
RESTART_BACKOFF = 1.0  # seconds before restarting a worker that died young
STOP_WAIT = 90.0  # SHUTDOWN_GRACE plus margin


def worker_socket() -> tuple[socket.socket, int] | None:
    """In a worker: the listening socket the parent passed, and this worker's index."""
    fd = os.environ.get(ENV_FD)
    if fd is None:
        return None
    sock = socket.socket(fileno=int(fd))
    sock.setblocking(False)
    return sock, int(os.environ.get(ENV_WORKER, "0"))


def _bind(config: Config) -> socket.socket:
    host, port = config.server.host, config.server.port
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.set_inheritable(True)
    return sock


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0


def supervise(config: Config, config_path: str | None) -> int:
    pending: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        pending.append(signum)

    # Handlers before the socket listens: a SIGTERM the moment the port opens is a
    # clean stop (handled once the first worker is up), not death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    sock = _bind(config)
    metrics_dir = tempfile.mkdtemp(prefix="mailguard-metrics-")
    env = {**os.environ, ENV_FD: str(sock.fileno()), ENV_METRICS_DIR: metrics_dir}
    argv = [sys.executable, "-m", "mailguard"] + (["-c", config_path] if config_path else []) + ["serve"]
    workers = [_Worker(i) for i in range(config.server.processes)]
    stopping = False

    ready_r, ready_w = os.pipe()
    os.set_inheritable(ready_w, True)

    def start(w: _Worker, recover: bool = False) -> None:
        extra = {ENV_WORKER: str(w.index), ENV_READY_FD: str(ready_w)}
        if recover:
            extra[ENV_RECOVER] = "1"
        w.proc = subprocess.Popen(argv, env={**env, **extra}, pass_fds=(sock.fileno(), ready_w))
        w.started = time.monotonic()

    metrics_server = None
    try:
        start(workers[0], recover=True)  # recovers the store before the others start
        _wait_ready(ready_r, workers[0])
        for w in workers[1:]:
            start(w)
        log.info("workers_started", processes=len(workers), address=config.server.listen,
                 pids=[w.proc.pid for w in workers if w.proc])
        metrics_server = _start_metrics(config, metrics_dir)
        while True:
            while pending:
                signum = pending.pop(0)
                if signum == signal.SIGHUP and not stopping:
                    _send(workers, signal.SIGHUP)
                elif signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
                    stopping = True
                    log.info("stopping", processes=len(workers))
                    _send(workers, signal.SIGTERM)
            alive = 0
            for w in workers:
                if w.proc is None:
                    continue
                status = w.proc.poll()
                if status is None:
                    alive += 1
                    continue
                log.info("worker_exited", worker=w.index, pid=w.proc.pid, status=status)
                _mark_dead(w.proc.pid)
                w.proc = None
                if not stopping:
                    if time.monotonic() - w.started < RESTART_BACKOFF:
                        time.sleep(RESTART_BACKOFF)
                    start(w)
                    alive += 1
                    log.warning("worker_restarted", worker=w.index, pid=w.proc.pid)  # type: ignore[union-attr]
            if stopping and not alive:
                break
            time.sleep(0.1)
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
                try:
                    w.proc.wait(STOP_WAIT)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
        if metrics_server is not None:
            metrics_server.close()
        sock.close()
        os.close(ready_r)
        os.close(ready_w)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
    return 0


def _wait_ready(ready_r: int, w: _Worker, timeout: float = 120.0) -> None:
    """Worker 0 writes one byte once it listens (its store recovery done): the
    others start only then, so recovery never runs beside their holds."""
    import select

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([ready_r], [], [], 0.2)[0]:
            os.read(ready_r, 1)
            return
        if w.proc is None or w.proc.poll() is not None:
            raise SystemExit(f"mailguard: worker 0 exited before listening (status {w.proc and w.proc.returncode})")
    raise SystemExit("mailguard: worker 0 did not start listening in time")


def ready(index: int) -> None:
    """In a worker: tell the parent this worker listens (no-op outside supervise)."""
    fd = os.environ.pop(ENV_READY_FD, None)
    if fd is not None:
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except OSError:
            pass


def _send(workers: list[_Worker], signum: int) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            try:
                w.proc.send_signal(signum)
            except ProcessLookupError:
                pass


def _mark_dead(pid: int) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
    except Exception:  # noqa: BLE001 - metrics never stop the relay
        pass


def _start_metrics(config: Config, metrics_dir: str):  # type: ignore[no-untyped-def]
    """One endpoint for the relay: the workers' counters summed, plus the held queue."""
    if not config.metrics.listen:
        return None
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from mailguard import metrics
    from mailguard.holdstore import open_store

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    registry.register(metrics.HELD_COLLECTOR)
    store = open_store(config)
    metrics.set_held_source(lambda: metrics.held_counts(store))
    return metrics.start_server(config.metrics.listen, registry=registry)
