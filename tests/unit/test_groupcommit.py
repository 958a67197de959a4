"""Group commit (issue 15): concurrent audit appends share writes, keep the chain
in file order, each returns its own durable record, and one bad record fails alone."""

from __future__ import annotations

import threading
import time

import pytest

from mailguard.audit import AuditLog
from mailguard.errors import AuditError
from mailguard.groupcommit import GroupCommit


def test_concurrent_appends_share_writes_and_keep_the_chain(tmp_path):
    log = AuditLog(tmp_path)
    got: dict[int, dict] = {}

    def appender(i: int) -> None:
        for j in range(25):
            rec = log.append("pass", operator="mailguard", id=f"t{i}-{j}")
            got[rec["seq"]] = rec

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = log.verify()
    assert result.ok and result.records == 200
    on_disk = list(log.records())
    # Each append returned exactly the record that is in the file at its seq.
    assert [r["seq"] for r in on_disk] == list(range(1, 201))
    assert all(got[r["seq"]] == r for r in on_disk)
    assert log._group.items == 200 and log._group.batches < 200  # some writes were shared
    assert log.last_checkpoint().seq == 200  # the checkpoint follows the last batch


def test_a_record_that_cannot_be_written_fails_alone(tmp_path):
    log = AuditLog(tmp_path)
    log.append("pass", id="a")
    with pytest.raises(AuditError):
        log.append("pass", id="b", bad=object())  # not JSON
    log.append("pass", id="c")
    recs = list(log.records())
    assert [r["id"] for r in recs] == ["a", "c"] and log.verify().ok


def test_a_failed_batch_fails_every_submitter_and_the_next_batch_goes_on():
    calls: list[list[int]] = []
    gate = threading.Event()

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(5)  # the first batch is slow: the others queue behind it
            return [i * 10 for i in items]
        if 99 in items:
            raise AuditError("disk gone")
        return [i * 10 for i in items]

    gc = GroupCommit(write)
    results: dict[int, object] = {}

    def submit(i: int) -> None:
        try:
            results[i] = gc.submit(i)
        except AuditError as exc:
            results[i] = exc

    first = threading.Thread(target=submit, args=(1,))
    first.start()
    while not calls:
        time.sleep(0.001)
    rest = [threading.Thread(target=submit, args=(i,)) for i in (2, 99, 3)]
    for t in rest:
        t.start()
    while len(gc._queue) < 3:
        time.sleep(0.001)
    gate.set()
    for t in [first, *rest]:
        t.join(5)
    assert results[1] == 10
    assert len(calls) == 2 and set(calls[1]) == {2, 99, 3}  # the three queued shared one write
    errors = [results[i] for i in (2, 99, 3)]
    assert all(isinstance(e, AuditError) and str(e) == "disk gone" for e in errors)
    assert len({id(e) for e in errors}) == 3  # each submitter raised its own
    assert gc.submit(4) == 40  # the lead was given back


def test_concurrent_holds_share_row_commits_and_each_is_durable(tmp_path):
    from mailguard.store import HOLD_DONE, Store

    store = Store(tmp_path / "store")
    ids: list[str] = []
    data = b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: t\r\n\r\nbody\r\n"

    def holder(i: int) -> None:
        for j in range(10):
            held = store.add("a@city.example.lg.jp", ["b@example.com"], data + f"{i}-{j}".encode(),
                             rule="hold-external", reasons=("1 person",), persons=1)
            store.set_hold_stage(held.id, HOLD_DONE)
            ids.append(held.id)

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    reopened = Store(tmp_path / "store")
    try:
        assert sorted(h.id for h in reopened.list()) == sorted(ids) and len(ids) == 80
        assert all(reopened.get(i).hold_stage == HOLD_DONE for i in ids)
    finally:
        reopened.close()
    assert store._rows.items == 160 and store._rows.batches < 160  # some commits were shared


