"""Prometheus metrics: what the relay did, counted; served over HTTP on metrics.listen.

API (small functions the relay, pipeline and store call; all cheap, never raise):

    observe_decision(action, rule, seconds)   one message decided; seconds = scan+decide time
    observe_persons(persons)                   distinct valid numbers in one message
    observe_unscannable(reason)                one item that could not be inspected
    observe_relay(seconds, outcome="")         one transaction, end of DATA to our reply
    observe_upstream_error(kind)               the upstream failed (connect, timeout, tempfail, ...)
    observe_reply(code)                        one final reply to DATA (250, 451, 550, ...)
    set_client_connections(count, limit)       client connections open now (server.max_connections)
    observe_connection_refused()               one client refused with 421 4.7.0 (over the limit)
    set_upstream_connections(count, limit, waiting)  upstream links open, the cap, transactions waiting
    set_held_source(fn)                        fn() -> (held_count, oldest_received_epoch | None),
                                               called at scrape time so a release from the CLI
                                               (another process) shows up at the next scrape
    start_server(listen) -> MetricsServer|None "" = off; else "HOST:PORT" (loopback advised)

Metric names are prefixed ``mailguard_``; docs/install.md ("Monitoring") lists them.

SECURITY: label values come from policy rule names and unscannable reasons, which
can carry attachment names chosen by a sender; they are reduced to a short token
of lowercase letters, '-', '_' and '.', with every digit dropped, so a number never
reaches a label and a hostile name cannot blow up the label set. The endpoint
serves only these counters, never message data; it listens only where configured.

DIAGNOSTICS: logs ``metrics_started`` with the address, and ``metrics_source_failed``
when the held-queue callback raises (the scrape still succeeds without it).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server

from mailguard.config import split_hostport
from mailguard.records import HELD

if TYPE_CHECKING:  # the relay hands its store in; metrics never opens one
    from mailguard.holdstore import HoldStore

# The *_created series (a Unix time per label set) double the page for no
# operational use here.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets in seconds: scanning a plain mail takes milliseconds, a large
# attachment seconds; relaying adds the upstream round trip.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES = Counter(
    "mailguard_messages", "Messages decided, by decision (pass, hold, block) and deciding rule.",
    ["decision", "rule"], registry=REGISTRY)
PERSONS = Counter(
    "mailguard_persons_found", "Distinct valid My Numbers (medium or high confidence) found, "
    "summed over messages.", registry=REGISTRY)
PERSONS_PER_MESSAGE = Histogram(
    "mailguard_message_persons", "Persons found per message that had any; the bucket above 100 "
    "counts serious situations (重大な事態).",
    buckets=(1, 10, 100, float("inf")), registry=REGISTRY)
UNSCANNABLE = Counter(
    "mailguard_unscannable_items", "Items that could not be inspected, by reason.",
    ["reason"], registry=REGISTRY)
UPSTREAM_ERRORS = Counter(
    "mailguard_upstream_errors", "Failed deliveries to the upstream, by kind.",
    ["kind"], registry=REGISTRY)
REPLIES = Counter(
    "mailguard_smtp_replies", "Final replies to DATA sent to clients, by SMTP code.",
    ["code"], registry=REGISTRY)
SCAN_SECONDS = Histogram(
    "mailguard_scan_seconds", "Time to scan a message and decide.", buckets=_LATENCY,
    registry=REGISTRY)
RELAY_SECONDS = Histogram(
    "mailguard_relay_seconds", "Time from the end of DATA to mailguard's reply (scan, decide, "
    "forward or hold).", ["outcome"], buckets=_LATENCY, registry=REGISTRY)


CLIENT_CONNECTIONS = Gauge(
    "mailguard_client_connections", "Client SMTP connections open now.", registry=REGISTRY)
CLIENT_CONNECTIONS_LIMIT = Gauge(
    "mailguard_client_connections_limit", "server.max_connections.", registry=REGISTRY)
CONNECTIONS_REFUSED = Counter(
    "mailguard_connections_refused", "Client connections refused with 421 4.7.0 because "
    "server.max_connections were open.", registry=REGISTRY)
UPSTREAM_CONNECTIONS = Gauge(
    "mailguard_upstream_connections", "Links to the upstream open now (in use and idle).",
    registry=REGISTRY)
UPSTREAM_CONNECTIONS_LIMIT = Gauge(
    "mailguard_upstream_connections_limit", "upstream.max_connections.", registry=REGISTRY)
UPSTREAM_WAITING = Gauge(
    "mailguard_upstream_waiting", "Transactions waiting for a free upstream link now.",
    registry=REGISTRY)


def set_client_connections(count: int, limit: int) -> None:
    """Client connections open now, and the limit."""
    try:
        CLIENT_CONNECTIONS.set(count)
        CLIENT_CONNECTIONS_LIMIT.set(limit)
    except Exception:  # noqa: BLE001 - metrics never raise
        pass


def observe_connection_refused() -> None:
    try:
        CONNECTIONS_REFUSED.inc()
    except Exception:  # noqa: BLE001
        pass


def set_upstream_connections(count: int, limit: int, waiting: int) -> None:
    """Upstream links open now (leased + idle), the limit, and transactions waiting."""
    try:
        UPSTREAM_CONNECTIONS.set(count)
        UPSTREAM_CONNECTIONS_LIMIT.set(limit)
        UPSTREAM_WAITING.set(waiting)
    except Exception:  # noqa: BLE001
        pass


_UNSAFE = re.compile(r"[^a-z_.\-]+")


def label(value: object, limit: int = 48) -> str:
    """A bounded, digit-free label value ('encrypted zip: 名簿123.zip' -> 'encrypted-zip')."""
    text = str(value).strip().lower()
    text = re.split(r"[:(\[/]", text, maxsplit=1)[0]  # the reason's kind, not its details
    text = _UNSAFE.sub("-", text).strip("-.")
    return (text[:limit].rstrip("-.") or "unknown")


def observe_decision(action: str, rule: str, seconds: float | None = None) -> None:
    MESSAGES.labels(label(action), label(rule)).inc()
    if seconds is not None and seconds >= 0:
        SCAN_SECONDS.observe(seconds)


def observe_persons(persons: int) -> None:
    if persons > 0:
        PERSONS.inc(persons)
        PERSONS_PER_MESSAGE.observe(persons)


def observe_unscannable(reason: str) -> None:
    UNSCANNABLE.labels(label(reason)).inc()


def observe_upstream_error(kind: str) -> None:
    UPSTREAM_ERRORS.labels(label(kind)).inc()


def observe_relay(seconds: float, outcome: str = "") -> None:
    if seconds >= 0:
        RELAY_SECONDS.labels(label(outcome or "done")).observe(seconds)


def observe_reply(code: int) -> None:
    REPLIES.labels(str(int(code))).inc()


# ------------------------------------------------------------- held queue


HeldSource = Callable[[], "tuple[int, float | None]"]
_held_source: HeldSource | None = None


def set_held_source(fn: HeldSource | None) -> None:
    """Register fn() -> (number held, oldest 'received' as a Unix time or None)."""
    global _held_source
    _held_source = fn


class _HeldCollector:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        count = GaugeMetricFamily("mailguard_held_messages", "Messages currently held.")
        age = GaugeMetricFamily("mailguard_held_oldest_age_seconds",
                                "Age of the oldest held message (0 when none is held).")
        fn = _held_source
        if fn is None:
            return
        try:
            n, oldest = fn()
        except Exception as exc:  # a scrape must not fail because the store is busy
            from mailguard.log import get_logger

            get_logger().warning("metrics_source_failed", error=type(exc).__name__)
            return
        count.add_metric([], float(n))
        age.add_metric([], max(0.0, time.time() - oldest) if (n and oldest) else 0.0)
        yield count
        yield age

    def describe(self) -> list:
        return []


HELD_COLLECTOR = _HeldCollector()
REGISTRY.register(HELD_COLLECTOR)


def held_counts(store: HoldStore) -> tuple[int, float | None]:
    """(held count, oldest 'received' as Unix time) from a hold store."""
    held = store.list(HELD)
    if not held:
        return 0, None
    times = []
    for h in held:
        t = datetime.fromisoformat(h.received)
        times.append((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())
    return len(held), min(times)


# ------------------------------------------------------------- the endpoint


@dataclass
class MetricsServer:
    host: str
    port: int
    _server: object
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]
        self._thread.join(timeout=5)


def start_server(listen: str, registry: CollectorRegistry | None = None) -> MetricsServer | None:
    """Serve /metrics on listen ('HOST:PORT'); '' means off. Runs in a daemon
    thread (prometheus-client's WSGI server), so a slow scraper never blocks the
    relay's event loop."""
    if not listen:
        return None
    host, port = split_hostport(listen)
    try:
        # registry: the supervisor's sum over its workers (supervise.py); else this process's.
        server, thread = start_http_server(port, addr=host, registry=registry or REGISTRY)
    except OSError as exc:
        # prometheus-client's own error does not say which address (issue 13.11).
        raise OSError(exc.errno, f"cannot listen for metrics on {listen} (metrics.listen): "
                      f"{exc.strerror or exc}; is another process using it?") from exc
    from mailguard.log import get_logger

    get_logger().info("metrics_started", listen=listen)
    return MetricsServer(host, server.server_port, server, thread)


# ------------------------------------------------------------- the relay's calls


def observe_message(decision: object, seconds: float | None = None) -> None:
    """One decided message: its decision, persons and unscannable items (a policy
    Decision: .action, .rule, .persons, .unscannable[].reason)."""
    try:
        observe_decision(decision.action, decision.rule, seconds)  # type: ignore[attr-defined]
        observe_persons(int(getattr(decision, "persons", 0) or 0))
        for item in getattr(decision, "unscannable", ()) or ():
            observe_unscannable(getattr(item, "reason", "unknown"))
    except Exception:  # metrics never break mail flow
        pass


def observe_transaction(outcome: str, reply: str, seconds: float) -> None:
    """One DATA answered: latency by outcome (forwarded, held, blocked, tempfail,
    refused) and the reply's code."""
    try:
        observe_relay(seconds, outcome)
        if reply[:3].isdigit():
            observe_reply(int(reply[:3]))
    except Exception:
        pass
