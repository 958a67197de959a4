"""The durable hold store: held messages as files, their metadata in SQLite.

Layout under ``store.path`` (directories 0700, files 0600, umask 077)::

    messages/<id>.msg   "MAILGUARD-HOLD 1\\n" + envelope JSON + "\\n" + the exact bytes
    tmp/                files being written (name, O_EXCL, flock, fsync, rename)
    meta.sqlite         one row per held message (WAL, synchronous=FULL), and the
                        queue of sender notices (noticestore.py)
    audit.jsonl         the audit log (mailguard.audit)

Durability follows Postfix's mail_stream: write to a temporary name opened with
O_EXCL and 0600, fsync, rename into messages/, fsync the directory, then commit
the row. ``add`` returns only after both; the relay replies 250 only after that.

The per-message mutex is an flock on the message file. The writer holds it from
the temporary file until the row is committed; release, reject, expiry and purge
hold it while they change the state. So recovery can tell a crashed process's
leftovers (lock free) from work in progress in another process (lock held), and
``serve`` and the CLI can share the store without a lock fight: SQLite itself runs
with a busy timeout and every write is a short ``BEGIN IMMEDIATE`` transaction.
The relay's row writes for holds (row, stage) from concurrent transactions share
one commit (mailguard.groupcommit; a savepoint each), returning once it is durable.

States: held -> released | rejected | expired. A release sets ``release_started``
before it talks to the upstream and marks ``released`` only after the upstream's
250. If the releasing process dies in between, recovery finds the marker with the
lock free and leaves the message held, marked ``release_interrupted`` (the admin
releases again with --force: a duplicate is possible, a loss is not).

A hold is one unit: ``hold_stage`` goes stored (file + row) -> audited (its hold
record written) -> done (the sender's notice sent or given up); recovery at start
completes every hold left short of done (hold.Holder.recover).

SECURITY: ids come from the command line; they are checked against ID_RE before
they become paths. The message files hold My Numbers in the clear; nothing else
here does: the row keeps masked findings and HMAC fingerprints only.

DIAGNOSTICS: none; callers log (``held``, ``released``, ...) and audit.
"""

from __future__ import annotations

import builtins

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mailguard.audit import AuditLog
from mailguard.durable import chmod_own, dir_mode, file_mode
from mailguard.durable import fsync_dir as _fsync_dir
from mailguard.durable import probe_dir, write_locked
from mailguard.errors import NotFound, StoreError
from mailguard.groupcommit import GroupCommit
from mailguard.heldrows import ID_RE, HeldRows, check_id, new_id, now_iso, row_to_held
from mailguard.noticestore import SQLITE_SCHEMA as _NOTICE_SCHEMA
from mailguard.noticestore import NoticeQueue
# The held-message records and their states; re-exported for older callers.
from mailguard.records import (  # noqa: F401
    EXPIRED, FINAL_STATES, HELD, HOLD_AUDITED, HOLD_DONE, HOLD_STORED, REJECTED, RELEASED, STATES, Envelope,
    HeldMessage, Recovery,
)

