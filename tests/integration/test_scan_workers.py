"""Scanner: scanning off the event loop in a real process pool, timeout and crash paths."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import docs_fixtures as fx  # noqa: E402

from mailguard.config import LimitsConfig  # noqa: E402
from mailguard.detect import mask  # noqa: E402
from mailguard.errors import ScanError  # noqa: E402
from mailguard.scan import Scanner  # noqa: E402

N1 = fx.my_number(21)


async def test_scan_in_worker_finds_number_and_lists_attachments():
    scanner = Scanner(LimitsConfig(scan_workers=1))
    try:
        data = fx.make_message(body=f"個人番号 {N1}", attachments=[("a.xlsx", fx.make_xlsx([[1]]))])
        report = await scanner.scan(data)
    finally:
        await scanner.aclose()
    found = [f.masked for f in report.findings] == [mask(N1)]
    assert found
    assert report.persons == 1
    assert [a.name for a in report.attachments] == ["a.xlsx"]


async def test_hard_timeout_returns_unscannable_and_replaces_the_worker():
    # A worker process cannot even start within 1 ms: the hard timeout fires.
    scanner = Scanner(LimitsConfig(scan_workers=1, scan_timeout=0.001))
    try:
        report = await scanner.scan(fx.make_message(body=f"個人番号 {N1}"))
        assert [(u.location, u.reason) for u in report.unscannable] == \
            [("message", "scan time limit exceeded")]
        assert report.findings == ()
        # The replacement pool works.
        scanner.limits = dataclasses.replace(scanner.limits, scan_timeout=60.0)
        report = await scanner.scan(fx.make_message(body=f"個人番号 {N1}"))
        assert report.persons == 1
    finally:
        await scanner.aclose()


async def test_crashed_worker_raises_scan_error():
    scanner = Scanner(LimitsConfig(scan_workers=1, scan_timeout=60.0))
    try:
        # Kill the worker while it still starts up (imports take far longer than 50 ms).
        task = asyncio.create_task(scanner.scan(fx.make_message(body="x")))
        await asyncio.sleep(0.05)
        for proc in list(scanner._pool._processes.values()):  # noqa: SLF001
            os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(ScanError):
            await task
        report = await scanner.scan(fx.make_message(body=f"個人番号 {N1}"))
        assert report.persons == 1  # a fresh worker took over
    finally:
        await scanner.aclose()
