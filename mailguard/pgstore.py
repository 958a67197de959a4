"""The PostgreSQL hold store: several relay nodes sharing held mail, audit and key.

    PgStore(url)                 a HoldStore (mailguard.holdstore) on one database
    PgStore.audit -> PgAudit     the audit chain in the same database (mailguard.pgaudit)
    PgStore.fingerprint_key()    the shared fingerprint key, created on first use
    apply_schema(url) -> int     create or upgrade the schema (data/pg/NNN_*.sql)
    schema_version(url) -> int   0 when no schema is there (creates nothing)
    redact(url) -> str           the URL without its password, for messages

Chosen by ``[store] url = "postgresql://..."``; the libpq URI takes the password
from itself, PGPASSFILE or PGPASSWORD. Tables: ``held`` (the masked row, as in
meta.sqlite), ``held_message`` (envelope + exact bytes as bytea), ``audit`` and
``audit_head`` (the chain), ``secret`` (the fingerprint key), ``notice_queue``
(sender notices waiting for the upstream: noticestore.py, schema version 3).

Durability: ``add`` writes the row and the bytes in one transaction and returns
only after COMMIT, so the relay's 250 follows the commit; every session runs
with synchronous_commit = on whatever the server default. A node killed mid-add
leaves nothing (the transaction never committed), so ``recover`` has no files to
clean, only interrupted releases: a ``release_started`` marker whose node died
(its lock free) becomes ``release_interrupted``, kept until the message is
finished (a release again may deliver twice; a loss is not possible). A hold
is one unit as in the embedded store: ``hold_stage`` goes stored (row + bytes)
-> audited -> done, and a node's recovery at start completes holds left short
(hold.Holder.recover). Schema version 2 (data/pg/002_reliability.sql) added both.

The per-message mutex is a session advisory lock (``pg_try_advisory_lock``) on a
connection held for the ``locked`` block: exclusive across nodes, never waited
for unless asked, and released by the server when a node dies (its connection
closes). The state changes themselves are single conditional UPDATEs
(``WHERE state = 'held'``), so two nodes finishing one message change it once.

PostgreSQL unreachable: every call raises StoreError (AuditError for the audit)
within POOL_TIMEOUT seconds; the relay answers 451 and the pool reconnects by
itself when the server is back.

SECURITY: ids from the command line are checked (check_id) before any query;
every value travels as a bound parameter. ``held_message.data`` holds My Numbers
in the clear, like the embedded store's message files; the URL's password is
never put in a message (redact).
DIAGNOSTICS: none; callers log and audit.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from mailguard.errors import NotFound, StoreError
from mailguard.noticestore import NoticeQueue
from mailguard.records import Envelope, HeldMessage
from mailguard.heldrows import HeldRows, check_id, new_id, now_iso, row_to_held
from mailguard.records import FINAL_STATES, HELD, HOLD_AUDITED, HOLD_DONE, HOLD_STORED, Recovery

# psycopg_pool warns in plain text on every failed connect, which would break the
# relay's JSON log; the StoreError it leads to carries the reason there instead.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

POOL_MAX = 8  # the relay's worker threads plus a lock or two
POOL_TIMEOUT = 3.0  # seconds to wait for a connection before the 451
CONNECT_TIMEOUT = 3  # seconds, libpq connect_timeout
_SCHEMA_LOCK = 0x6D67_7363_6865_6D61  # "mgschema": one node applies the schema at a time


def redact(url: str) -> str:
    """``url`` with any password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _configure(conn: psycopg.Connection[Any]) -> None:
    # The 250 for a held message promises the commit is on disk: never let a
    # server default of synchronous_commit = off weaken that.
    conn.execute("SET synchronous_commit = on")


def connect(url: str) -> psycopg.Connection[Any]:
    """One plain connection (CLI tools, schema, migration). Raises StoreError."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, row_factory=dict_row)
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach PostgreSQL at {redact(url)}: {_why(exc)}") from exc
    _configure(conn)
    return conn


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _schema_files() -> list[tuple[int, str]]:
    folder = resources.files("mailguard") / "data" / "pg"
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), item.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(v for v, _ in _schema_files())


def _current_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('mailguard_schema') AS t").fetchone()
    if not row or row["t"] is None:
        return 0
    row = conn.execute("SELECT COALESCE(max(version), 0) AS v FROM mailguard_schema").fetchone()
    return int(row["v"]) if row else 0


def schema_version(url: str) -> int:
    """The schema version in the database, 0 when none. Creates nothing; StoreError."""
    with contextlib.closing(connect(url)) as conn:
        try:
            return _current_version(conn)
        except psycopg.Error as exc:
            raise StoreError(f"{redact(url)}: cannot read the schema version: {_why(exc)}") from exc


def apply_schema(url: str) -> int:
    """Apply the schema files newer than the database's version; returns how many."""
    with contextlib.closing(connect(url)) as conn:
        return _apply(conn, url)


