"""Scanner: small single-part text scanned on the event loop (issue 15), anything
else in a worker, with the same report either way."""

from __future__ import annotations

import pytest

from mailguard import scan
from mailguard.config import LimitsConfig
from mailguard.scan import Scanner, inline_scannable, scan_message
from tests.mynumbers import my_numbers

HEAD = b"From: a@city.example.lg.jp\r\nTo: b@ext.example.com\r\nSubject: t\r\n"


@pytest.mark.parametrize("data, inline", [
    (HEAD + b"\r\nhello\r\n", True),
    (HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello", True),
    (HEAD + b"Content-Type: text/plain;\r\n\tcharset=iso-2022-jp\r\n\r\nhello", True),
    (HEAD + b"Content-Transfer-Encoding: 8bit\r\n\r\nhello", True),
    (HEAD + b"Content-Type: text/plain; name=a.txt\r\n\r\nhello", False),
    (HEAD + b"Content-Type: text/html\r\n\r\n<p>hello", False),
    (HEAD + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n", False),
    (HEAD + b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=", False),
    (HEAD + b"Content-Transfer-Encoding: quoted-printable\r\n\r\nhello", False),
    (HEAD + b"Content-Disposition: attachment\r\n\r\nhello", False),
    (HEAD + b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx", False),
    (HEAD + b"X: y\rContent-Type: multipart/mixed; boundary=x\r\n\r\n--x", False),
    (HEAD + b"\r\nhello\x00", False),
    (HEAD + b"\r\n" + b"a" * scan.INLINE_MAX_BYTES, False),
    (b"no header end", False),
])
def test_what_is_scanned_inline(data: bytes, inline: bool) -> None:
    assert inline_scannable(data) is inline


async def test_inline_scan_reports_what_a_worker_would_and_starts_no_pool() -> None:
    limits = LimitsConfig()
    numbers = my_numbers(3)
    data = HEAD + b"\r\n" + ("個人番号: " + "\r\n個人番号: ".join(numbers) + "\r\n").encode()
    scanner = Scanner(limits, key=b"k" * 32)
    try:
        report = await scanner.scan(data)
        assert scanner._pool is None  # never left the event loop
        assert report == scan_message(data, limits, key=b"k" * 32)
        assert report.persons == 3
    finally:
        await scanner.aclose()


async def test_a_slow_inline_scan_goes_to_a_worker(monkeypatch) -> None:
    monkeypatch.setattr(scan, "INLINE_DEADLINE", -1.0)  # out of time at once
    limits = LimitsConfig()
    data = HEAD + b"\r\nMy Number " + my_numbers(1)[0].encode() + b"\r\n"
    scanner = Scanner(limits, key=b"k" * 32)
    try:
        report = await scanner.scan(data)
        assert scanner._pool is not None  # scanned by a worker, under the usual limits
        assert not report.unscannable and report.findings_total == 1
    finally:
        await scanner.aclose()
