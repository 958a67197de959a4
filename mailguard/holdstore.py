"""The hold store's interface: what the holder, the CLI and `status` may ask of it.

    open_store(config) -> HoldStore       the configured backend, opened (created if new)
    open_audit(config) -> AuditSink       the audit log alone, opening no message store
                                          (an inspector may only read it)
    store_exists(config) -> bool          has a store been created? (creates nothing)
    probe_store(config) -> str            can this user write to it? StoreError if not
    HoldStore                             held messages: add, get, list, lock, state changes
    AuditSink                             ``HoldStore.audit``: the hash-chained audit log

    fingerprint_key(config) -> bytes      the key of detect's fingerprints, as the store keeps it

Backends: the files + SQLite store (mailguard.store.Store) under ``store.path``,
the default; the PostgreSQL store several nodes share (mailguard.pgstore.PgStore)
when ``store.url`` is set. Chosen here from the configuration. So callers never see paths, SQL or file
names: only ids, HeldMessage rows, Envelope + bytes, and ISO 8601 UTC times.

Contract every backend keeps (tests/unit/test_store_contract.py checks it):
``add`` returns only once the message and its row are durable; ``locked`` is a
mutex across processes and raises StoreError("busy") without ``wait``; state
changes go held -> released | rejected | expired exactly once; ``recover`` is
safe while other processes use the store, never removes a committed message, and
marks a release it finds cut off (``release_interrupted``, kept until the message
is finished); a new row starts at hold_stage ``stored``; ``AuditSink.append``
checkpoints the chain head outside the records (``last_checkpoint``); a queued
notice stays until ``notice_sent`` or ``notice_expired``, and a claimed one
(``due_notices(claim_until=)``) is returned to no other caller until the claim ends.

SECURITY: ids come from the command line; every backend validates them (StoreError)
before using them. DIAGNOSTICS: none; callers log and audit.
"""

from __future__ import annotations

import builtins

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from mailguard.audit import AuditLog, Checkpoint, VerifyResult
from mailguard.config import Config
from mailguard.noticestore import NoticeQueueStats, QueuedNotice
from mailguard.store import Envelope, HeldMessage, Recovery, Store


