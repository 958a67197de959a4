"""A refused policy reload shows in `mailguard status`, not only in the log
(issue 13.8): the result and time of the last reload and the policy in force;
the log line keeps the whole reason. A real `serve`, SIGHUP and the real CLI.
"""

from __future__ import annotations

import json
import shutil
import signal
import time

from hold_support import ROOT, Serve, Sink, cli, write_config


def _wait_result(cfg, result: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cli(cfg, "status", "--json")
        out = json.loads(r.stdout)
        if (out.get("reload") or {}).get("result") == result:
            return out
        time.sleep(0.2)
    raise AssertionError(f"status never showed {result!r}: {r.stdout!r}")


def test_status_shows_a_refused_reload_and_the_policy_still_in_force(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port, policy_dir=policies)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        out = _wait_result(cfg, "started")
        assert out["ok"] is True and out["checks"]["reload"]["ok"] is True
        good = out["policy"]
        assert good["files"] == ["10-default.toml"] and good["rules"] >= 7 and len(good["sha256"]) == 64

        # A broken edit with a long reason (the bad value is quoted in it).
        bad_value = "deliver-" + "x" * 900
        (policies / "20-bad.toml").write_text(
            f'[[rule]]\nname = "oops"\npersons_min = 1\naction = "{bad_value}"\n', encoding="utf-8")
        srv.proc.send_signal(signal.SIGHUP)
        out = _wait_result(cfg, "refused")
        assert out["ok"] is False and out["checks"]["reload"]["ok"] is False
        assert "20-bad.toml:4" in out["reload"]["error"]
        assert out["policy"] == good  # the policy that still runs
        text = cli(cfg, "status")
        assert text.returncode == 1
        stdout = text.stdout.decode()
        assert "reload" in stdout and "refused at" in stdout and "+09:00" in stdout and "20-bad.toml:4" in stdout
        assert "policy    in force:" in stdout and "10-default.toml" in stdout and "20-bad.toml" not in \
            stdout.split("policy    in force:")[1]
        # The log line is whole: the full quoted value, not cut at 512 characters.
        events = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
                  if line.startswith("{")]
        refused = [e for e in events if e.get("event") == "reload_refused"]
        assert refused and bad_value in refused[0]["reason"] and "20-bad.toml:4" in refused[0]["reason"]

        (policies / "20-bad.toml").unlink()
        srv.proc.send_signal(signal.SIGHUP)
        out = _wait_result(cfg, "reloaded")
        assert out["ok"] is True and out["reload"]["error"] == ""
    finally:
        srv.stop()
        sink.stop()
