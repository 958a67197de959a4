"""The audit chain and the fingerprint key in PostgreSQL (beside mailguard.pgstore).

    PgAudit(store)                  an AuditSink: append, records, verify, export
    load_or_create_key(store)       the fingerprint key every node shares
    append_raw(conn, record)        put an existing record in place (store migrate)

The records are the same canonical JSON lines as audit.jsonl (mailguard.audit),
one row each in ``audit``, so an inspector checks them the same way. An append
locks the single row of ``audit_head`` (seq, hash of the last record), writes
the record and moves the head in one transaction: appends from every node are
serialised by that row lock, so seq follows commit order and the chain never
forks. Within one process, appends that arrive while one is being written are
written together by the next transaction (group commit: one lock, one fsync for
the batch); each caller still returns only after its record's COMMIT. Editing a row breaks its hash, deleting one breaks the next prev and seq,
both found by ``verify`` (bad_line = the seq where the chain breaks).

CHECKPOINTS: the ``audit_head`` row is the checkpoint kept outside the records
(``last_checkpoint``): it moves in the same transaction as the records, so the
chain must end exactly there, and ``verify`` fails (bad_line None) when the
records end before it (rows cut from the end) or before ``verify(checkpoint=...)``,
a head kept elsewhere. Someone who may write the database can rewrite both, so
after every commit the new head also goes off the database as in the embedded
log: the structlog event ``audit_checkpoint`` and, where ``/dev/log`` exists, the
syslog line ``mailguard audit_checkpoint seq=N hash=H`` (mailguard.audit).
``verify`` reads the records and the head in one snapshot (REPEATABLE READ), so
appends by other nodes during a check are not mistaken for a cut.

SECURITY: fields are scrubbed as in the embedded log (a 12-digit run is masked)
before they are hashed. The key row is as secret as the held mail; it is never
logged or put in a message.
DIAGNOSTICS: ``audit_checkpoint`` (info: seq, chain_hash) after each committed
append (one per group-commit batch); otherwise this module is itself the record.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailguard.audit import AuditLog, VerifyResult, _scrubbed
from mailguard.auditchain import GENESIS, AuditRecord, Checkpoint, canonical, parse_record, record_hash, syslog_checkpoint
from mailguard.errors import AuditError, StoreError
from mailguard.log import get_logger
from mailguard.secret import KEY_BYTES

_log = get_logger(component="audit")

# The store is a mailguard.pgstore.PgStore, typed loosely: pgstore opens this
# module lazily, and a type import back would be a cycle.
PgStore = Any

KEY_NAME = "fingerprint"
_BATCH = 2000  # records read per round trip by records() and verify()


class _Pending:
    __slots__ = ("record", "done", "error")

    def __init__(self, record: AuditRecord) -> None:
        self.record = record
        self.done = threading.Event()
        self.error: BaseException | None = None


class PgAudit:
    def __init__(self, store: PgStore) -> None:
        self._store = store
        self._mu = threading.Lock()
        self._queue: list[_Pending] = []
        self._writing = False

    def append(self, event: str, **fields: Any) -> AuditRecord:
        """Append one record after the chain head, durably; raises AuditError."""
        result = self.append_many([(event, fields)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def append_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[AuditRecord | BaseException]:
        """Append several records in order, in one transaction unless other appenders
        join it; each record, or its exception, once all are committed."""
        mine = []
        for event, fields in items:
            rec: AuditRecord = {k: _scrubbed(v, k) for k, v in fields.items() if v is not None}
            rec["event"] = event
            mine.append(_Pending(rec))
        if not mine:
            return []
        with self._mu:
            self._queue.extend(mine)
            lead = not self._writing
            self._writing = True
        if lead:
            # The first caller writes batches until none is waiting.
            while True:
                with self._mu:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._writing = False
                        break
                self._write_batch(batch)
        out: list[AuditRecord | BaseException] = []
        for p in mine:
            p.done.wait()
            out.append(p.error if p.error is not None else p.record)
        return out

    def _write_batch(self, batch: list[_Pending]) -> None:
        error: BaseException | None = None
        head: Checkpoint | None = None
        try:
            with self._store._write() as db:
                row = db.execute("SELECT seq, hash FROM audit_head WHERE one FOR UPDATE").fetchone()
                if row is None:
                    raise AuditError(f"{self.location()}: the audit head row is missing")
                seq, prev = row["seq"], row["hash"]
                for p in batch:
                    rec = p.record
                    seq += 1
                    rec.update(seq=seq, time=datetime.now(UTC).isoformat(timespec="microseconds"), prev=prev)
                    rec.pop("hash", None)
                    rec["hash"] = prev = record_hash(rec)
                db.cursor().executemany("INSERT INTO audit (seq, time, record) VALUES (%s, %s, %s)",
                                        [(p.record["seq"], p.record["time"], canonical(p.record)) for p in batch])
                db.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE one", (seq, prev))
            head = Checkpoint(seq, prev)
        except StoreError as exc:
            error = AuditError(f"cannot append to the audit chain: {exc}")
            error.__cause__ = exc
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            error = exc
        try:
            if head is not None:
                # Committed: the head goes off the database too (the module doc).
                _log.info("audit_checkpoint", seq=head.seq, chain_hash=head.hash)
                syslog_checkpoint(head)
        finally:
            # Every waiting caller is answered, whatever happened: a caller left
            # waiting would hang its SMTP transaction (and the relay) for good.
            for p in batch:
                p.error = error
                p.done.set()

    def records(self) -> Iterator[AuditRecord]:
        for _, line in self._lines():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise AuditError(f"{self.location()}: a record is not JSON") from exc

    def _lines(self, conn: psycopg.Connection[Any] | None = None) -> Iterator[tuple[int, str]]:
        """(seq, record line) in order; on ``conn`` (its errors raised as they come) or pooled."""
        after = -1
        sql = "SELECT seq, record FROM audit WHERE seq > %s ORDER BY seq LIMIT %s"
        while True:
            if conn is not None:
                rows = conn.execute(sql, (after, _BATCH)).fetchall()
            else:
                try:
                    rows = self._store._query(sql, (after, _BATCH))
                except StoreError as exc:
                    raise AuditError(f"cannot read the audit chain: {exc}") from exc
            for row in rows:
                yield row["seq"], row["record"]
            if len(rows) < _BATCH:
                return
            after = rows[-1]["seq"]

    def last_checkpoint(self) -> Checkpoint | None:
        """The chain head row (moved with every append); None before the first append."""
        try:
            rows = self._store._query("SELECT seq, hash FROM audit_head WHERE one")
        except StoreError as exc:
            raise AuditError(f"cannot read the audit chain head: {exc}") from exc
        if not rows:
            raise AuditError(f"{self.location()}: the audit head row is missing")
        return _checkpoint(rows[0])

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyResult:
        """Check the chain, that it ends exactly at the head row, and that it reaches
        ``checkpoint`` (a head kept elsewhere) with the same hash there."""
        try:
            with self._store.conn() as conn, conn.transaction():
                # One snapshot for the head and every record: another node's append
                # during the check is neither a cut nor a record past the head.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                heads = conn.execute("SELECT seq, hash FROM audit_head WHERE one").fetchall()
                return _verify(self._lines(conn), heads, checkpoint)
        except StoreError as exc:
            raise AuditError(f"cannot read the audit chain: {exc}") from exc

    # The embedded log's export reads only self.records(): one implementation for both.
    export = AuditLog.export

    def location(self, part: str = "") -> str:
        where = f"table audit in {self._store.where}"
        return f"{where} (seq {part})" if part else where

    def part_count(self) -> int:
        return 1


def _checkpoint(head: dict[str, Any]) -> Checkpoint | None:
    return Checkpoint(int(head["seq"]), str(head["hash"])) if head["seq"] else None


def _verify(lines: Iterator[tuple[int, str]], heads: list[dict[str, Any]],
            checkpoint: Checkpoint | None) -> VerifyResult:
    stored = _checkpoint(heads[0]) if heads else None
    checks = tuple(c for c in (stored, checkpoint) if c is not None)
    want = {c.seq: c.hash for c in checks}
    prev, count, seq = GENESIS, 0, 0
    for row_seq, raw in lines:
        def broken(reason: str, at: int = row_seq) -> VerifyResult:
            return VerifyResult(False, count, at, reason, checked=checks)
        rec, why = parse_record(raw)
        if rec is None:
            return broken(why)
        if rec.get("seq") != row_seq:
            return broken(f"seq {rec.get('seq')!r} stored as row {row_seq} (edited?)")
        if rec.get("prev") != prev:
            return broken("prev does not match the record before (deleted or reordered?)")
        if rec.get("seq") != seq + 1:
            return broken(f"seq {rec.get('seq')!r}, expected {seq + 1}")
        if row_seq in want and want[row_seq] != rec["hash"]:
            return broken(f"record {row_seq} does not match its checkpoint (the chain was rewritten?)")
        prev, count, seq = rec["hash"], count + 1, seq + 1
    head = Checkpoint(seq, prev) if count else None

    def cut(reason: str) -> VerifyResult:
        return VerifyResult(False, count, None, reason, head=head, checked=checks)
    if not heads:
        return cut("the audit head row is missing (deleted?)")
    if heads[0]["seq"] < seq:
        return VerifyResult(False, count, heads[0]["seq"] + 1, f"record {heads[0]['seq'] + 1} is past the"
                            f" chain head at {heads[0]['seq']} (written around the append?)", head=head,
                            checked=checks)
    if heads[0]["seq"] == 0 and heads[0]["hash"] != GENESIS:
        return cut("the chain head row was rewritten")
    for c in checks:
        if c.seq > seq:
            return cut(f"the chain ends at record {seq} but record {c.seq} was checkpointed"
                       f" (records cut from the end?)")
    return VerifyResult(True, count, head=head, checked=checks)


def append_raw(db: psycopg.Connection[Any], rec: AuditRecord) -> None:
    """Write ``rec`` (with its seq, prev and hash) and move the head; inside a transaction."""
    db.execute("INSERT INTO audit (seq, time, record) VALUES (%s, %s, %s)",
               (rec["seq"], rec["time"], canonical(rec)))
    db.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE one", (rec["seq"], rec["hash"]))


def load_or_create_key(store: PgStore, new: bytes | None = None) -> bytes:
    """The shared fingerprint key; the first node to ask creates it (``new`` or random)."""
    with store._write() as db:
        db.execute("INSERT INTO secret (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                   (KEY_NAME, new if new is not None else secrets.token_bytes(KEY_BYTES)))
        row = db.execute("SELECT value FROM secret WHERE name = %s", (KEY_NAME,)).fetchone()
    key = bytes(row["value"]) if row else b""
    if len(key) != KEY_BYTES:
        raise StoreError(f"{store.where}: the fingerprint key is {len(key)} bytes, expected {KEY_BYTES};"
                         " restore it from backup")
    return key