class AuditSink(Protocol):
    """Append-only, hash-chained audit records (DESIGN §7)."""

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record durably (fields are scrubbed); raises AuditError."""
        ...

    def append_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | BaseException]:
        """Append records in order, durably, sharing one commit; each record or the
        exception that record met (nothing raised for one record's failure)."""
        ...

    def records(self) -> Iterator[dict[str, Any]]: ...

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyResult:
        """Check the chain; fail (bad_line None) when it ends before the stored
        checkpoint or before ``checkpoint``, or a checkpointed record has another hash."""
        ...

    def last_checkpoint(self) -> Checkpoint | None:
        """The chain head last checkpointed outside the records (every append writes
        one); None if none was ever written. Raises AuditError if unreadable."""
        ...

    def export(self, since: datetime, fmt: str = "json") -> Iterable[str]: ...

    def location(self, part: str = "") -> str:
        """Where the records are (or ``part`` of them, from VerifyResult.bad_file), for people."""
        ...

    def part_count(self) -> int:
        """How many pieces the chain is kept in (rotated files, partitions)."""
        ...


class HoldStore(Protocol):
    """Held messages: their exact bytes and envelope, a row of masked metadata each."""

    @property
    def audit(self) -> AuditSink: ...

    def close(self) -> None: ...

    # adding and taking back
    def add(self, mail_from: str, rcpt_tos: Sequence[str], data: bytes, *, rule: str,
            reasons: Sequence[str] = (), notice: str = "", persons: int = 0,
            findings: Sequence[dict[str, Any]] = (), fingerprints: Sequence[str] = (),
            unscannable: Sequence[dict[str, Any]] = (), subject: str = "", message_id: str = "",
            sha256: str = "", approvals_required: int = 1,
            mail_options: Sequence[str] = ()) -> HeldMessage:
        """Make a message durable (bytes + row); returns its row. Raises StoreError."""
        ...

    def discard(self, hold_id: str) -> None:
        """Undo an ``add`` whose 250 was never sent."""
        ...

    def find_held_copy(self, mail_from: str, rcpt_tos: Sequence[str], sha256: str, message_id: str,
                       received_after: str) -> HeldMessage | None:
        """The message already stored with this envelope (same sender, same recipients in
        order), body digest and Message-ID, received after ``received_after``: a resend."""
        ...

    # a hold is one unit: stored (``add``) -> audited -> done (row.hold_stage)
    def set_hold_stage(self, hold_id: str, stage: str) -> None:
        """``audited`` or ``done``; never moves backwards (ValueError for another stage)."""
        ...

    def incomplete_holds(self) -> builtins.list[HeldMessage]:
        """Rows whose hold_stage is not ``done`` (any state), oldest first."""
        ...

    # reading
    def get(self, hold_id: str) -> HeldMessage:
        """Raises NotFound, or StoreError for a malformed id."""
        ...

    def list(self, state: str | None = "held") -> builtins.list[HeldMessage]:
        """Oldest first; ``None``: every state."""
        ...

    def read_message(self, hold_id: str) -> tuple[Envelope, bytes]:
        """The stored envelope and exact bytes; NotFound once purged."""
        ...

    # the per-message mutex
    def locked(self, hold_id: str, *, wait: bool = False) -> AbstractContextManager[HeldMessage]:
        """Hold the message's lock (across processes); yields its row read under it."""
        ...

    # state changes (call with the message locked)
    def add_approval(self, hold_id: str, operator: str, reason: str) -> HeldMessage: ...

    def mark_release_started(self, hold_id: str) -> None: ...

    def clear_release_started(self, hold_id: str) -> None: ...

    def narrow_recipients(self, hold_id: str, remaining: builtins.list[str]) -> None:
        """After a partial release keep only ``remaining`` in the stored envelope (durably)."""
        ...

    def finish(self, hold_id: str, state: str, operator: str, reason: str,
               reply: str | None = None) -> HeldMessage:
        """held -> released | rejected | expired, exactly once (StoreError otherwise)."""
        ...

    # retention
    def due_for_expiry(self, cutoff_iso: str) -> builtins.list[HeldMessage]:
        """Held messages received before ``cutoff_iso``."""
        ...

    def purgeable(self, cutoff_iso: str) -> builtins.list[HeldMessage]:
        """Finished, not yet purged, decided before ``cutoff_iso``."""
        ...

    def purge(self, hold_id: str) -> HeldMessage:
        """Delete a finished message's bytes; its row stays (call with it locked)."""
        ...

    # after a crash
    def recover(self) -> Recovery: ...

    # the durable queue of sender notices (mailguard.noticestore; issue 13.5)
    def queue_notice(self, kind: str, hold_id: str, mail_from: str, rcpt_tos: Sequence[str], data: bytes, *,
                     expires: str, next_attempt: str | None = None, mail_options: Sequence[str] = (),
                     hold_done: bool = False) -> str:
        """Queue a built notice durably; its id (one per hold id and kind while queued).
        ``hold_done``: mark the hold done (stage) in the same transaction."""
        ...

    def due_notices(self, now: str, limit: int = 50, *,
                    claim_until: str | None = None) -> builtins.list[QueuedNotice]:
        """Due at ``now`` (expired ones too), oldest due first; claimed until ``claim_until``."""
        ...

    def notice_sent(self, *notice_ids: str) -> None:
        """Delivered notices leave the queue (several: one transaction)."""
        ...

    def notice_failed(self, notice_id: str, next_attempt: str, error: str) -> None: ...

    def notice_expired(self, notice_id: str) -> None: ...

    def notice_queue_stats(self) -> NoticeQueueStats: ...


def open_store(config: Config) -> HoldStore:
    """The configured hold store, opened (and created if new). Raises StoreError."""
    if config.store.url:
        from mailguard.pgstore import PgStore  # psycopg only for a node that uses it

        return PgStore(config.store.url)
    return Store(config.store.path)


def open_audit(config: Config) -> AuditSink:
    """The configured audit sink alone (the same records as ``open_store(config).audit``)."""
    if config.store.url:
        return open_store(config).audit
    return AuditLog(config.store.path)


def store_exists(config: Config) -> bool:
    """Has a hold store been created where the configuration points? Creates nothing."""
    if config.store.url:
        from mailguard.pgstore import schema_version

        return schema_version(config.store.url) > 0
    return Store.exists(config.store.path)


def probe_store(config: Config) -> str:
    """Can this user write to the store? A detail on success; StoreError naming the problem."""
    if config.store.url:
        from mailguard.pgstore import PgStore

        return PgStore.probe(config.store.url)
    return Store.probe(config.store.path)


def fingerprint_key(config: Config) -> bytes:
    """The fingerprint key: a file in ``store.path``, or the row every node shares."""
    if config.store.url:
        from mailguard.pgaudit import load_or_create_key as load_shared_key
        from mailguard.pgstore import PgStore

        store = PgStore(config.store.url, pool_max=1)
        try:
            return load_shared_key(store)
        finally:
            store.close()
    from mailguard.secret import load_or_create_key

    return load_or_create_key(config.store.path)
