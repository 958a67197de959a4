"""The throwaway Postfix itself, with a plain sink as its relayhost (no mailguard).

These pin what the end-to-end tests rely on: the instance is loopback-only and
uses its own queue, and the deploy/postfix/ lines keep a 60-recipient message in
one transaction to the relayhost (Postfix's default limit of 50 splits it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from postfix_harness import DEPLOY_POSTFIX, PostfixInstance, PostfixUnavailable, Sink, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postfix]


@pytest.fixture
def relay_sink() -> Iterator[Sink]:
    sink = Sink("relayhost")
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def bare_postfix(postfix_ready: None, relay_sink: Sink, mailbox: Sink) -> Iterator[PostfixInstance]:
    pf = PostfixInstance(relay_sink.port, mailbox.port)
    try:
        pf.build()
        pf.start()
    except PostfixUnavailable as exc:
        pf.cleanup()
        pytest.skip(f"the throwaway Postfix could not start: {exc}")
    yield pf
    pf.cleanup()


def _listeners() -> list[str]:
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A":  # LISTEN
            out.append(parts[1])
    return out


def test_instance_is_loopback_only_with_its_own_queue(bare_postfix: PostfixInstance) -> None:
    conf = bare_postfix.postconf("inet_interfaces", "queue_directory", "data_directory")
    assert conf["inet_interfaces"] == "loopback-only"
    assert conf["queue_directory"].startswith(str(bare_postfix.base))
    assert conf["data_directory"].startswith(str(bare_postfix.base))
    assert (bare_postfix.queue_dir / "pid" / "master.pid").exists()
    # Its smtpd is bound to 127.0.0.1 only (hex 0100007F in /proc/net/tcp).
    port_hex = f"{bare_postfix.smtpd_port:04X}"
    ours = [a for a in _listeners() if a.endswith(":" + port_hex)]
    assert ours == ["0100007F:" + port_hex]


def test_deploy_lines_keep_sixty_recipients_in_one_transaction(
        bare_postfix: PostfixInstance, relay_sink: Sink) -> None:
    if not list(DEPLOY_POSTFIX.glob("*.cf")):
        pytest.fail("deploy/postfix/ has no .cf fragments yet (the relay issue ships them)")
    rcpts = [f"m{i}@d{i}.example.com" for i in range(60)]
    qid = bare_postfix.submit(b"Subject: sixty\r\n\r\nsixty-marker\r\n",
                              "clerk@city.example.lg.jp", rcpts)
    wait_for(lambda: f"{qid}: removed" in bare_postfix.log(), 30, "delivery",
             on_timeout=bare_postfix.log_tail)
    assert [len(r.rcpt_tos) for r in relay_sink.find("sixty-marker")] == [60]
