"""Times shown to people are local with their offset (issue 13.9): `held list`,
`held show` (which also says when the hold expires), notices and `status`; JSON
keeps ISO 8601 with an offset. Driven through a real `serve` and the real CLI.
"""

from __future__ import annotations

import email
import json
import re
from datetime import datetime, timedelta, timezone
from email.policy import default

from hold_support import NUMBERS, SENDER, Serve, Sink, cli, held_list, message_with_numbers, send, write_config

JST = timezone(timedelta(hours=9))


def _with_org(cfg, extra: str):
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("[organisation]\n", f"[organisation]\n{extra}\n", 1), encoding="utf-8")
    return cfg


def test_held_list_show_notice_and_status_show_local_times_with_offset(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port, expiry_hours=48)  # timezone: the default, Asia/Tokyo
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        code, text = send(srv.port, ["someone@example.com"], message_with_numbers(NUMBERS[:1]))
        assert code == 250
        hold_id = text.split("held for review as ")[1][:16]
        [row] = held_list(cfg)
        received = datetime.fromisoformat(row["received"])
        assert received.utcoffset() is not None  # JSON: ISO 8601 with offset
        local = received.astimezone(JST).strftime("%Y-%m-%d %H:%M +09:00")

        listed = cli(cfg, "held", "list").stdout.decode()
        assert local in listed, listed

        shown = cli(cfg, "held", "show", hold_id).stdout.decode()
        assert re.search(rf"^received:\s+{re.escape(local)}$", shown, re.M), shown
        expires = (received + timedelta(hours=48)).astimezone(JST).strftime("%Y-%m-%d %H:%M +09:00")
        assert re.search(rf"^expires:\s+{re.escape(expires)}$", shown, re.M), shown
        js = json.loads(cli(cfg, "held", "show", hold_id, "--json").stdout)
        assert datetime.fromisoformat(js["expires"]) == received + timedelta(hours=48)

        notices = sink.wait_for(lambda m: m[1] == [SENDER])
        body = email.message_from_bytes(notices[0][2], policy=default).get_body().get_content()
        assert f"受付日時: {local}" in body and f"Received: {local}" in body
        assert f"保留期限: {expires}" in body

        status = cli(cfg, "status").stdout.decode()
        assert re.search(r"oldest .* \(since \d{4}-\d\d-\d\d \d\d:\d\d \+09:00\)", status), status
    finally:
        srv.stop()
        sink.stop()


def test_timezone_is_configurable_and_validated(tmp_path):
    sink = Sink().start()
    try:
        cfg = _with_org(write_config(tmp_path, sink.port), 'timezone = "UTC"')
        held = cli(cfg, "held", "list")
        assert held.returncode == 0, held.stderr
        bad = _with_org(write_config(tmp_path, sink.port), 'timezone = "Asia/Tokio"')
        r = cli(bad, "held", "list")
        assert r.returncode == 2
        assert b"organisation.timezone" in r.stderr and b"Asia/Tokio" in r.stderr
    finally:
        sink.stop()


def test_utc_zone_shows_plus_zero(tmp_path):
    sink = Sink().start()
    cfg = _with_org(write_config(tmp_path, sink.port), 'timezone = "UTC"')
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        code, text = send(srv.port, ["someone@example.com"], message_with_numbers(NUMBERS[:1]))
        assert code == 250
        [row] = held_list(cfg)
        utc = datetime.fromisoformat(row["received"]).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M +00:00")
        assert utc in cli(cfg, "held", "list").stdout.decode()
    finally:
        srv.stop()
        sink.stop()
