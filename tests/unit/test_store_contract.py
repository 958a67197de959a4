"""The hold store contract: what every HoldStore backend must do (mailguard.holdstore).

Each backend is a Backend entry in BACKENDS: how to open two views of one store
(two processes' worth: separate connections and locks) and how to leave what a
crashed writer leaves behind. The files + SQLite store and the PostgreSQL store
(a throwaway cluster from pg_support; skipped where PostgreSQL is not installed,
unless MAILGUARD_REQUIRE_POSTGRES=1) pass the same tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailguard.config import Config, StoreConfig
from mailguard.errors import NotFound, StoreError
from mailguard.holdstore import HoldStore, open_audit, open_store
from mailguard.store import EXPIRED, HELD, REJECTED, RELEASED, HeldMessage, new_id
from mynumbers import my_numbers

DATA = b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: contract\r\n\r\nbody\r\n"
FP = "cd" * 32


@dataclass
class Backend:
    name: str
    config: Callable[[Path, pytest.FixtureRequest], Config]
    # Leave what a writer killed mid-add leaves: returns how many leftovers.
    crash_leftovers: Callable[[HoldStore], int]


def _files_config(tmp: Path, request: pytest.FixtureRequest) -> Config:
    return Config(store=StoreConfig(path=str(tmp / "store")))


def _files_leftovers(store: HoldStore) -> int:
    root = Path(_files_root(store))
    # A temporary file whose writer died before the rename ...
    (root / "tmp" / f"{new_id()}.1.1.tmp").write_bytes(b"MAILGUARD-HOLD 1\n{}\nhalf")
    # ... and a message file whose writer died before the row was committed.
    orphan = root / "messages" / f"{new_id()}.msg"
    orphan.write_bytes(b"MAILGUARD-HOLD 1\n{}\nno row")
    os.chmod(orphan, 0o600)
    return 2


def _files_root(store: HoldStore) -> str:
    return str(store.path)  # type: ignore[attr-defined]  # files backend only


def _pg_config(tmp: Path, request: pytest.FixtureRequest) -> Config:
    url = request.getfixturevalue("pg_url")
    return Config(store=StoreConfig(path=str(tmp / "spool"), url=url))


def _pg_leftovers(store: HoldStore) -> int:
    # An add is one transaction: a writer killed before COMMIT leaves nothing.
    return 0


BACKENDS = [
    pytest.param(Backend("files", _files_config, _files_leftovers), id="files"),
    pytest.param(Backend("postgresql", _pg_config, _pg_leftovers), id="postgresql"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
def config(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Config:
    return backend.config(tmp_path, request)


@pytest.fixture
def store(config: Config) -> Iterator[HoldStore]:
    s = open_store(config)
    yield s
    s.close()


@pytest.fixture
def other(config: Config, store: HoldStore) -> Iterator[HoldStore]:
    """A second view of the same store, as another process opens it."""
    s = open_store(config)
    yield s
    s.close()


def add(store: HoldStore, **kw: Any) -> HeldMessage:
    args: dict[str, Any] = dict(
        rule="hold-external", reasons=("1 person",), persons=1,
        findings=[{"masked": "********9018", "confidence": "high", "reason": "keyword",
                   "location": "body", "fingerprint": FP}],
        fingerprints=[FP], subject="contract", message_id="<m@x>", sha256="00" * 32)
    args.update(kw)
    return store.add("a@city.example.lg.jp", ["b@example.com", "c@example.org"], DATA, **args)


def test_add_get_list_and_read_back_exactly(store: HoldStore, other: HoldStore) -> None:
    held = add(store, mail_options=("BODY=8BITMIME",))
    assert held.state == HELD and held.rule == "hold-external" and held.persons == 1
    got = other.get(held.id)
    assert got == held
    assert [h.id for h in other.list()] == [held.id]
    assert other.list(RELEASED) == [] and [h.id for h in other.list(None)] == [held.id]
    envelope, data = other.read_message(got.id)
    assert data == DATA
    assert envelope.mail_from == "a@city.example.lg.jp"
    assert envelope.rcpt_tos == ("b@example.com", "c@example.org")
    assert envelope.mail_options == ("BODY=8BITMIME",)
    assert got.fingerprints == (FP,) and got.findings[0]["masked"] == "********9018"
    assert "number" not in got.findings[0]


def test_list_is_oldest_first(store: HoldStore) -> None:
    ids = [add(store).id for _ in range(3)]
    assert [h.id for h in store.list()] == ids


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "ABCDEFGHJKMNPQRS", "abcdefghjkmnpqr\n"])
def test_malformed_ids_are_refused(store: HoldStore, bad: str) -> None:
    for call in (store.get, store.read_message, store.discard):
        with pytest.raises(StoreError):
            call(bad)


def test_unknown_id_is_not_found(store: HoldStore) -> None:
    with pytest.raises(NotFound):
        store.get(new_id())
    with pytest.raises(NotFound):
        with store.locked(new_id()):
            pass


def test_discard_takes_back_an_add(store: HoldStore) -> None:
    held = add(store)
    store.discard(held.id)
    with pytest.raises(NotFound):
        store.get(held.id)
    assert store.list(None) == []


def test_lock_is_exclusive_between_two_openers(store: HoldStore, other: HoldStore) -> None:
    held = add(store)
    with store.locked(held.id) as row:
        assert row.id == held.id and row.state == HELD
        with pytest.raises(StoreError, match="busy"):
            with other.locked(held.id):
                pass
    with other.locked(held.id):  # free again once the block ends
        pass


def test_narrow_recipients_keeps_bytes_and_lock(store: HoldStore, other: HoldStore) -> None:
    held = add(store)
    with store.locked(held.id):
        store.narrow_recipients(held.id, ["c@example.org"])
        with pytest.raises(StoreError, match="busy"):
            with other.locked(held.id):
                pass
    envelope, data = other.read_message(held.id)
    assert envelope.rcpt_tos == ("c@example.org",) and data == DATA
    assert other.get(held.id).state == HELD


def test_approvals_accumulate_and_only_while_held(store: HoldStore) -> None:
    held = add(store, approvals_required=2)
    assert held.approvals_required == 2
    with store.locked(held.id):
        store.add_approval(held.id, "alice", "ok")
        row = store.add_approval(held.id, "bob", "ok too")
    assert row.approvers == ["alice", "bob"] and [a["reason"] for a in row.approvals] == ["ok", "ok too"]
    with store.locked(held.id):
        store.finish(held.id, REJECTED, "carol", "no")
        with pytest.raises(StoreError, match="not held"):
            store.add_approval(held.id, "dave", "late")


@pytest.mark.parametrize("state", [RELEASED, REJECTED, EXPIRED])
def test_finish_happens_exactly_once(store: HoldStore, other: HoldStore, state: str) -> None:
    held = add(store)
    with store.locked(held.id):
        store.mark_release_started(held.id)
        assert store.get(held.id).release_started
        done = store.finish(held.id, state, "alice", "why", reply="250 2.0.0 ok")
    assert done.state == state and done.decided_by == "alice" and done.decided_reason == "why"
    assert done.decided_at and done.release_started is None and done.upstream_reply == "250 2.0.0 ok"
    assert other.get(held.id).state == state
    for again in (RELEASED, REJECTED, EXPIRED):
        with pytest.raises(StoreError, match="not held"):
            store.finish(held.id, again, "bob", "twice")
    with pytest.raises(ValueError):
        store.finish(held.id, HELD, "bob", "not a final state")


def test_release_marker_can_be_cleared(store: HoldStore) -> None:
    held = add(store)
    with store.locked(held.id):
        store.mark_release_started(held.id)
        store.clear_release_started(held.id)
    assert store.get(held.id).release_started is None


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="microseconds")


def test_expiry_and_purge_queries(store: HoldStore) -> None:
    old, done = add(store), add(store)
    assert [h.id for h in store.due_for_expiry(_iso(timedelta(seconds=1)))] == [old.id, done.id]
    assert store.due_for_expiry(_iso(-timedelta(hours=1))) == []
    with store.locked(done.id):
        store.finish(done.id, RELEASED, "alice", "ok")
    assert [h.id for h in store.due_for_expiry(_iso(timedelta(seconds=1)))] == [old.id]
    assert [h.id for h in store.purgeable(_iso(timedelta(seconds=1)))] == [done.id]
    assert store.purgeable(_iso(-timedelta(hours=1))) == []
    with store.locked(old.id):
        with pytest.raises(StoreError, match="not finished"):
            store.purge(old.id)
    with store.locked(done.id):
        purged = store.purge(done.id)
    assert purged.purged_at and purged.state == RELEASED
    with pytest.raises(NotFound):
        store.read_message(done.id)
    assert store.purgeable(_iso(timedelta(seconds=1))) == []
    assert store.read_message(old.id)[1] == DATA


def test_recover_removes_crash_leftovers_and_keeps_committed_mail(backend: Backend, store: HoldStore,
                                                                  other: HoldStore) -> None:
    kept = add(store)
    interrupted = add(store)
    with store.locked(interrupted.id):
        store.mark_release_started(interrupted.id)
    left = backend.crash_leftovers(store)
    rec = other.recover()
    assert rec.temp_removed + rec.orphans_removed == left
    assert rec.releases_interrupted == [interrupted.id]
    assert {h.id for h in store.list()} == {kept.id, interrupted.id}
    assert store.get(interrupted.id).release_started is None
    # ... but marked, so `held show` warns that a release again may deliver twice (item 5)
    assert store.get(interrupted.id).release_interrupted and not store.get(kept.id).release_interrupted
    assert store.read_message(kept.id)[1] == DATA
    again = other.recover()  # safe to repeat: nothing more to do
    assert (again.temp_removed, again.orphans_removed, again.releases_interrupted) == (0, 0, [])


def test_recover_leaves_a_locked_message_alone(store: HoldStore, other: HoldStore) -> None:
    held = add(store)
    with store.locked(held.id):
        store.mark_release_started(held.id)
        rec = other.recover()  # a release in progress in "another process"
        assert rec.releases_interrupted == []
    assert store.get(held.id).release_started


def test_audit_sink_appends_chains_and_verifies(config: Config, store: HoldStore) -> None:
    sink = store.audit
    [number] = my_numbers(1)
    first = sink.append("hold", operator="mailguard", id="x" * 16, reason=f"card {number}")
    second = sink.append("release", operator="alice", id="x" * 16)
    assert second["prev"] == first["hash"] and second["seq"] == first["seq"] + 1
    assert number not in first["reason"]  # the sink scrubs numbers itself
    result = sink.verify()
    assert result.ok and result.records == 2
    assert [r["event"] for r in open_audit(config).records()] == ["hold", "release"]
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert len(list(sink.export(since))) == 2
    assert sink.location() and sink.part_count() == 1


def test_audit_sink_appends_many_in_order_and_chains_them(config: Config, store: HoldStore) -> None:
    """append_many (the relay's Recorder batches concurrent records): in order,
    chained, scrubbed, each record returned, the head checkpointed after the last."""
    sink = store.audit
    [number] = my_numbers(1)
    first = sink.append("hold", operator="mailguard", id="x" * 16)
    out = sink.append_many([("pass", {"operator": "mailguard", "n": i, "note": f"card {number}"})
                            for i in range(5)])
    assert [r["seq"] for r in out] == list(range(first["seq"] + 1, first["seq"] + 6))
    assert out[0]["prev"] == first["hash"] and all(b["prev"] == a["hash"] for a, b in zip(out, out[1:]))
    assert all(number not in r["note"] for r in out)
    assert sink.append_many([]) == []
    result = sink.verify()
    assert result.ok and result.records == 6
    assert sink.last_checkpoint().seq == out[-1]["seq"]
    assert [r["n"] for r in open_audit(config).records() if r["event"] == "pass"] == list(range(5))


def test_audit_sink_checkpoints_its_head_and_verify_catches_a_cut(config: Config, store: HoldStore) -> None:
    """Every append checkpoints the head outside the records (issue 14, item 2)."""
    from mailguard.audit import Checkpoint

    sink = store.audit
    assert sink.last_checkpoint() is None
    for i in range(3):
        last = sink.append("pass", operator="mailguard", n=i)
    head = Checkpoint(last["seq"], last["hash"])
    assert sink.last_checkpoint() == head
    assert open_audit(config).last_checkpoint() == head
    result = sink.verify(checkpoint=head)
    assert result.ok and result.head == head
    beyond = sink.verify(checkpoint=Checkpoint(head.seq + 1, head.hash))
    assert not beyond.ok and beyond.bad_line is None
    other = sink.verify(checkpoint=Checkpoint(head.seq, "0" * 64))
    assert not other.ok


def test_a_hold_moves_through_its_stages_once(store: HoldStore, other: HoldStore) -> None:
    """stored -> audited -> done, never back; recovery completes what is short (issue 14, item 1)."""
    held = add(store)
    assert held.hold_stage == "stored"
    assert [h.id for h in other.incomplete_holds()] == [held.id]
    store.set_hold_stage(held.id, "audited")
    assert other.get(held.id).hold_stage == "audited"
    store.set_hold_stage(held.id, "done")
    store.set_hold_stage(held.id, "audited")  # never backwards
    assert other.get(held.id).hold_stage == "done"
    assert other.incomplete_holds() == []
    with pytest.raises(ValueError):
        store.set_hold_stage(held.id, "bogus")


def test_a_resend_finds_the_held_copy(store: HoldStore, other: HoldStore) -> None:
    held = add(store, sha256="ab" * 32, message_id="<resend@x>")
    rcpts = ["b@example.com", "c@example.org"]
    since = _iso(-timedelta(hours=1))
    found = other.find_held_copy("a@city.example.lg.jp", rcpts, "ab" * 32, "<resend@x>", since)
    assert found is not None and found.id == held.id
    assert other.find_held_copy("a@city.example.lg.jp", rcpts[:1], "ab" * 32, "<resend@x>", since) is None
    assert other.find_held_copy("z@city.example.lg.jp", rcpts, "ab" * 32, "<resend@x>", since) is None
    assert other.find_held_copy("a@city.example.lg.jp", rcpts, "cd" * 32, "<resend@x>", since) is None
    assert other.find_held_copy("a@city.example.lg.jp", rcpts, "ab" * 32, "<other@x>", since) is None
    later = _iso(timedelta(seconds=1))  # outside the hold lifetime
    assert other.find_held_copy("a@city.example.lg.jp", rcpts, "ab" * 32, "<resend@x>", later) is None


# -- the durable queue of sender notices (issue 13.5) ---------------------------------

NOTICE = b"From: postmaster@city.example.lg.jp\r\nSubject: notice\r\n\r\nmasked ********9018\r\n"


def _queue(store: HoldStore, hold_id: str = "", kind: str = "held", **kw: Any) -> str:
    args: dict[str, Any] = dict(expires=_iso(timedelta(days=5)), mail_options=["SMTPUTF8"])
    args.update(kw)
    return store.queue_notice(kind, hold_id, "postmaster@city.example.lg.jp", ["a@city.example.lg.jp"],
                              NOTICE, **args)


def test_a_queued_notice_is_durable_and_due(store: HoldStore, other: HoldStore) -> None:
    held = add(store)
    nid = _queue(store, held.id)
    due = other.due_notices(_iso(timedelta(seconds=1)), 10)
    assert [n.id for n in due] == [nid]
    n = due[0]
    assert (n.kind, n.hold_id, n.mail_from, n.rcpt_tos, n.mail_options, n.data, n.attempts, n.last_error) == (
        "held", held.id, "postmaster@city.example.lg.jp", ("a@city.example.lg.jp",), ("SMTPUTF8",), NOTICE, 0, "")
    stats = other.notice_queue_stats()
    assert stats.count == 1 and stats.oldest == n.created and stats.last_error == ""
    other.notice_sent(nid)
    assert store.due_notices(_iso(timedelta(days=10)), 10) == []
    assert store.notice_queue_stats().count == 0


def test_queueing_the_held_notice_can_complete_the_hold(store: HoldStore, other: HoldStore) -> None:
    """The relay queues a hold's notice and marks the hold done in one commit (issue 15):
    either both are visible or neither; done never goes back; other holds are untouched."""
    held, bystander = add(store), add(store)
    store.set_hold_stage(held.id, "audited")
    nid = _queue(store, held.id, hold_done=True)
    assert other.get(held.id).hold_stage == "done"
    assert [h.id for h in other.incomplete_holds()] == [bystander.id]
    assert [n.id for n in other.due_notices(_iso(timedelta(seconds=1)), 10)] == [nid]
    assert _queue(other, held.id, hold_done=True) == nid  # again (recovery): same notice, still done
    assert other.get(held.id).hold_stage == "done"
    plain = add(store)
    _queue(store, plain.id)  # without hold_done the stage is the caller's business
    assert other.get(plain.id).hold_stage == "stored"


def test_a_notice_is_queued_once_per_hold_and_kind(store: HoldStore, other: HoldStore) -> None:
    held = add(store)
    first = _queue(store, held.id)
    assert _queue(other, held.id) == first  # recovery queueing it again
    rejected = _queue(other, held.id, kind="rejected")
    assert rejected != first
    blocks = {_queue(store, ""), _queue(store, "", kind="blocked"), _queue(other, "", kind="blocked")}
    assert len(blocks) == 3  # blocks have no hold id: each is its own notice
    assert store.notice_queue_stats().count == 5


def test_a_failed_notice_waits_for_its_next_attempt(store: HoldStore, other: HoldStore) -> None:
    nid = _queue(store, add(store).id)
    later = _iso(timedelta(minutes=2))
    other.notice_failed(nid, later, "upstream unavailable: connection refused")
    assert store.due_notices(_iso(timedelta(minutes=1)), 10) == []
    (n,) = store.due_notices(_iso(timedelta(minutes=3)), 10)
    assert n.attempts == 1 and n.next_attempt == later and n.last_error.startswith("upstream unavailable")
    assert n.last_attempt
    stats = other.notice_queue_stats()
    assert stats.count == 1 and stats.last_error.startswith("upstream unavailable") and stats.last_error_at
    other.notice_failed(nid, later, "451 try later")
    assert store.notice_queue_stats().last_error == "451 try later"
    store.notice_expired(nid)
    assert other.notice_queue_stats().count == 0


def test_a_claimed_notice_goes_to_one_sender(store: HoldStore, other: HoldStore) -> None:
    nids = {_queue(store, add(store).id) for _ in range(3)}
    now, claim = _iso(timedelta(seconds=1)), _iso(timedelta(minutes=10))
    mine = store.due_notices(now, 2, claim_until=claim)
    rest = other.due_notices(now, 10, claim_until=claim)
    assert len(mine) == 2 and len(rest) == 1
    assert {n.id for n in mine} | {n.id for n in rest} == nids
    assert store.due_notices(now, 10, claim_until=claim) == []  # all claimed
    (again,) = [n for n in other.due_notices(_iso(timedelta(minutes=11)), 10) if n.id == rest[0].id]
    assert again.attempts == 0  # a claim that ran out: retried (at-least-once)


def test_the_queue_is_empty_in_a_new_store(store: HoldStore) -> None:
    stats = store.notice_queue_stats()
    assert (stats.count, stats.oldest, stats.last_error, stats.last_error_at) == (0, None, "", None)