MAGIC = b"MAILGUARD-HOLD 1\n"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id                 TEXT PRIMARY KEY,
    state              TEXT NOT NULL,
    rule               TEXT NOT NULL,
    reasons            TEXT NOT NULL,   -- JSON list of masked texts
    notice             TEXT NOT NULL,
    mail_from          TEXT NOT NULL,
    rcpt_tos           TEXT NOT NULL,   -- JSON list
    persons            INTEGER NOT NULL,
    findings           TEXT NOT NULL,   -- JSON list: masked, confidence, reason, location, fingerprint
    fingerprints       TEXT NOT NULL,   -- JSON list of HMAC fingerprints
    unscannable        TEXT NOT NULL,   -- JSON list: location, reason
    subject            TEXT NOT NULL,   -- scrubbed
    message_id         TEXT NOT NULL,
    size               INTEGER NOT NULL,
    sha256             TEXT NOT NULL,
    approvals_required INTEGER NOT NULL,
    approvals          TEXT NOT NULL,   -- JSON list: operator, time, reason
    received           TEXT NOT NULL,   -- ISO 8601 UTC
    updated            TEXT NOT NULL,
    decided_at         TEXT,
    decided_by         TEXT,
    decided_reason     TEXT,
    upstream_reply     TEXT,
    release_started    TEXT,
    purged_at          TEXT,
    hold_stage         TEXT NOT NULL DEFAULT 'done',  -- stored | audited | done
    release_interrupted TEXT
);
CREATE INDEX IF NOT EXISTS held_state_received ON held(state, received);
CREATE INDEX IF NOT EXISTS held_sha256 ON held(sha256);
"""
# Columns added after the first release: (name, declaration) for ALTER TABLE.
_ADDED_COLUMNS = (
    ("hold_stage", "TEXT NOT NULL DEFAULT 'done'"),
    ("release_interrupted", "TEXT"),
)




class Store(HeldRows, NoticeQueue):
    """One store directory. Thread-safe: the relay calls it from worker threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # No os.umask() here: a library must not change process state. Every
        # file and directory below is created or chmod-ed with explicit modes;
        # `serve` and the CLI set umask 077 for the whole process.
        self.path = Path(path)
        self.messages = self.path / "messages"
        self.tmp = self.path / "tmp"
        self._lock = threading.RLock()
        self._lock_fds: dict[str, list[int]] = {}  # hold id -> flocked fds of a locked() block
        self._audit: AuditLog | None = None
        self._rows: GroupCommit[Callable[[sqlite3.Connection], object], object] = GroupCommit(self._commit_rows)
        try:
            for d in (self.path, self.messages, self.tmp):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                chmod_own(d, dir_mode())  # 0700, or 2770 with store.group
            self._db = sqlite3.connect(
                self.path / "meta.sqlite", timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None, check_same_thread=False,
            )
            chmod_own(self.path / "meta.sqlite", file_mode())
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write():
                have = {r["name"] for r in self._db.execute("PRAGMA table_info(held)")}
                if have:
                    for name, decl in _ADDED_COLUMNS:
                        if name not in have:
                            self._db.execute(f"ALTER TABLE held ADD COLUMN {name} {decl}")
                for stmt in (_SCHEMA + _NOTICE_SCHEMA).split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the hold store at {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @property
    def audit(self) -> AuditLog:
        """The audit sink: ``audit.jsonl`` beside the messages (mailguard.audit)."""
        if self._audit is None:
            self._audit = AuditLog(self.path)
        return self._audit

    # -- without opening: what `mailguard status` asks ----------------------------

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Has a store been created at ``path``? Creates nothing."""
        return (Path(path) / "meta.sqlite").exists()

    @staticmethod
    def probe(path: str | os.PathLike[str]) -> str:
        """Can this user write durably here? Returns a detail, raises StoreError naming
        the problem. Creates, fsyncs and removes one file; creates no store."""
        where = Path(path)
        if where.exists() and not where.is_dir():
            raise StoreError(f"{where}: is not a directory (check store.path)")
        if not where.is_dir():
            raise StoreError(f"{where}: does not exist (has `mailguard serve` ever run with this config?)")
        try:
            probe_dir(where / "tmp" if (where / "tmp").is_dir() else where)
        except OSError as exc:
            raise StoreError(f"{where}: not writable: {exc.strerror or exc}") from exc
        return f"{where} writable"

    # -- low level ---------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE: no upgrade deadlock)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"hold store busy or broken: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise StoreError(f"hold store commit failed: {exc}") from exc

    def _commit_rows(self, writes: Sequence[Callable[[sqlite3.Connection], object]]) -> list[object]:
        """Run ``writes`` in one write transaction, each in its own savepoint."""
        out: list[object] = []
        with self._write() as db:
            for i, write in enumerate(writes):
                db.execute(f"SAVEPOINT w{i}")
                try:
                    out.append(write(db))
                except Exception as exc:  # noqa: BLE001 - this write fails alone
                    db.execute(f"ROLLBACK TO w{i}")
                    out.append(exc)
                db.execute(f"RELEASE w{i}")
        return out

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"hold store query failed: {exc}") from exc

    def message_path(self, hold_id: str) -> Path:
        return self.messages / f"{check_id(hold_id)}.msg"

    def _tmp_name(self, hold_id: str) -> Path:
        return self.tmp / f"{hold_id}.{os.getpid()}.{threading.get_ident()}.tmp"

    # -- adding ------------------------------------------------------------

    def add(
        self,
        mail_from: str,
        rcpt_tos: Sequence[str],
        data: bytes,
        *,
        rule: str,
        reasons: Sequence[str] = (),
        notice: str = "",
        persons: int = 0,
        findings: Sequence[dict[str, Any]] = (),
        fingerprints: Sequence[str] = (),
        unscannable: Sequence[dict[str, Any]] = (),
        subject: str = "",
        message_id: str = "",
        sha256: str = "",
        approvals_required: int = 1,
        mail_options: Sequence[str] = (),
    ) -> HeldMessage:
        """Make a message durable (file + row) and return its row. Raises StoreError."""
        hold_id = new_id()
        envelope = {"mail_from": mail_from, "rcpt_tos": list(rcpt_tos), "mail_options": list(mail_options)}
        head = MAGIC + json.dumps(envelope, ensure_ascii=False).encode("utf-8") + b"\n"
        tmp = self._tmp_name(hold_id)
        final = self.message_path(hold_id)
        if os.path.exists(final):  # 23^16 ids: only a bug could get here
            raise StoreError(f"hold id collision: {hold_id}")
        fd = -1
        try:
            # The flock taken on the temporary file is held until the row is
            # committed: recovery leaves a file alone while its writer lives.
            fd = write_locked(final, (head, data), tmp=tmp)
            now = now_iso()
            row = {
                "id": hold_id, "state": HELD, "rule": rule,
                "reasons": json.dumps(list(reasons), ensure_ascii=False),
                "notice": notice, "mail_from": mail_from,
                "rcpt_tos": json.dumps(list(rcpt_tos), ensure_ascii=False),
                "persons": int(persons),
                "findings": json.dumps(list(findings), ensure_ascii=False),
                "fingerprints": json.dumps(list(fingerprints)),
                "unscannable": json.dumps(list(unscannable), ensure_ascii=False),
                "subject": subject, "message_id": message_id,
                "size": len(data), "sha256": sha256,
                "approvals_required": max(1, int(approvals_required)),
                "approvals": "[]", "received": now, "updated": now,
                "hold_stage": HOLD_STORED,
            }
            insert = f"INSERT INTO held ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})"
            self._rows.submit(lambda db, v=tuple(row.values()): db.execute(insert, v))
        except BaseException as exc:
            # Nothing was promised yet: take back what was written (write_locked
            # already removed its temporary file).
            with contextlib.suppress(OSError, StoreError):
                if not self._row_exists(hold_id):
                    os.unlink(final)
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise StoreError(f"cannot store the message: {exc}") from exc
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        # The row as committed (every other column takes its default): no read back.
        return row_to_held(row)

    def set_hold_stage(self, hold_id: str, stage: str) -> None:
        """Record how far a hold got: ``audited`` (its hold record is written), ``done``
        (and its notice sent or given up). Never moves backwards."""
        order = (HOLD_STORED, HOLD_AUDITED, HOLD_DONE)
        if stage not in order:
            raise ValueError(stage)
        earlier = order[:order.index(stage)]
        marks = ", ".join("?" for _ in earlier)
        self._rows.submit(lambda db, p=(stage, check_id(hold_id), *earlier): db.execute(
            f"UPDATE held SET hold_stage = ? WHERE id = ? AND hold_stage IN ({marks})", p))

    def _row_exists(self, hold_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM held WHERE id = ?", (hold_id,)))

    def discard(self, hold_id: str) -> None:
        """Undo an ``add`` whose 250 was never sent (the audit record failed)."""
        check_id(hold_id)
        with self._write() as db:
            db.execute("DELETE FROM held WHERE id = ? AND state = ?", (hold_id, HELD))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.message_path(hold_id))
        _fsync_dir(self.messages)

    # -- reading -----------------------------------------------------------

    def read_message(self, hold_id: str) -> tuple[Envelope, bytes]:
        """The stored envelope and exact bytes. Raises NotFound once purged."""
        path = self.message_path(hold_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"the message file of {hold_id} is gone (purged?)") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        if not raw.startswith(MAGIC):
            raise StoreError(f"{path}: not a mailguard hold file")
        nl = raw.index(b"\n", len(MAGIC))
        env = json.loads(raw[len(MAGIC):nl])
        return (
            Envelope(env["mail_from"], tuple(env["rcpt_tos"]), tuple(env.get("mail_options", ()))),
            raw[nl + 1:],
        )

    # -- the per-message mutex ------------------------------------------------

    @contextlib.contextmanager
    def locked(self, hold_id: str, *, wait: bool = False) -> Iterator[HeldMessage]:
        """Hold the message's flock; yields the row read under the lock.

        Raises StoreError("busy") when another process holds it and ``wait`` is
        false, NotFound when there is no such message or its file is gone.
        """
        path = self.message_path(hold_id)
        self.get(hold_id)  # NotFound before touching the file system
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NotFound(f"the message file of {hold_id} is gone (purged?)") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                raise StoreError(f"{hold_id} is busy: another mailguard process is working on it") from None
            # narrow_recipients() renames a new file over the path: a lock won on
            # the replaced inode guards nothing, so take the current one instead.
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        with self._lock:
            self._lock_fds[hold_id] = [fd]
        try:
            yield self.get(hold_id)
        finally:
            with self._lock:
                fds = self._lock_fds.pop(hold_id, [fd])
            for f in fds:
                os.close(f)

    # -- state changes (call with the message locked) ---------------------------

    def add_approval(self, hold_id: str, operator: str, reason: str) -> HeldMessage:
        with self._write() as db:
            row = db.execute("SELECT state, approvals FROM held WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise NotFound(f"no held message {hold_id}")
            if row["state"] != HELD:
                raise StoreError(f"{hold_id} is {row['state']}, not held")
            approvals = json.loads(row["approvals"])
            approvals.append({"operator": operator, "time": now_iso(), "reason": reason})
            db.execute(
                "UPDATE held SET approvals = ?, updated = ? WHERE id = ?",
                (json.dumps(approvals, ensure_ascii=False), now_iso(), hold_id),
            )
        return self.get(hold_id)

    def mark_release_started(self, hold_id: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE held SET release_started = ?, updated = ? WHERE id = ? AND state = ?",
                (now_iso(), now_iso(), hold_id, HELD),
            )

    def narrow_recipients(self, hold_id: str, remaining: builtins.list[str]) -> None:
        """After a partial release: keep only ``remaining`` in the stored envelope.

        Rewritten the durable way (tmp, fsync, rename, fsync dir); the caller holds
        the old file's lock (``locked``) and the new file is locked before it
        replaces it and stays locked until the caller's ``locked`` block ends.
        """
        envelope, data = self.read_message(hold_id)
        env = {"mail_from": envelope.mail_from, "rcpt_tos": list(remaining),
               "mail_options": list(envelope.mail_options)}
        head = MAGIC + json.dumps(env, ensure_ascii=False).encode("utf-8") + b"\n"
        fd = write_locked(self.message_path(hold_id), (head, data), tmp=self._tmp_name(hold_id))
        with self._lock:
            held_fds = self._lock_fds.get(hold_id)
            if held_fds is None:
                os.close(fd)  # not inside locked(): nothing to keep it for
            else:
                held_fds.append(fd)
        with self._write() as db:
            db.execute("UPDATE held SET updated = ? WHERE id = ?", (now_iso(), hold_id))

    def clear_release_started(self, hold_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE held SET release_started = NULL WHERE id = ?", (hold_id,))

    def finish(self, hold_id: str, state: str, operator: str, reason: str, reply: str | None = None) -> HeldMessage:
        """held -> released | rejected | expired, exactly once."""
        if state not in FINAL_STATES:
            raise ValueError(state)
        now = now_iso()
        with self._write() as db:
            cur = db.execute(
                "UPDATE held SET state = ?, decided_at = ?, decided_by = ?, decided_reason = ?,"
                " upstream_reply = COALESCE(?, upstream_reply), release_started = NULL, updated = ?"
                " WHERE id = ? AND state = ?",
                (state, now, operator, reason, reply, now, hold_id, HELD),
            )
            if cur.rowcount != 1:
                row = db.execute("SELECT state FROM held WHERE id = ?", (hold_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no held message {hold_id}")
                raise StoreError(f"{hold_id} is {row['state']}, not held")
        return self.get(hold_id)

    def purge(self, hold_id: str) -> HeldMessage:
        """Delete a finished message's file (call with it locked); the row stays."""
        with self._write() as db:
            row = db.execute("SELECT state FROM held WHERE id = ?", (hold_id,)).fetchone()
            if row is None or row["state"] not in FINAL_STATES:
                raise StoreError(f"{hold_id} is not finished; only released, rejected or expired mail is purged")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.message_path(hold_id))
            _fsync_dir(self.messages)
            db.execute("UPDATE held SET purged_at = ?, updated = ? WHERE id = ?", (now_iso(), now_iso(), hold_id))
        return self.get(hold_id)

    # -- recovery ------------------------------------------------------------

    def recover(self) -> Recovery:
        """Clean up after a crash. Safe while other processes use the store."""
        rec = Recovery()
        for p in self.tmp.iterdir():
            if self._try_remove_unlocked(p):
                rec.temp_removed += 1
        for p in self.messages.iterdir():
            stem = p.name.removesuffix(".msg")
            if not p.name.endswith(".msg") or not ID_RE.match(stem):
                continue
            if self._row_exists(stem):
                continue
            # No row: the writer died before the commit, so no 250 was sent.
            if self._try_remove_unlocked(p, unless=functools.partial(self._row_exists, stem)):
                rec.orphans_removed += 1
        if rec.temp_removed or rec.orphans_removed:
            _fsync_dir(self.messages)
            _fsync_dir(self.tmp)
        for row in self._query("SELECT id FROM held WHERE state = ? AND release_started IS NOT NULL", (HELD,)):
            hold_id = row["id"]
            try:
                with self.locked(hold_id) as msg:
                    if msg.state == HELD and msg.release_started:
                        with self._write() as db:
                            db.execute("UPDATE held SET release_started = NULL, release_interrupted ="
                                       " COALESCE(release_interrupted, release_started) WHERE id = ?",
                                       (hold_id,))
                        rec.releases_interrupted.append(hold_id)
            except StoreError:
                continue  # busy: a release is running in another process
        return rec

    @staticmethod
    def _try_remove_unlocked(path: Path, unless: Callable[[], bool] | None = None) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its writer is alive
            if unless is not None and unless():
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return True
        finally:
            os.close(fd)
