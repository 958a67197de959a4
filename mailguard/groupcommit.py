"""Group commit: items submitted by concurrent threads share one durable write.

``GroupCommit(write_batch).submit(item)`` blocks until ``item`` is durable and
returns its result. While one thread (the leader) writes a batch, items that
other threads submit queue up; when the batch is done the leader wakes its
followers and hands the lead to the first queued thread, which writes everything
queued so far as the next batch. So one record alone costs what it did (no added
wait: a lone append is a batch of one), and N appends arriving during one fsync
share the next fsync. No thread of its own: nothing to start, stop or fork.

``write_batch(items)`` gets the items in submission order and returns one entry
per item, in the same order: the item's result, or an exception for that item
alone. An exception raised by ``write_batch`` itself fails the whole batch: each
submitter raises a copy of its own (same type and args, same ``__cause__``).

Used by the audit log (mailguard.audit): the batch is written with one write and
one fsync under the file lock, so the hash chain's order is the file's order and
each 250 still follows only its own record being durable.

``LoopBatch(write_many)`` is the same idea one level up, for coroutines on one
event loop: ``await batch.submit(item)`` queues the item; while one
``write_many(items)`` runs in a worker thread, items submitted meanwhile wait
and go together in the next call. One thread hop per batch instead of one per
item (each hop is a wake-up and GIL hand-offs: issue 15).

SECURITY: none (items are opaque here). DIAGNOSTICS: none.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Pending(Generic[Item]):
    __slots__ = ("item", "wake", "done", "result", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.wake = threading.Event()
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    def __init__(self, write_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]]) -> None:
        self._write_batch = write_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending[Item]] = []
        self._leading = False
        self.batches = 0  # for tests and benches: how many writes served how many items
        self.items = 0

    def submit(self, item: Item) -> Result:
        p: _Pending[Item] = _Pending(item)
        with self._lock:
            self._queue.append(p)
            lead = not self._leading
            self._leading = True
        if not lead:
            p.wake.wait()
        if not p.done:  # first in, or handed the lead by the previous leader
            self._lead()
        if p.error is not None:
            raise p.error
        return p.result  # type: ignore[return-value]

    def submit_many(self, items: Sequence[Item]) -> list[Result | BaseException]:
        """Submit ``items`` together (in order, never split by other submitters'
        items between them); each one's result or exception, once all are durable."""
        pending = [_Pending(item) for item in items]
        if not pending:
            return []
        with self._lock:
            self._queue.extend(pending)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        for p in pending:
            # Woken either because its batch is done or to lead the next one
            # (the previous leader hands the lead to the first queued item).
            p.wake.wait()
            if not p.done:
                self._lead()
        return [p.error if p.error is not None else p.result for p in pending]  # type: ignore[misc]

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            results: Sequence[Result | BaseException] = self._write_batch([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"write_batch returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - every submitter must hear of it
            results = [_copy(exc) for _ in batch]
        self.batches += 1
        self.items += len(batch)
        for p, r in zip(batch, results):
            if isinstance(r, BaseException):
                p.error = r
            else:
                p.result = r
            p.done = True
        with self._lock:
            nxt = self._queue[0] if self._queue else None  # woken not done: it leads next
            if nxt is None:
                self._leading = False
        for p in batch:
            p.wake.set()
        if nxt is not None:
            nxt.wake.set()


def _copy(exc: BaseException) -> BaseException:
    """One exception per submitter: raising one object from several threads at
    once would tangle its traceback."""
    try:
        err = type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type with another signature
        err = RuntimeError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc.__cause__ if exc.__cause__ is not None else exc
    return err


class LoopBatch(Generic[Item, Result]):
    """Items submitted by coroutines go to ``write_many`` (run in a worker thread)
    together: each ``submit`` returns its own item's result, or raises its own
    item's exception, once the call that carried it has returned. A submitter that
    is cancelled stops waiting; its item is written all the same (it may already
    be promised to someone, and the others in its batch must not be lost)."""

    def __init__(self, write_many: Callable[[list[Item]], Sequence[Result | BaseException]]) -> None:
        self._write_many = write_many
        self._queued: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # for tests and benches
        self.items = 0

    async def submit(self, item: Item) -> Result:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queued.append((item, fut))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await asyncio.shield(fut)

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    results: Sequence[Result | BaseException] = await asyncio.to_thread(
                        self._write_many, [item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"write_many returned {len(results)} results for {len(batch)} items")
                except Exception as exc:  # noqa: BLE001 - every waiting submitter hears of it
                    results = [_copy(exc) for _ in batch]
                self.batches += 1
                self.items += len(batch)
                for (_, fut), result in zip(batch, results):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)  # type: ignore[arg-type]
        finally:
            self._flusher = None
            for _, fut in self._queued:  # the loop is stopping: nobody may hang
                if not fut.done():
                    fut.set_exception(RuntimeError("batch writer stopped"))
            self._queued = []
