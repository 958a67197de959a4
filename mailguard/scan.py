"""Message bytes -> ScanReport: every readable text through the detector.

MEMORY: detection runs item by item as extraction goes (extract.Context's
sink; a sheet, CSV or table is handed over whole, so the list rule sees the
same groups as one detect() call over all spans), MIME parts are decoded one at
a time, and only the first limits.max_findings findings are kept; persons are
counted exactly from one int per distinct number. A 52 MB message with 2.5
million findings peaks near 230 MB.

SECURITY: handles whole untrusted messages and documents. Extraction runs in
worker processes (Scanner) so a hostile attachment can neither stall the event
loop nor take the relay down, except for small plain-text messages, which the
Scanner scans on the event loop itself (issue 15: the process hop cost more
than the scan). The worker's memory cap does not apply there, so what may be
scanned inline is bounded by its shape instead (``inline_scannable``): at most
INLINE_MAX_BYTES (16 KB) in all, a single part (no Content-Type, or text/plain
without a name), no Content-Disposition, no Content-Transfer-Encoding other
than 7bit/8bit (nothing is decoded or expanded) and no NUL byte (a body with
NUL is sniffed as a file): header values and one decoded text, a few times
16 KB of memory. Time is bounded by INLINE_DEADLINE (50 ms, cooperative):
a scan that reaches it is thrown away and the message goes to a worker under
the usual limits.scan_timeout, counted from the start; a per-message deadline is checked cooperatively
inside the worker (partial results plus "scan time limit exceeded"), and a
worker stuck past the hard timeout is killed and replaced. Each worker's
address space is capped (limits.max_worker_memory, RLIMIT_AS): a MemoryError
makes that attachment unscannable ("memory limit exceeded"; the message, if it
happens outside any attachment) and the worker carries on. Workers exit when
the relay dies, kill -9 included (PR_SET_PDEATHSIG plus a watchdog thread). No network, no
files written.

DIAGNOSTICS: `scan_timed_out` and `scan_worker_replaced` (warning) with the
elapsed time; never content, names or numbers.

INTERFACE (fixed; the policy, hold store and CLI code against it):

    Unscannable(location, reason)                     (records; re-exported here)
    Attachment(name, mime_type, location, size)      mime_type from libmagic
    ScanReport(findings, persons, unscannable, attachments,
               findings_total, persons_high, numbers)          (last three additive)
        findings     tuple[detect.Finding, ...], the first limits.max_findings found
        persons      distinct valid numbers at medium or high confidence, counted
                     over every finding (kept or not)
        findings_total  findings before the cap
        persons_high    distinct valid numbers at high confidence (all findings)
        numbers         distinct valid numbers at any confidence (all findings)
        skipped, ocr_persons, text_persons (additive, issue 12): items not read on
                     purpose (decorative images); distinct numbers read by OCR /
                     from text, as (low, medium, high) counts at or above each
    scan_message(data: bytes, limits: LimitsConfig, keywords=(), negative=()) -> ScanReport
        synchronous, no network; runs in a worker
    inline_scannable(data) -> bool   small single-part text: Scanner scans it in-process
    scan_file(path, limits, ...) -> ScanReport         an .eml or a bare document
    class Scanner(limits):  async scan(data) -> ScanReport
        off the event loop, bounded by limits.scan_timeout; raises ScanError
        when the scanner itself fails (the relay tempfails, never passes)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from mailguard import detect
from mailguard.config import LimitsConfig
from mailguard.detect import Finding, Span
from mailguard.errors import ScanError
from mailguard.extract import Context, TimeUp, clean_name, drop_images, extract_blob, read_images
from mailguard.extract import mail as mail_reader
from mailguard.extract.sniff import libmagic_type, looks_like_message
from mailguard.items import NEAR, near_words
from mailguard.log import get_logger

# The records scan produces live in records (the bottom module); re-exported here.
from mailguard.records import (
    MEMORY_LIMIT_REASON,
    OCR_SUFFIX,
    TIME_LIMIT_REASON,
    Attachment,
    ScanReport,
    Skipped,
    Unscannable,
)

__all__ = ["MEMORY_LIMIT_REASON", "TIME_LIMIT_REASON", "Attachment", "Extraction", "Findings",
           "ScanReport", "Scanner", "Unscannable", "extract_document", "extract_message",
           "is_message", "scan_file", "scan_message"]
# The cooperative deadline fires first so the worker can return partial
# findings; the hard kill is the backstop for a library stuck in one call.
SOFT_DEADLINE_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class Extraction:
    """What extraction found, before detection (additive; used by tests and bench).
    `spans` is empty when a sink took them (scan_message, scan_file)."""

    spans: tuple[Span, ...]
    unscannable: tuple[Unscannable, ...]
    attachments: tuple[Attachment, ...]
    table_headers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> headers
    skipped: tuple[Skipped, ...] = ()  # decorative images, not read on purpose (issue 12)


def _context(limits: LimitsConfig, deadline: float | None,
             sink: Callable[[list[Span]], None] | None = None) -> Context:
    if deadline is None:
        deadline = time.monotonic() + limits.scan_timeout * SOFT_DEADLINE_FRACTION
    return Context(limits, deadline, sink=sink)


def _finish(ctx: Context, stopped: str) -> Extraction:
    try:
        ctx.flush()
    except MemoryError:
        ctx.spans = []
        stopped = stopped or MEMORY_LIMIT_REASON
    unscannable = list(ctx.unscannable)
    if stopped:
        unscannable.append(Unscannable("message", stopped))
    return Extraction(tuple(ctx.spans), tuple(unscannable), tuple(ctx.attachments), dict(ctx.table_headers),
                      tuple(ctx.skipped))


def _run(ctx: Context, extract: Callable[[], None]) -> Extraction:
    """Run one extraction; a deadline or memory failure keeps what was found so far.

    Images found on the way are read (OCR) last, within their own budgets
    (extract.images), so the message's text is never short of time."""
    try:
        extract()
        read_images(ctx)
    except TimeUp:
        drop_images(ctx, TIME_LIMIT_REASON)
        return _finish(ctx, TIME_LIMIT_REASON)
    except MemoryError:
        # Outside any one attachment (the MIME parse itself, a giant body):
        # the message is unscannable, never clean.
        drop_images(ctx, MEMORY_LIMIT_REASON)
        return _finish(ctx, MEMORY_LIMIT_REASON)
    return _finish(ctx, "")