def _apply(conn: psycopg.Connection[Any], url: str) -> int:
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            have = _current_version(conn)
            todo = [(v, sql) for v, sql in _schema_files() if v > have]
            for _, sql in todo:
                conn.execute(sql.encode("utf-8"))  # bytes: several statements, no parameters
            return len(todo)
    except psycopg.Error as exc:
        raise StoreError(f"{redact(url)}: cannot apply the mailguard schema: {_why(exc)}") from exc


def lock_key(hold_id: str) -> int:
    """The advisory-lock key of a message: 64 bits of SHA-256 (signed, as bigint)."""
    return int.from_bytes(hashlib.sha256(b"mailguard-hold:" + hold_id.encode()).digest()[:8], "big", signed=True)


class PgStore(HeldRows, NoticeQueue):
    """One database shared by every node. Thread-safe (a connection pool)."""

    _PARAM = "%s"  # noticestore.NoticeQueue's SQL placeholder

    def __init__(self, url: str, *, pool_max: int = POOL_MAX, pool_timeout: float = POOL_TIMEOUT) -> None:
        self.url = url
        self.where = redact(url)
        self._timeout = pool_timeout
        self._audit: Any = None
        self._lock = threading.Lock()
        self._lock_conns: dict[str, psycopg.Connection[Any]] = {}
        with contextlib.closing(connect(url)) as conn:
            if _current_version(conn) < SCHEMA_VERSION:
                _apply(conn, url)
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=pool_max, timeout=pool_timeout, open=True,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT},
            configure=_configure, check=psycopg_pool.ConnectionPool.check_connection,
            # 0: a background reconnect gives up after one quick retry instead of
            # backing off (1 s, 2 s, 4 s, ...); a request that finds no connection
            # starts a fresh attempt at once. So the first request after the
            # server is back connects, rather than waiting out a backoff (a late 451).
            reconnect_timeout=0,
            name="mailguard-store",
        )

    def close(self) -> None:
        self._pool.close()

    @property
    def audit(self) -> Any:
        """The audit chain in this database (mailguard.pgaudit.PgAudit)."""
        if self._audit is None:
            from mailguard.pgaudit import PgAudit

            self._audit = PgAudit(self)
        return self._audit

    def fingerprint_key(self) -> bytes:
        from mailguard.pgaudit import load_or_create_key

        return load_or_create_key(self)

    # -- low level -------------------------------------------------------------

    @contextlib.contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; database and pool errors become StoreError."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise StoreError(f"PostgreSQL at {self.where} unreachable: no connection in {self._timeout:g} s") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL at {self.where}: {_why(exc)}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        with self.conn() as conn, conn.transaction():
            yield conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.conn() as conn:
            return conn.execute(sql, params).fetchall()

    # -- adding ----------------------------------------------------------------

    def add(self, mail_from: str, rcpt_tos: Sequence[str], data: bytes, *, rule: str,
            reasons: Sequence[str] = (), notice: str = "", persons: int = 0,
            findings: Sequence[dict[str, Any]] = (), fingerprints: Sequence[str] = (),
            unscannable: Sequence[dict[str, Any]] = (), subject: str = "", message_id: str = "",
            sha256: str = "", approvals_required: int = 1,
            mail_options: Sequence[str] = ()) -> HeldMessage:
        """Row and bytes in one transaction; returns after COMMIT. Raises StoreError."""
        hold_id = new_id()
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
            "subject": subject, "message_id": message_id, "size": len(data), "sha256": sha256,
            "approvals_required": max(1, int(approvals_required)),
            "approvals": "[]", "received": now, "updated": now, "hold_stage": HOLD_STORED,
        }
        self.insert(row, Envelope(mail_from, tuple(rcpt_tos), tuple(mail_options)), data)
        return row_to_held(row | _defaults(row))

    def insert(self, row: dict[str, Any], envelope: Envelope, data: bytes | None) -> None:
        """One held row (+ its bytes unless purged) in one transaction: add and migrate."""
        cols = ", ".join(row)
        marks = ", ".join(f"%({k})s" for k in row)
        with self._write() as db:
            db.execute(f"INSERT INTO held ({cols}) VALUES ({marks})", row)  # noqa: S608  (fixed names)
            if data is not None:
                db.execute(
                    "INSERT INTO held_message (id, mail_from, rcpt_tos, mail_options, data)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (row["id"], envelope.mail_from, json.dumps(list(envelope.rcpt_tos), ensure_ascii=False),
                     json.dumps(list(envelope.mail_options)), data),
                )

    def discard(self, hold_id: str) -> None:
        """Undo an ``add`` whose 250 was never sent (the audit record failed)."""
        check_id(hold_id)
        with self._write() as db:
            db.execute("DELETE FROM held WHERE id = %s AND state = %s", (hold_id, HELD))

    # -- a hold's stages: stored -> audited -> done -------------------------------

    def set_hold_stage(self, hold_id: str, stage: str) -> None:
        """Record how far a hold got: ``audited`` (its hold record is written), ``done``
        (and its notice sent or given up). Never moves backwards (one conditional UPDATE)."""
        order = (HOLD_STORED, HOLD_AUDITED, HOLD_DONE)
        if stage not in order:
            raise ValueError(stage)
        earlier = list(order[:order.index(stage)])
        with self._write() as db:
            db.execute("UPDATE held SET hold_stage = %s WHERE id = %s AND hold_stage = ANY(%s)",
                       (stage, check_id(hold_id), earlier))

    # -- reading ---------------------------------------------------------------


    def read_message(self, hold_id: str) -> tuple[Envelope, bytes]:
        rows = self._query("SELECT mail_from, rcpt_tos, mail_options, data FROM held_message WHERE id = %s",
                           (check_id(hold_id),))
        if not rows:
            raise NotFound(f"the message of {hold_id} is gone (purged?)")
        r = rows[0]
        return (Envelope(r["mail_from"], tuple(json.loads(r["rcpt_tos"])), tuple(json.loads(r["mail_options"]))),
                bytes(r["data"]))

    # -- the per-message mutex ---------------------------------------------------

    @contextlib.contextmanager
    def locked(self, hold_id: str, *, wait: bool = False) -> Iterator[HeldMessage]:
        """Hold the message's advisory lock on a connection of its own for the block.

        Raises StoreError("busy") when another session holds it and ``wait`` is
        false, NotFound when there is no such message or its bytes are purged.
        """
        self.get(hold_id)  # NotFound (and the id check) before taking a lock
        key = lock_key(hold_id)
        with self.conn() as conn:
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            else:
                got = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
                if not got or not got["ok"]:
                    raise StoreError(f"{hold_id} is busy: another mailguard process is working on it")
            try:
                held = self.get(hold_id)
                if held.purged_at:
                    raise NotFound(f"the message of {hold_id} is gone (purged?)")
                with self._lock:
                    self._lock_conns[hold_id] = conn
                yield held
            finally:
                with self._lock:
                    self._lock_conns.pop(hold_id, None)
                if not conn.closed and not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    # -- state changes (call with the message locked) -------------------------------

    def add_approval(self, hold_id: str, operator: str, reason: str) -> HeldMessage:
        with self._write() as db:
            row = db.execute("SELECT state, approvals FROM held WHERE id = %s FOR UPDATE",
                             (check_id(hold_id),)).fetchone()
            if row is None:
                raise NotFound(f"no held message {hold_id}")
            if row["state"] != HELD:
                raise StoreError(f"{hold_id} is {row['state']}, not held")
            approvals = json.loads(row["approvals"])
            approvals.append({"operator": operator, "time": now_iso(), "reason": reason})
            db.execute("UPDATE held SET approvals = %s, updated = %s WHERE id = %s",
                       (json.dumps(approvals, ensure_ascii=False), now_iso(), hold_id))
        return self.get(hold_id)

    def mark_release_started(self, hold_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE held SET release_started = %s, updated = %s WHERE id = %s AND state = %s",
                       (now_iso(), now_iso(), check_id(hold_id), HELD))

    def clear_release_started(self, hold_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE held SET release_started = NULL WHERE id = %s", (check_id(hold_id),))

    def narrow_recipients(self, hold_id: str, remaining: builtins.list[str]) -> None:
        """After a partial release keep only ``remaining`` in the stored envelope."""
        with self._write() as db:
            cur = db.execute("UPDATE held_message SET rcpt_tos = %s WHERE id = %s",
                             (json.dumps(list(remaining), ensure_ascii=False), check_id(hold_id)))
            if cur.rowcount != 1:
                raise NotFound(f"the message of {hold_id} is gone (purged?)")
            db.execute("UPDATE held SET updated = %s WHERE id = %s", (now_iso(), hold_id))

    def finish(self, hold_id: str, state: str, operator: str, reason: str,
               reply: str | None = None) -> HeldMessage:
        """held -> released | rejected | expired, exactly once (one conditional UPDATE)."""
        if state not in FINAL_STATES:
            raise ValueError(state)
        now = now_iso()
        with self._write() as db:
            cur = db.execute(
                "UPDATE held SET state = %s, decided_at = %s, decided_by = %s, decided_reason = %s,"
                " upstream_reply = COALESCE(%s, upstream_reply), release_started = NULL, updated = %s"
                " WHERE id = %s AND state = %s",
                (state, now, operator, reason, reply, now, check_id(hold_id), HELD),
            )
            if cur.rowcount != 1:
                row = db.execute("SELECT state FROM held WHERE id = %s", (hold_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no held message {hold_id}")
                raise StoreError(f"{hold_id} is {row['state']}, not held")
        return self.get(hold_id)

    # -- retention -----------------------------------------------------------------

    def purge(self, hold_id: str) -> HeldMessage:
        """Delete a finished message's bytes (call with it locked); the row stays."""
        with self._write() as db:
            row = db.execute("SELECT state FROM held WHERE id = %s FOR UPDATE", (check_id(hold_id),)).fetchone()
            if row is None or row["state"] not in FINAL_STATES:
                raise StoreError(f"{hold_id} is not finished; only released, rejected or expired mail is purged")
            db.execute("DELETE FROM held_message WHERE id = %s", (hold_id,))
            db.execute("UPDATE held SET purged_at = %s, updated = %s WHERE id = %s", (now_iso(), now_iso(), hold_id))
        return self.get(hold_id)

    # -- after a crash ----------------------------------------------------------------

    def recover(self) -> Recovery:
        """Turn the release markers of dead nodes (lock free) into ``release_interrupted``
        (the upstream may have the message: a release again may deliver twice). An add
        that did not commit left nothing, so there are no leftovers to remove."""
        rec = Recovery()
        for row in self._query("SELECT id FROM held WHERE state = %s AND release_started IS NOT NULL"
                               " ORDER BY received, id", (HELD,)):
            hold_id = row["id"]
            try:
                with self.locked(hold_id) as msg:
                    if msg.state == HELD and msg.release_started:
                        with self._write() as db:
                            db.execute("UPDATE held SET release_started = NULL, release_interrupted ="
                                       " COALESCE(release_interrupted, release_started)"
                                       " WHERE id = %s AND state = %s AND release_started IS NOT NULL",
                                       (hold_id, HELD))
                        rec.releases_interrupted.append(hold_id)
            except StoreError:
                continue  # busy: a release is running on some node
        return rec

    # -- what `mailguard status` and `store migrate` ask ---------------------------------

    def is_empty(self) -> bool:
        rows = self._query("SELECT (SELECT count(*) FROM held) + (SELECT count(*) FROM audit)"
                           " + (SELECT count(*) FROM secret) AS n")
        return not rows or rows[0]["n"] == 0

    @staticmethod
    def probe(url: str) -> str:
        """Reachable, schema present, and this role may write? StoreError naming the problem."""
        with contextlib.closing(connect(url)) as conn:
            try:
                version = _current_version(conn)
                if not version:
                    raise StoreError(f"{redact(url)}: no mailguard schema (run `mailguard store init`)")
                row = conn.execute("SELECT has_table_privilege('held', 'INSERT')"
                                   " AND has_table_privilege('held_message', 'INSERT')"
                                   " AND has_table_privilege('audit', 'INSERT') AS ok").fetchone()
            except psycopg.Error as exc:
                raise StoreError(f"{redact(url)}: {_why(exc)}") from exc
        if not row or not row["ok"]:
            raise StoreError(f"{redact(url)}: this role may not write the mailguard tables")
        return f"{redact(url)} reachable, schema v{version}"


def _defaults(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None for k in ("decided_at", "decided_by", "decided_reason", "upstream_reply",
                              "release_started", "purged_at", "release_interrupted") if k not in row}
