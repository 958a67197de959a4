"""trace.py and incident.py over records in memory: numbers in any spelling become
the same fingerprint; find filters; the report's counts and serious flag."""

from __future__ import annotations

import secrets
from types import SimpleNamespace

from mynumbers import my_numbers

from mailguard.detect import fingerprint
from mailguard.incident import build_incident, render_markdown
from mailguard.items import items_of
from mailguard.trace import find, fingerprints_from_lines, for_message, trace

KEY = secrets.token_bytes(32)
N = my_numbers(3, seed=17)
FW = str.maketrans("0123456789", "０１２３４５６７８９")
CONFIG = SimpleNamespace(organisation=SimpleNamespace(internal_domains=("city.example.lg.jp",)))


def test_every_spelling_gives_the_same_fingerprint():
    n = N[0]
    grouped = f"{n[:4]} {n[4:8]} {n[8:]}"
    lines = [n, grouped, grouped.replace(" ", "-"), n.translate(FW), grouped.translate(FW), "", "  "]
    fps, valid, bad = fingerprints_from_lines(lines, KEY)
    assert fps == {fingerprint(n, KEY)}
    assert (valid, bad) == (5, [])


def test_invalid_lines_are_reported_by_number_only():
    wrong = N[0][:11] + str((int(N[0][11]) + 1) % 10)
    fps, valid, bad = fingerprints_from_lines([wrong, "abc", N[1]], KEY)
    assert fps == {fingerprint(N[1], KEY)} and valid == 1 and bad == [1, 2]


def _rec(event, persons=1, **kw):
    base = {"event": event, "time": "2025-06-02T01:00:00+00:00", "from": "staff@city.example.lg.jp",
            "to": ["a@city.other.lg.jp", "b@city.example.lg.jp"], "rule": "r", "persons": persons,
            "message_id": "<m1@city.example.lg.jp>", "fingerprints": [fingerprint(N[0], KEY)]}
    base.update(kw)
    return base


def test_trace_and_find():
    recs = [_rec("hold", id="kqzxmwtrbfjdpsva"), _rec("notice", id="kqzxmwtrbfjdpsva"),
            _rec("release", id="kqzxmwtrbfjdpsva", operator="alice", reason="ok"),
            _rec("pass", message_id="<m2@x>", fingerprints=[fingerprint(N[1], KEY)])]
    assert [h.event for h in trace(recs, {fingerprint(N[0], KEY)})] == ["hold", "release"]
    assert trace(recs, {fingerprint(N[2], KEY)}) == []
    assert [h.event for h in find(recs, domain="other.lg.jp")] == ["hold", "release", "pass"]
    assert [h.event for h in find(recs, message_id="m2@x")] == ["pass"]
    assert [r["event"] for r in for_message(recs, "<m1@city.example.lg.jp>")] == ["hold", "release"]


def test_incident_counts_and_serious():
    recs = [_rec("hold", persons=101, id="kqzxmwtrbfjdpsva", near_findings=["氏名", "個人番号", "住所"]),
            _rec("release", persons=101, id="kqzxmwtrbfjdpsva", operator="alice", reason="ok")]
    f = build_incident(recs, "kqzxmwtrbfjdpsva", CONFIG)
    assert f["persons"] == 101 and f["serious"] is True and f["sent"] is True
    assert f["items"] == ["個人番号", "氏名", "住所"]
    assert [r["external"] for r in f["recipients"]] == [True, False]
    md = render_markdown(f, CONFIG)
    assert "該当する" in md and "【要記入】" in md and "101 人" in md
    assert build_incident(recs, "nothing", CONFIG) is None
    recs[0]["persons"] = 100
    assert build_incident(recs, "kqzxmwtrbfjdpsva", CONFIG)["serious"] is False


def test_items_of_headers():
    assert items_of(["フリガナ", "現住所", "生年月日", "個人番号"]) == ["氏名", "住所", "生年月日"]