def extract_message(data: bytes, limits: LimitsConfig, deadline: float | None = None,
                    sink: Callable[[list[Span]], None] | None = None) -> Extraction:
    """Message bytes -> spans, unscannable items and attachments (no detection).

    With `sink` (additive), spans are handed to sink(list_of_spans) as they are
    found instead of being returned (see extract.Context).
    """
    ctx = _context(limits, deadline, sink)
    return _run(ctx, lambda: mail_reader.extract_message(ctx, data))


def extract_document(data: bytes, name: str, limits: LimitsConfig,
                     deadline: float | None = None,
                     sink: Callable[[list[Span]], None] | None = None) -> Extraction:
    """A bare document (not a message) -> spans under `file:<name>`."""
    ctx = _context(limits, deadline, sink)
    return _run(ctx, lambda: extract_blob(ctx, data, name, f"file:{clean_name(name)}", 0))


_RANK = {"low": 0, "medium": 1, "high": 2}


class Findings:
    """Detection run batch by batch as extraction goes (the Context's sink).

    Keeps the first `cap` findings for the report and, over every finding,
    the best confidence of each distinct number (an int per number, not a
    Finding), so persons stay exact however many findings are dropped. The
    detector's list rule counts per group and the extraction hands each group
    over whole, so detecting batch by batch finds what one call over all the
    spans would, in the same order.
    """

    def __init__(self, cap: int, keywords: Iterable[str] = (), negative: Iterable[str] = (),
                 key: bytes | None = None) -> None:
        self.cap = max(0, cap)
        self.keywords = tuple(keywords)
        self.negative = tuple(negative)
        self.key = key
        self.kept: list[Finding] = []
        self.total = 0
        self.best: dict[int | str, int] = {}  # number (int; else fingerprint) -> best rank, text
        self.best_ocr: dict[int | str, int] = {}  # the same for numbers read by OCR (few)
        self.near: dict[str, None] = {}  # headers / item words next to findings, in order
        self.groups: dict[str, None] = {}  # tables (groups) that held a finding

    def __call__(self, spans: list[Span]) -> None:
        result = detect.detect(spans, extra_keywords=self.keywords, extra_negative=self.negative,
                               key=self.key)
        findings = result.findings
        if findings and len(self.near) < NEAR_MAX:
            self._note_near(spans, findings)
        spans.clear()  # the caller's batch: free the texts before the next one
        self.total += len(findings)
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept.extend(findings[:room])
        # Numbers read from images (OCR) are counted apart from those read as
        # text, so a rule can tell them apart (ocr_persons_*, text_persons_*).
        ocr_found = [f for f in findings if f.location.endswith(OCR_SUFFIX)]
        if ocr_found:
            _best_ranks(self.best_ocr, ocr_found)
            findings = tuple(f for f in findings if not f.location.endswith(OCR_SUFFIX))
        _best_ranks(self.best, findings)

    def _note_near(self, spans: list[Span], findings: tuple[Finding, ...]) -> None:
        """Column headers of the batch (a sheet, a CSV) and item words around the
        first findings: words only, never a cell's value (issue 17)."""
        near = self.near
        by_location = {s.location: s for s in spans}
        for f in findings[:NEAR_FINDINGS]:
            s = by_location.get(f.location)
            if s is None:
                continue
            if s.group:
                self.groups.setdefault(s.group, None)
            if s.header:
                near.setdefault(_bounded(s.header), None)
            for w in near_words(s.text[max(0, f.start - NEAR):f.end + NEAR]):
                near.setdefault(w, None)
        while len(near) > NEAR_MAX:
            near.popitem()

    def report(self, extraction: Extraction) -> ScanReport:
        # Every column header of a table that held a number: what was sent beside it.
        for g in self.groups:
            for h in extraction.table_headers.get(g, ()):
                if len(self.near) >= NEAR_MAX:
                    break
                self.near.setdefault(h, None)
        text = _at_or_above(self.best.values())
        ocr_counts = _at_or_above(self.best_ocr.values())
        every = list(text)
        for number, r in self.best_ocr.items():  # a number read both ways counts once
            for k in range(self.best.get(number, -1) + 1, r + 1):
                every[k] += 1
        return ScanReport(
            findings=tuple(self.kept),
            persons=every[1],
            unscannable=extraction.unscannable,
            attachments=extraction.attachments,
            findings_total=self.total,
            persons_high=every[2],
            numbers=every[0],
            near_findings=tuple(self.near),
            skipped=extraction.skipped,
            ocr_persons=ocr_counts,
            text_persons=text,
        )


