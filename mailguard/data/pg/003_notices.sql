-- mailguard's PostgreSQL hold store, schema version 3 (issue 13.5: notices that
-- are not lost). Applied after 002 by the same machinery
-- (mailguard.pgstore.apply_schema), in one transaction under the schema lock.

-- Sender notices (held, blocked, rejected, expired) wait here until the upstream
-- takes them or they expire (mailguard.noticestore). ``data`` is the built
-- notice: masked, never a number in the clear. Times are ISO 8601 UTC text, as
-- in ``held``.
CREATE TABLE IF NOT EXISTS notice_queue (
    id           text PRIMARY KEY,
    kind         text NOT NULL,
    hold_id      text NOT NULL,
    mail_from    text NOT NULL,
    rcpt_tos     text NOT NULL,
    mail_options text NOT NULL,
    data         bytea NOT NULL,
    created      text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt text NOT NULL,
    expires      text NOT NULL,
    last_error   text NOT NULL DEFAULT '',
    last_attempt text
);
CREATE INDEX IF NOT EXISTS notice_queue_due ON notice_queue (next_attempt);
-- One notice per hold and kind while queued: recovery may queue it again.
CREATE UNIQUE INDEX IF NOT EXISTS notice_queue_once ON notice_queue (hold_id, kind) WHERE hold_id <> '';

INSERT INTO mailguard_schema (version) VALUES (3) ON CONFLICT DO NOTHING;
