"""act: forward, hold or block one decided message, and the reply the client gets.

No sockets: the upstream is an in-memory Link; a hold goes to a real Store (and
audit log) under tmp_path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from mailguard import replies
from mailguard.act import (
    BLOCKED,
    FORWARDED,
    HELD,
    REFUSED,
    TEMPFAIL,
    Message,
    UpstreamLeg,
    act,
    inspection_failed,
)
from mailguard.config import Config, StoreConfig
from mailguard.errors import ForwardError, UpstreamTimeout, UpstreamUnreachable
from mailguard.hold import Holder
from mailguard.policy import BLOCK, HOLD, PASS, Decision
from mailguard.store import Store
from mailguard.upstream import Link, UpstreamReply

MSG = b"From: s@x.test\r\nTo: a@example.com\r\nSubject: act\r\n\r\nhello\r\n"


def code_of(name: str) -> int:
    return replies.REPLIES[name].code


def status_of(name: str) -> str:
    return replies.REPLIES[name].status


class MemoryLink:
    """An upstream that answers DATA with ``reply`` (or raises ``error``) and
    remembers every command it was given."""

    def __init__(self, reply: UpstreamReply = UpstreamReply(250, "2.0.0 queued as X1"),
                 error: ForwardError | None = None) -> None:
        self.extensions: frozenset[str] = frozenset({"8bitmime"})
        self.reply, self.error = reply, error
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        self.closed = False

    @property
    def alive(self) -> bool:
        return not self.closed

    async def mail(self, sender: str, options: Iterable[str] = ()) -> UpstreamReply:
        self.commands.append("MAIL")
        return UpstreamReply(250, "2.1.0 ok")

    async def rcpt(self, recipient: str) -> UpstreamReply:
        self.commands.append("RCPT")
        return UpstreamReply(250, "2.1.5 ok")

    async def data(self, data: bytes) -> UpstreamReply:
        self.commands.append("DATA")
        if self.error is not None:
            raise self.error
        self.messages.append(data)
        return self.reply

    async def rset(self) -> None:
        self.commands.append("RSET")

    async def close(self) -> None:
        self.closed = True


def _is_link(link: Link) -> Link:  # the fake satisfies the protocol act codes against
    return link


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, object]] = []
        self.fail = fail

    async def record(self, **fields: object) -> None:
        if self.fail:
            raise OSError("audit disk full")
        self.records.append(fields)


class BrokenHolder:
    async def hold(self, mail_from: str, rcpt_tos: list[str], data: bytes, decision: Decision,
                   **kw: object) -> str:
        raise OSError("disk full")


def message(**kw: object) -> Message:
    fields: dict[str, object] = dict(mail_from="s@x.test", rcpt_tos=["a@example.com"], data=MSG, tx="T1")
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def open_leg(link: MemoryLink) -> UpstreamLeg:
    """MAIL and RCPT already went upstream: a transaction is open on the link."""
    return UpstreamLeg(link=_is_link(link), in_tx=True)


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(store=StoreConfig(path=str(tmp_path / "store"), notify_sender=False))


# ------------------------------------------------------------------ pass


async def test_pass_is_forwarded_then_250_with_the_transaction_id():
    link, recorder = MemoryLink(), Recorder()
    leg = open_leg(link)
    acted = await act(Decision(PASS, "default"), message(), leg, holder=None, recorder=recorder)
    assert acted.outcome == FORWARDED
    assert acted.reply == replies.reply("queued", tx="T1")
    assert acted.reply.startswith(f"{code_of('queued')} {status_of('queued')} ")
    assert link.messages == [MSG] and link.commands == ["DATA"]
    assert leg.link is link and not leg.in_tx  # the link is kept for the next transaction
    [r] = recorder.records
    assert r["outcome"] == FORWARDED and r["reply"] == acted.reply and r["size"] == len(MSG)
    assert acted.upstream == "250 2.0.0 queued as X1"


@pytest.mark.parametrize(
    ("upstream", "outcome", "code", "status", "words"),
    [
        (UpstreamReply(550, "5.1.1 no such user\nsecond line"), REFUSED, 550, "5.1.1", "no such user"),
        (UpstreamReply(552, "mailbox full"), REFUSED, 552, "5.0.0", "mailbox full"),
        (UpstreamReply(452, "4.2.2 over quota"), TEMPFAIL, code_of("upstream_tempfail"),
         status_of("upstream_tempfail"), "452 4.2.2 over quota"),
        (UpstreamReply(421, "closing"), TEMPFAIL, code_of("upstream_tempfail"),
         status_of("upstream_tempfail"), "421 closing"),
        (UpstreamReply(535, "5.7.8 bad credentials"), REFUSED, code_of("upstream_auth"),
         status_of("upstream_auth"), "535 5.7.8 bad credentials"),
    ],
)
async def test_upstream_refusal_of_data_is_relayed(upstream, outcome, code, status, words):
    link, recorder = MemoryLink(reply=upstream), Recorder()
    acted = await act(Decision(PASS, "default"), message(), open_leg(link), holder=None, recorder=recorder)
    assert acted.outcome == outcome
    lines = acted.reply.split("\r\n")
    assert all(re.match(rf"{code}[- ]{re.escape(status)} ", line) for line in lines), lines
    assert words in acted.reply and acted.reply.isascii()
    assert recorder.records[0]["outcome"] == outcome


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (UpstreamUnreachable("connection refused"), "upstream_unreachable"),
        (UpstreamTimeout("no answer"), "upstream_timeout"),
        (ForwardError("connection lost"), "upstream_dropped"),
    ],
)
async def test_upstream_down_during_data_is_451_and_the_link_is_dropped(error, name):
    link = MemoryLink(error=error)
    leg = open_leg(link)
    acted = await act(Decision(PASS, "default"), message(), leg, holder=None, recorder=None)
    assert acted.outcome == TEMPFAIL and acted.reply == replies.reply(name)
    assert acted.reply.startswith(f"{code_of(name)} {status_of(name)} ") and code_of(name) == 451
    assert leg.link is None and not leg.in_tx and link.closed  # its state is unknown: never reused


# ------------------------------------------------------------------ hold


async def test_hold_is_250_only_after_the_store_has_it(config):
    link, recorder = MemoryLink(), Recorder()
    holder = Holder(config)
    decision = Decision(HOLD, "external-recipients", ("1 person",))
    try:
        acted = await act(decision, message(mail_options=["BODY=8BITMIME"]), open_leg(link),
                          holder=holder, recorder=recorder)
    finally:
        await holder.aclose()
    assert acted.outcome == HELD and acted.hold_id
    assert acted.reply == replies.reply("held", hold_id=acted.hold_id)
    assert acted.reply.startswith(f"{code_of('held')} {status_of('held')} ")
    # Durable: a store opened afresh on the same directory has the very bytes.
    envelope, data = Store(config.store.path).read_message(acted.hold_id)
    assert data == MSG
    assert Store(config.store.path).get(acted.hold_id).rule == "external-recipients"
    assert link.commands == ["RSET"] and not link.messages  # the upstream never got it
    assert recorder.records[0]["hold_id"] == acted.hold_id


async def test_hold_without_a_hold_store_is_451():
    link = MemoryLink()
    acted = await act(Decision(HOLD, "external"), message(), open_leg(link), holder=None, recorder=None)
    assert acted.outcome == TEMPFAIL and acted.reply == replies.reply("hold_unavailable")
    assert link.commands == ["RSET"]


# ------------------------------------------------------------------ block


async def test_block_is_550_571_with_the_rule_and_reason_and_upstream_reset():
    link, recorder = MemoryLink(), Recorder()
    decision = Decision(BLOCK, "reply-all-external", ("3 persons (********9018) at high confidence",),
                        notice="Blocked: the message contains 3 My Numbers.")
    acted = await act(decision, message(), open_leg(link), holder=None, recorder=recorder)
    assert acted.outcome == BLOCKED
    lines = acted.reply.split("\r\n")
    assert all(re.match(r"550[- ]5\.7\.1 ", line) for line in lines)
    assert "reply-all-external" in acted.reply and "3 persons" in acted.reply
    assert not re.search(r"\d{4}|\*", acted.reply)  # counts, never a number or a masked one
    assert link.commands == ["RSET"] and not link.messages
    assert recorder.records[0]["outcome"] == BLOCKED


# ------------------------------------------------------------------ internal errors


async def test_hold_store_failure_is_451_430():
    link = MemoryLink()
    acted = await act(Decision(HOLD, "external"), message(), open_leg(link), holder=BrokenHolder(),
                      recorder=None)
    assert acted.outcome == TEMPFAIL and acted.reply == replies.reply("internal_error")
    assert acted.reply.startswith("451 4.3.0 ")


async def test_inspection_failure_is_451_430_and_upstream_reset():
    link = MemoryLink()
    leg = open_leg(link)
    acted = await inspection_failed(message(), leg, RuntimeError("scanner crashed"))
    assert acted.outcome == TEMPFAIL and acted.reply == replies.reply("internal_error")
    assert acted.reply.startswith("451 4.3.0 ")
    assert link.commands == ["RSET"] and not leg.in_tx and leg.link is link


async def test_audit_failure_after_delivery_keeps_the_250():
    link = MemoryLink()
    acted = await act(Decision(PASS, "default"), message(), open_leg(link), holder=None,
                      recorder=Recorder(fail=True))
    assert acted.outcome == FORWARDED and acted.reply.startswith("250 ")
    assert link.messages == [MSG]