def _best_ranks(best: dict[int | str, int], findings: Iterable[Finding]) -> None:
    """Keep each distinct number's best confidence rank."""
    rank = _RANK
    for f in findings:
        number = int(f.number) if f.number else f.fingerprint
        r = rank.get(f.confidence, 0)
        if best.get(number, -1) < r:
            best[number] = r


def _at_or_above(ranks: Iterable[int]) -> tuple[int, int, int]:
    """(numbers at low or above, at medium or above, at high)."""
    counts = [0, 0, 0]
    for r in ranks:
        counts[r] += 1
    return counts[0] + counts[1] + counts[2], counts[1] + counts[2], counts[2]


NEAR_MAX = 40  # headers / words kept per message
NEAR_FINDINGS = 200  # findings per batch whose surroundings are read for item words


def _bounded(header: str) -> str:
    # A header is a label, bounded; the audit log scrubs any digit run it may hold.
    return " ".join(header.split())[:60]


def _findings(limits: LimitsConfig, keywords: Iterable[str], negative: Iterable[str],
              key: bytes | None) -> Findings:
    return Findings(limits.max_findings, keywords, negative, key)


def scan_message(data: bytes, limits: LimitsConfig, keywords: Iterable[str] = (),
                 negative: Iterable[str] = (), key: bytes | None = None,
                 deadline: float | None = None) -> ScanReport:
    """Scan one message. Synchronous, no network; runs in a worker.

    `key` (additive) is the fingerprint HMAC key; None uses detect's per-process key.
    """
    sink = _findings(limits, keywords, negative, key)
    return sink.report(extract_message(data, limits, deadline, sink))


