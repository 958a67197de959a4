"""kill -9 of `serve` must not leave its scan workers running (issue 14, item 3).

The workers come from a forkserver, so they are grandchildren of serve; every
descendant found through /proc before the kill must be gone a few seconds after.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from hold_support import NUMBERS, Serve, Sink, message_with_numbers, send, write_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a live process, None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    state, ppid = fields[0], int(fields[1])
    return None if state in ("Z", "X") else (ppid, state)


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                parents[int(entry)] = st[0]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def test_scan_workers_exit_when_serve_is_killed(tmp_path):
    sink = Sink().start()
    srv = Serve(write_config(tmp_path, sink.port), tmp_path / "serve.log").start()
    try:
        # One message makes the scanner start its pool.
        code, _ = send(srv.port, ["colleague@city.example.lg.jp"], message_with_numbers(NUMBERS[:1]))
        assert code == 250
        children = descendants(srv.proc.pid)
        assert len(children) >= 2, "expected the forkserver and at least one scan worker"
        srv.kill9()
        deadline = time.monotonic() + 5
        alive = children
        while time.monotonic() < deadline:
            alive = {pid for pid in children if _stat(pid) is not None}
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, f"{len(alive)} of serve's {len(children)} child processes outlived it"
    finally:
        srv.kill9()
        sink.stop()
