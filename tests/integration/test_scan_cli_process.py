"""mailguard scan as a real process: usage errors exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import docs_fixtures as fx  # noqa: E402


N1, N2 = fx.my_number(31), fx.my_number(32)


def test_usage_error_exits_2(tmp_path):
    import os

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-m", "mailguard", "scan"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
