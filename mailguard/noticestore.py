"""The durable queue of sender notices, kept in the hold store (both backends).

    QueuedNotice                 one built notice waiting for the upstream
    NoticeQueueStats             count, oldest, last error: what `mailguard status` shows
    NoticeQueue                  the HoldStore methods, mixed into store.Store and pgstore.PgStore:
        queue_notice(kind, hold_id, mail_from, rcpt_tos, data, *, expires, next_attempt=None,
                     mail_options=(), hold_done=False) -> id
        due_notices(now, limit=50, *, claim_until=None) -> [QueuedNotice]
        notice_sent(*ids) / notice_failed(id, next_attempt, error) / notice_expired(id)
        notice_queue_stats() -> NoticeQueueStats
    SQLITE_SCHEMA                the table in meta.sqlite (PostgreSQL: data/pg/003_notices.sql)

A row holds the notice exactly as it goes to the upstream (bytes built by
notices.py: masked, never a number in the clear), its envelope, the hold id and
kind, how many attempts failed, when the next is due, when it is given up, and
the last error. A delivered or expired notice leaves the queue (its audit
records stay). One notice per (hold id, kind) while queued: queueing it again
(recovery after a crash) returns the queued one.

``due_notices`` claims what it returns: their next attempt moves to
``claim_until`` in the same transaction, with a conditional UPDATE, so two
senders (the relay's and a CLI's, or two nodes) never take the same row at once;
a sender that dies mid-send leaves the notice to be retried after the claim
runs out (at-least-once: the upstream may have taken it).

SECURITY: rows hold masked notices and addresses only. DIAGNOSTICS: none.
"""

from __future__ import annotations

import builtins
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Sequence

