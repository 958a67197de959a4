"""mailguard check as a real process decides like the relay; the scanner's pool closes cleanly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policy_cases import CASES, COLLEAGUE, ME, ROOT, THREE, config, pipeline  # noqa: F401 (fixtures)

from mailguard.pipeline import Pipeline


def _check_cli(tmp_path: Path, config, rcpts, data: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    msg = tmp_path / "message.eml"
    msg.write_bytes(data)
    args = [sys.executable, "-m", "mailguard", "-c", config.source, "check", str(msg), "--from", ME]
    for r in rcpts:
        args += ["--to", r]
    return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)


@pytest.mark.parametrize("case", [0, 1, 10], ids=["reply-all", "internal-asker", "encrypted"])
def test_check_cli_decides_like_the_relay(tmp_path: Path, config, pipeline: Pipeline, case: int) -> None:
    _id, rcpts, data, action, rule = CASES[case]
    r = _check_cli(tmp_path, config, rcpts, data, "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    d = pipeline.inspect_sync(ME, list(rcpts), data)
    assert (out["action"], out["rule"], out["reasons"], out["persons"]) == (
        d.action, d.rule, list(d.reasons), d.persons)
    assert (out["action"], out["rule"]) == (action, rule)
    assert not any(n in r.stdout + r.stderr for n in THREE)


def test_check_cli_text_output(tmp_path: Path, config) -> None:
    _id, rcpts, data, _a, _r = CASES[0]
    r = _check_cli(tmp_path, config, rcpts, data)
    assert r.returncode == 0, r.stderr
    assert "action: block" in r.stdout and "rule: reply-all-external" in r.stdout
    assert "persons: 3" in r.stdout
    assert not any(n in r.stdout for n in THREE)


def test_check_cli_unreadable_message_exits_1(tmp_path: Path, config) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mailguard", "-c", config.source, "check", str(tmp_path / "missing.eml"),
         "--from", ME, "--to", COLLEAGUE],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 1
    assert "missing.eml" in r.stderr


async def test_aclose_lets_a_scan_in_flight_finish_then_stops_workers(config) -> None:
    p = Pipeline(config)
    _id, rcpts, data, action, rule = CASES[3]  # the xlsx: a scan that takes a moment
    task = asyncio.create_task(p.inspect(ME, list(rcpts), data))
    await asyncio.sleep(0.05)
    workers = list(p.scanner._pool._processes.values())  # noqa: SLF001 - the pool's processes
    await p.aclose()
    d = await task
    assert (d.action, d.rule) == (action, rule)
    assert workers and not any(w.is_alive() for w in workers)
