"""Copy an embedded store (files + SQLite) into an empty PostgreSQL store.

    migrate(store_path, url) -> Migrated     held mail, the audit chain and the key

Order: verify the embedded chain (refuse a broken one); apply the schema; refuse
a database that already holds held mail, audit records or a key (so a second run
cannot duplicate or fork anything); copy everything in ONE transaction (a failure
leaves the database as empty as it was); verify the copied chain and compare its
head with the source's. Records keep their seq, time, prev and hash, so the chain
an inspector checked before is the chain that continues in PostgreSQL.

Rows carry every column, hold_stage and release_interrupted included (schema 2),
so a hold short of done or a release cut off stays so after the move.

SECURITY: the message bytes (My Numbers in the clear) and the key travel only
between the two stores; nothing is printed but counts.
DIAGNOSTICS: none; the CLI prints the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from mailguard.audit import AuditLog
from mailguard.errors import NotFound, StoreError
from mailguard.pgaudit import KEY_NAME, PgAudit, append_raw
from mailguard.pgstore import PgStore, apply_schema, redact
from mailguard.secret import KEY_FILE, load_or_create_key
from mailguard.heldrows import JSON_COLS
from mailguard.store import Store


@dataclass(frozen=True)
class Migrated:
    held: int  # rows copied (every state)
    messages: int  # of them with their bytes (not purged)
    audit_records: int
    key: bool  # the fingerprint key was copied
    notices: int = 0  # queued sender notices copied


def migrate(store_path: str | Path, url: str) -> Migrated:
    if not Store.exists(store_path):
        raise StoreError(f"{store_path}: no embedded store to migrate (check store.path)")
    source = Store(store_path)
    audit = AuditLog(store_path)
    try:
        checked = audit.verify()
        if not checked.ok:
            raise StoreError(f"{audit.location(checked.bad_file)}:{checked.bad_line}: {checked.reason};"
                             " the embedded audit chain is broken, refusing to migrate it")
        if checked.first_seq > 1:
            raise StoreError(f"{audit.location()}: the oldest rotated audit files are gone (chain starts at"
                             f" {checked.first_seq}); restore them before migrating")
        apply_schema(url)
        dest = PgStore(url, pool_max=2)
        try:
            if not dest.is_empty():
                raise StoreError(f"{redact(url)} already holds mailguard data; migrate only into an empty"
                                 " database (was it migrated before?)")
            result = _copy(source, audit, Path(store_path), dest)
            copied = PgAudit(dest).verify()
            if not copied.ok or copied.records != checked.records or copied.head != checked.head:
                raise StoreError(f"{redact(url)}: the copied audit chain does not verify"
                                 f" ({copied.reason or f'{copied.records} of {checked.records} records'})")
            return result
        finally:
            dest.close()
    finally:
        source.close()


def _copy(source: Store, audit: AuditLog, root: Path, dest: PgStore) -> Migrated:
    held = source.list(None)
    messages = 0
    with dest._write() as db:
        for h in held:
            row = dataclasses.asdict(h)
            for col in JSON_COLS:
                row[col] = json.dumps([dict(x) if isinstance(x, dict) else x for x in row[col]], ensure_ascii=False)
            cols = ", ".join(row)
            marks = ", ".join(f"%({k})s" for k in row)
            db.execute(f"INSERT INTO held ({cols}) VALUES ({marks})", row)  # noqa: S608  (fixed names)
            with contextlib.suppress(NotFound):
                envelope, data = source.read_message(h.id)
                db.execute(
                    "INSERT INTO held_message (id, mail_from, rcpt_tos, mail_options, data)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (h.id, envelope.mail_from, json.dumps(list(envelope.rcpt_tos), ensure_ascii=False),
                     json.dumps(list(envelope.mail_options)), data))
                messages += 1
        # Notices still waiting for their sender: the queue is part of "nothing
        # lost" (a reject's notice queued while the upstream was down).
        notices = [dict(r) for r in source._query("SELECT * FROM notice_queue")]  # noqa: SLF001 (same package)
        for n in notices:
            n["data"] = bytes(n["data"])
            cols = ", ".join(n)
            marks = ", ".join(f"%({k})s" for k in n)
            db.execute(f"INSERT INTO notice_queue ({cols}) VALUES ({marks})", n)  # noqa: S608  (fixed names)
        records = 0
        for rec in audit.records():
            append_raw(db, rec)
            records += 1
        has_key = (root / KEY_FILE).exists()
        if has_key:
            db.execute("INSERT INTO secret (name, value) VALUES (%s, %s)", (KEY_NAME, load_or_create_key(root)))
    return Migrated(len(held), messages, records, has_key, len(notices))
