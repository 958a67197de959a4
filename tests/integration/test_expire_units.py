"""deploy/systemd/mailguard-expire.{service,timer}: the units verify, and the
commands the service runs (exactly its ExecStart lines, only the paths changed)
expire held mail past store.hold_expiry_hours and purge, with audit records."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailguard.store import Store

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
INSTALLED_CLI = "/opt/mailguard/.venv/bin/mailguard"
INSTALLED_CONFIG = "/etc/mailguard/mailguard.toml"


def exec_lines(unit: str) -> list[list[str]]:
    return [shlex.split(m) for m in re.findall(r"(?m)^ExecStart=(.+)$", unit)]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_expire_units_verify(tmp_path: Path) -> None:
    service = (UNITS / "mailguard-expire.service").read_text()
    timer = (UNITS / "mailguard-expire.timer").read_text()
    assert "Type=oneshot" in service and "User=mailguard" in service
    assert "OnCalendar=" in timer and "Persistent=true" in timer
    # The timer activates the service of the same name; ExecStart must exist here.
    (tmp_path / "mailguard-expire.service").write_text(
        service.replace(INSTALLED_CLI, sys.executable + " -m mailguard"))
    (tmp_path / "mailguard-expire.timer").write_text(timer)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mailguard-expire.timer"),
                        str(tmp_path / "mailguard-expire.service")],
                       capture_output=True, text=True, timeout=60)
    problems = [l for l in r.stderr.splitlines() if "mailguard-expire" in l]
    assert r.returncode == 0 and not problems, r.stderr


def test_the_service_commands_expire_and_purge(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(
        f'[upstream]\nurl = "maildir:{tmp_path / "outbox"}"\n'
        f'[store]\npath = "{store_dir}"\nhold_expiry_hours = 0.0003\nnotify_sender = false\n'
        f'[policy]\ndir = "{REPO / "policies"}"\n')
    store = Store(store_dir)
    held = store.add("clerk@city.example.lg.jp", ["x@example.com"], b"Subject: t\r\n\r\nbody\r\n",
                     rule="external-hold", persons=1)
    store.close()
    time.sleep(1.5)  # past 0.0003 h

    commands = exec_lines((UNITS / "mailguard-expire.service").read_text())
    assert [c[3:5] for c in commands] == [["held", "expire"], ["held", "purge"]]
    outputs = []
    for argv in commands:
        assert argv[0] == INSTALLED_CLI and argv[1:3] == ["-c", INSTALLED_CONFIG]
        r = subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), *argv[3:]],
                           capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                "MAILGUARD_OPERATOR": "mailguard-expire.timer"})
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout)
    assert f"{held.id}: expired" in outputs[0]
    assert "purged" in outputs[1]

    store = Store(store_dir)
    assert store.get(held.id).state == "expired"
    store.close()
    events = [json.loads(l) for l in (store_dir / "audit.jsonl").read_text().splitlines()]
    expire = [e for e in events if e["event"] == "expire"]
    assert len(expire) == 1 and expire[0].get("operator") == "mailguard-expire.timer"
