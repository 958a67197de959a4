"""The CLI contract of DESIGN §8 under hostile input: `-c` before and after every
command, exit 2 for configuration mistakes naming the key, exit 1 with a plain
message (never a traceback) when an operation fails, logs on stderr only, and no
My Number in the clear in any output, even in an envelope address or a file name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailguard.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from mailguard.config import load_config
from mailguard.errors import ConfigError
from mailguard.store import Store

REPO = Path(__file__).resolve().parents[2]


def valid_number(prefix11: str) -> str:
    w = [6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2]
    r = sum(int(d) * x for d, x in zip(prefix11, w)) % 11
    return prefix11 + str(0 if r <= 1 else 11 - r)


N1 = valid_number("31415926535")

# DESIGN §8, byte for byte (the trailing comment on url included).
DESIGN_EXAMPLE = """\
[server]
listen = "127.0.0.1:10025"
allowed_clients = ["127.0.0.1/32", "::1/128"]
max_message_size = 52428800

[upstream]
url = "smtp://127.0.0.1:10026"     # smtp://, smtps://, smtp+starttls://, maildir:PATH

[organisation]
internal_domains = ["city.example.lg.jp"]

[store]
path = "var/mailguard"

[policy]
dir = "policies"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config directory laid out as DESIGN §8 expects: mailguard.toml, policies/."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "00.toml").write_text('[default]\naction = "pass"\n')
    (tmp_path / "mailguard.toml").write_text(DESIGN_EXAMPLE, encoding="utf-8")
    return tmp_path