def is_message(data: bytes) -> bool:
    """Does a file hold a mail message (rather than a bare document)?"""
    mime = libmagic_type(data)
    return mime.startswith("message/") or (
        (mime.startswith("text/") or mime == "application/octet-stream") and looks_like_message(data))


def scan_file(path: str | os.PathLike[str], limits: LimitsConfig, keywords: Iterable[str] = (),
              negative: Iterable[str] = (), key: bytes | None = None) -> ScanReport:
    """Scan an .eml or a bare document (xlsx, pdf, zip, ...). OSError if unreadable."""
    p = Path(path)
    with open(p, "rb") as fh:
        data = fh.read(limits.max_expanded_bytes + 1)
    if len(data) > limits.max_expanded_bytes:
        return ScanReport(unscannable=(Unscannable(f"file:{p.name}", "file larger than the "
                                                   "expanded size limit"),))
    sink = _findings(limits, keywords, negative, key)
    if is_message(data):
        extraction = extract_message(data, limits, sink=sink)
    else:
        extraction = extract_document(data, p.name, limits, sink=sink)
    return sink.report(extraction)


def _worker_scan(data: bytes, limits: LimitsConfig, keywords: tuple[str, ...],
                 negative: tuple[str, ...], key: bytes | None, started: float) -> ScanReport:
    # The deadline counts from submission, so time spent queued for a free
    # worker is part of the message's budget.
    elapsed = time.time() - started
    deadline = time.monotonic() + max(0.0, limits.scan_timeout * SOFT_DEADLINE_FRACTION - elapsed)
    return scan_message(data, limits, keywords, negative, key, deadline)


def _worker_init(max_memory: int, relay_pid: int = 0) -> None:
    """Cap the worker's address space: a hostile file then costs a MemoryError
    (an unscannable item), not the machine. Then tie the worker's life to the
    relay's (see _watch_parent)."""
    if max_memory > 0:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            max_memory = min(max_memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, hard))
    _watch_parent(relay_pid)


# How often the fallback watchdog looks for the relay (seconds).
PARENT_POLL_INTERVAL = 0.5


