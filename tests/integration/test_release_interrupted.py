"""A release cut off by kill -9 after the upstream took the message (issue 14,
item 5): `held show` and `held list` say so, and `held release` wants --force,
since releasing again delivers a second copy. MAILGUARD_FAULT stops the CLI at
exactly that point (mailguard.faults)."""

from __future__ import annotations

import json

from hold_support import NUMBERS, Serve, Sink, cli, held_list, message_with_numbers, send, write_config

EXTERNAL = "someone@example.com"


def test_a_cut_off_release_is_marked_and_needs_force(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        data = message_with_numbers(NUMBERS[:1])
        code, _ = send(srv.port, [EXTERNAL], data)
        assert code == 250
        [held] = held_list(cfg)
        other = message_with_numbers(NUMBERS[1:2])
        assert send(srv.port, [EXTERNAL], other)[0] == 250
        hid = held["id"]

        r = cli(cfg, "held", "release", hid, "--reason", "checked", env={"MAILGUARD_FAULT": "release_after_upstream"})
        assert r.returncode == 137
        assert len(sink.to(EXTERNAL)) == 1  # the upstream has it; the store never heard

        for _ in range(2):  # before serve's recovery, and after it
            show = cli(cfg, "held", "show", hid)
            assert show.returncode == 0 and "release was cut off" in show.stdout.decode()
            shown = json.loads(cli(cfg, "held", "show", hid, "--json").stdout)
            assert shown["release_interrupted"] is True and shown["state"] == "held"
            listed = {h["id"]: h for h in held_list(cfg)}
            assert listed[hid].get("release_interrupted") is True
            assert "release_interrupted" not in [k for h in listed.values() if h["id"] != hid for k in h]
            text = cli(cfg, "held", "list").stdout.decode()
            assert any(hid in line and "RELEASE INTERRUPTED" in line for line in text.splitlines())

            again = cli(cfg, "held", "release", hid, "--reason", "again")
            assert again.returncode == 1 and "--force" in again.stderr.decode()
            assert len(sink.to(EXTERNAL)) == 1
            srv.stop()
            srv = Serve(cfg, tmp_path / "serve2.log").start()  # recovery marks it durably

        forced = cli(cfg, "held", "release", hid, "--reason", "confirmed not delivered", "--force")
        assert forced.returncode == 0, forced.stderr
        assert len(sink.to(EXTERNAL)) == 2
        records = [json.loads(x) for x in (tmp_path / "store" / "audit.jsonl").read_text().splitlines()]
        assert any(r["event"] == "release" and r.get("id") == hid and r.get("forced") for r in records)
        assert any(r["event"] == "release-interrupted" and r.get("id") == hid for r in records)
    finally:
        srv.stop()
        sink.stop()
