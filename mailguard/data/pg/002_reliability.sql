-- mailguard's PostgreSQL hold store, schema version 2 (issue 14: reliability).
-- Applied after 001 by the same machinery (mailguard.pgstore.apply_schema), in
-- one transaction under the schema advisory lock.

-- A hold is one unit: stored (row + bytes) -> audited (its hold record written)
-- -> done (the sender's notice sent or given up). Rows written before this
-- version were complete holds: 'done'. New rows say 'stored' explicitly.
ALTER TABLE held ADD COLUMN IF NOT EXISTS hold_stage text NOT NULL DEFAULT 'done';
-- When a release died after it began (the upstream may have the message):
-- set by recovery from release_started, kept until the message is finished.
ALTER TABLE held ADD COLUMN IF NOT EXISTS release_interrupted text;

-- Recovery at start looks for holds short of 'done'; a client's resend is
-- looked up by the message digest.
CREATE INDEX IF NOT EXISTS held_incomplete ON held (received) WHERE hold_stage <> 'done';
CREATE INDEX IF NOT EXISTS held_sha256 ON held (sha256);

-- The audit checkpoint needs no table of its own: the audit_head row (seq and
-- hash of the last record) moves in the same transaction as every append, so
-- the chain must end exactly there (mailguard.pgaudit); the off-host copy is
-- the audit_checkpoint log and syslog line every append writes.

INSERT INTO mailguard_schema (version) VALUES (2) ON CONFLICT DO NOTHING;
