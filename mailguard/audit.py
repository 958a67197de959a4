"""The append-only, hash-chained audit log: ``<store.path>/audit.jsonl``.

One JSON object per line, keys sorted, no spaces. Every record carries

    seq    1, 2, 3, ... (line number)
    time   ISO 8601 UTC
    event  pass | hold | block | notice | approve | release | release-failed |
           release-interrupted | reject | expire | show-raw | purge | audit-repaired
    prev   the previous record's ``hash`` (64 zeros for the first)
    hash   SHA-256 of the record's canonical JSON without ``hash``

so that editing a line (its hash no longer matches), deleting one or reordering
lines (the next ``prev`` or ``seq`` no longer matches) is detected by ``verify``,
which names the first line where the chain breaks. The chain is a plain SHA-256
so an inspector can check it without any secret.

Appending is safe from several processes (``serve`` and the CLI): each append
takes an exclusive flock on the file, reads the last record, writes its line with
a single write and fsyncs before it returns. GROUP COMMIT (mailguard.groupcommit):
appends from threads of one process that arrive during a write go together in
the next one (one flock, write, fsync and checkpoint), chained in queue order, so
chain order is file order; each returns once its own record is durable, and a
lone append waits for nothing. A record counts only once complete:
a torn last line left by a crash (no newline) is cut off by the next append,
which records how many bytes it dropped (event ``audit-repaired``).

SECURITY: callers pass masked findings and fingerprints only; as a last line of
defence every string value is run through the log scrubber, which masks any
12+ digit run, so an operator's free-text reason cannot put a number here.

ROTATION (logrotate, deploy/logrotate/mailguard): rotated files sit beside the
log as ``audit.jsonl.N`` (N=1 newest; ``.gz`` when compressed) or
``audit.jsonl-DATE`` (dateext). The chain continues across files: an append to a
fresh, empty ``audit.jsonl`` chains from the last record of the newest rotated
file, and an appender whose open file was renamed away under it (inode changed
after it took the lock) reopens the new one. ``verify`` and ``export`` read the
rotated files oldest first, then ``audit.jsonl``. If the oldest rotated files
were deleted (logrotate's ``rotate`` count), verify checks from the first record
it has and says so (``first_seq``). Rotation must use ``delaycompress`` and no
``copytruncate``: a record written to the newest rotated file just after the
rename must stay readable there.

CHECKPOINTS: a chain proves nothing about records cut from its end, or about a
whole file rewritten with fresh hashes. So after every write (a batch) the new head
(``seq`` and ``hash``) is checkpointed outside the file: in the store database
(table ``audit_checkpoint`` in ``meta.sqlite``; it only moves forward), as the
structlog event ``audit_checkpoint`` (stderr, so journald under systemd) and,
where ``/dev/log`` exists, as one syslog line ``mailguard audit_checkpoint
seq=N hash=H`` that a central syslog keeps off the host. ``verify`` fails when
the file ends before the stored checkpoint or its record there has another
hash; ``verify(checkpoint=Checkpoint(seq, hash))`` checks a head kept elsewhere.
A checkpoint that cannot be written (a full disk) is logged
(``audit_checkpoint_failed``), never raised: the record itself is durable.

FULL DISK: a write that fails is cut back (ftruncate), so no torn line is left;
an ENOSPC append gives up ``.audit.reserve`` (RESERVE_BYTES, made on the first
append) and tries again, and the reserve is made again once there is room.

DIAGNOSTICS: ``audit_checkpoint`` (info: seq, chain_hash) after each write,
``audit_checkpoint_failed`` and ``audit_reserve_used`` (error); otherwise this module is itself the record.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import gzip
import io
import json
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

# The chain's own pieces, shared with pgaudit.py; re-exported for older callers.
from mailguard.auditchain import (  # noqa: F401
    GENESIS, AuditRecord, Checkpoint, JSONValue, canonical, parse_record, record_hash, syslog_checkpoint,
)
from mailguard.durable import chmod_own, file_mode
from mailguard.errors import AuditError
from mailguard.groupcommit import GroupCommit
from mailguard.log import get_logger, scrub

_log = get_logger(component="audit")


AUDIT_FILE = "audit.jsonl"
# Space kept beside the log for a full disk: given up when an append hits ENOSPC,
# so the records of mail already accepted still fit (thousands of lines), while
# the relay refuses new mail (store.min_free) until space comes back.
RESERVE_FILE = ".audit.reserve"
RESERVE_BYTES = 1024 * 1024
CSV_FIELDS = (
    "seq", "time", "event", "operator", "id", "from", "to", "rule", "persons",
    "findings", "fingerprints", "reason", "reply", "hash",
)


# Hex digests are not numbers to mask (and masking one would break correlation).
_HEX_KEYS = frozenset({"fingerprint", "fingerprints", "sha256", "hash", "prev"})


def _scrubbed(value: object, key: str = "") -> object:
    if key in _HEX_KEYS:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        # Keys too: release-partial maps refused recipients (addresses) to replies.
        return {scrub(k) if isinstance(k, str) else k: _scrubbed(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


CHECKPOINT_DB = "meta.sqlite"
_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    time  TEXT NOT NULL
)"""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    bad_line: int | None = None  # None with ok False: the file was cut or rewritten (checkpoint)
    reason: str = ""
    bad_file: str = ""  # which file bad_line is in (rotation); "" = audit.jsonl
    first_seq: int = 1  # > 1 when older rotated files are gone
    head: Checkpoint | None = None  # the last record's seq and hash
    checked: tuple[Checkpoint, ...] = ()  # the checkpoints the file was held against


