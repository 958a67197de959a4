"""Fixtures for the real-Postfix suite: staff MUA -> Postfix -> mailguard -> sink.

    upstream   the smarthost mailguard forwards to (a capturing sink)
    mailbox    the organisation's mailbox server, where bounces to staff land (a sink)
    mailguard  `python -m mailguard -c CONFIG serve` (subprocess), with its CLI
    postfix    a throwaway Postfix on loopback whose relayhost is mailguard,
               configured with the lines from deploy/postfix/

Where Postfix is not installed, we are not root, or the instance cannot start,
every test here is skipped with the reason. Set MAILGUARD_REQUIRE_POSTFIX=1 (CI
does) to turn those skips into failures so a broken harness cannot pass quietly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from postfix_harness import (
    MailguardProcess,
    PostfixInstance,
    PostfixUnavailable,
    Sink,
    postfix_unavailable_reason,
)

REQUIRED = os.environ.get("MAILGUARD_REQUIRE_POSTFIX") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"MAILGUARD_REQUIRE_POSTFIX=1 but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postfix_ready() -> None:
    reason = postfix_unavailable_reason()
    if reason:
        _unavailable(reason)


@pytest.fixture
def upstream() -> Iterator[Sink]:
    sink = Sink("upstream")
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mailbox() -> Iterator[Sink]:
    sink = Sink("mailbox")
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mailguard(postfix_ready: None, upstream: Sink, tmp_path: Path) -> Iterator[MailguardProcess]:
    mg = MailguardProcess(tmp_path, upstream.port)
    mg.start()
    yield mg
    mg.stop()


@pytest.fixture
def postfix(postfix_ready: None, mailguard: MailguardProcess,
            mailbox: Sink) -> Iterator[PostfixInstance]:
    pf = PostfixInstance(mailguard.port, mailbox.port)
    try:
        pf.build()
        pf.start()
    except PostfixUnavailable as exc:
        pf.cleanup()
        _unavailable(f"the throwaway Postfix could not start: {exc}")
    yield pf
    pf.cleanup()
