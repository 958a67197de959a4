"""The hold store: durable files + SQLite rows, ids, locks, recovery."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from mailguard.errors import NotFound, StoreError
from mailguard.store import EXPIRED, HELD, MAGIC, RELEASED, Store, check_id, new_id

from store_cases import DATA, add, store  # noqa: F401 (store is a fixture)


def test_add_is_durable_private_and_exact(store):
    held = add(store, mail_options=("BODY=8BITMIME",))
    assert held.state == HELD and held.persons == 1 and held.rcpt_tos == ("b@example.com", "c@example.org")
    path = store.message_path(held.id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (store.path, store.messages, store.tmp):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    env, data = store.read_message(held.id)
    assert data == DATA
    assert env.mail_from == "a@city.example.lg.jp" and env.mail_options == ("BODY=8BITMIME",)
    assert list(store.tmp.iterdir()) == []
    # A second connection (another process) sees the committed row.
    db = sqlite3.connect(store.path / "meta.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT state FROM held WHERE id = ?", (held.id,)).fetchone() == ("held",)


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "abc", "ABCDEFGHJKMNPQRS", "abcdefghjkmnpqr/",
                                 "abcdefghjkmnpqrsa", "abcdefghijklmnop", "abcdefghjkmnpqr\n"])
def test_ids_are_checked_before_they_become_paths(store, bad):
    with pytest.raises(StoreError):
        check_id(bad)
    with pytest.raises(StoreError):
        store.get(bad)
    with pytest.raises(StoreError):
        store.message_path(bad)


def test_new_ids_are_letters_only():
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(check_id(i) and not any(c.isdigit() for c in i) for i in ids)


def test_unknown_id_is_not_found(store):
    with pytest.raises(NotFound):
        store.get(new_id())


def test_state_changes_happen_once(store):
    held = add(store)
    with store.locked(held.id):
        done = store.finish(held.id, RELEASED, "alice", "ok", reply="250 2.0.0 queued")
    assert done.state == RELEASED and done.decided_by == "alice" and done.upstream_reply.startswith("250")
    with pytest.raises(StoreError, match="released, not held"):
        store.finish(held.id, EXPIRED, "mailguard", "hold expired")
    assert store.list() == [] and [h.id for h in store.list(None)] == [held.id]


def test_approvals_accumulate(store):
    held = add(store, approvals_required=2)
    store.add_approval(held.id, "alice", "checked")
    h = store.add_approval(held.id, "bob", "checked too")
    assert h.approvers == ["alice", "bob"] and h.approvals_required == 2


def test_recovery_removes_leftovers_and_keeps_everything_committed(store):
    kept = add(store)
    # A crash mid-write: a temp file, and a renamed file whose row never committed.
    (store.tmp / "x.tmp").write_bytes(b"half")
    orphan = new_id()
    store.message_path(orphan).write_bytes(MAGIC + b'{"mail_from":"","rcpt_tos":[]}\n' + DATA)
    # A release that died after marking itself started.
    store.mark_release_started(kept.id)
    rec = store.recover()
    assert rec.temp_removed == 1 and rec.orphans_removed == 1 and rec.releases_interrupted == [kept.id]
    assert not store.message_path(orphan).exists()
    h = store.get(kept.id)
    assert h.state == HELD and h.release_started is None
    assert store.read_message(kept.id)[1] == DATA


def test_recovery_leaves_files_being_written_alone(store):
    import fcntl

    fd = os.open(store.tmp / "busy.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # flock is per open file description: a second open in this process contends too.
        assert store.recover().temp_removed == 0
        assert (store.tmp / "busy.tmp").exists()
    finally:
        os.close(fd)
    assert store.recover().temp_removed == 1


def test_partial_release_narrows_the_stored_envelope(store):
    held = add(store)
    with store.locked(held.id):
        store.narrow_recipients(held.id, ["c@example.org"])
    env, data = store.read_message(held.id)
    assert env.rcpt_tos == ("c@example.org",) and data == DATA
    assert stat.S_IMODE(store.message_path(held.id).stat().st_mode) == 0o600


def test_narrowed_message_stays_locked_until_the_block_ends(store, tmp_path):
    held = add(store)
    other = Store(tmp_path / "store")  # a second process's view: its own open files
    try:
        with store.locked(held.id):
            store.narrow_recipients(held.id, ["c@example.org"])
            with pytest.raises(StoreError, match="busy"):
                with other.locked(held.id):
                    pass
        with other.locked(held.id) as h:
            assert h.id == held.id
    finally:
        other.close()


def test_purge_deletes_only_finished_files(store):
    held, done = add(store), add(store)
    with store.locked(done.id):
        store.finish(done.id, RELEASED, "alice", "ok")
    with pytest.raises(StoreError):
        store.purge(held.id)
    assert [h.id for h in store.purgeable("9999")] == [done.id]
    p = store.purge(done.id)
    assert p.purged_at and not store.message_path(done.id).exists()
    with pytest.raises(NotFound):
        store.read_message(done.id)
    assert store.purgeable("9999") == []


def test_discard_takes_back_an_unpromised_hold(store):
    held = add(store)
    store.discard(held.id)
    with pytest.raises(NotFound):
        store.get(held.id)
    assert not store.message_path(held.id).exists()


def test_row_keeps_masked_findings_only(store):
    held = add(store)
    row = json.loads(sqlite3.connect(store.path / "meta.sqlite").execute(
        "SELECT findings FROM held WHERE id = ?", (held.id,)).fetchone()[0])
    assert set(row[0]) == {"masked", "confidence", "reason", "location", "fingerprint"}
