"""After a leak (issue 17): pass, hold, block and release real messages through a
running `mailguard serve`, then trace numbers and draft the report from the CLI.
Every output is checked for the numbers in every spelling."""

from __future__ import annotations

import json
import re
import time
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hold_support import INTERNAL, NUMBERS, SENDER, Serve, Sink, cli, message_with_numbers, send, write_config

OK, BLOCKED = 250, 550
HOLD_ID = re.compile(r"held for review as ([a-z]{16})")
EXTERNAL = "someone@example.com"
COLLEAGUE = f"colleague@{INTERNAL}"
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def spellings(n: str) -> list[str]:
    grouped = f"{n[:4]} {n[4:8]} {n[8:]}"
    return [n, grouped, grouped.replace(" ", "-"), n.translate(FULLWIDTH), grouped.translate(FULLWIDTH)]


def assert_no_numbers(*texts: str | bytes) -> None:
    for t in texts:
        s = t.decode("utf-8", "replace") if isinstance(t, bytes) else t
        for i, n in enumerate(NUMBERS):
            for k, sp in enumerate(spellings(n)):
                assert sp not in s, f"number {i} in spelling {k} appeared in an output"


def reply_all(numbers: list[str]) -> bytes:
    m = EmailMessage()
    m["From"] = SENDER
    m["To"] = f"asker@city.other.lg.jp, {COLLEAGUE}"
    m["Cc"] = "third@another.example.jp"
    m["Subject"] = "Re: 照会の件"
    m["In-Reply-To"] = "<question@city.other.lg.jp>"
    m["Message-ID"] = f"<{time.monotonic_ns()}.replyall@{INTERNAL}>"
    m.set_content("住所と生年月日もお送りします。\n" + "\n".join(f"個人番号 {x}" for x in numbers))
    return m.as_bytes(policy=SMTP)


def message_id(data: bytes) -> str:
    return re.search(rb"Message-ID: (<[^>]+>)", data).group(1).decode()


