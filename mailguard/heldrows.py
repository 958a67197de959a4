"""The held-message reads both hold-store backends share: one SQL text for each.

    HeldRows      mixin: get, list, due_for_expiry, purgeable, incomplete_holds,
                  find_held_copy over the ``held`` table
    row_to_held(row) -> HeldMessage        a row (sqlite3.Row or dict) as the record
    new_id(), check_id(hold_id), ID_RE     hold ids: letters only, checked before use
    now_iso()                              the stores' timestamps (ISO 8601 UTC, microseconds)

The files + SQLite store (store.py) and the PostgreSQL store (pgstore.py) keep
the same ``held`` columns; only the placeholder differs, and NoticeQueue's
``_q`` already rewrites it. A backend mixing this in provides ``_query(sql,
params)`` returning mappings.

SECURITY: ids come from the command line and the web page; ``check_id`` refuses
anything but the id alphabet before an id reaches SQL or a path. DIAGNOSTICS: none.
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mailguard.errors import NotFound, StoreError
from mailguard.records import FINAL_STATES, HELD, HOLD_DONE, HeldMessage

# Letters only (no i, l, o): easy to read aloud, and never a digit run that a
# number scrubber would mask or mistake for a My Number.
ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz"
ID_LEN = 16
ID_RE = re.compile(rf"^[{ID_ALPHABET}]{{{ID_LEN}}}$")
JSON_COLS = ("reasons", "rcpt_tos", "findings", "fingerprints", "unscannable", "approvals")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LEN))


def check_id(hold_id: str) -> str:
    """Return ``hold_id`` if it is well formed, else raise StoreError (never a path)."""
    if not isinstance(hold_id, str) or not ID_RE.match(hold_id):
        raise StoreError(f"not a hold id: {hold_id[:40]!r}" if isinstance(hold_id, str) else "not a hold id")
    return hold_id


def row_to_held(row: Mapping[str, Any]) -> HeldMessage:
    d = dict(row)
    for col in JSON_COLS:
        d[col] = tuple(json.loads(d[col]))
    return HeldMessage(**d)


class HeldRows:
    """Reads of the ``held`` table, written once for both backends."""

    def _held(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[HeldMessage]:
        return [row_to_held(r) for r in self._query(self._q(sql), tuple(params))]  # type: ignore[attr-defined]

    def get(self, hold_id: str) -> HeldMessage:
        rows = self._held("SELECT * FROM held WHERE id = ?", (check_id(hold_id),))
        if not rows:
            raise NotFound(f"no held message {hold_id}")
        return rows[0]

    def list(self, state: str | None = HELD) -> builtins.list[HeldMessage]:
        if state is None:
            return self._held("SELECT * FROM held ORDER BY received, id")
        return self._held("SELECT * FROM held WHERE state = ? ORDER BY received, id", (state,))

    def due_for_expiry(self, cutoff_iso: str) -> builtins.list[HeldMessage]:
        return self._held("SELECT * FROM held WHERE state = ? AND received < ? ORDER BY received, id",
                          (HELD, cutoff_iso))

    def purgeable(self, cutoff_iso: str) -> builtins.list[HeldMessage]:
        return self._held("SELECT * FROM held WHERE state IN (?, ?, ?) AND purged_at IS NULL AND decided_at < ?"
                          " ORDER BY decided_at, id", (*FINAL_STATES, cutoff_iso))

    def incomplete_holds(self) -> builtins.list[HeldMessage]:
        """Holds whose hold record or sender notice may be missing (hold_stage not done), oldest first."""
        return self._held("SELECT * FROM held WHERE hold_stage <> ? ORDER BY received, id", (HOLD_DONE,))

    def find_held_copy(self, mail_from: str, rcpt_tos: Sequence[str], sha256: str, message_id: str,
                       received_after: str) -> HeldMessage | None:
        """A message already held with this envelope, digest and Message-ID, received
        after ``received_after`` (ISO 8601 UTC): a client's resend of it."""
        rows = self._held("SELECT * FROM held WHERE sha256 = ? AND message_id = ? AND mail_from = ?"
                          " AND received > ? ORDER BY received, id",
                          (sha256, message_id, mail_from, received_after))
        return next((h for h in rows if list(h.rcpt_tos) == list(rcpt_tos)), None)
