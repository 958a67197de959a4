"""The audit chain's own pieces, shared by both audit backends (audit.py, pgaudit.py).

    canonical(record) -> str          the JSON text a record is hashed and stored as
    record_hash(record) -> str        sha256 over the record without its own hash
    parse_record(raw) -> (record | None, why)    a stored record read back and checked
    Checkpoint(seq, hash)             the chain head at some moment; parse("SEQ:HASH")
    syslog_checkpoint(head)           the head as one syslog line an inspector keeps elsewhere
    GENESIS                           the ``prev`` of the first record

SECURITY: records reach here already scrubbed (no clear numbers); the syslog line
carries only a sequence number and a hash. DIAGNOSTICS: the syslog line above.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass

# An audit record is a JSON object (DESIGN §8): these are its value types.
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]
AuditRecord = dict[str, JSONValue]

GENESIS = "0" * 64


def canonical(record: AuditRecord) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def record_hash(record: AuditRecord) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def parse_record(raw: str | bytes) -> tuple[AuditRecord | None, str]:
    """One stored record read back: (record, "") or (None, why it is not a sound one)."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return None, "not a JSON object"
    if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str):
        return None, "not an audit record"
    if record_hash(rec) != rec["hash"]:
        return None, "hash does not match the record (edited?)"
    return rec, ""


_HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Checkpoint:
    """The chain head at some moment: the last record's ``seq`` and ``hash``."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        """'SEQ:HASH' (as ``audit verify`` and the syslog line print it); ValueError if not."""
        seq, sep, digest = text.strip().partition(":")
        digest = digest.strip().lower()
        if not sep or not seq.strip().isdigit() or int(seq) < 1 or not _HASH_RE.fullmatch(digest):
            raise ValueError(f"{text[:80]!r} is not SEQ:HASH (a record number, a colon, 64 hex digits)")
        return cls(int(seq), digest)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def syslog_checkpoint(head: Checkpoint) -> None:
    """One line to the local syslog, which an inspector forwards off the host."""
    if not sys.platform.startswith("linux") or not os.path.exists("/dev/log"):
        return
    try:
        import syslog

        syslog.openlog("mailguard", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(syslog.LOG_NOTICE, f"audit_checkpoint seq={head.seq} hash={head.hash}")
    except (OSError, ValueError):
        pass  # the database checkpoint and the structlog event still stand