from mailguard.records import HOLD_AUDITED, HOLD_DONE, HOLD_STORED

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS notice_queue (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,       -- held | blocked | rejected | expired
    hold_id      TEXT NOT NULL,       -- '' for a block (nothing kept)
    mail_from    TEXT NOT NULL,       -- the notice's envelope sender
    rcpt_tos     TEXT NOT NULL,       -- JSON list
    mail_options TEXT NOT NULL,       -- JSON list
    data         BLOB NOT NULL,       -- the built notice (masked)
    created      TEXT NOT NULL,       -- ISO 8601 UTC
    attempts     INTEGER NOT NULL DEFAULT 0,   -- failed attempts so far
    next_attempt TEXT NOT NULL,
    expires      TEXT NOT NULL,
    last_error   TEXT NOT NULL DEFAULT '',
    last_attempt TEXT
);
CREATE INDEX IF NOT EXISTS notice_queue_due ON notice_queue(next_attempt);
CREATE UNIQUE INDEX IF NOT EXISTS notice_queue_once ON notice_queue(hold_id, kind) WHERE hold_id <> '';
"""


@dataclass(frozen=True)
class QueuedNotice:
    id: str
    kind: str
    hold_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    data: bytes
    created: str
    attempts: int
    next_attempt: str
    expires: str
    last_error: str
    last_attempt: str | None


@dataclass(frozen=True)
class NoticeQueueStats:
    count: int = 0
    oldest: str | None = None  # ISO 8601 UTC: when the oldest queued notice was queued
    last_error: str = ""  # the most recent failed attempt's error
    last_error_at: str | None = None
    next_attempt: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _row_to_notice(row: Any) -> QueuedNotice:
    d = dict(row)
    d["rcpt_tos"] = tuple(json.loads(d["rcpt_tos"]))
    d["mail_options"] = tuple(json.loads(d["mail_options"]))
    d["data"] = bytes(d["data"])
    d["attempts"] = int(d["attempts"])
    return QueuedNotice(**d)


class NoticeQueue:
    """Mixed into a HoldStore backend that has ``_write()`` (a transaction yielding a
    connection with ``execute``) and ``_query(sql, params)``; ``_PARAM`` is its
    placeholder (SQL here is written with ``?``)."""

    _PARAM = "?"

    def _q(self, sql: str) -> str:
        return sql if self._PARAM == "?" else sql.replace("?", self._PARAM)

    def queue_notice(self, kind: str, hold_id: str, mail_from: str, rcpt_tos: Sequence[str], data: bytes, *,
                     expires: str, next_attempt: str | None = None, mail_options: Sequence[str] = (),
                     hold_done: bool = False) -> str:
        """Queue a built notice durably (committed before it returns); its id. A notice
        of this kind for this hold already queued is not queued twice: its id is returned.
        ``hold_done``: the hold's stage becomes done in the same transaction (its notice
        is queued: the hold is complete, one commit instead of two)."""
        notice_id = secrets.token_hex(8)
        now = _now()
        row = (notice_id, kind, hold_id or "", mail_from, json.dumps(list(rcpt_tos), ensure_ascii=False),
               json.dumps(list(mail_options)), bytes(data), now, next_attempt or now, expires)
        with self._write() as db:  # type: ignore[attr-defined]
            cur = db.execute(self._q(
                "INSERT INTO notice_queue (id, kind, hold_id, mail_from, rcpt_tos, mail_options, data, created,"
                " next_attempt, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"), row)
            inserted = cur.rowcount == 1
            if hold_done and hold_id:
                db.execute(self._q("UPDATE held SET hold_stage = ? WHERE id = ? AND hold_stage IN (?, ?)"),
                           (HOLD_DONE, hold_id, HOLD_STORED, HOLD_AUDITED))
            if inserted:
                return notice_id
            found = db.execute(self._q("SELECT id FROM notice_queue WHERE hold_id = ? AND kind = ?"),
                               (hold_id, kind)).fetchone()
        return str(dict(found)["id"]) if found else notice_id

    def due_notices(self, now: str, limit: int = 50, *, claim_until: str | None = None
                    ) -> builtins.list[QueuedNotice]:
        """Notices whose next attempt is due at ``now`` (expired ones included: the
        sender gives those up), oldest due first; with ``claim_until`` each returned
        one is claimed until then (no other sender takes it meanwhile)."""
        with self._write() as db:  # type: ignore[attr-defined]
            rows = db.execute(self._q(
                "SELECT * FROM notice_queue WHERE next_attempt <= ? ORDER BY next_attempt, created LIMIT ?"),
                (now, int(limit))).fetchall()
            out = []
            for r in rows:
                n = _row_to_notice(r)
                if claim_until is not None:
                    cur = db.execute(self._q(
                        "UPDATE notice_queue SET next_attempt = ? WHERE id = ? AND next_attempt = ?"),
                        (claim_until, n.id, n.next_attempt))
                    if cur.rowcount != 1:
                        continue  # another sender took it
                out.append(n)
        return out

    def notice_sent(self, *notice_ids: str) -> None:
        """Delivered: they leave the queue (several at once: one transaction)."""
        if not notice_ids:
            return
        with self._write() as db:  # type: ignore[attr-defined]
            for notice_id in notice_ids:
                db.execute(self._q("DELETE FROM notice_queue WHERE id = ?"), (notice_id,))

    def notice_failed(self, notice_id: str, next_attempt: str, error: str) -> None:
        """One more failed attempt; the next is due at ``next_attempt``."""
        with self._write() as db:  # type: ignore[attr-defined]
            db.execute(self._q(
                "UPDATE notice_queue SET attempts = attempts + 1, next_attempt = ?, last_error = ?,"
                " last_attempt = ? WHERE id = ?"), (next_attempt, str(error)[:500], _now(), notice_id))

    def notice_expired(self, notice_id: str) -> None:
        """Given up (past its expiry): it leaves the queue."""
        self.notice_sent(notice_id)

    def notice_queue_stats(self) -> NoticeQueueStats:
        rows = self._query(self._q(  # type: ignore[attr-defined]
            "SELECT count(*) AS n, min(created) AS oldest, min(next_attempt) AS next FROM notice_queue"))
        last = self._query(self._q(  # type: ignore[attr-defined]
            "SELECT last_error, last_attempt FROM notice_queue WHERE last_error <> ''"
            " ORDER BY last_attempt DESC LIMIT 1"))
        r = dict(rows[0]) if rows else {"n": 0, "oldest": None, "next": None}
        e = dict(last[0]) if last else {"last_error": "", "last_attempt": None}
        return NoticeQueueStats(count=int(r["n"] or 0), oldest=r["oldest"], last_error=e["last_error"] or "",
                                last_error_at=e["last_attempt"], next_attempt=r["next"])
