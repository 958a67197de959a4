"""server.processes = 2 under load (issue 15): holds, CLI releases and a worker
killed with SIGKILL at once. Every message that got a 250 is then either in the
upstream or in the hold store, exactly once, and the audit chain verifies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiosmtplib

from conftest import REPO, write_config_file
from test_relay_process import free_port, start_process

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
INTERNAL = "city.example.lg.jp"
EXTERNAL = "ext.example.com"
MESSAGES = 120


def _config(tmp_path: Path, upstream_url: str, port: int) -> Path:
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "00-default.toml").write_text(
        '[default]\naction = "pass"\n\n[[rule]]\nname = "external-hold"\n'
        f'recipient_domain = ["{EXTERNAL}"]\naction = "hold"\n', encoding="utf-8")
    return write_config_file(tmp_path / "mailguard.toml", {
        "server": {"listen": f"127.0.0.1:{port}", "hostname": "mailguard.test", "processes": 2},
        "upstream": {"url": upstream_url, "timeout": 10},
        "organisation": {"internal_domains": [INTERNAL]},
        "store": {"path": str(tmp_path / "store"), "notify_sender": False},
        "policy": {"dir": str(pol)},
    })


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), *args], env=ENV,
                          capture_output=True, text=True, timeout=60)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


async def _send(port: int, i: int) -> bool:
    rcpt = f"r{i}@{EXTERNAL if i % 2 else INTERNAL}"
    data = f"From: m{i}@{INTERNAL}\r\nTo: {rcpt}\r\nSubject: m{i}\r\n\r\nhello {i}\r\n"
    try:
        _, reply = await aiosmtplib.send(data.encode(), sender=f"m{i}@{INTERNAL}", recipients=[rcpt],
                                         hostname="127.0.0.1", port=port, timeout=20, start_tls=False)
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


async def test_two_processes_hold_release_and_sigkill_lose_nothing(tmp_path: Path, upstream) -> None:
    port = free_port()
    cfg = _config(tmp_path, f"smtp://127.0.0.1:{upstream.port}", port)
    parent = await start_process([sys.executable, "-m", "mailguard", "-c", str(cfg), "serve"], port, tmp_path)
    try:
        for _ in range(300):  # both workers up (generous: CI's cores are shared)
            if len(_children(parent.pid)) >= 2:
                break
            await asyncio.sleep(0.1)
        acked: dict[int, bool] = {}
        queue = list(range(MESSAGES))
        killed: list[int] = []
        released: list[str] = []

        async def client() -> None:
            while queue:
                i = queue.pop(0)
                acked[i] = await _send(port, i)

        async def chaos() -> None:
            while len(acked) < MESSAGES // 3:
                await asyncio.sleep(0.02)
            victim = _children(parent.pid)[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            for _ in range(3):  # releases from the CLI while the relay holds more
                out = await asyncio.to_thread(_cli, cfg, "held", "list", "--json")
                ids = [json.loads(line)["id"] for line in out.stdout.splitlines() if line.strip()]
                for hid in ids[:3]:
                    r = await asyncio.to_thread(_cli, cfg, "held", "release", hid, "--reason", "load test")
                    if r.returncode == 0:
                        released.append(hid)
                await asyncio.sleep(0.1)

        await asyncio.gather(chaos(), *(client() for _ in range(6)))
        assert killed and released
        for _ in range(300):  # the supervisor restarted the killed worker
            kids = _children(parent.pid)
            if len(kids) >= 2 and killed[0] not in kids:
                break
            await asyncio.sleep(0.1)
        assert len(_children(parent.pid)) == 2 and killed[0] not in _children(parent.pid)
        assert await _send(port, MESSAGES)  # still serving
        acked[MESSAGES] = True

        delivered = Counter(m.mail_from for m in upstream.messages)
        out = _cli(cfg, "held", "list", "--json", "--state", "all")
        assert out.returncode == 0, out.stderr
        states = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        held = Counter(s["from"] for s in states if s["state"] == "held")
        assert sum(1 for s in states if s["state"] == "released") == len(released)
        ok = [i for i, a in acked.items() if a]
        assert len(ok) >= MESSAGES // 2
        for i in ok:
            sender = f"m{i}@{INTERNAL}"
            assert delivered[sender] + held[sender] == 1, (i, delivered[sender], held[sender])
        for sender, n in delivered.items():  # nothing twice, acknowledged or not
            assert n + held[sender] <= 1, sender
        verify = _cli(cfg, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        parent.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(parent.wait(), 90) == 0
        finally:
            if parent.returncode is None:
                parent.kill()
