#!/usr/bin/env python3
"""Relay throughput and added latency: mailguard in the path vs straight to the sink.

Same run, same client, same sink (an aiosmtpd server in a separate process, so the
sink's CPU does not compete with the relay's event loop), same 10 KB message:

  1. saturation: 20 concurrent client connections, each sending messages back to
     back for DURATION seconds -> msg/s and per-message latency p50/p99, direct
     and through mailguard, and their ratio;
  2. paced: 100 msg/s offered (open loop, 20 connections) -> p99 latency direct
     and through mailguard; the difference is the added p99.

mailguard runs as its own process (`python -m mailguard serve`) with a pass-all
policy dir, so the figure is one mailguard process. Targets (2 cores): >= 600 msg/s
through mailguard; p99 added < 20 ms at 100 msg/s.

Usage: python bench/relay.py [--duration 10] [--connections 20] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

REPO = Path(__file__).resolve().parents[1]
SINK = r"""
import asyncio, sys
from aiosmtpd.smtp import SMTP
import logging; logging.getLogger("mail.log").setLevel(logging.ERROR)
class H:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: queued"
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(H(), hostname="sink", loop=loop), "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

# --pipeline pass: the relay core alone (pass-everything pipeline, no hold store,
# no audit): the figure the relay issue targets. --pipeline real: `mailguard serve`
# with scanning, policy and audit, i.e. the whole product.
PASS_RELAY = str(REPO / "tests" / "pass_relay.py")  # serve with a pass-everything pipeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(size: int = 10 * 1024) -> bytes:
    head = b"From: bench@city.example.lg.jp\r\nTo: r@city.example.lg.jp\r\nSubject: bench\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog 0123 abcdefghijklmnopqrstu\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size - 2] + b"\r\n"


async def wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


async def connect(port: int) -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench", timeout=30)
    await c.connect()
    await c.ehlo()
    return c


async def saturate(port: int, conns: int, duration: float, data: bytes) -> tuple[float, list[float]]:
    clients = [await connect(port) for _ in range(conns)]
    lat: list[float] = []
    end = time.perf_counter() + duration

    async def worker(c: aiosmtplib.SMTP) -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            await c.sendmail("bench@city.example.lg.jp", ["r@city.example.lg.jp"], data)
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return len(lat) / elapsed, lat


async def paced(port: int, conns: int, rate: float, duration: float, data: bytes) -> list[float]:
    clients = [await connect(port) for _ in range(conns)]
    free: asyncio.Queue = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)
    lat: list[float] = []
    tasks = []

    async def one(scheduled: float) -> None:
        c = await free.get()
        await c.sendmail("bench@city.example.lg.jp", ["r@city.example.lg.jp"], data)
        lat.append(time.perf_counter() - scheduled)  # open loop: queueing counts
        free.put_nowait(c)

    start = time.perf_counter()
    n = int(rate * duration)
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    for c in clients:
        c.close()
    return lat


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), to report the relay's own cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


async def run(args: argparse.Namespace) -> int:
    data = message()
    sink_port, relay_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="mailguard-bench-"))
    (work / "policies").mkdir()
    (work / "policies" / "00-pass.toml").write_text(
        '[default]\naction = "pass"\n', encoding="utf-8")
    (work / "mailguard.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{relay_port}"\nhostname = "mailguard.bench"\n'
        f'[upstream]\nurl = "smtp://127.0.0.1:{sink_port}"\npool_size = {args.connections}\n'
        f'[store]\npath = "{work / "store"}"\n[policy]\ndir = "{work / "policies"}"\n'
        f'[log]\nlevel = "warning"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAILGUARD_ALLOW_ROOT": "1"}  # benches may run as root
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)], stdout=subprocess.PIPE, env=env)
    cfg = str(work / "mailguard.toml")
    if args.pipeline == "pass":
        cmd = [sys.executable, PASS_RELAY, cfg]
    else:
        cmd = [sys.executable, "-m", "mailguard", "-c", cfg, "serve"]
    relay = subprocess.Popen(cmd, env=env, cwd=work)
    try:
        await wait_port(sink_port)
        await wait_port(relay_port)
        # Warm-up both paths (imports, pool, first-use costs).
        await saturate(relay_port, args.connections, 1.0, data)
        await saturate(sink_port, args.connections, 0.5, data)

        d_rate, d_lat = await saturate(sink_port, args.connections, args.duration, data)
        cpu0 = cpu_seconds(relay.pid)
        m_rate, m_lat = await saturate(relay_port, args.connections, args.duration, data)
        cpu_ms = (cpu_seconds(relay.pid) - cpu0) * 1000 / max(1, len(m_lat))
        print(f"pipeline: {args.pipeline}")
        print(f"saturation: {args.connections} connections, 10 KB messages, {args.duration:.0f} s each")
        print(f"  direct to sink   : {d_rate:7.0f} msg/s   p50 {pct(d_lat, 50):6.2f} ms   p99 {pct(d_lat, 99):6.2f} ms")
        print(f"  through mailguard: {m_rate:7.0f} msg/s   p50 {pct(m_lat, 50):6.2f} ms   p99 {pct(m_lat, 99):6.2f} ms")
        print(f"  ratio mailguard/direct: throughput {m_rate / d_rate:.2f}   "
              f"added p50 {pct(m_lat, 50) - pct(d_lat, 50):.2f} ms   added p99 {pct(m_lat, 99) - pct(d_lat, 99):.2f} ms")

        print(f"  mailguard CPU per message: {cpu_ms:.2f} ms -> {1000 / cpu_ms:.0f} msg/s if it had one core"
              f" to itself (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, shared"
              " with the client and the sink)")

        pd = await paced(sink_port, args.connections, args.rate, args.duration, data)
        pm = await paced(relay_port, args.connections, args.rate, args.duration, data)
        print(f"paced: {args.rate:.0f} msg/s offered, {args.duration:.0f} s each")
        print(f"  direct to sink   : p50 {pct(pd, 50):6.2f} ms   p99 {pct(pd, 99):6.2f} ms")
        print(f"  through mailguard: p50 {pct(pm, 50):6.2f} ms   p99 {pct(pm, 99):6.2f} ms")
        added = pct(pm, 99) - pct(pd, 99)
        print(f"  added p99: {added:.2f} ms (target < 20 ms); added p50: {pct(pm, 50) - pct(pd, 50):.2f} ms")
        print(f"targets: >= 600 msg/s through mailguard: {'met' if m_rate >= 600 else 'NOT met'} ({m_rate:.0f}); "
              f"p99 added < 20 ms at {args.rate:.0f} msg/s: {'met' if added < 20 else 'NOT met'} ({added:.2f} ms)")
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(15)
        except subprocess.TimeoutExpired:
            relay.kill()
        sink.kill()
        sink.wait()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--pipeline", choices=("pass", "real"), default="pass",
                   help="pass: relay core only (default); real: mailguard serve with scanning and audit")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
