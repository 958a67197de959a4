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
takes an exclusive flock on the file, reads the last record, writes one line with
a single write and fsyncs before it returns. A record counts only once complete:
a torn last line left by a crash (no newline) is cut off by the next append,
which records how many bytes it dropped (event ``audit-repaired``).

SECURITY: callers pass masked findings and fingerprints only; as a last line of
defence every string value is run through the log scrubber, which masks any
12+ digit run, so an operator's free-text reason cannot put a number here.

DIAGNOSTICS: none; this module is itself the record.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from mailguard.errors import AuditError
from mailguard.log import scrub

GENESIS = "0" * 64
AUDIT_FILE = "audit.jsonl"
CSV_FIELDS = (
    "seq", "time", "event", "operator", "id", "from", "to", "rule", "persons",
    "findings", "fingerprints", "reason", "reply", "hash",
)


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


# Hex digests are not numbers to mask (and masking one would break correlation).
_HEX_KEYS = frozenset({"fingerprint", "fingerprints", "sha256", "hash", "prev"})


def _scrubbed(value: Any, key: str = "") -> Any:
    if key in _HEX_KEYS:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    bad_line: int | None = None
    reason: str = ""


class AuditLog:
    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = Path(store_path) / AUDIT_FILE

    # -- writing -------------------------------------------------------------

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record, durably; returns it (with seq, time, prev, hash)."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last, torn = _last_record(fd)
            if torn:
                # A crash left half a line: it never counted; cut it so the chain goes on.
                size = os.fstat(fd).st_size
                os.ftruncate(fd, size - torn)
                last = self._write(fd, last, "audit-repaired", {"dropped_bytes": torn})
            rec = self._write(fd, last, event, fields)
            return rec
        except OSError as exc:
            raise AuditError(f"cannot append to {self.path}: {exc}") from exc
        finally:
            os.close(fd)  # releases the flock

    def _write(self, fd: int, last: dict[str, Any] | None, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        rec: dict[str, Any] = {k: _scrubbed(v, k) for k, v in fields.items() if v is not None}
        rec.update(
            event=event,
            seq=(last["seq"] + 1) if last else 1,
            time=datetime.now(UTC).isoformat(timespec="microseconds"),
            prev=last["hash"] if last else GENESIS,
        )
        rec["hash"] = record_hash(rec)
        line = (canonical(rec) + "\n").encode("utf-8")
        n = os.write(fd, line)
        if n != len(line):
            raise AuditError(f"short write to {self.path} ({n} of {len(line)} bytes)")
        os.fsync(fd)
        return rec

    # -- reading -------------------------------------------------------------

    def lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with open(self.path, "rb") as f:
                for n, line in enumerate(f, 1):
                    yield n, line
        except FileNotFoundError:
            return

    def records(self) -> Iterator[dict[str, Any]]:
        for n, line in self.lines():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise AuditError(f"{self.path}:{n}: not JSON") from exc

    def verify(self) -> VerifyResult:
        prev, count = GENESIS, 0
        for n, raw in self.lines():
            if not raw.endswith(b"\n"):
                return VerifyResult(False, count, n, "incomplete last line (torn write)")
            try:
                rec = json.loads(raw)
            except ValueError:
                return VerifyResult(False, count, n, "not a JSON object")
            if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str):
                return VerifyResult(False, count, n, "not an audit record")
            if record_hash(rec) != rec["hash"]:
                return VerifyResult(False, count, n, "hash does not match the record (edited?)")
            if rec.get("prev") != prev:
                return VerifyResult(False, count, n, "prev does not match the line before (deleted or reordered?)")
            if rec.get("seq") != count + 1:
                return VerifyResult(False, count, n, f"seq {rec.get('seq')!r}, expected {count + 1}")
            prev, count = rec["hash"], count + 1
        return VerifyResult(True, count)

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


def _csv_value(rec: dict[str, Any], key: str) -> str:
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


def _last_record(fd: int) -> tuple[dict[str, Any] | None, int]:
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
