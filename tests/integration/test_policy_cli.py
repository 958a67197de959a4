"""`mailguard policy check`: exit 0 with a summary, or 2 with file:line: reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "policies"


def mailguard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailguard", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def config(tmp_path: Path, policy_dir: Path) -> Path:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(
        f'[organisation]\ninternal_domains = ["city.example.lg.jp"]\n[policy]\ndir = "{policy_dir}"\n',
        encoding="utf-8",
    )
    return cfg


def test_shipped_policy_checks_ok(tmp_path: Path) -> None:
    cfg = config(tmp_path, ROOT / "policies")
    r = mailguard("-c", str(cfg), "policy", "check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "7 rule(s)" in r.stdout and "default pass" in r.stdout
    assert "reply-all-external" in r.stdout


@pytest.mark.parametrize("case, line", [("unknown_condition", 8), ("unreachable_across_files", 3)])
def test_bad_policy_exits_2_with_file_and_line(tmp_path: Path, case: str, line: int) -> None:
    cfg = config(tmp_path, DATA / case)
    r = mailguard("policy", "check", "-c", str(cfg), cwd=tmp_path)  # -c after the subcommand
    assert r.returncode == 2
    assert f".toml:{line}: " in r.stderr, r.stderr
    assert r.stdout == ""


def test_policy_edit_is_caught_before_reload(tmp_path: Path) -> None:
    pdir = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", pdir)
    cfg = config(tmp_path, pdir)
    assert mailguard("-c", str(cfg), "policy", "check", cwd=tmp_path).returncode == 0
    f = pdir / "10-default.toml"
    f.write_text(f.read_text(encoding="utf-8").replace('action = "hold"', 'action = "quarantine"', 1),
                 encoding="utf-8")
    r = mailguard("-c", str(cfg), "policy", "check", cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown action 'quarantine'" in r.stderr and "10-default.toml:" in r.stderr