def _set_pdeathsig() -> None:
    """Linux: SIGKILL this process when its parent exits (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watchdog thread below still covers it


def _watch_parent(relay_pid: int) -> None:
    """A worker exits when the relay that started it dies (kill -9 included).

    Workers come from a forkserver, so their parent is the forkserver, which
    itself exits when the relay does. PR_SET_PDEATHSIG kills the worker when
    the forkserver goes; a daemon thread is the fallback on other systems and
    for the race where the parent died before prctl: it exits the worker once
    its parent changed (reparented) or the relay's pid is gone.
    """
    parent = os.getppid()
    _set_pdeathsig()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        pidfd = -1
        if relay_pid > 0 and hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(relay_pid)
            except OSError:
                pidfd = -1
        while True:
            if pidfd >= 0:
                # Readable once the relay has exited.
                ready, _, _ = select.select([pidfd], [], [], PARENT_POLL_INTERVAL)
                if ready:
                    os._exit(1)
            else:
                time.sleep(PARENT_POLL_INTERVAL)
                if relay_pid > 0 and not _alive(relay_pid):
                    os._exit(1)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="mailguard-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


INLINE_MAX_BYTES = 16 * 1024  # ~6 ms of detection for ASCII, ~10 ms for Japanese text
INLINE_DEADLINE = 0.05  # seconds on the event loop before the scan goes to a worker
_INLINE_CTE = frozenset((b"", b"7bit", b"8bit"))
_HEADER = re.compile(rb"^(content-type|content-disposition|content-transfer-encoding)[ \t]*:"
                     rb"((?:[^\r\n]|\r?\n[ \t])*)", re.I | re.M)


def inline_scannable(data: bytes) -> bool:
    """Small enough and plain enough to scan on the event loop (see SECURITY)."""
    if len(data) > INLINE_MAX_BYTES or b"\x00" in data:
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[:end + 2]
    if head.count(b"\r") != head.count(b"\r\n"):
        return False  # a bare CR may end a header line for the parser, not for _HEADER
    seen: dict[bytes, bytes] = {}
    for m in _HEADER.finditer(head):
        name = m.group(1).lower()
        if name in seen or name == b"content-disposition":
            return False
        seen[name] = b" ".join(m.group(2).split()).lower()
    ctype = seen.get(b"content-type", b"text/plain")
    if not ctype.startswith(b"text/plain") or b"name" in ctype:
        return False
    return seen.get(b"content-transfer-encoding", b"") in _INLINE_CTE


class Scanner:
    """Scans off the event loop in a process pool, bounded by limits.scan_timeout.

    A scan that runs past the timeout returns a report with an unscannable item
    ("scan time limit exceeded"); the stuck worker is killed and the pool
    replaced (other scans in flight on the old pool are resubmitted once). A
    crashed worker or an unexpected exception raises ScanError.
    """

    def __init__(self, limits: LimitsConfig, keywords: Iterable[str] = (),
                 negative: Iterable[str] = (), key: bytes | None = None) -> None:
        self.limits = limits
        self.keywords = tuple(keywords)
        self.negative = tuple(negative)
        self.key = key
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._generation = 0
        self._log = get_logger(component="scan")

    def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(1, self.limits.scan_workers), mp_context=ctx,
                initializer=_worker_init, initargs=(self.limits.max_worker_memory, os.getpid()))
            self._generation += 1
        return self._pool

    def _replace_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        for proc in processes:
            if proc.is_alive():
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        self._log.warning("scan_worker_replaced", workers=len(processes))

    def _scan_inline(self, data: bytes) -> ScanReport | None:
        """Scan on the event loop; None when INLINE_DEADLINE ran out (a worker scans it)."""
        try:
            report = scan_message(data, self.limits, self.keywords, self.negative, self.key,
                                  time.monotonic() + INLINE_DEADLINE)
        except Exception as exc:
            raise ScanError(f"scan failed: {type(exc).__name__}") from exc
        if any(u.reason == TIME_LIMIT_REASON for u in report.unscannable):
            return None
        return report

    async def scan(self, data: bytes) -> ScanReport:
        loop = asyncio.get_running_loop()
        started = time.time()
        if inline_scannable(data):
            report = self._scan_inline(data)
            if report is not None:
                return report
        for attempt in (1, 2):
            pool = self._get_pool()
            generation = self._generation
            try:
                future = loop.run_in_executor(pool, _worker_scan, data, self.limits,
                                              self.keywords, self.negative, self.key, started)
            except RuntimeError as exc:  # pool shut down between get and submit
                if attempt == 1:
                    continue
                raise ScanError(f"scanner unavailable: {exc}") from exc
            remaining = self.limits.scan_timeout - (time.time() - started)
            try:
                return await asyncio.wait_for(future, timeout=max(0.1, remaining))
            except asyncio.TimeoutError:
                self._log.warning("scan_timed_out", seconds=round(time.time() - started, 1))
                if generation == self._generation:
                    self._replace_pool()
                return ScanReport(unscannable=(Unscannable("message", TIME_LIMIT_REASON),))
            except BrokenProcessPool as exc:
                if generation != self._generation and attempt == 1:
                    continue  # we killed that pool for another message's timeout: retry once
                if generation == self._generation:
                    self._replace_pool()
                raise ScanError("scan worker crashed") from exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise ScanError(f"scan failed: {type(exc).__name__}") from exc
        raise ScanError("scan could not be scheduled")

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)