def recorded_id(data: bytes) -> str:
    """The Message-ID as records and outputs show it: a 12+ digit run is masked."""
    from mailguard.log import scrub

    return scrub(message_id(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One relay, four messages: pass, hold + release, block; NUMBERS[3] never sent."""
    tmp = tmp_path_factory.mktemp("trace")
    sink = Sink().start()
    cfg = write_config(tmp, sink.port)
    srv = Serve(cfg, tmp / "serve.log").start()
    try:
        passed = message_with_numbers(NUMBERS[:1], to=COLLEAGUE)
        code, text = send(srv.port, [COLLEAGUE], passed)
        assert code == OK, text
        held = message_with_numbers(NUMBERS[:2])
        code, text = send(srv.port, [EXTERNAL], held)
        assert code == OK, text
        hold_id = HOLD_ID.search(text).group(1)
        r = cli(cfg, "held", "release", hold_id, "--reason", "送信者に確認済み", operator="alice")
        assert r.returncode == 0, r.stderr
        blocked = reply_all(NUMBERS[2:3])
        code, text = send(srv.port, ["asker@city.other.lg.jp", COLLEAGUE, "third@another.example.jp"], blocked)
        assert code == BLOCKED, text
        yield {"cfg": cfg, "tmp": tmp, "hold_id": hold_id, "passed": passed, "held": held, "blocked": blocked}
    finally:
        srv.stop()
        sink.stop()
        assert_no_numbers((tmp / "serve.log").read_bytes())


def trace(cfg, stdin: str, *args: str):
    import subprocess
    import sys

    from hold_support import ROOT

    return subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "audit", "trace", *args],
                          cwd=ROOT, input=stdin.encode(), capture_output=True, timeout=60)


def test_audit_records_carry_the_leak_facts(world):
    audit = (world["tmp"] / "store" / "audit.jsonl").read_text(encoding="utf-8")
    assert_no_numbers(audit)
    recs = [json.loads(line) for line in audit.splitlines()]
    by_event = {}
    for r in recs:
        by_event.setdefault(r["event"], r)
    for event in ("pass", "hold", "block", "release"):
        r = by_event[event]
        for key in ("fingerprints", "message_id", "from", "to", "organisations", "persons"):
            assert r.get(key), (event, key)
    assert by_event["pass"]["message_id"] == recorded_id(world["passed"])
    assert by_event["block"]["is_reply_all"] is True
    assert by_event["block"]["organisations"] == ["example.jp", "example.lg.jp", "other.lg.jp"]
    assert by_event["block"]["external_orgs"] == ["example.jp", "other.lg.jp"]
    assert "氏名" in by_event["hold"]["near_findings"]
    assert by_event["hold"]["persons_by_confidence"]["medium"] == 2


@pytest.mark.parametrize("spelling", range(5))
def test_trace_finds_every_message_that_carried_a_number(world, spelling):
    r = trace(world["cfg"], spellings(NUMBERS[0])[spelling] + "\n", "--json")
    assert r.returncode == 0, r.stderr
    assert_no_numbers(r.stdout, r.stderr)
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert {row["event"] for row in rows} >= {"pass", "hold", "release"}
    assert "block" not in {row["event"] for row in rows}
    for row in rows:
        assert set(row) == {"time", "event", "id", "message_id", "from", "to", "rule", "persons"}
    assert {row["message_id"] for row in rows} == {recorded_id(world["passed"]), recorded_id(world["held"])}
    assert world["hold_id"] in {row["id"] for row in rows}


def test_trace_text_marks_internal_and_external(world):
    r = trace(world["cfg"], NUMBERS[1] + "\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert_no_numbers(r.stdout, r.stderr)
    assert f"{EXTERNAL} (外部/external)" in out
    assert world["hold_id"] in out


def test_trace_of_a_number_never_sent_finds_nothing(world):
    r = trace(world["cfg"], spellings(NUMBERS[3])[1] + "\n")
    assert r.returncode == 0
    assert r.stdout == b""
    assert r.stderr.strip()
    assert_no_numbers(r.stderr)


def test_trace_refuses_input_without_a_valid_number(world):
    bad = NUMBERS[0][:11] + str((int(NUMBERS[0][11]) + 1) % 10)
    r = trace(world["cfg"], f"{bad}\nhello\n")
    assert r.returncode == 2
    assert r.stdout == b""
    assert bad not in r.stderr.decode()


def test_trace_reads_a_csv_file(world):
    f = world["tmp"] / "people.csv"
    f.write_text("氏名,個人番号\n" + f"佐藤,{spellings(NUMBERS[2])[1]}\n", encoding="utf-8")
    r = trace(world["cfg"], "", "--json", "--file", str(f))
    assert r.returncode == 0, r.stderr
    assert_no_numbers(r.stdout, r.stderr)
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["event"] for row in rows] == ["block"]


def test_audit_find_by_message_id_and_domain(world):
    mid = message_id(world["held"])
    r = cli(world["cfg"], "audit", "find", "--message-id", mid, "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line)["event"] for line in r.stdout.decode().splitlines()]
    assert "hold" in events and "release" in events
    r = cli(world["cfg"], "audit", "find", "--domain", "another.example.jp", "--json")
    assert [json.loads(line)["event"] for line in r.stdout.decode().splitlines()] == ["block"]
    r = cli(world["cfg"], "audit", "find", "--recipient", "nobody@nowhere.example")
    assert r.returncode == 0 and r.stdout == b"" and r.stderr.strip()


def test_incident_report_of_a_released_hold(world):
    r = cli(world["cfg"], "incident", "report", world["hold_id"], "--json")
    assert r.returncode == 0, r.stderr
    assert_no_numbers(r.stdout, r.stderr)
    facts = json.loads(r.stdout)
    assert facts["persons"] == 2 and facts["serious"] is False
    assert facts["sent"] is True and facts["released_by"] == "alice"
    assert "氏名" in facts["items"]
    r = cli(world["cfg"], "incident", "report", message_id(world["held"]))
    assert r.returncode == 0, r.stderr
    md = r.stdout.decode()
    assert_no_numbers(r.stdout, r.stderr)
    for text in ("特定個人情報", "【要記入】", "二次被害", "本人への対応",
                 "公表", "再発防止", "氏名", "2 人", "該当しない", "alice", "送信者に確認済み", "example.com"):
        assert text in md, text


def test_incident_report_of_a_reply_all(world):
    r = cli(world["cfg"], "incident", "report", message_id(world["blocked"]), "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    assert facts["reply_all"] is True and facts["sent"] is False and facts["persons"] == 1
    assert {"住所", "生年月日"} <= set(facts["items"])
    assert facts["external_organisations"] == ["example.jp", "other.lg.jp"]
    assert {r["address"]: r["external"] for r in facts["recipients"]}[COLLEAGUE] is False


def test_incident_report_unknown_ref(world):
    r = cli(world["cfg"], "incident", "report", "<nothing@nowhere>")
    assert r.returncode == 1 and r.stderr.strip()
