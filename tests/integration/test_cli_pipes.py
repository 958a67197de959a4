"""The mailguard command as a real process writing into a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config directory: mailguard.toml and a pass-everything policy."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "00.toml").write_text('[default]\naction = "pass"\n')
    (tmp_path / "mailguard.toml").write_text(
        '[organisation]\ninternal_domains = ["city.example.lg.jp"]\n', encoding="utf-8")
    return tmp_path


def test_output_into_a_closed_pipe_is_quiet(site: Path) -> None:
    files = []
    for i in range(50):
        f = site / f"f{i}.txt"
        f.write_text("hello\n")
        files.append(str(f))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "mailguard", "-c", str(site / "mailguard.toml"), "scan", *files],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=site)
    proc.stdout.close()  # `mailguard scan ... | head -0`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err
