-- mailguard's PostgreSQL hold store, schema version 1 (mailguard.pgstore).
-- Applied by `mailguard store init` and at start when missing, in one
-- transaction under an advisory lock, so two nodes starting at once agree.

CREATE TABLE IF NOT EXISTS mailguard_schema (
    version  integer PRIMARY KEY,
    applied  timestamptz NOT NULL DEFAULT now()
);

-- One row of masked metadata per held message: the same columns as the
-- embedded store's meta.sqlite (JSON lists kept as text, times ISO 8601 UTC).
CREATE TABLE IF NOT EXISTS held (
    id                 text PRIMARY KEY,
    state              text NOT NULL,
    rule               text NOT NULL,
    reasons            text NOT NULL,
    notice             text NOT NULL,
    mail_from          text NOT NULL,
    rcpt_tos           text NOT NULL,
    persons            integer NOT NULL,
    findings           text NOT NULL,
    fingerprints       text NOT NULL,
    unscannable        text NOT NULL,
    subject            text NOT NULL,
    message_id         text NOT NULL,
    size               bigint NOT NULL,
    sha256             text NOT NULL,
    approvals_required integer NOT NULL,
    approvals          text NOT NULL,
    received           text NOT NULL,
    updated            text NOT NULL,
    decided_at         text,
    decided_by         text,
    decided_reason     text,
    upstream_reply     text,
    release_started    text,
    purged_at          text
);
CREATE INDEX IF NOT EXISTS held_state_received ON held (state, received);

-- The exact bytes and the stored envelope; the row goes when the message is purged.
-- The bytes hold My Numbers in the clear: grant this table to mailguard only.
CREATE TABLE IF NOT EXISTS held_message (
    id            text PRIMARY KEY REFERENCES held (id) ON DELETE CASCADE,
    mail_from     text NOT NULL,
    rcpt_tos      text NOT NULL,
    mail_options  text NOT NULL,
    data          bytea NOT NULL
);

-- The audit chain: each record's canonical JSON line, as audit.jsonl keeps it.
-- Appends lock audit_head's one row, so seq follows commit order across nodes.
CREATE TABLE IF NOT EXISTS audit (
    seq     bigint PRIMARY KEY,
    time    text NOT NULL,
    record  text NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq   bigint NOT NULL,
    hash  text NOT NULL
);
INSERT INTO audit_head (one, seq, hash)
    VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;

-- The fingerprint key (name 'fingerprint'), shared by every node.
CREATE TABLE IF NOT EXISTS secret (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);

INSERT INTO mailguard_schema (version) VALUES (1) ON CONFLICT DO NOTHING;
