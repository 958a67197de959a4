"""Scan workers in a real process pool: the memory cap, the findings cap counted in the worker."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import random

import docs_fixtures as fx

from mailguard.config import LimitsConfig
from mailguard.scan import MEMORY_LIMIT_REASON, Scanner

KEY = b"k" * 32
LIMITS = LimitsConfig(scan_timeout=300.0, max_findings=10**9)


def _csv(rows: list[str], header: str = "ID,番号") -> bytes:
    return ("\n".join([header] + [f"{i},{v}" for i, v in enumerate(rows)]) + "\n").encode()


def _expanding_gzip(megabytes: int) -> bytes:
    """Text that gzip squeezes 88:1 (under the 100:1 ratio limit) and that
    decodes to a str of 4 bytes per character (one astral kanji, 𠮷)."""
    rnd = random.Random(4)
    lines = ["".join(rnd.choice("山田太郎花子𠮷野家住所東京都") for _ in range(30)) for _ in range(200)]
    block = ("\n".join(lines) + "\n").encode()  # ~18 KB: inside deflate's window
    return gzip.compress(block * ((megabytes << 20) // len(block)), 6, mtime=0)


async def test_worker_memory_cap_makes_the_attachment_unscannable():
    gz = _expanding_gzip(64)  # 64 MB: inside max_expanded_bytes and the ratio limit
    n = fx.my_number(41)
    data = fx.make_message(body=f"個人番号 {n}", attachments=[("meibo.txt.gz", gz)])
    scanner = Scanner(dataclasses.replace(LIMITS, scan_workers=1, max_worker_memory=400 << 20))
    try:
        report = await scanner.scan(data)
        assert ("attachment:meibo.txt.gz/meibo.txt", MEMORY_LIMIT_REASON) in \
            [(u.location, u.reason) for u in report.unscannable]
        assert report.persons == 1  # the rest of the message was still scanned
        # The worker survived: the next message scans normally.
        report = await scanner.scan(fx.make_message(body=f"個人番号 {n}"))
        assert report.persons == 1 and not report.unscannable
    finally:
        await scanner.aclose()


async def test_without_the_memory_cap_the_same_file_is_read():
    gz = _expanding_gzip(8)
    data = fx.make_message(body="添付します", attachments=[("meibo.txt.gz", gz)])
    scanner = Scanner(dataclasses.replace(LIMITS, scan_workers=1))
    try:
        report = await scanner.scan(data)
    finally:
        await scanner.aclose()
    assert not report.unscannable


def test_scan_in_worker_counts_over_the_cap():
    rows = [fx.my_number(i) for i in range(1500)]
    data = fx.make_message(attachments=[("a.csv", _csv(rows, "氏名,個人番号"))])

    async def run():
        scanner = Scanner(LimitsConfig(scan_workers=1))  # default cap: 1000 findings
        try:
            return await scanner.scan(data)
        finally:
            await scanner.aclose()

    report = asyncio.run(run())
    assert (len(report.findings), report.findings_total, report.persons) == (1000, 1500, 1500)
