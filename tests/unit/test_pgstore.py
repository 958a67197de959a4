"""The PostgreSQL store beyond the contract: config, the shared chain and key,
tampering, two nodes finishing one message, an unreachable server, `store init`
and `store migrate` (a real throwaway cluster from pg_support)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from hold_support import write_config
from mailguard.audit import AuditLog
from mailguard.cli import EXIT_FAILED, EXIT_OK, main
from mailguard.config import Config, StoreConfig, check_store_url, load_config
from mailguard.errors import AuditError, ConfigError, StoreError
from mailguard.holdstore import fingerprint_key, open_audit, open_store, probe_store, store_exists
from mailguard.pgstore import SCHEMA_VERSION, PgStore, redact, schema_version
from mailguard.store import HELD, RELEASED, Store
from mynumbers import my_numbers

DATA = b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: pg\r\n\r\nbody\r\n"


def _cfg(tmp: Path, url: str) -> Config:
    return Config(store=StoreConfig(path=str(tmp / "spool"), url=url))


@pytest.mark.parametrize("url", ["mysql://u@h/db", "http://h/db", "h:5432/db", "postgresql://u@h:5432"])
def test_store_url_must_be_a_postgresql_uri_naming_a_database(url: str) -> None:
    with pytest.raises(ConfigError, match="store.url"):
        check_store_url(url)


def test_store_url_in_a_config_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1)
    cfg.write_text(cfg.read_text().replace("[store]\n", '[store]\nurl = "postgresql://mg@db.example:5432/mailguard"\n'))
    assert load_config(cfg).store.url == "postgresql://mg@db.example:5432/mailguard"
    cfg.write_text(cfg.read_text().replace("postgresql://", "sqlite://"))
    with pytest.raises(ConfigError, match="store.url"):
        load_config(cfg)
    assert Config().store.url == ""  # the embedded store stays the default


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://mg:s3cret@db:5432/m") == "postgresql://mg:***@db:5432/m"
    assert redact("postgresql://mg@db/m") == "postgresql://mg@db/m"


def test_two_nodes_share_the_key_and_one_chain(tmp_path: Path, pg_url: str) -> None:
    a, b = _cfg(tmp_path / "a", pg_url), _cfg(tmp_path / "b", pg_url)
    assert not store_exists(a)
    key = fingerprint_key(a)
    assert len(key) == 32 and fingerprint_key(b) == key
    assert store_exists(b) and f"schema v{SCHEMA_VERSION}" in probe_store(b)
    sa, sb = open_store(a), open_store(b)
    try:
        threads = [threading.Thread(target=lambda s=s: [s.audit.append("pass", operator="mailguard")
                                                        for _ in range(25)]) for s in (sa, sb, sa, sb)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = open_audit(b).verify()
        assert result.ok and result.records == 100
        assert [r["seq"] for r in sb.audit.records()] == list(range(1, 101))
    finally:
        sa.close()
        sb.close()


def test_tampering_is_detected(tmp_path: Path, pg_url: str) -> None:
    store = open_store(_cfg(tmp_path, pg_url))
    try:
        for i in range(4):
            store.audit.append("release", operator="alice", id="x" * 16, reason=f"r{i}")
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute("UPDATE audit SET record = replace(record, 'r1', 'r9') WHERE seq = 2")
            bad = store.audit.verify()
            assert not bad.ok and bad.bad_line == 2 and "edited" in bad.reason
            db.execute("UPDATE audit SET record = replace(record, 'r9', 'r1') WHERE seq = 2")
            assert store.audit.verify().ok
            db.execute("DELETE FROM audit WHERE seq = 3")
            bad = store.audit.verify()
            assert not bad.ok and bad.bad_line == 4
            db.execute("DELETE FROM audit WHERE seq = 4")
            assert not store.audit.verify().ok  # the head still names the deleted last record
    finally:
        store.close()


def test_the_head_row_is_the_checkpoint_and_a_cut_end_fails(tmp_path: Path, pg_url: str) -> None:
    """Records cut from the end of the chain (issue 14, item 2): the head row says where it ended."""
    from mailguard.audit import Checkpoint

    store = open_store(_cfg(tmp_path, pg_url))
    try:
        recs = [store.audit.append("pass", operator="mailguard", n=i) for i in range(3)]
        assert store.audit.last_checkpoint() == Checkpoint(3, recs[-1]["hash"])
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute("DELETE FROM audit WHERE seq = 3")
            cut = store.audit.verify()
            assert not cut.ok and cut.bad_line is None and "cut" in cut.reason and cut.records == 2
            # ... and one who also moves the head back is caught by a head kept elsewhere
            db.execute("UPDATE audit_head SET seq = 2, hash = %s", (recs[1]["hash"],))
            assert store.audit.verify().ok
            assert not store.audit.verify(checkpoint=Checkpoint(3, recs[-1]["hash"])).ok
    finally:
        store.close()


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path, pg_url: str) -> None:
    """Rows written before schema 2 were complete holds: hold_stage done, nothing interrupted."""
    from importlib import resources

    v1 = (resources.files("mailguard") / "data" / "pg" / "001_init.sql").read_text(encoding="utf-8")
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(v1.encode())
        db.execute("INSERT INTO held (id, state, rule, reasons, notice, mail_from, rcpt_tos, persons, findings,"
                   " fingerprints, unscannable, subject, message_id, size, sha256, approvals_required, approvals,"
                   " received, updated) VALUES ('abcdefghjkmnpqrs', 'held', 'r', '[]', '', 'a@x', '[\"b@y\"]', 0,"
                   " '[]', '[]', '[]', '', '', 1, '', 1, '[]', '2025-01-01T00:00:00+00:00',"
                   " '2025-01-01T00:00:00+00:00')")
    assert schema_version(pg_url) == 1
    store = open_store(_cfg(tmp_path, pg_url))
    try:
        assert schema_version(pg_url) == SCHEMA_VERSION
        old = store.get("abcdefghjkmnpqrs")
        assert old.hold_stage == "done" and old.release_interrupted is None
        assert store.incomplete_holds() == []
        assert store.add("a@x", ["b@y"], DATA, rule="r").hold_stage == "stored"
    finally:
        store.close()


def test_two_nodes_finish_a_message_once(tmp_path: Path, pg_url: str) -> None:
    a, b = open_store(_cfg(tmp_path, pg_url)), open_store(_cfg(tmp_path, pg_url))
    try:
        held = a.add("a@city.example.lg.jp", ["b@example.com"], DATA, rule="r")
        wins: list[str] = []
        barrier = threading.Barrier(2)

        def release(store: PgStore, who: str) -> None:
            barrier.wait()
            try:
                with store.locked(held.id):
                    if store.get(held.id).state == HELD:
                        store.finish(held.id, RELEASED, who, "ok")
                        wins.append(who)
            except StoreError:
                pass

        ts = [threading.Thread(target=release, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(wins) == 1 and b.get(held.id).decided_by == wins[0]
    finally:
        a.close()
        b.close()


def test_unreachable_server_is_a_store_error_not_a_hang(tmp_path: Path, pg_cluster) -> None:
    from hold_support import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach PostgreSQL"):
        open_store(_cfg(tmp_path, url))
    with pytest.raises(StoreError):
        probe_store(_cfg(tmp_path, url))
    assert time.monotonic() - t0 < 10


def test_audit_append_while_down_is_an_audit_error(pg_url: str, pg_cluster) -> None:
    store = PgStore(pg_url, pool_timeout=1.0)
    try:
        store.audit.append("pass", operator="mailguard")
        pg_cluster.stop()
        try:
            with pytest.raises(AuditError):
                store.audit.append("pass", operator="mailguard")
            with pytest.raises(StoreError):
                store.add("a@x", ["b@y"], DATA, rule="r")
            # The holder's best-effort audit (notices) logs the failure, never raises.
            from mailguard.notifier import Notifier

            Notifier(Config(), store.audit)._audit_quietly("notice", id="x" * 16, kind="held")
        finally:
            pg_cluster.start()
        ok = False
        for _ in range(50):  # the pool reconnects by itself
            try:
                store.audit.append("pass", operator="mailguard")
                ok = True
                break
            except AuditError:
                time.sleep(0.2)
        assert ok and store.audit.verify().records == 2
    finally:
        store.close()


def _site(tmp: Path, url: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp, 1)
    if url:
        cfg.write_text(cfg.read_text().replace("[store]\n", f'[store]\nurl = "{url}"\n'))
    return cfg


def test_store_init_applies_the_schema_once(tmp_path: Path, pg_url: str, capsys) -> None:
    cfg = _site(tmp_path, pg_url)
    assert schema_version(pg_url) == 0
    assert main(["-c", str(cfg), "store", "init"]) == EXIT_OK
    assert f"{SCHEMA_VERSION} schema file(s) applied" in capsys.readouterr().out
    assert main(["-c", str(cfg), "store", "init"]) == EXIT_OK
    assert "already up to date" in capsys.readouterr().out
    assert main(["-c", str(_site(tmp_path / "plain")), "store", "init"]) != EXIT_OK  # no store.url


def test_migrate_copies_held_mail_chain_and_key_once(tmp_path: Path, pg_url: str, capsys) -> None:
    cfg = _site(tmp_path)
    config = load_config(cfg)
    embedded = Store(config.store.path)
    [number] = my_numbers(1)
    key = fingerprint_key(config)
    kept = embedded.add("a@city.example.lg.jp", ["b@example.com"], DATA, rule="r", mail_options=("SMTPUTF8",))
    with embedded.locked(kept.id):  # a release cut off, recovered: release_interrupted, still held
        embedded.mark_release_started(kept.id)
    assert embedded.recover().releases_interrupted == [kept.id]
    done = embedded.add("a@city.example.lg.jp", ["c@example.com"], DATA + b"2", rule="r")
    with embedded.locked(done.id):
        embedded.finish(done.id, RELEASED, "alice", "ok")
        embedded.purge(done.id)
    audit = AuditLog(config.store.path)
    audit.append("hold", operator="mailguard", id=kept.id, reason=f"n {number}")
    audit.append("release", operator="alice", id=done.id)
    # A notice still waiting for its sender (the upstream was down) must survive the move.
    embedded.queue_notice("held", kept.id, "postmaster@city.example.lg.jp", ["a@city.example.lg.jp"],
                          b"Subject: notice\r\n\r\nmasked only\r\n", expires="2099-01-01T00:00:00+00:00")
    embedded.close()

    assert main(["-c", str(cfg), "store", "migrate", "--to", pg_url]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2 held message rows (1 with their bytes), 2 audit records, 1 queued notice(s), fingerprint key copied" in out
    assert number not in out

    pg = _cfg(tmp_path, pg_url)
    store = open_store(pg)
    try:
        assert store.get(kept.id) == Store(config.store.path).get(kept.id)
        assert store.get(kept.id).release_interrupted and store.get(kept.id).hold_stage == "stored"
        assert [h.id for h in store.incomplete_holds()] == [kept.id, done.id]
        envelope, data = store.read_message(kept.id)
        assert data == DATA and envelope.mail_options == ("SMTPUTF8",)
        assert store.get(done.id).purged_at
        assert fingerprint_key(pg) == key
        assert store.notice_queue_stats().count == 1
        [queued] = store.due_notices("2099-01-01T00:00:00+00:00", 10)
        assert queued.hold_id == kept.id and queued.data == b"Subject: notice\r\n\r\nmasked only\r\n"
        assert [r["hash"] for r in store.audit.records()] == [r["hash"] for r in audit.records()]
        nxt = store.audit.append("reject", operator="bob", id=kept.id)
        assert nxt["seq"] == 3 and store.audit.verify().ok
    finally:
        store.close()
    # A second run into the now non-empty database is refused.
    assert main(["-c", str(cfg), "store", "migrate", "--to", pg_url]) == EXIT_FAILED


def test_migrate_refuses_a_broken_chain(tmp_path: Path, pg_url: str) -> None:
    cfg = _site(tmp_path)
    config = load_config(cfg)
    Store(config.store.path).close()
    audit = AuditLog(config.store.path)
    audit.append("pass", operator="mailguard")
    audit.append("pass", operator="mailguard")
    lines = audit.path.read_text().splitlines(keepends=True)
    audit.path.write_text(lines[1])
    assert main(["-c", str(cfg), "store", "migrate", "--to", pg_url]) == EXIT_FAILED
    assert schema_version(pg_url) == 0
