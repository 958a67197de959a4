#!/usr/bin/env python3
"""Where the relay's CPU goes under load: one serve, one policy, one profile.

    .venv/bin/python bench/profile_relay.py [--policy pass|held] [--messages 3000] [--reuse]
                                            [--sessions 20] [--out FILE] [--top 30]

bench/relay.py says how fast; this says why. It starts the same smtp-sink and
`mailguard serve` as bench/relay.py (one process, a pass-everything or a
hold-everything policy), warms it up, then sends ``--messages`` with Postfix's
smtp-source while it reads, per thread of the serve process, CPU (user and
kernel) and context switches from /proc. With py-spy installed
(``.venv/bin/pip install py-spy``; not a dependency) it also samples the
Python stacks of whichever thread holds the GIL (``py-spy record --gil``) and
prints the functions with the largest share, separately for the event loop's
thread and for the I/O threads (store, audit). The raw samples go to ``--out``
for a closer look (py-spy's "raw" format: one stack and its count per line).

These figures compare runs of the same machine state only (see bench/relay.py).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay import REPO, Mailguard, Sink, smtp_source  # noqa: E402  (bench/relay.py)

MAIN_THREAD_MARK = "Runner.run"  # a frame every stack of the event loop's thread has


def thread_stats(pid: int) -> dict[int, tuple[int, int, int]]:
    """tid -> (user ticks, kernel ticks, context switches) of each thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        switches = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
        out[int(tid)] = (int(stat[11]), int(stat[12]), switches)
    return out


def per_message(before: dict, after: dict, pid: int, messages: int) -> None:
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    rows = {"event loop (main thread)": [0, 0, 0], "other threads (I/O pool, workers)": [0, 0, 0]}
    for tid, (user, kern, sw) in after.items():
        u0, k0, s0 = before.get(tid, (0, 0, 0))
        row = rows["event loop (main thread)" if tid == pid else "other threads (I/O pool, workers)"]
        row[0] += user - u0
        row[1] += kern - k0
        row[2] += sw - s0
    print(f"{'per message':36s} {'user ms':>8s} {'kernel ms':>10s} {'ctx switches':>13s}")
    for name, (user, kern, sw) in rows.items():
        print(f"{name:36s} {user * tick_ms / messages:8.2f} {kern * tick_ms / messages:10.2f} "
              f"{sw / messages:13.1f}")


def summarise(raw: Path, top: int) -> None:
    """Cumulative share of each function, for the loop's thread and the others."""
    groups: dict[str, collections.Counter[str]] = {"event loop": collections.Counter(),
                                                    "other threads": collections.Counter()}
    totals = collections.Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        group = "event loop" if any(MAIN_THREAD_MARK in f for f in frames) else "other threads"
        totals[group] += int(count)
        for frame in set(frames):
            groups[group][frame] += int(count)
    all_samples = sum(totals.values()) or 1
    for group, counter in groups.items():
        print(f"\n{group}: {totals[group] * 100 / all_samples:.0f}% of the samples holding the GIL")
        shown = 0
        for frame, n in counter.most_common():
            if "mailguard/" not in frame and "aiosmtp" not in frame and "email/" not in frame:
                continue  # the interpreter's own frames (runpy, threading) say nothing here
            if n >= 0.995 * totals[group]:
                continue  # the common root (main, serve): in every sample
            print(f"  {n * 100 / (totals[group] or 1):5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", choices=("pass", "held"), default="pass")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--reuse", action="store_true", help="one connection per session (smtp-source -d)")
    p.add_argument("--out", default="", help="keep py-spy's raw samples here")
    p.add_argument("--top", type=int, default=30, help="functions shown per thread group")
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    have_py_spy = os.access(py_spy, os.X_OK)
    work = Path(tempfile.mkdtemp(prefix="mg-profile-"))
    sink = Sink()
    relay = Mailguard("mailguard", REPO, work, sink, 1, args.policy)
    spy = None
    try:
        smtp_source(relay.port, max(100, args.messages // 10), args.sessions, args.reuse)  # warm-up
        raw = Path(args.out) if args.out else work / "samples.txt"
        if have_py_spy:
            spy = subprocess.Popen([py_spy, "record", "--gil", "-r", "200", "-f", "raw", "-o", str(raw),
                                    "-p", str(relay.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached before the load starts
        before = thread_stats(relay.pid)
        elapsed, err = smtp_source(relay.port, args.messages, args.sessions, args.reuse)
        after = thread_stats(relay.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        print(f"{args.messages} messages, {args.policy}, {'reuse' if args.reuse else 'new connection'}, "
              f"{args.sessions} sessions: {args.messages / elapsed:.0f} msg/s"
              f"{' (sampling slows it)' if spy is not None else ''}{'; smtp-source: ' + err if err else ''}")
        per_message(before, after, relay.pid, args.messages)
        if spy is None:
            print("\npy-spy not installed (.venv/bin/pip install py-spy): no stacks")
        elif raw.exists():
            summarise(raw, args.top)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        relay.stop()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
