"""Smaller traps of issue 13.11, through the real CLI and a real `serve`:
a failing command prints its message, not raw JSON log lines (unless --verbose);
a busy metrics port names the address; docs/postfix.md's `postconf -e` replaces
Debian's existing relayhost instead of adding a second one.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from hold_support import NUMBERS, ROOT, Serve, Sink, cli, message_with_numbers, send, write_config


def test_a_failing_command_prints_only_its_message_unless_verbose(tmp_path: Path) -> None:
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        code, text = send(srv.port, ["someone@example.com"], message_with_numbers(NUMBERS[:1]))
        assert code == 250
        hold_id = text.split("held for review as ")[1][:16]
    finally:
        srv.stop()
        sink.stop()  # the upstream is down: the release fails
    r = cli(cfg, "held", "release", hold_id, "--reason", "checked")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "stays held" in err
    assert not [line for line in err.splitlines() if line.lstrip().startswith("{")], err
    r = cli(cfg, "held", "release", hold_id, "--reason", "checked", "--verbose")
    assert r.returncode == 1
    assert any(line.startswith("{") and "release_failed" in line for line in r.stderr.decode().splitlines())


def test_a_busy_metrics_port_names_the_address(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        cfg = write_config(tmp_path, 1)
        cfg.write_text(cfg.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        r = subprocess.run([*Serve.command(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env=Serve.environment())
        assert r.returncode == 1, r.stderr
        assert f"127.0.0.1:{port}" in r.stderr and "metrics.listen" in r.stderr
    finally:
        busy.close()


@pytest.mark.skipif(not shutil.which("postconf"), reason="needs Postfix's postconf")
def test_postfix_doc_replaces_the_existing_relayhost(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "postfix.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(postconf -e .*?)\n```", doc, re.S)
    assert block, "docs/postfix.md has no `postconf -e` block"
    command = block.group(1).replace("\\\n", " ").splitlines()[0]
    argv = shlex.split(command)
    assert argv[:2] == ["postconf", "-e"]
    # Debian's main.cf as installed: it already has a relayhost line.
    (tmp_path / "main.cf").write_text("smtpd_banner = $myhostname ESMTP\nrelayhost = \n"
                                      "inet_interfaces = loopback-only\n", encoding="utf-8")
    subprocess.run(["postconf", "-c", str(tmp_path), *argv[1:]], check=True, capture_output=True, timeout=30)
    main_cf = (tmp_path / "main.cf").read_text(encoding="utf-8")
    assert len(re.findall(r"(?m)^relayhost\s*=", main_cf)) == 1, main_cf
    assert re.search(r"(?m)^relayhost = \[127\.0\.0\.1\]:10025$", main_cf)
    # Every setting of deploy/postfix/main.cf is in the command.
    for line in (ROOT / "deploy" / "postfix" / "main.cf").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.strip() in argv[2:], line
            assert re.search(rf"(?m)^{re.escape(line.strip())}$", main_cf), line
    assert "に追加 / add (`deploy/postfix/main.cf`)" not in doc