def test_a_failing_row_write_fails_alone_in_its_batch(tmp_path):
    import sqlite3

    from mailguard.store import Store

    store = Store(tmp_path / "store")
    try:
        results = store._commit_rows([
            lambda db: db.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"),
            lambda db: db.execute("INSERT INTO t VALUES (1)"),
            lambda db: db.execute("INSERT INTO t VALUES (1)"),  # duplicate key: this one fails
            lambda db: db.execute("INSERT INTO t VALUES (2)"),
        ])
        assert isinstance(results[2], sqlite3.IntegrityError)
        assert [r[0] for r in store._query("SELECT x FROM t ORDER BY x")] == [1, 2]
    finally:
        store.close()


def test_submit_many_keeps_its_items_together_among_other_submitters():
    """submit_many (the relay's Recorder hands concurrent records over in one call):
    its items stay in order and together, each gets its own result, and the lead
    passes on without anyone hanging, whoever submits meanwhile."""
    written: list[tuple[str, int]] = []
    lock = threading.Lock()

    def write(items):
        time.sleep(0.002)  # an fsync: others queue meanwhile
        with lock:
            written.extend(items)
        return [("ok", item) if item[1] >= 0 else ValueError(f"bad {item}") for item in items]

    gc = GroupCommit(write)
    results: dict[str, list] = {}

    def many(name: str) -> None:
        for round_ in range(20):
            items = [(f"{name}{round_}", i) for i in range(5)]
            if round_ == 7:
                items[2] = (f"{name}{round_}", -1)  # one bad item: fails alone
            results.setdefault(name, []).append(gc.submit_many(items))

    def single(name: str) -> None:
        for round_ in range(40):
            results.setdefault(name, []).append([gc.submit((name, round_))])

    threads = [threading.Thread(target=many, args=(f"m{i}",)) for i in range(4)]
    threads += [threading.Thread(target=single, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)  # nobody left waiting for a lead
    assert gc.items == 4 * 20 * 5 + 4 * 40 and gc.batches < gc.items
    for i in range(4):
        for round_ in range(20):
            name = f"m{i}{round_}"
            at = [k for k, item in enumerate(written) if item[0] == name]
            assert at == list(range(at[0], at[0] + 5))  # contiguous, in order
            got = results[f"m{i}"][round_]
            for k, r in enumerate(got):
                if round_ == 7 and k == 2:
                    assert isinstance(r, ValueError)
                else:
                    assert r == ("ok", (name, k))
    assert gc.submit_many([]) == []


def test_append_many_writes_one_batch_and_fails_one_record_alone(tmp_path):
    log = AuditLog(tmp_path)
    before = log._group.batches
    out = log.append_many([("pass", {"operator": "mailguard", "id": "a"}),
                           ("pass", {"operator": "mailguard", "bad": object()}),  # not JSON
                           ("pass", {"operator": "mailguard", "id": "c"})])
    assert log._group.batches == before + 1
    assert [r["id"] for r in (out[0], out[2])] == ["a", "c"] and isinstance(out[1], AuditError)
    assert [r["seq"] for r in (out[0], out[2])] == [1, 2]
    assert log.verify().ok and log.verify().records == 2


async def test_loop_batch_carries_concurrent_items_in_few_calls():
    import asyncio

    from mailguard.groupcommit import LoopBatch

    calls: list[list[int]] = []

    def write_many(items):
        time.sleep(0.005)  # a commit: more submitters queue meanwhile
        calls.append(list(items))
        return [ValueError(f"bad {i}") if i == 13 else i * 10 for i in items]

    batch = LoopBatch(write_many)
    results = await asyncio.gather(*(batch.submit(i) for i in range(40)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 13] == [i * 10 for i in range(40) if i != 13]
    assert isinstance(results[13], ValueError)
    assert sorted(i for c in calls for i in c) == list(range(40)) and len(calls) < 40
    assert batch.items == 40 and batch.batches == len(calls)


async def test_loop_batch_a_failing_call_fails_each_of_its_items_and_the_next_goes_on():
    import asyncio

    from mailguard.groupcommit import LoopBatch

    state = {"fail": True}

    def write_many(items):
        if state["fail"]:
            state["fail"] = False
            raise OSError("disk gone")
        return list(items)

    batch = LoopBatch(write_many)
    first = await asyncio.gather(batch.submit(1), batch.submit(2), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in first) and first[0] is not first[1]  # a copy each
    assert await batch.submit(3) == 3
