"""mailguard serve as a real process: SIGTERM drains, SIGHUP reloads, deploy files verify."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, RawClient, write_config_file

LAUNCH = str(REPO / "tests" / "pass_relay.py")  # serve with a pass-everything pipeline


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_for(tmp_path: Path, upstream_url: str, port: int, **server) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "00-pass.toml").write_text('[default]\naction = "pass"\n')
    return write_config_file(tmp_path / "mailguard.toml", {
        "server": {"listen": f"127.0.0.1:{port}", "hostname": "mailguard.test", **server},
        "upstream": {"url": upstream_url, "timeout": 5},
        "store": {"path": str(tmp_path / "store")},
        "policy": {"dir": str(tmp_path / "policies")},
    })


async def start_process(args: list[str], port: int, cwd: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(*args, cwd=cwd, env=env, stderr=asyncio.subprocess.PIPE)
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            if proc.returncode is not None:
                raise RuntimeError((await proc.stderr.read()).decode())
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("relay did not start")


async def greet(port: int) -> RawClient:
    c = await RawClient.connect(port)
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO c.test"))[0] == 250
    return c


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_sigterm_finishes_transaction_in_flight_then_exits_0(tmp_path, upstream, event_loop):
    port = free_port()
    cfg = config_for(tmp_path, upstream.url, port, event_loop=event_loop)
    proc = await start_process([sys.executable, LAUNCH, str(cfg)], port, tmp_path)
    busy = await greet(port)
    idle = await greet(port)
    assert (await busy.cmd("MAIL FROM:<s@x.test>"))[0] == 250
    assert (await busy.cmd("RCPT TO:<a@example.com>"))[0] == 250
    assert (await busy.cmd("DATA"))[0] == 354
    await busy.send(b"Subject: in flight\r\n\r\npart one\r\n")
    proc.send_signal(signal.SIGTERM)
    # The idle connection is told and closed; new connections are refused.
    code, lines = await idle.reply()
    assert code == 421 and lines[0].startswith("421 4.3.2 ")
    await asyncio.sleep(0.2)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    # The transaction in flight completes and is delivered.
    await busy.send(b"part two\r\n.\r\n")
    assert (await busy.reply())[0] == 250
    assert (await busy.reply())[0] == 421  # then closed
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert [m.data for m in upstream.messages] == [b"Subject: in flight\r\n\r\npart one\r\npart two\r\n"]


async def test_sighup_reloads_and_refuses_a_bad_config(tmp_path, upstream):
    port = free_port()
    cfg = config_for(tmp_path, upstream.url, port, max_recipients=1)
    proc = await start_process([sys.executable, LAUNCH, str(cfg)], port, tmp_path)
    try:
        async def rcpt_codes() -> list[int]:
            c = await greet(port)
            assert (await c.cmd("MAIL FROM:<s@x.test>"))[0] == 250
            codes = [(await c.cmd(f"RCPT TO:<r{i}@example.com>"))[0] for i in range(2)]
            await c.cmd("QUIT")
            c.close()
            return codes

        assert await rcpt_codes() == [250, 452]
        config_for(tmp_path, upstream.url, port, max_recipients=2)
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert await rcpt_codes() == [250, 250]
        cfg.write_text(cfg.read_text() + "\n[nonsense]\nkey = 1\n")
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert proc.returncode is None
        assert await rcpt_codes() == [250, 250]  # old config kept
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    log = (await proc.stderr.read()).decode()
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert "reloaded" in events and "reload_refused" in events and events[-1] == "stopped"


async def test_cli_serve_starts_logs_json_and_stops_on_sigterm(tmp_path, upstream):
    port = free_port()
    cfg = config_for(tmp_path, upstream.url, port)
    proc = await start_process([sys.executable, "-m", "mailguard", "-c", str(cfg), "serve"], port, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    lines = (await proc.stderr.read()).decode().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    listening = [e.get("event_loop") for e in events if e["event"] == "listening"]
    assert listening == ["uvloop"], events  # "auto"; the events say why if not


async def test_event_loop_asyncio_is_the_standard_loop(tmp_path, upstream):
    port = free_port()
    cfg = config_for(tmp_path, upstream.url, port, event_loop="asyncio")
    proc = await start_process([sys.executable, "-m", "mailguard", "-c", str(cfg), "serve"], port, tmp_path)
    c = await greet(port)
    assert (await c.cmd("EHLO client.test"))[0] == 250
    assert (await c.cmd("MAIL FROM:<s@x.test>"))[0] == 250
    assert (await c.cmd("RCPT TO:<a@example.com>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    await c.send(b"Subject: standard loop\r\n\r\nhello\r\n.\r\n")
    assert (await c.reply())[0] == 250
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    lines = (await proc.stderr.read()).decode().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    assert [e["event_loop"] for e in events if e["event"] == "listening"] == ["asyncio"]
    assert [m.data for m in upstream.messages] == [b"Subject: standard loop\r\n\r\nhello\r\n"]


def test_serve_with_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = write_config_file(tmp_path / "bad.toml", {"server": {"listen": "127.0.0.1:10025", "max_recipeints": 5}})
    r = subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "serve"], cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "server.max_recipeints" in r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = (REPO / "deploy/systemd/mailguard.service").read_text()
    for key in ("StateDirectory=", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                "RestrictAddressFamilies=", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert key in unit, key
    # Verify with an ExecStart that exists on this machine (the real one is under /opt).
    unit = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable}", unit)
    path = tmp_path / "mailguard.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in r.stderr.splitlines() if "mailguard.service" in line]
    assert r.returncode == 0 and not problems, r.stderr


def test_postfix_lines_never_split_recipients():
    main_cf = (REPO / "deploy/postfix/main.cf").read_text()
    master_cf = (REPO / "deploy/postfix/master.cf").read_text()
    m = re.search(r"(?m)^mailguard_destination_recipient_limit\s*=\s*(\d+)", main_cf)
    assert m and int(m.group(1)) >= 1000  # >= server.max_recipients default
    assert re.search(r"(?m)^relayhost\s*=\s*\[127\.0\.0\.1\]:10025", main_cf)
    assert re.search(r"(?m)^mailguard\s+unix\s+.*\bsmtp$", master_cf)


async def test_sigterm_the_moment_the_port_opens_still_drains_and_exits_0(tmp_path, upstream):
    """The signal handlers are in place before the socket listens: a SIGTERM right
    after the port opens (systemd stopping a unit it just started) is a clean stop,
    never the default action's death by signal (-15). Several tries: it was a race."""
    for i in range(5):
        port = free_port()
        run = tmp_path / f"run{i}"
        run.mkdir()
        cfg = config_for(run, upstream.url, port)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "mailguard", "-c", str(cfg), "serve",
                                                    cwd=run, env=env, stderr=asyncio.subprocess.PIPE)
        for _ in range(20000):  # poll as tightly as we can: the SIGTERM goes the moment it listens
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if proc.returncode is not None:
                    raise RuntimeError((await proc.stderr.read()).decode())
                await asyncio.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        stderr = (await proc.stderr.read()).decode()
        assert code == 0, stderr[-2000:]