class AuditLog:
    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = Path(store_path) / AUDIT_FILE
        self._checkpoint_db = Path(store_path) / CHECKPOINT_DB
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        self._reserve = Path(store_path) / RESERVE_FILE
        self._reserve_ok = False
        self._group: GroupCommit[tuple[str, dict[str, object]], AuditRecord] = GroupCommit(self._append_batch)

    # -- writing -------------------------------------------------------------

    def append(self, event: str, **fields: object) -> AuditRecord:
        """Append one record, durably (GROUP COMMIT); returns it (with seq, time, prev, hash)."""
        return self._group.submit((event, fields))

    def append_many(self, items: Sequence[tuple[str, dict[str, object]]]) -> list[AuditRecord | BaseException]:
        """Append several records in order with one group commit (one write, one
        fsync, unless other appenders join the batch); each record, or the
        exception that record alone met, once all of them are durable."""
        return self._group.submit_many(list(items))

    def _append_batch(self, items: Sequence[tuple[str, dict[str, object]]]) -> list[AuditRecord | BaseException]:
        """Write ``items`` in order with one write and one fsync. On ENOSPC the reserve
        file is given up and the batch tried again (FULL DISK in the module doc)."""
        try:
            recs = self._append(items)
        except AuditError as exc:
            if not (isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC):
                raise
            if not self._use_reserve():
                raise
            _log.error("audit_reserve_used", records=len(items), reserve_bytes=RESERVE_BYTES)
            recs = self._append(items)
        else:
            self._keep_reserve()
        return recs

    def _use_reserve(self) -> bool:
        try:
            os.unlink(self._reserve)
        except FileNotFoundError:
            return False
        except OSError:
            return False
        return True

    def _keep_reserve(self) -> None:
        """Make the reserve file if it is missing (best effort: a full disk leaves it missing)."""
        if self._reserve_ok and self._reserve.exists():
            return
        self._reserve_ok = False
        tmp = self._reserve.with_name(f".{RESERVE_FILE}.{os.getpid()}.{threading.get_ident()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, file_mode())  # the umask would strip store.group's bits
        except OSError:
            return
        try:
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.write(fd, b"\0" * RESERVE_BYTES)  # no fallocate here: real blocks
            os.fsync(fd)
            os.rename(tmp, self._reserve)
            self._reserve_ok = True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        finally:
            os.close(fd)

    def _append(self, items: Sequence[tuple[str, dict[str, object]]]) -> list[AuditRecord | BaseException]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_mode())
        except OSError as exc:
            raise AuditError(f"cannot open {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _rotated_away(fd, self.path):
                # logrotate renamed the file between our open and our lock:
                # append to the new audit.jsonl instead.
                os.close(fd)
                fd = -1
                return self._append(items)
            last, torn = _last_record(fd)
            if last is None:
                last = self._last_rotated_record()
            if torn:
                # A crash left half a line: it never counted; cut it so the chain goes on.
                size = os.fstat(fd).st_size
                os.ftruncate(fd, size - torn)
                last = self._write(fd, last, [("audit-repaired", {"dropped_bytes": torn})])[0]
            recs = self._write(fd, last, items)
            head = next((r for r in reversed(recs) if isinstance(r, dict)), None)
            if head is not None:
                # Still under the flock: checkpoints are written in chain order.
                self._checkpoint(Checkpoint(head["seq"], head["hash"]))
            return recs
        except OSError as exc:
            raise AuditError(f"cannot append to {self.path}: {exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)  # releases the flock

    def _write(self, fd: int, last: AuditRecord | None,
               items: Sequence[tuple[str, dict[str, object]]]) -> list[AuditRecord | BaseException]:
        """Chain ``items`` after ``last`` and write them with one write and one fsync.
        A record that cannot be serialised fails alone (and takes no place in the chain)."""
        out: list[AuditRecord | BaseException] = []
        lines = []
        for event, fields in items:
            try:
                rec: AuditRecord = {k: _scrubbed(v, k) for k, v in fields.items() if v is not None}
                rec.update(
                    event=event,
                    seq=(last["seq"] + 1) if last else 1,
                    time=datetime.now(UTC).isoformat(timespec="microseconds"),
                    prev=last["hash"] if last else GENESIS,
                )
                rec["hash"] = record_hash(rec)
                lines.append((canonical(rec) + "\n").encode("utf-8"))
            except (TypeError, ValueError) as exc:
                out.append(AuditError(f"cannot write a {event} record: {exc}"))
                continue
            out.append(rec)
            last = rec
        data = b"".join(lines)
        if not data:
            return out
        size = os.fstat(fd).st_size
        try:
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, f"short write to {self.path} ({n} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError:
            # Leave no torn line behind (a full disk): the file ends at a record.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        return out

    # -- checkpoints (see the module doc) ------------------------------------

    def _checkpoint(self, head: Checkpoint) -> None:
        try:
            with self._db_lock:
                if self._db is None:
                    db = sqlite3.connect(self._checkpoint_db, timeout=30, isolation_level=None,
                                         check_same_thread=False)
                    chmod_own(self._checkpoint_db, file_mode())  # 0600, or 0660 with store.group
                    db.execute("PRAGMA busy_timeout=30000")
                    # NORMAL: a power cut may lose the newest checkpoint, leaving it behind
                    # the file (safe), never ahead of it: the record was fsynced first.
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.execute(_CHECKPOINT_SCHEMA)
                    self._db = db
                self._db.execute(
                    "INSERT INTO audit_checkpoint (id, seq, hash, time) VALUES (1, ?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                    " time = excluded.time WHERE excluded.seq > audit_checkpoint.seq",
                    (head.seq, head.hash, datetime.now(UTC).isoformat(timespec="seconds")))
        except (OSError, sqlite3.Error) as exc:
            with self._db_lock:
                if self._db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.close()
                    self._db = None
            _log.error("audit_checkpoint_failed", seq=head.seq, error=str(exc)[:200])
        _log.info("audit_checkpoint", seq=head.seq, chain_hash=head.hash)
        syslog_checkpoint(head)

    def last_checkpoint(self) -> Checkpoint | None:
        """The head last checkpointed in the store database; None if none was ever written."""
        if not self._checkpoint_db.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{self._checkpoint_db}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit checkpoint in {self._checkpoint_db}: {exc}") from exc
        try:
            row = db.execute("SELECT seq, hash FROM audit_checkpoint WHERE id = 1").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise AuditError(f"cannot read the audit checkpoint in {self._checkpoint_db}: {exc}") from exc
        finally:
            db.close()
        return Checkpoint(int(row[0]), str(row[1])) if row else None

    def location(self, part: str = "") -> str:
        """Where the log is (or ``part``, a VerifyResult.bad_file of it), for messages."""
        return str(self.path.with_name(part) if part else self.path)

    def part_count(self) -> int:
        """How many pieces the chain is kept in (audit.jsonl and its rotated files)."""
        return len(self.rotated_files()) + 1

    def rotated_files(self) -> list[Path]:
        """Files logrotate made from audit.jsonl, oldest first."""
        found = []
        for p in self.path.parent.glob(AUDIT_FILE + "[.-]*"):
            m = _ROTATED.fullmatch(p.name)
            if m:
                n = m.group("n")
                # audit.jsonl.N: a higher N is older; dated names sort by date.
                key = (0, -int(n), "") if n else (1, 0, m.group("date"))
                found.append((key, p))
        return [p for _, p in sorted(found)]

    def _last_rotated_record(self) -> AuditRecord | None:
        for path in reversed(self.rotated_files()):
            try:
                with _open_audit(path) as f:
                    if not path.name.endswith(".gz"):
                        # Wait for a writer still appending to it under its old name.
                        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                    last = None
                    for line in f:
                        if line.endswith(b"\n") and line.strip():
                            last = line
            except OSError as exc:
                raise AuditError(f"cannot read {path}: {exc}") from exc
            if last is not None:
                try:
                    return json.loads(last)
                except ValueError as exc:
                    raise AuditError(f"the last record of {path} is not JSON; run `mailguard audit verify`") from exc
        return None

    def all_lines(self) -> Iterator[tuple[Path, int, bytes]]:
        """(file, line number in it, line) over the rotated files, then audit.jsonl."""
        for path in self.rotated_files():
            try:
                with _open_audit(path) as f:
                    for n, line in enumerate(f, 1):
                        yield path, n, line
            except FileNotFoundError:
                continue
        for n, line in self.lines():
            yield self.path, n, line

    # -- reading -------------------------------------------------------------

    def lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with open(self.path, "rb") as f:
                for n, line in enumerate(f, 1):
                    yield n, line
        except FileNotFoundError:
            return

    def records(self) -> Iterator[AuditRecord]:
        for path, n, line in self.all_lines():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise AuditError(f"{path}:{n}: not JSON") from exc

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyResult:
        """Check the chain, then that it reaches the stored checkpoint and ``checkpoint``
        (a head kept elsewhere) with the same hash there."""
        checks = [c for c in (self.last_checkpoint(), checkpoint) if c is not None]
        result = self._verify_chain(checks)
        if not result.ok:
            return result
        head = result.head
        for c in checks:
            last = head.seq if head else 0
            if c.seq > last:
                return _cut(result, checks, f"the log ends at record {last} but record {c.seq} was"
                                            f" checkpointed (records cut from the end?)")
        return result

    def _verify_chain(self, checks: list[Checkpoint]) -> VerifyResult:
        prev, count, seq, first_seq = GENESIS, 0, 0, 1
        want = {c.seq: c.hash for c in checks}
        for path, n, raw in self.all_lines():
            bad = "" if path == self.path else path.name

            def broken(reason: str) -> VerifyResult:
                return VerifyResult(False, count, n, reason, bad_file=bad, first_seq=first_seq)
            if not raw.endswith(b"\n"):
                return broken("incomplete last line (torn write)")
            rec, why = parse_record(raw)
            if rec is None:
                return broken(why)
            if count == 0 and bad and isinstance(rec.get("seq"), int) and rec["seq"] > 1:
                # The oldest rotated file left: earlier files were rotated away.
                # Its first record anchors the chain; everything after is checked.
                prev, seq = rec.get("prev"), rec["seq"] - 1
                first_seq = rec["seq"]
            if rec.get("prev") != prev:
                return broken("prev does not match the line before (deleted or reordered?)")
            if rec.get("seq") != seq + 1:
                return broken(f"seq {rec.get('seq')!r}, expected {seq + 1}")
            if rec["seq"] in want and want[rec["seq"]] != rec["hash"]:
                return broken(f"record {rec['seq']} does not match its checkpoint (the log was rewritten?)")
            prev, count, seq = rec["hash"], count + 1, seq + 1
        head = Checkpoint(seq, prev) if count else None
        return VerifyResult(True, count, first_seq=first_seq, head=head, checked=tuple(checks))

    def export(self, since: datetime, fmt: str = "json") -> Iterable[str]:
        """Records at or after ``since`` as JSON lines or CSV rows (with a header)."""
        selected = (r for r in self.records() if _parse_time(r.get("time", "")) >= since)
        if fmt == "json":
            for r in selected:
                yield canonical(r) + "\n"
            return
        if fmt != "csv":
            raise ValueError(fmt)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        yield buf.getvalue()
        for r in selected:
            buf.seek(0)
            buf.truncate()
            w.writerow([_csv_value(r, k) for k in CSV_FIELDS])
            yield buf.getvalue()


def _cut(result: VerifyResult, checks: list[Checkpoint], reason: str) -> VerifyResult:
    return VerifyResult(False, result.records, None, reason, first_seq=result.first_seq,
                        head=result.head, checked=tuple(checks))


def _csv_value(rec: AuditRecord, key: str) -> str:
    if key == "findings":
        return ";".join(f"{f.get('masked', '')}@{f.get('location', '')}" for f in rec.get("findings", ()))
    v = rec.get(key)
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, dict):
        return canonical(v)
    return str(v)


def _parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_since(text: str) -> datetime:
    """'2025-04-01' or an ISO 8601 time -> aware datetime (naive = UTC)."""
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a date like 2025-04-01 or 2025-04-01T09:00:00+09:00") from None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


_ROTATED = re.compile(
    re.escape(AUDIT_FILE) + r"(?:\.(?P<n>\d{1,6})|-(?P<date>\d{8}(?:\d{2,6})?))(?:\.gz)?")


def _open_audit(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _rotated_away(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino != os.stat(path).st_ino
    except FileNotFoundError:
        return True


def _last_record(fd: int) -> tuple[AuditRecord | None, int]:
    """The last complete record and the length of a torn tail (0 if none)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, 0
    chunk = 65536
    while True:
        start = max(0, size - chunk)
        tail = os.pread(fd, size - start, start)
        torn = 0
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if cut < 0 and start > 0:
                chunk *= 4
                continue
            torn = len(tail) - (cut + 1)
            tail = tail[:cut + 1]
        body = tail[:-1]
        nl = body.rfind(b"\n")
        if nl < 0 and start > 0 and body:
            chunk *= 4
            continue
        last_line = body[nl + 1:]
        if not last_line:
            return None, torn
        try:
            rec = json.loads(last_line)
        except ValueError as exc:
            raise AuditError("the last audit record is not JSON; run `mailguard audit verify`") from exc
        return rec, torn
