"""Metrics, asserted by scraping the real endpoint of a real `mailguard serve`
after sending real mail through it to a real upstream sink.

The relay runs as a subprocess (``python -m mailguard -c CONFIG serve``) so its
counters start at zero and every assertion is an exact count.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import subprocess
import sys
import urllib.request
import zipfile
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

REPO = Path(__file__).resolve().parents[2]
CLERK = "clerk@city.example.lg.jp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


from mynumbers import my_numbers  # noqa: E402


def message(to: list[str], *, cc: list[str] = (), numbers: list[str] = (), reply: bool = False,
            attachment: tuple[str, bytes] | None = None) -> bytes:
    m = EmailMessage()
    m["From"], m["To"] = CLERK, ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = "Re: 照会の件" if reply else "資料送付"
    if reply:
        m["In-Reply-To"] = "<q1@a-city.example.jp>"
    m.set_content("資料をお送りします。\n")
    if numbers:
        csv = "氏名,個人番号\r\n" + "".join(f"住民{i},{n}\r\n" for i, n in enumerate(numbers))
        m.add_attachment(csv.encode(), maintype="text", subtype="csv", filename="list.csv")
    if attachment:
        m.add_attachment(attachment[1], maintype="application", subtype="zip", filename=attachment[0])
    return m.as_bytes()


def zipcrypto_zip() -> bytes:
    """A zip whose entry carries the 'encrypted' flag (ZipCrypto): the stdlib
    cannot write encrypted zips, so set general-purpose bit 0 in both headers."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("secret.csv", b"\x8a\x13\x99garbage-ciphertext")
    raw = bytearray(buf.getvalue())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.find(sig)
        raw[i + flag_at] |= 0x01
    return bytes(raw)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("mailguard_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    out["__text__"] = text  # type: ignore[assignment]
    return out


class Serve:
    def __init__(self, tmp: Path, upstream_url: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.config = tmp / "mailguard.toml"
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[upstream]\nurl = "{upstream_url}"\ntimeout = 5\n'
            '[organisation]\ninternal_domains = ["city.example.lg.jp"]\n'
            f'[store]\npath = "{tmp / "store"}"\nnotify_sender = false\n'
            f'[policy]\ndir = "{REPO / "policies"}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n', encoding="utf-8")
        self.log = tmp / "serve.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailguard", "-c", str(self.config), "serve",
                stdout=log, stderr=log, cwd=REPO)
        for _ in range(300):
            if self.proc.returncode is not None:
                raise AssertionError("serve exited:\n" + self.log.read_text()[-3000:])
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.metrics_port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError("serve did not start:\n" + self.log.read_text()[-3000:])

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailguard", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, cwd=REPO)


async def send(port: int, data: bytes, rcpts: list[str]) -> tuple[int, str]:
    """Send; return the final reply (code, text), a refusal included."""
    try:
        errors, reply = await aiosmtplib.send(data, sender=CLERK, recipients=rcpts,
                                               hostname="127.0.0.1", port=port, timeout=30)
        return int(reply.split()[0]) if reply[:3].isdigit() else 250, reply
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message


async def test_metrics_count_what_the_relay_did(upstream, tmp_path: Path) -> None:
    mg = Serve(tmp_path, upstream.url)
    await mg.start()
    try:
        before = scrape(mg.metrics_port)
        assert before["mailguard_held_messages"] == 0
        assert before["mailguard_held_oldest_age_seconds"] == 0

        nums = my_numbers(3, seed=5)
        code, _ = await send(mg.port, message(["partner@example.com"]), ["partner@example.com"])
        assert code == 250  # clean: forwarded
        code, _ = await send(mg.port, message(["tanto@example.com"], numbers=nums),
                             ["tanto@example.com"])
        assert code == 250  # held: durably stored, so 250
        others = ["a@a-city.example.jp", "b@b-town.example.jp"]
        code, text = await send(mg.port, message(others[:1], cc=others[1:], numbers=nums, reply=True),
                                others)
        assert code == 550, text  # reply-all to externals with numbers: blocked
        code, _ = await send(mg.port, message(["vendor@example.com"],
                                              attachment=("data.zip", zipcrypto_zip())),
                             ["vendor@example.com"])
        assert code == 250  # held: unscannable to an external recipient

        upstream.drop_at = "MAIL"  # the upstream drops every connection at MAIL
        code, _ = await send(mg.port, message(["late@example.com"]), ["late@example.com"])
        assert code == 451  # upstream down: tempfail

        m = scrape(mg.metrics_port)
        text = m.pop("__text__")
        assert m['mailguard_messages_total{decision="pass",rule="default"}'] == 1
        assert m['mailguard_messages_total{decision="hold",rule="external-hold"}'] == 1
        assert m['mailguard_messages_total{decision="block",rule="reply-all-external"}'] == 1
        assert m['mailguard_messages_total{decision="hold",rule="unscannable-external-hold"}'] == 1
        assert m["mailguard_persons_found_total"] == 6  # 3 held + 3 blocked
        assert m['mailguard_message_persons_bucket{le="1.0"}'] == 0
        assert m['mailguard_message_persons_bucket{le="10.0"}'] == 2
        assert m['mailguard_unscannable_items_total{reason="encrypted-zip-entry"}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("mailguard_upstream_errors_total")) >= 1
        assert m["mailguard_held_messages"] == 2
        assert 0 < m["mailguard_held_oldest_age_seconds"] < 120
        assert m["mailguard_scan_seconds_count"] == 4
        assert m['mailguard_relay_seconds_count{outcome="forwarded"}'] == 1
        assert m['mailguard_relay_seconds_count{outcome="held"}'] == 2
        assert m['mailguard_relay_seconds_count{outcome="blocked"}'] == 1
        assert m['mailguard_smtp_replies_total{code="250"}'] == 3
        assert m['mailguard_smtp_replies_total{code="550"}'] == 1
        assert not [n for n in nums if n in text], "a number reached the metrics page"
        labels = re.findall(r'(\w+)="([^"]*)"', text)
        assert not [v for k, v in labels if k not in ("le", "code") and re.search(r"\d", v)]

        # A release from the CLI (another process) shows at the next scrape.
        held = mg.cli("held", "list", "--json")
        assert held.returncode == 0, held.stderr
        first = held.stdout.splitlines()[0]
        hold_id = re.search(r'"id":\s*"([a-z]+)"', first).group(1)
        r = mg.cli("held", "reject", hold_id, "--reason", "metrics test")
        assert r.returncode == 0, r.stderr
        assert scrape(mg.metrics_port)["mailguard_held_messages"] == 1
    finally:
        await mg.stop()


async def test_metrics_are_off_unless_configured(upstream, tmp_path: Path) -> None:
    mg = Serve(tmp_path, upstream.url)
    mg.config.write_text(re.sub(r"\[metrics\]\nlisten = .*\n", "", mg.config.read_text()))
    with open(mg.log, "ab") as log:
        mg.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailguard", "-c", str(mg.config), "serve",
            stdout=log, stderr=log, cwd=REPO)
    try:
        for _ in range(300):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", mg.port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        code, _ = await send(mg.port, message(["partner@example.com"]), ["partner@example.com"])
        assert code == 250
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{mg.metrics_port}/metrics", timeout=2)
        assert "metrics_started" not in mg.log.read_text()
    finally:
        await mg.stop()
