"""mailguard.toml validation: every error exits 2 and names the file, the key and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.cli import EXIT_USAGE, main
from mailguard.config import load_config
from mailguard.errors import ConfigError


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "00.toml").write_text('[default]\naction = "pass"\n')
    return {"policy": f'[policy]\ndir = "{tmp_path / "policies"}"\n'}


def write(tmp_path: Path, text: str, base: dict[str, str]) -> Path:
    p = tmp_path / "mailguard.toml"
    p.write_text(text + "\n" + base["policy"], encoding="utf-8")
    return p


CASES = [
    ('[server]\nlisten = "127.0.0.1:10025"\nmax_recipeints = 5\n', "server.max_recipeints", "unknown key"),
    ('[serverr]\n', "serverr", "unknown key"),
    ('[server]\nlisten = "localhost"\n', "server.listen", "HOST:PORT"),
    ('[server]\nlisten = "127.0.0.1:99999"\n', "server.listen", "1-65535"),
    ('[server]\nallowed_clients = ["127.0.0.1/33"]\n', "server.allowed_clients", "not an IP network"),
    ('[server]\nallowed_clients = "127.0.0.1/32"\n', "server.allowed_clients", "list of strings"),
    ('[server]\nmax_message_size = -1\n', "server.max_message_size", "non-negative integer"),
    ('[server]\nmax_recipients = 0\n', "server.max_recipients", "at least 1"),
    ('[upstream]\nurl = "http://mail.example:25"\n', "upstream.url", "scheme"),
    ('[upstream]\nurl = "smtp://mail.example"\n', "upstream.url", "HOST:PORT"),
    ('[upstream]\nurl = "smtp://user:pw@mail.example:25"\n', "upstream.url", "auth_file"),
    ('[upstream]\nurl = "smtp://mail.example:25"\nauth_file = "/nonexistent/creds"\n', "upstream.auth_file", "not found"),
    ('[upstream]\nverify_tls = "no"\n', "upstream.verify_tls", "true or false"),
    ('[organisation]\ninternal_domains = ["bad domain"]\n', "organisation.internal_domains", "not a domain"),
    ('[log]\nlevel = "chatty"\n', "log.level", "debug, info"),
    ('[limits]\nmax_worker_memory = 1000000\n', "limits.max_worker_memory", "at least 268435456"),
    ('[server\n', "", "not valid TOML"),
]


@pytest.mark.parametrize("text,key,reason", CASES, ids=[c[1] or "toml" for c in CASES])
def test_bad_config_is_refused_naming_key_and_reason(tmp_path, base, text, key, reason):
    path = write(tmp_path, text, base)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key and reason in e.value.reason and e.value.path == str(path)


@pytest.mark.parametrize("text,key,reason", CASES[:4], ids=[c[1] for c in CASES[:4]])
def test_cli_exits_2_naming_the_key(tmp_path, base, capsys, text, key, reason):
    path = write(tmp_path, text, base)
    for argv in (["-c", str(path), "serve"], ["serve", "-c", str(path)]):
        assert main(argv) == EXIT_USAGE
        err = capsys.readouterr().err
        assert key in err and reason in err and str(path) in err


def test_missing_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["-c", str(missing), "serve"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(missing) in err and "file not found" in err


def test_missing_policy_dir_names_the_key(tmp_path):
    p = tmp_path / "mailguard.toml"
    p.write_text(f'[policy]\ndir = "{tmp_path / "nope"}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == "policy.dir"


def test_defaults_work_out_of_the_box(tmp_path, base):
    cfg = load_config(write(tmp_path, "", base))
    assert cfg.server.listen == "127.0.0.1:10025"
    assert cfg.server.max_recipients == 1000
    assert cfg.upstream.scheme == "maildir" and cfg.upstream.maildir == str(tmp_path / "var/outbox")
    assert cfg.upstream.verify_tls is True


def test_relative_paths_resolve_against_the_config_file(tmp_path, base):
    (tmp_path / "creds").write_text("user:secret\n")
    cfg = load_config(write(tmp_path, '[upstream]\nurl = "smtps://mail.example:465"\nauth_file = "creds"\n', base))
    assert cfg.upstream.auth_file == str(tmp_path / "creds")
