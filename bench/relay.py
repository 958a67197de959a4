#!/usr/bin/env python3
"""Relay throughput, CPU per message and added latency, every path in one run (issue 15).

    .venv/bin/python bench/relay.py [--messages 1500] [--held-messages 600] [--sessions 20] [--processes 2]
                                    [--rate 100] [--paced-seconds 5] [--baseline PATH]

One sink (Postfix's smtp-sink, C, in its own process) and one load generator
(Postfix's smtp-source: ``-s`` sessions in parallel, ``-m`` messages, ``-l`` 10 KB,
``-d`` to send every message of a session over one connection) for every path:

  direct     smtp-source -> smtp-sink
  proxy      a bare aiosmtpd -> aiosmtplib proxy (pooled upstream links): what the
             SMTP libraries cost with nothing else in the path
  mailguard  `python -m mailguard serve` with 1 and with N processes, the real
             product (scan, policy, audit, hold store); ``--baseline PATH`` adds the
             same runs of an older checkout (PYTHONPATH=PATH) for a before/after

each with a new connection per message and with connection reuse, and for
mailguard with a pass-everything policy and with one that holds every message to an
external recipient (every recipient here is external, so everything is scanned).

Figures: msg/s; the ratio to direct; CPU ms per message = utime + stime of the
relay's process tree (serve, supervisor, workers, scan workers; each process once,
from /proc before and after the run) over the messages sent; and, with an asyncio
client sending one message per new connection at ``--rate`` msg/s (open loop:
queueing counts), the p50/p99 latency added by mailguard over direct.

The machine is shared with the load generator and the sink (and, often, other
work): compare ratios and CPU ms/msg from the same run, not msg/s across runs.
Defaults take about 2-3 minutes; raise --messages / --paced-seconds for steadier figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

REPO = Path(__file__).resolve().parents[1]
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
INTERNAL = "city.example.lg.jp"
SENDER = f"bench@{INTERNAL}"
RECIPIENT = "r@partner.example.com"  # external: scanned, and held by the hold policy
SIZE = 10 * 1024

PROXY = r"""
import asyncio, logging, sys
import aiosmtplib
from aiosmtpd.smtp import SMTP
logging.getLogger("mail.log").setLevel(logging.ERROR)
UP = int(sys.argv[2])
idle = []
class H:
    async def handle_DATA(self, server, session, envelope):
        c = idle.pop() if idle else None
        if c is None or not c.is_connected:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=UP, start_tls=False, local_hostname="proxy")
            await c.connect()
        try:
            await c.sendmail(envelope.mail_from, envelope.rcpt_tos, envelope.content)
        except Exception as exc:
            c.close()
            return f"451 4.4.0 {exc}"
        idle.append(c)
        return "250 2.0.0 Ok: queued"
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(H(), hostname="proxy", loop=loop), "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


# -- CPU of a process tree -----------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, start time, utime + stime ticks) for every process now."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(d)] = (int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12]))
    return table


