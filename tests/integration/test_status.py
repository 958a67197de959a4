"""`mailguard status` against a real `mailguard serve` (subprocess), a real upstream
sink and a real store: exit 0 when all is well, 1 naming what failed."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

REPO = Path(__file__).resolve().parents[2]
EXIT_OK, EXIT_FAILED = 0, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, upstream_url: str, *, store: Path | None = None,
                 name: str = "mailguard.toml") -> tuple[Path, int]:
    port = free_port()
    path = tmp / name
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[upstream]\nurl = "{upstream_url}"\ntimeout = 5\n'
        '[organisation]\ninternal_domains = ["city.example.lg.jp"]\n'
        f'[store]\npath = "{store or tmp / "store"}"\nnotify_sender = false\n'
        f'[policy]\ndir = "{REPO / "policies"}"\n', encoding="utf-8")
    return path, port


async def mailguard(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailguard", "-c", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


class Serve:
    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "Serve":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailguard", "-c", str(self.config), "serve",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=REPO)
        for _ in range(300):
            assert self.proc.returncode is None, "serve exited"
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return self
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError("serve did not start")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)


def numbers_message() -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "clerk@city.example.lg.jp", "tanto@example.com", "名簿"
    m.set_content("マイナンバー: 123456789018, 621498320257\n")
    return m.as_bytes()


async def test_status_is_ok_and_shows_the_held_queue(upstream, tmp_path: Path) -> None:
    config, port = write_config(tmp_path, upstream.url)
    async with Serve(config, port):
        code, out, err = await mailguard(config, "status")
        assert code == EXIT_OK, out + err
        assert "relay     ok" in out and "store     ok" in out and "upstream  ok" in out
        assert "held      0 message(s)" in out

        await aiosmtplib.send(numbers_message(), sender="clerk@city.example.lg.jp",
                              recipients=["tanto@example.com"], hostname="127.0.0.1", port=port)
        await asyncio.sleep(1.1)
        code, out, err = await mailguard(config, "status", "--json")
        assert code == EXIT_OK, out + err
        report = json.loads(out)
        assert report["ok"] is True and report["held"] == 1
        assert report["oldest_held_age_seconds"] >= 1
        assert set(report["checks"]) == {"relay", "store", "upstream", "ocr", "reload"}
        assert report["reload"]["result"] == "started" and report["policy"]["rules"] >= 1
        # counts and ages only (the reload's pid and the policy's sha256 are not message data)
        shown = {k: v for k, v in report.items() if k not in ("reload", "policy")}
        shown["checks"] = {k: v for k, v in report["checks"].items() if k != "reload"}
        assert "1234" not in json.dumps(shown) and "9018" not in json.dumps(shown)

        code, out, _ = await mailguard(config, "status")
        assert "held      1 message(s), oldest 0m0" in out


async def test_status_fails_naming_the_relay_when_it_is_not_running(upstream, tmp_path: Path) -> None:
    config, port = write_config(tmp_path, upstream.url)
    async with Serve(config, port):
        pass  # ran once: the store exists
    code, out, err = await mailguard(config, "status")
    assert code == EXIT_FAILED
    assert "relay     FAILED" in out and f"127.0.0.1:{port}" in out
    assert "failed: relay" in err
    assert "store     ok" in out and "upstream  ok" in out


async def test_status_fails_naming_the_upstream_when_it_is_down(upstream, tmp_path: Path) -> None:
    config, port = write_config(tmp_path, upstream.url)
    async with Serve(config, port):
        upstream.server.close()
        await upstream.server.wait_closed()
        code, out, err = await mailguard(config, "status", "--json")
        assert code == EXIT_FAILED
        report = json.loads(out)
        assert report["checks"]["relay"]["ok"] and report["checks"]["store"]["ok"]
        assert not report["checks"]["upstream"]["ok"]
        assert "refused" in report["checks"]["upstream"]["detail"]
        assert "failed: upstream" in err


async def test_status_fails_naming_the_store_when_it_is_missing(upstream, tmp_path: Path) -> None:
    config, port = write_config(tmp_path, upstream.url, store=tmp_path / "nowhere" / "store")
    code, out, err = await mailguard(config, "status")
    assert code == EXIT_FAILED
    assert "store     FAILED" in out and "does not exist" in out
    assert "relay" in err and "store" in err


async def test_status_checks_a_maildir_upstream_is_writable(tmp_path: Path) -> None:
    good, _ = write_config(tmp_path, f"maildir:{tmp_path / 'outbox'}", name="good.toml")
    (tmp_path / "afile").write_text("not a directory")
    bad, _ = write_config(tmp_path, f"maildir:{tmp_path / 'afile' / 'outbox'}", name="bad.toml")
    _, out, _ = await mailguard(good, "status")
    assert "upstream  ok      maildir:" in out
    _, out, err = await mailguard(bad, "status")
    assert "upstream  FAILED  maildir:" in out and "upstream" in err
