"""Shared pieces of the hold-store end-to-end tests: a capturing upstream sink that
can be stopped or made to refuse, a real `mailguard serve` subprocess, the CLI as a
subprocess, and messages that carry check-digit-valid (made-up) My Numbers.

Numbers are computed from an 11-digit prefix here so no test id or assertion
message needs to show one.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
INTERNAL = "city.example.lg.jp"
SENDER = f"staff@{INTERNAL}"


from mynumbers import complete as valid_number  # noqa: E402

NUMBERS = [valid_number(p) for p in ("31415926535", "27182818284", "16180339887", "14142135623")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler:
    def __init__(self, sink: "Sink") -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.sink.refuse_rcpts:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.sink.delay_data:
            import asyncio

            await asyncio.sleep(self.sink.delay_data)
        if self.sink.refuse_data:
            return self.sink.refuse_data
        with self.sink.lock:
            self.sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self.sink.helos.append((session.host_name, envelope.mail_from))  # the client's EHLO name
        return "250 2.0.0 Ok: queued as SINK"


class Sink:
    """The upstream smarthost: records (mail_from, rcpt_tos, bytes) per message."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.helos: list[tuple[str, str]] = []  # (EHLO name, MAIL FROM) per message taken
        self.lock = threading.Lock()
        self.refuse_data = ""
        self.delay_data = 0.0
        self.refuse_rcpts: set[str] = set()
        self.controller: Controller | None = None

    def start(self) -> "Sink":
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     decode_data=False, data_size_limit=0)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, rcpt: str) -> list[tuple[str, list[str], bytes]]:
        with self.lock:
            return [m for m in self.messages if rcpt in m[1]]

    def wait_for(self, pred, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [m for m in self.messages if pred(m)]
            if got:
                return got
            time.sleep(0.05)
        return []


def write_config(tmp: Path, sink_port: int, *, listen_port: int | None = None, expiry_hours: float = 72,
                 policy_dir: Path | None = None) -> Path:
    listen_port = listen_port or free_port()
    cfg = tmp / "mailguard.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:{listen_port}"
hostname = "mailguard.{INTERNAL}"

[upstream]
url = "smtp://127.0.0.1:{sink_port}"
timeout = 10

[organisation]
internal_domains = ["{INTERNAL}"]

[store]
path = "{tmp / 'store'}"
hold_expiry_hours = {expiry_hours}
notice_from = "mailguard@{INTERNAL}"

[policy]
dir = "{policy_dir or ROOT / 'policies'}"
""",
        encoding="utf-8",
    )
    return cfg


def listen_port(cfg: Path) -> int:
    import tomllib

    return int(tomllib.loads(cfg.read_text())["server"]["listen"].rsplit(":", 1)[1])


class Serve:
    """`python -m mailguard serve` as a real subprocess; stderr (the JSON log) kept in a file."""

    def __init__(self, cfg: Path, log_path: Path) -> None:
        self.cfg, self.log_path = cfg, log_path
        self.port = listen_port(cfg)
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def command(cfg: Path) -> list[str]:
        return [PYTHON, "-m", "mailguard", "-c", str(cfg), "serve"]

    @staticmethod
    def environment() -> dict[str, str]:
        # The suite runs as root (CI too); serve refuses root without the escape hatch.
        return dict(os.environ, MAILGUARD_ALLOW_ROOT="1")

    def start(self, timeout: float = 20.0) -> "Serve":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(self.cfg), cwd=ROOT, stdout=log, stderr=log,
                                     env=self.environment(),
                                     # Its own process group: serve's forkserver and scan
                                     # workers go with it, even after a kill -9 (kill_group).
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("serve did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.kill_group()

    def kill9(self) -> None:
        """kill -9 serve alone (a crash), then its orphaned helpers (the scan workers
        would otherwise outlive the test run, waiting on a queue nobody feeds)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL whatever is left in serve's process group (its session)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def cli(cfg: Path, *args: str, operator: str = "alice", timeout: float = 60.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, MAILGUARD_OPERATOR=operator, **(env or {}))
    return subprocess.run([PYTHON, "-m", "mailguard", "-c", str(cfg), *args], cwd=ROOT, env=e,
                          capture_output=True, timeout=timeout)


def held_list(cfg: Path, state: str = "held") -> list[dict[str, Any]]:
    r = cli(cfg, "held", "list", "--json", "--state", state)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]


def message_with_numbers(numbers: list[str], *, subject: str = "名簿の送付", to: str = "someone@example.com",
                         attach_csv: bool = True) -> bytes:
    m = EmailMessage()
    m["From"] = SENDER
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{time.monotonic_ns()}.test@{INTERNAL}>"
    body = "ご依頼の件、マイナンバーは以下のとおりです。\n" + "\n".join(f"個人番号: {n}" for n in numbers)
    m.set_content(body, cte="base64")
    if attach_csv:
        csv = "氏名,個人番号\n" + "".join(f"山田{i},{n}\n" for i, n in enumerate(numbers))
        m.add_attachment(csv.encode("utf-8"), maintype="text", subtype="csv", filename="名簿.csv")
    return m.as_bytes(policy=SMTP)


def send(port: int, rcpts: list[str], data: bytes, mail_from: str = SENDER) -> tuple[int, str]:
    """One SMTP transaction; returns the final reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, msg = s.mail(mail_from)
        assert code == 250, (code, msg)
        for r in rcpts:
            code, msg = s.rcpt(r)
            assert code == 250, (code, msg)
        code, msg = s.data(data)
        return code, msg.decode(errors="replace")
