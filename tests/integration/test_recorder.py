"""The relay's audit hook (issue 15): records of concurrent transactions reach the
sink together, each caller returns only once its own record is durable, one bad
record fails its own caller only, and a caller that goes away loses no one else's."""

from __future__ import annotations

import asyncio

import pytest

from mailguard.audit import AuditLog
from mailguard.errors import AuditError
from mailguard.records import Decision
from mailguard.recorder import Recorder


class Config:  # Recorder reads nothing of it when given a sink
    pass


async def test_concurrent_records_share_commits_and_each_is_durable(tmp_path):
    log = AuditLog(tmp_path)
    rec = Recorder(Config(), log)  # type: ignore[arg-type]

    async def one(i: int) -> int:
        await rec.record(f"s{i}@city.example.lg.jp", ["r@example.com"], Decision("pass", "default"),
                         size=i, outcome="forwarded", reply="250 ok")
        # Returned: this record is in the file already.
        return sum(1 for r in log.records() if r.get("size") == i)

    found = await asyncio.gather(*(one(i) for i in range(60)))
    assert found == [1] * 60
    result = log.verify()
    assert result.ok and result.records == 60
    assert log._group.batches < 60  # concurrent records shared commits


async def test_a_bad_record_fails_only_its_caller(tmp_path):
    log = AuditLog(tmp_path)
    rec = Recorder(Config(), log)  # type: ignore[arg-type]

    async def good(i: int) -> None:
        await rec.record("a@city.example.lg.jp", ["r@example.com"], Decision("pass", "default"), size=i)

    async def bad() -> None:
        await rec.record("a@city.example.lg.jp", ["r@example.com"], Decision("pass", "default"),
                         size=1, weird=[object()])  # not JSON: that record cannot be written

    results = await asyncio.gather(good(1), bad(), good(2), return_exceptions=True)
    assert results[0] is None and results[2] is None and isinstance(results[1], AuditError)
    assert sorted(r["size"] for r in log.records()) == [1, 2] and log.verify().ok


async def test_a_caller_that_goes_away_does_not_take_the_batch_with_it(tmp_path):
    log = AuditLog(tmp_path)
    rec = Recorder(Config(), log)  # type: ignore[arg-type]
    tasks = [asyncio.ensure_future(rec.record("a@city.example.lg.jp", ["r@example.com"],
                                              Decision("pass", "default"), size=i)) for i in range(10)]
    await asyncio.sleep(0)
    tasks[3].cancel()  # the client went away while its record was being written
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(r is None for i, r in enumerate(results) if i != 3)
    for _ in range(100):  # the cancelled caller's record is still written: it was promised
        if len(list(log.records())) == 10:
            break
        await asyncio.sleep(0.01)
    assert sorted(r["size"] for r in log.records()) == list(range(10)) and log.verify().ok