def tree_ticks(root: int) -> dict[tuple[int, int], int]:
    """(pid, start time) -> CPU ticks for ``root`` and all its descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out[(pid, table[pid][1])] = table[pid][2]
            todo.extend(children.get(pid, ()))
    return out


def cpu_seconds_between(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> float:
    """Each process once: its growth, or all of it if it started during the run."""
    ticks = sum(t - before.get(key, 0) for key, t in after.items())
    return ticks / os.sysconf("SC_CLK_TCK")


# -- the paths under test --------------------------------------------------------------


class Path_:
    """A listening SMTP endpoint; ``pid`` is the root of the process tree it costs."""

    name = ""
    port = 0
    pid: int | None = None
    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Sink(Path_):
    def __init__(self) -> None:
        self.name, self.port = "direct (smtp-sink)", free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{self.port}", "1024"],
                                     stdout=subprocess.DEVNULL)
        self.pid = None  # the sink's cost is on every path alike: not counted
        wait_port(self.port, self.proc)


class Direct(Path_):
    def __init__(self, sink: Sink) -> None:
        self.name, self.port = "direct (smtp-sink)", sink.port


class Proxy(Path_):
    def __init__(self, sink: Sink) -> None:
        self.name, self.port = "aiosmtpd->aiosmtplib", free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", PROXY, str(self.port), str(sink.port)])
        self.pid = self.proc.pid
        wait_port(self.port, self.proc)


def has_processes(root: Path) -> bool:
    return "processes" in (root / "mailguard" / "config.py").read_text(encoding="utf-8")


class Mailguard(Path_):
    def __init__(self, label: str, root: Path, work: Path, sink: Sink, processes: int, policy: str) -> None:
        self.name = f"{label} x{processes}"
        self.port = free_port()
        home = Path(tempfile.mkdtemp(prefix=f"mg-{policy}-", dir=work))
        (home / "policies").mkdir()
        rules = '[[rule]]\nname = "hold-external"\nany_external = true\naction = "hold"\n' if policy == "held" else ""
        (home / "policies" / "00-bench.toml").write_text(rules + '[default]\naction = "pass"\n', encoding="utf-8")
        procs = f"processes = {processes}\n" if processes > 1 else ""
        (home / "mailguard.toml").write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\nhostname = "mailguard.{INTERNAL}"\n{procs}'
            f'[upstream]\nurl = "smtp://127.0.0.1:{sink.port}"\n'
            f'[organisation]\ninternal_domains = ["{INTERNAL}"]\n'
            f'[store]\npath = "{home / "store"}"\nnotice_from = "mailguard@{INTERNAL}"\n'
            f'[policy]\ndir = "{home / "policies"}"\n[log]\nlevel = "warning"\n', encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(root), "MAILGUARD_ALLOW_ROOT": "1"}
        self.log = open(home / "serve.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailguard", "-c", str(home / "mailguard.toml"), "serve"],
                                     env=env, cwd=home, stderr=self.log)
        self.pid = self.proc.pid
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        super().stop()
        self.log.close()


# -- load ---------------------------------------------------------------------------------


@dataclass
class Result:
    rate: float
    cpu_ms: float | None
    errors: str


def smtp_source(port: int, messages: int, sessions: int, reuse: bool) -> tuple[float, str]:
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(SIZE),
           "-f", SENDER, "-t", RECIPIENT, "-M", "bench.example", *(["-d"] if reuse else []),
           f"127.0.0.1:{port}"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    el = time.perf_counter() - t
    err = (done.stderr.strip().splitlines() or [""])[0][:100]
    if done.returncode:
        err = err or f"exit {done.returncode}"
    return el, err


def measure(path: Path_, messages: int, sessions: int, reuse: bool) -> Result:
    smtp_source(path.port, max(100, messages // 10), sessions, reuse)  # warm-up
    before = tree_ticks(path.pid) if path.pid else {}
    el, err = smtp_source(path.port, messages, sessions, reuse)
    cpu = cpu_seconds_between(before, tree_ticks(path.pid)) * 1000 / messages if path.pid else None
    return Result(messages / el, cpu, err)


def message() -> bytes:
    head = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: bench\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog 0123 abcdefghijklmnopqrstu\r\n"
    body = line * ((SIZE - len(head)) // len(line) + 1)
    return (head + body)[:SIZE - 2] + b"\r\n"


async def paced(port: int, rate: float, seconds: float) -> tuple[list[float], int]:
    """One message per new connection every 1/rate s; latency from its scheduled time."""
    data = message()
    lat: list[float] = []
    failed = 0

    async def one(at: float) -> None:
        nonlocal failed
        try:
            await aiosmtplib.send(data, sender=SENDER, recipients=[RECIPIENT], hostname="127.0.0.1",
                                  port=port, start_tls=False, local_hostname="bench", timeout=30)
        except aiosmtplib.SMTPException:
            failed += 1
            return
        lat.append(time.perf_counter() - at)

    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(int(rate * seconds)):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return lat, failed


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


# -- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            print(f"{tool} is missing (apt-get install postfix)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="mailguard-bench-"))
    impls = [("mailguard", REPO)]
    if args.baseline:
        impls.append(("baseline", Path(args.baseline).resolve()))
    sink = Sink()
    rows: list[tuple[str, str, str, Result]] = []
    modes = [("new", False), ("reuse", True)]
    print(f"{SIZE // 1024} KB messages, smtp-source -s {args.sessions}, {args.messages} messages per run"
          f" ({args.messages * args.direct_factor} direct, {args.held_messages} held); {os.cpu_count()} cores,"
          f" load average {os.getloadavg()[0]:.1f} at start", flush=True)
    try:
        direct = Direct(sink)
        for mode, reuse in modes:
            rows.append((direct.name, mode, "-", measure(direct, args.messages * args.direct_factor,
                                                         args.sessions, reuse)))
        if not args.no_proxy:
            proxy = Proxy(sink)
            try:
                for mode, reuse in modes:
                    rows.append((proxy.name, mode, "-", measure(proxy, args.messages, args.sessions, reuse)))
            finally:
                proxy.stop()
        for label, root in impls:
            counts = [1, args.processes] if has_processes(root) and args.processes > 1 else [1]
            for n in counts:
                for policy in args.policies.split(","):
                    mg = Mailguard(label, root, work, sink, n, policy)
                    try:
                        count = args.held_messages if policy == "held" else args.messages
                        for mode, reuse in modes:
                            rows.append((mg.name, mode, policy, measure(mg, count, args.sessions, reuse)))
                    finally:
                        mg.stop()
        direct_rate = {mode: r.rate for name, mode, _, r in rows if name == direct.name}
        print(f"\n{'path':22} {'conn':5} {'policy':6} {'msg/s':>7} {'x direct':>8} {'CPU ms/msg':>10}  errors")
        for name, mode, policy, r in rows:
            cpu = f"{r.cpu_ms:10.2f}" if r.cpu_ms is not None else f"{'-':>10}"
            print(f"{name:22} {mode:5} {policy:6} {r.rate:7.0f} {r.rate / direct_rate[mode]:8.3f} {cpu}  {r.errors}")
        base = {(mode, policy): r for name, mode, policy, r in rows if name == "baseline x1"}
        if base:
            print("\nmailguard x1 against baseline x1 (same run):")
            for name, mode, policy, r in rows:
                if name == "mailguard x1":
                    b = base[(mode, policy)]
                    print(f"  {mode:5} {policy:4}  msg/s x{r.rate / b.rate:.2f}   CPU/msg {b.cpu_ms:.2f} -> {r.cpu_ms:.2f} ms"
                          f" (x{b.cpu_ms / r.cpu_ms:.2f})")

        if args.no_paced:
            return 0
        print(f"\npaced: {args.rate:.0f} msg/s offered for {args.paced_seconds:.0f} s, a new connection per message")
        ref, ref_failed = asyncio.run(paced(sink.port, args.rate, args.paced_seconds))
        print(f"  {'direct':14} p50 {pct(ref, 50):6.2f} ms  p99 {pct(ref, 99):6.2f} ms  failed {ref_failed}")
        for label, root in impls:
            counts = [1, args.processes] if has_processes(root) and args.processes > 1 else [1]
            for n in counts:
                mg = Mailguard(label, root, work, sink, n, "pass")
                try:
                    asyncio.run(paced(mg.port, args.rate, 1.0))  # warm-up
                    lat, failed = asyncio.run(paced(mg.port, args.rate, args.paced_seconds))
                finally:
                    mg.stop()
                added99 = pct(lat, 99) - pct(ref, 99)
                print(f"  {mg.name:14} p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms  failed {failed}"
                      f"   added p50 {pct(lat, 50) - pct(ref, 50):5.2f} ms  p99 {added99:5.2f} ms"
                      f" ({'<' if added99 < 20 else 'NOT <'} 20 ms)")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    finally:
        sink.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1500, help="messages per smtp-source run (default 1500)")
    p.add_argument("--held-messages", type=int, default=600, help="messages per held run (default 600)")
    p.add_argument("--direct-factor", type=int, default=4, help="direct runs send this many times more")
    p.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    p.add_argument("--processes", type=int, default=2, help="N for the multi-process runs (default 2)")
    p.add_argument("--rate", type=float, default=100.0, help="offered msg/s for the latency runs")
    p.add_argument("--paced-seconds", type=float, default=5.0, help="length of each latency run")
    p.add_argument("--baseline", metavar="PATH", help="an older mailguard checkout to run the same way")
    p.add_argument("--policies", default="pass,held", help="mailguard policies to run (default pass,held)")
    p.add_argument("--no-proxy", action="store_true", help="skip the bare aiosmtpd proxy")
    p.add_argument("--no-paced", action="store_true", help="skip the latency runs")
    p.add_argument("--keep", action="store_true", help="keep the stores and serve logs")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