def test_design_example_loads_as_is_relative_to_its_directory(site: Path, tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(site / "mailguard.toml")
    assert cfg.upstream.url == "smtp://127.0.0.1:10026" and cfg.upstream.scheme == "smtp"
    assert cfg.store.path == str(site / "var/mailguard")
    assert cfg.policy.dir == str(site / "policies")
    assert cfg.organisation.internal_domains == ("city.example.lg.jp",)


def test_defaults_with_no_config_from_the_repo_root(monkeypatch) -> None:
    # README's `make run`: no mailguard.toml, run from the checkout.
    monkeypatch.chdir(REPO)
    assert not (REPO / "mailguard.toml").exists()
    cfg = load_config(None)
    assert cfg.source == "(built-in defaults)"
    assert cfg.server.listen == "127.0.0.1:10025"
    assert cfg.policy.dir == str(REPO / "policies")
    assert cfg.store.path == str(REPO / "var/mailguard")
    assert cfg.upstream.url == f"maildir:{REPO / 'var/outbox'}"


@pytest.mark.parametrize("text,key,reason", [
    ('[upstream]\nurl = "smtp://[::1:25"\n', "upstream.url", "IPv6"),
    ('[upstream]\nurl = "smtp://mail.example:99999"\n', "upstream.url", "out of range"),
    ("server = 3\n", "server", "expected a table"),
    ('[store]\npath = ""\n', "store.path", "must not be empty"),
    ('[policy]\ndir = ""\n', "policy.dir", "must not be empty"),
], ids=["ipv6-url", "url-port", "not-a-table", "empty-store", "empty-policy"])
def test_bad_values_name_the_key(site: Path, text: str, key: str, reason: str, capsys) -> None:
    path = site / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key and reason in e.value.reason
    assert main(["-c", str(path), "held", "list"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_unreadable_config_files_exit_2_saying_why(site: Path, capsys, monkeypatch) -> None:
    cases = []
    (site / "latin1.toml").write_bytes(b'[server]\nhostname = "caf\xe9"\n')
    cases.append((["-c", str(site / "latin1.toml"), "policy", "check"], "not UTF-8"))
    cases.append((["-c", str(site), "policy", "check"], "is a directory"))
    for argv, why in cases:
        assert main(argv) == EXIT_USAGE
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err and "Errno" not in err
    # $MAILGUARD_CONFIG naming a directory is reported, not silently ignored.
    d = site / "cwd"
    (d / "mailguard.toml").mkdir(parents=True)
    monkeypatch.setenv("MAILGUARD_CONFIG", str(d / "mailguard.toml"))
    assert main(["policy", "check"]) == EXIT_USAGE
    assert "is a directory" in capsys.readouterr().err


COMMANDS = [
    ["serve"],
    ["scan", "m.eml", "--json"],
    ["check", "m.eml", "--from", "a@city.example.lg.jp", "--to", "b@example.com", "--json"],
    ["policy", "check"],
    ["held", "list", "--json"],
    ["held", "show", "abcdefghjkmnpqrs", "--json"],
    ["held", "release", "abcdefghjkmnpqrs", "--reason", "x"],
    ["held", "reject", "abcdefghjkmnpqrs", "--reason", "x"],
    ["held", "expire"],
    ["held", "purge", "--older-than", "1"],
    ["audit", "verify"],
    ["audit", "export", "--since", "2025-04-01"],
    ["status", "--json"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_config_option_before_and_after_every_command(site: Path, argv: list[str], capsys) -> None:
    # A config with an unknown key: exit 2 naming it proves the option was read.
    bad = site / "typo.toml"
    bad.write_text('[server]\nlisten_addr = "127.0.0.1:1"\n', encoding="utf-8")
    for full in (["-c", str(bad), *argv], [*argv, "-c", str(bad)], [*argv, f"--config={bad}"]):
        assert main(full) == EXIT_USAGE, full
        assert "server.listen_addr: unknown key" in capsys.readouterr().err


def test_store_path_that_is_a_file_is_a_plain_error(site: Path, capsys) -> None:
    (site / "var").write_text("not a directory")
    cfg = site / "mailguard.toml"
    for argv in (["held", "list"], ["audit", "verify"], ["held", "show", "abcdefghjkmnpqrs"]):
        assert main(["-c", str(cfg), *argv]) == EXIT_FAILED, argv
        err = capsys.readouterr().err
        assert str(site / "var") in err and "Traceback" not in err, err


def test_unexpected_error_is_exit_1_without_traceback(site: Path, capsys, monkeypatch) -> None:
    import mailguard.cli.audit as audit_cli

    def boom(args, config):
        raise RuntimeError(f"bad state near {N1}")

    monkeypatch.setattr(audit_cli, "run_verify", boom)
    assert main(["-c", str(site / "mailguard.toml"), "audit", "verify"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "internal error: RuntimeError" in err and "MAILGUARD_DEBUG" in err
    assert "Traceback" not in err and N1 not in err


def _hold_one(site: Path, mail_from: str) -> str:
    store = Store(site / "var/mailguard")
    data = (f"From: {mail_from}\r\nTo: b@example.com\r\nSubject: x\r\n\r\n個人番号 {N1}\r\n").encode()
    held = store.add(mail_from, ["b@example.com"], data, rule="external-hold",
                     reasons=("1 My Number(s): ********" + N1[-4:],), persons=1,
                     findings=[{"masked": "********" + N1[-4:], "confidence": "high",
                                "reason": "keyword", "location": "body", "fingerprint": "12" * 32}],
                     fingerprints=["12" * 32], approvals_required=1)
    store.close()
    return held.id


def test_held_output_masks_a_number_in_the_envelope(site: Path, capsys) -> None:
    cfg = str(site / "mailguard.toml")
    hold_id = _hold_one(site, f"{N1}@city.example.lg.jp")
    for argv in (["held", "list"], ["held", "list", "--json"],
                 ["held", "show", hold_id], ["held", "show", hold_id, "--json"]):
        assert main(["-c", cfg, *argv]) == EXIT_OK
        out = capsys.readouterr().out
        assert N1 not in out and f"********{N1[-4:]}@city.example.lg.jp" in out, argv
    assert main(["-c", cfg, "held", "show", hold_id, "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    # Hex digests are left alone (masking would corrupt them).
    assert shown["fingerprints"] == ["12" * 32] and shown["findings"][0]["fingerprint"] == "12" * 32
    assert shown["id"] == hold_id


def test_release_failure_logs_to_stderr_not_stdout(site: Path, capsys) -> None:
    hold_id = _hold_one(site, "staff@city.example.lg.jp")
    cfg = site / "down.toml"
    cfg.write_text(DESIGN_EXAMPLE.replace("127.0.0.1:10026", "127.0.0.1:1")
                   + "\n[log]\nlevel = \"info\"\n", encoding="utf-8")
    # Without --verbose only the message (issue 13.11); with it, the log lines too,
    # and either way on stderr, never stdout.
    assert main(["-c", str(cfg), "held", "release", hold_id, "--reason", "ok"]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == "" and "it stays held" in captured.err
    assert not [line for line in captured.err.splitlines() if line.startswith("{")], captured.err
    assert main(["-c", str(cfg), "held", "release", hold_id, "--reason", "ok", "--verbose"]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "it stays held" in captured.err
    logs = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert any(rec.get("event") == "release_failed" for rec in logs), captured.err


def test_scan_and_check_mask_a_number_in_the_file_name(site: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(site)
    name = site / f"山田_{N1}.eml"
    name.write_bytes(b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: x\r\n\r\nhello\r\n")
    assert main(["scan", str(name), "--json"]) == EXIT_OK
    out = capsys.readouterr().out
    assert N1 not in out and json.loads(out)["path"].endswith(f"山田_********{N1[-4:]}.eml")
    missing = site / f"{N1}.eml"
    assert main(["scan", str(missing)]) == EXIT_FAILED
    assert main(["check", str(missing), "--from", "a@city.example.lg.jp", "--to", "b@example.com"]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert N1 not in captured.out + captured.err and "No such file" in captured.err


@pytest.mark.parametrize("opt,addr", [("--to", "not an address"), ("--to", "@@"), ("--to", "x@ex ample.com"),
                                      ("--from", "staff"), ("--from", N1)],
                         ids=["to-words", "to-at-signs", "to-space", "from-no-domain", "from-bare-number"])
def test_check_refuses_a_mistyped_address(site: Path, opt: str, addr: str, capsys) -> None:
    msg = site / "m.eml"
    msg.write_bytes(b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: x\r\n\r\nhello\r\n")
    argv = {"--from": "a@city.example.lg.jp", "--to": "b@example.com"}
    argv[opt] = addr
    cmd = ["-c", str(site / "mailguard.toml"), "check", str(msg), "--from", argv["--from"], "--to", argv["--to"]]
    assert main(cmd) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{opt} " in err and "is not an address" in err and N1 not in err
    # The null sender (a bounce) is a real envelope sender.
    cmd[cmd.index("--from") + 1] = ""
    cmd[cmd.index("--to") + 1] = "b@example.com"
    assert main(cmd) == EXIT_OK


def test_status_names_a_store_path_that_is_a_file(site: Path, capsys) -> None:
    (site / "var").mkdir()
    (site / "var" / "mailguard").write_text("not a directory")
    assert main(["-c", str(site / "mailguard.toml"), "status"]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "is not a directory (check store.path)" in out and "has `mailguard serve` ever run" not in out
