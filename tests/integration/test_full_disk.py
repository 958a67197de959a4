"""A full disk (issue 14, item 6): new mail gets 451 4.3.1 (never a 250 whose audit
record could not be written), no audit record is lost, and the chain verifies
throughout. Runs on a small tmpfs, so it needs root (CI runs it as root)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import aiosmtplib
import pytest

from mailguard.audit import AuditLog
from mailguard.errors import AuditError
from mailguard.hold import Holder
from mailguard.recorder import Recorder

MIN_FREE = 512 * 1024


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; CI runs this test as root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {r.stderr.strip()[:200]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write until the file system is full."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"x" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError:
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


def _message(n: int) -> bytes:
    return (f"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: disk {n}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@city.example.lg.jp>\r\n\r\nhello {n}\r\n").encode()


async def _send(port: int, n: int) -> tuple[int, str]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20, start_tls=False)
    await smtp.connect()
    try:
        errors, text = await smtp.sendmail("a@city.example.lg.jp", ["b@example.com"], _message(n))
        return 250, text
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()


def _records(store: Path) -> list[dict]:
    return [json.loads(x) for x in (store / "audit.jsonl").read_text().splitlines()]


async def test_full_disk_tempfails_new_mail_and_loses_no_audit_record(small_disk, start_relay, upstream):
    store = small_disk / "store"

    def hook(config, services):
        services.holder = Holder(config)
        services.recorder = Recorder(config, services.holder.audit)
        return services

    h = await start_relay(store_path=store, extra={"store": {"min_free": MIN_FREE}}, services_hook=hook)
    assert (await _send(h.port, 1))[0] == 250
    assert (store / ".audit.reserve").exists()  # made on the first append, while there was room

    filler = fill(small_disk)
    code, text = await _send(h.port, 2)
    assert code == 451 and "4.3.1" in text
    assert len(upstream.messages) == 1, "a message refused for the disk must not go upstream"

    # Records for mail already accepted still fit: once the slack of the last page
    # is used up, the reserve is given up for them and no append fails.
    log = AuditLog(store)
    for i in range(1000):
        log.append("notice", operator="mailguard", id="diskfull", kind="held", n=i)
        if not (store / ".audit.reserve").exists():
            break
    assert not (store / ".audit.reserve").exists()
    assert len([r for r in _records(store) if r.get("id") == "diskfull"]) == i + 1
    # Past the reserve the append fails, but leaves no torn line: the chain still verifies.
    fill(small_disk)
    with pytest.raises(AuditError):
        for i in range(100000):
            log.append("notice", operator="mailguard", id="overflow", n=i)
    assert log.verify().ok

    for p in small_disk.glob("filler-*"):
        p.unlink()
    assert (await _send(h.port, 3))[0] == 250
    records = _records(store)
    assert AuditLog(store).verify().ok
    passes = [r for r in records if r["event"] == "pass"]
    assert len(passes) == 2 == len(upstream.messages), "every 250 has its pass record"
    assert any(r.get("id") == "diskfull" for r in records)
    assert (store / ".audit.reserve").exists(), "the reserve is made again once there is room"
