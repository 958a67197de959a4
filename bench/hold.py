#!/usr/bin/env python3
"""Hold throughput with fsync on, beside pass-through, in the same run.

    .venv/bin/python bench/hold.py [--n 200] [--concurrency 8] [--e2e-n 60]

1. The store alone: Holder.hold() (message file tmp -> fsync -> rename -> fsync dir,
   SQLite row with synchronous=FULL, audit line with fsync) on a fixed 60 KB
   message, ``--concurrency`` holds at a time. Baselines in the same run: the disk's
   bare fsync rate (write 60 KB + fsync, one file), and Recorder.record() (one
   audit line + fsync: what a passed message costs the store).
2. End to end through a real `mailguard serve` subprocess and a local sink:
   messages with My Numbers to an outside address (held) beside the same
   messages without numbers to one inside address (passed through upstream),
   ``--concurrency`` SMTP clients each. Both include the scan.

Both parts run twice in the same run: on the embedded store (files + SQLite) and
on the PostgreSQL store (a throwaway local cluster with fsync on, from
tests/pg_support.py; skipped with a note where PostgreSQL is not installed).
Issue 16's targets: PostgreSQL passes at least 0.8x the embedded store's, holds
at least 300/s.

Prints one table; figures are for this machine and its disk at this moment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests"))

from hold_support import INTERNAL, NUMBERS, SENDER, Serve, Sink, message_with_numbers, write_config  # noqa: E402

from pg_support import PgCluster, pg_unavailable_reason  # noqa: E402

from mailguard.config import load_config  # noqa: E402
from mailguard.hold import Holder  # noqa: E402
from mailguard.recorder import Recorder  # noqa: E402
from mailguard.log import configure_logging  # noqa: E402
from mailguard.policy import Decision  # noqa: E402


def bare_fsync(dirpath: Path, n: int, size: int) -> float:
    blob = os.urandom(size)
    fd = os.open(dirpath / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    t = time.perf_counter()
    for _ in range(n):
        os.pwrite(fd, blob, 0)
        os.fsync(fd)
    el = time.perf_counter() - t
    os.close(fd)
    return n / el


async def store_rates(cfg_path: Path, n: int, conc: int, data: bytes) -> tuple[float, float, float, float]:
    config = load_config(cfg_path)
    holder = Holder(config)
    holder.notifier.send = _no_notice  # type: ignore[method-assign]
    recorder = Recorder(config, holder.audit)
    hold = Decision("hold", "external-hold", ("bench",), persons=1)
    passed = Decision("pass", "internal-single-pass", ())
    sem = asyncio.Semaphore(conc)
    lat: list[float] = []

    async def one_hold() -> None:
        async with sem:
            t = time.perf_counter()
            await holder.hold(SENDER, ["x@example.com"], data, hold)
            lat.append(time.perf_counter() - t)

    async def one_record() -> None:
        async with sem:
            await recorder.record(SENDER, [f"a@{INTERNAL}"], passed, size=len(data), outcome="forwarded")

    t = time.perf_counter()
    await asyncio.gather(*(one_hold() for _ in range(n)))
    holds = n / (time.perf_counter() - t)
    t = time.perf_counter()
    await asyncio.gather(*(one_record() for _ in range(n)))
    records = n / (time.perf_counter() - t)
    await holder.aclose()
    lat.sort()
    return holds, records, statistics.median(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000


async def _no_notice(*a: object, **k: object) -> bool:
    return False


def e2e_rate(port: int, n: int, conc: int, rcpt: str, data: bytes) -> tuple[float, int]:
    counter = iter(range(n))
    lock = threading.Lock()
    codes: list[int] = []

    def worker() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.ehlo("bench.test")
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                s.mail(SENDER)
                s.rcpt(rcpt)
                code, _ = s.data(data)
                codes.append(code)

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    el = time.perf_counter() - t
    return n / el, sum(1 for c in codes if c == 250)


def with_url(cfg: Path, url: str) -> Path:
    if url:
        cfg.write_text(cfg.read_text().replace("[store]\n", f'[store]\nurl = "{url}"\n'))
    return cfg


def run_backend(tmp: Path, sink: Sink, url: str, args: argparse.Namespace, fixed: bytes,
                held_msg: bytes) -> dict[str, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = with_url(write_config(tmp, sink.port), url)
    holds, records, p50, p99 = asyncio.run(store_rates(cfg, args.n, args.concurrency, fixed))
    (tmp / "e2e").mkdir()
    cfg2 = with_url(write_config(tmp / "e2e", sink.port), url)
    srv = Serve(cfg2, tmp / "serve.log").start()
    try:
        plain = message_with_numbers([], subject="plain", to=f"clerk@{INTERNAL}", attach_csv=False)
        pass_rate, pass_ok = e2e_rate(srv.port, args.e2e_n, args.concurrency, f"clerk@{INTERNAL}", plain)
        hold_rate, hold_ok = e2e_rate(srv.port, args.e2e_n, args.concurrency, "someone@example.com", held_msg)
    finally:
        srv.stop()
    return dict(holds=holds, records=records, p50=p50, p99=p99, pass_rate=pass_rate, pass_ok=pass_ok,
                hold_rate=hold_rate, hold_ok=hold_ok)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--e2e-n", type=int, default=60)
    args = ap.parse_args()
    configure_logging("warning")

    results: dict[str, dict[str, float]] = {}
    pg_note = pg_unavailable_reason()
    with tempfile.TemporaryDirectory(prefix="mg-bench-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None) as d:
        tmp = Path(d)
        sink = Sink().start()
        held_msg = message_with_numbers(NUMBERS)
        pad = b"X-Pad: " + b"a" * 990 + b"\r\n"
        fixed = pad * 60 + held_msg  # ~60 KB
        fs = bare_fsync(tmp, args.n, len(fixed))
        try:
            results["embedded"] = run_backend(tmp / "embedded", sink, "", args, fixed, held_msg)
            if not pg_note:
                cluster = PgCluster(fsync=True)  # the guarantees of production: fsync, synchronous_commit
                try:
                    results["postgresql"] = run_backend(tmp / "pg", sink, cluster.create_database("bench"),
                                                        args, fixed, held_msg)
                finally:
                    cluster.destroy()
        finally:
            sink.stop()

    print(f"hold store benchmark (n={args.n}, concurrency={args.concurrency}, message {len(fixed) // 1024} KB)")
    print(f"  bare write+fsync, one file            {fs:8.0f} /s   (disk baseline)")
    for name, r in results.items():
        print(f"[{name}]")
        print(f"  Holder.hold (bytes, row, audit)       {r['holds']:8.0f} /s   p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms")
        print(f"  Recorder.record (one audit record)    {r['records']:8.0f} /s   (what a pass costs the store)")
        print(f"  end to end through serve (n={args.e2e_n}, {args.concurrency} clients, scan included)")
        print(f"  pass-through (no numbers, 1 internal) {r['pass_rate']:8.1f} msg/s  ({r['pass_ok']}/{args.e2e_n} got 250)")
        print(f"  held (numbers, external)              {r['hold_rate']:8.1f} msg/s  ({r['hold_ok']}/{args.e2e_n} got 250)")
    if "postgresql" in results:
        e, p = results["embedded"], results["postgresql"]
        print(f"postgresql / embedded: passes {p['pass_rate'] / e['pass_rate']:.2f}x (target >= 0.8),"
              f" Holder.hold {p['holds']:.0f}/s (target >= 300)")
    else:
        print(f"[postgresql] skipped: {pg_note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
