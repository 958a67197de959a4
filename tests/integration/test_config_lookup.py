"""The config the CLI reads, and the traps it refuses (issue 13: items 1, 4, 6).

Each test drives the real `mailguard` console script in a subprocess, so the
lookup order, stderr notices and exit codes are what an admin sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


from hold_support import Sink, Serve, cli, held_list, message_with_numbers, send, write_config
from mynumbers import my_numbers

EXIT_USAGE = 2
MAILGUARD = [sys.executable, "-m", "mailguard"]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MAILGUARD_CONFIG"}
    environ.update(env or {})
    return subprocess.run(MAILGUARD + args, cwd=cwd, env=environ, input=stdin, text=True,
                          capture_output=True, timeout=60)


def site(tmp: Path, name: str, org: str = 'internal_domains = ["city.example.lg.jp"]\n') -> Path:
    d = tmp / name
    (d / "policies").mkdir(parents=True)
    cfg = d / "mailguard.toml"
    cfg.write_text(f'[organisation]\n{org}[store]\npath = "store-{name}"\n', encoding="utf-8")
    return cfg


def test_environment_names_the_config_and_dash_c_wins_over_it(tmp_path: Path) -> None:
    env_cfg, c_cfg = site(tmp_path, "env"), site(tmp_path, "c")
    r = run(["held", "list"], tmp_path, {"MAILGUARD_CONFIG": str(env_cfg)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "env" / "store-env").is_dir() and "built-in defaults" not in r.stderr
    r = run(["-c", str(c_cfg), "held", "list"], tmp_path, {"MAILGUARD_CONFIG": str(env_cfg)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c" / "store-c").is_dir()


def test_a_config_in_the_current_folder_is_not_read_silently(tmp_path: Path) -> None:
    # The trap: /opt/mailguard holds policies/ and a mailguard.toml, the admin
    # forgets -c. The command must say which store it uses, not quietly pick one.
    cfg = site(tmp_path, "opt")
    r = run(["held", "list"], cfg.parent)
    assert r.returncode == 0, r.stderr
    assert "built-in defaults" in r.stderr and "/etc/mailguard/mailguard.toml" in r.stderr
    assert str(cfg.parent / "var" / "mailguard") in r.stderr
    assert not (cfg.parent / "store-opt").exists()


def test_missing_file_named_by_environment_is_an_error_not_defaults(tmp_path: Path) -> None:
    r = run(["held", "list"], tmp_path, {"MAILGUARD_CONFIG": str(tmp_path / "nope.toml")})
    assert r.returncode == EXIT_USAGE
    assert "nope.toml" in r.stderr and "file not found" in r.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("org", ["", "internal_domains = []\n"], ids=["missing", "empty"])
def test_serve_check_and_policy_check_refuse_a_config_without_internal_domains(tmp_path: Path, org: str) -> None:
    cfg = site(tmp_path, "x", org)
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    for args in (["serve"], ["check", str(eml), "--from", "a@city.example.lg.jp", "--to", "b@example.com"],
                 ["policy", "check"]):
        r = run(["-c", str(cfg), *args], tmp_path)
        assert r.returncode == EXIT_USAGE, (args, r.stderr)
        assert "organisation.internal_domains" in r.stderr, args
    # Reading the store is still possible (an admin fixing the config can look).
    assert run(["-c", str(cfg), "held", "list"], tmp_path).returncode == 0


@pytest.mark.parametrize("reason", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_blank_reasons_are_refused_and_the_mail_stays_held(tmp_path: Path, reason: str) -> None:
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    serve = Serve(cfg, tmp_path / "serve.log").start()
    try:
        code, _ = send(serve.port, ["someone@example.com"], message_with_numbers(my_numbers(1, seed=7)))
        assert code == 250
        (held,) = held_list(cfg)
        for verb in ("release", "reject"):
            r = cli(cfg, "held", verb, held["id"], "--reason", reason)
            assert r.returncode == EXIT_USAGE, verb
            assert b"must not be blank" in r.stderr
        assert [h["id"] for h in held_list(cfg)] == [held["id"]]
        assert sink.to("someone@example.com") == []
    finally:
        serve.stop()
        sink.stop()
