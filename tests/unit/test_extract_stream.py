"""Streaming detection: item-by-item detection finds what one detect() call over
all spans finds; the findings cap keeps persons exact; the worker memory cap
turns a hostile attachment into an unscannable item.

Numbers are synthetic (docs_fixtures.my_number) and never shown: assertions
compare counts, masked values and booleans.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import docs_fixtures as fx  # noqa: E402

from mailguard import detect  # noqa: E402
from mailguard.config import LimitsConfig  # noqa: E402
from mailguard.extract import FLUSH_SPANS  # noqa: E402
from mailguard.scan import (MEMORY_LIMIT_REASON, Findings,  # noqa: E402
                            extract_message, scan_file, scan_message)

KEY = b"k" * 32
LIMITS = LimitsConfig(scan_timeout=300.0, max_findings=10**9)


def _invalid(seed: int) -> str:
    """12 digits whose check digit is wrong."""
    n = fx.my_number(seed)
    return n[:-1] + str((int(n[-1]) + 1) % 10)


def _csv(rows: list[str], header: str = "ID,番号") -> bytes:
    return ("\n".join([header] + [f"{i},{v}" for i, v in enumerate(rows)]) + "\n").encode()


def _mixed_message() -> bytes:
    # A list whose rule depends on seeing the whole group: 600 invalid rows
    # first, then 2400 valid (80 % valid overall, 70 % in the first 2000).
    listed = [_invalid(i) for i in range(600)] + [fx.my_number(i) for i in range(600, 3000)]
    # Not a list: mostly invalid, a few valid bare numbers stay low.
    unlisted = [_invalid(i) for i in range(3000, 5000)] + [fx.my_number(i) for i in range(3000, 3010)]
    xlsx = fx.make_xlsx([["氏名", "番号"]] + [[f"職員{i}", int(fx.my_number(i))] for i in range(2500)])
    docx = fx.make_docx([f"マイナンバー {fx.my_number(9000 + i)}" for i in range(50)],
                        table=[["氏名", "個人番号"], ["山田", fx.my_number(9100)]])
    small = {f"m{i}.txt": f"個人番号 {fx.grouped(fx.my_number(7000 + i))}".encode()
             for i in range(FLUSH_SPANS + 50)}  # more ungrouped spans than one batch
    return fx.make_message(
        body=f"個人番号 {fx.my_number(1)}\n連絡先 {fx.grouped(fx.my_number(2))}\n",
        attachments=[("listed.csv", _csv(listed)), ("unlisted.csv", _csv(unlisted)),
                     ("a.xlsx", xlsx), ("b.docx", docx), ("c.zip", fx.make_zip(small)),
                     ("listed2.csv", _csv(listed))])


def _key(f) -> tuple:
    return (f.masked, f.confidence, f.reason, f.location, f.start, f.end, f.fingerprint)


def test_item_by_item_detection_equals_one_detect_call():
    data = _mixed_message()
    whole = detect.detect(extract_message(data, LIMITS).spans, key=KEY)
    report = scan_message(data, LIMITS, key=KEY)
    assert report.findings_total == len(whole.findings) == 9413
    same = [_key(f) for f in report.findings] == [_key(f) for f in whole.findings]
    assert same
    assert report.persons == whole.persons
    # The list rule saw each whole CSV: its valid rows are high, not low.
    listed_high = sum(1 for f in report.findings
                      if f.location.startswith("attachment:listed.csv") and f.confidence == "high")
    assert listed_high == 2400


def test_findings_cap_keeps_persons_exact():
    rows = [fx.my_number(i) for i in range(5000)]
    data = fx.make_message(body="名簿を送ります", attachments=[
        ("a.csv", _csv(rows, "氏名,個人番号")), ("b.csv", _csv(rows, "氏名,個人番号"))])
    limits = dataclasses.replace(LIMITS, max_findings=100)
    report = scan_message(data, limits, key=KEY)
    assert len(report.findings) == 100
    assert report.findings_total == 10_000  # every row of both files was detected
    assert report.persons == 5000 and report.persons_high == 5000 and report.numbers == 5000
    # The kept findings are the first ones found, in order.
    whole = detect.detect(extract_message(data, LIMITS).spans, key=KEY)
    assert [_key(f) for f in report.findings] == [_key(f) for f in whole.findings[:100]]


def test_findings_cap_with_scan_file(tmp_path):
    rows = [fx.my_number(i) for i in range(300)]
    path = tmp_path / "名簿.csv"
    path.write_bytes(_csv(rows, "氏名,個人番号"))
    report = scan_file(path, dataclasses.replace(LIMITS, max_findings=10), key=KEY)
    assert (len(report.findings), report.findings_total, report.persons) == (10, 300, 300)


def test_low_confidence_numbers_are_not_persons():
    # Bare 12-digit runs with no keyword, not a list: low, counted in `numbers` only.
    body = " ".join([fx.my_number(1), _invalid(2), _invalid(3)])
    report = scan_message(fx.make_message(body=body), LIMITS, key=KEY)
    assert (report.persons, report.numbers) == (0, 1)


def test_sink_failure_keeps_spans_pending():
    from mailguard.extract import Context
    from mailguard.detect import Span

    calls = []

    def sink(spans):
        calls.append(len(spans))
        if len(calls) == 1:
            raise MemoryError
        spans.clear()

    ctx = Context(LIMITS, sink=sink)
    ctx.add_text("a", "body")
    try:
        ctx.flush()
    except MemoryError:
        pass
    assert ctx.spans == [Span("a", "body")]  # not dropped undetected
    ctx.flush()
    assert calls == [1, 1] and ctx.spans == []


def test_findings_sink_counts_across_batches():
    sink = Findings(cap=1, key=KEY)
    n = fx.my_number(5)
    sink([detect.Span(f"個人番号 {n}", "body")])
    sink([detect.Span(n, "attachment:a.txt")])  # same number again, low on its own
    report = sink.report(extract_message(b"", LIMITS))
    assert (len(report.findings), report.findings_total, report.persons) == (1, 2, 1)


def test_memory_error_in_one_item_is_reported_and_the_rest_scanned(monkeypatch):
    from mailguard.extract import ooxml

    def boom(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(ooxml, "extract_xlsx", boom)
    n = fx.my_number(42)
    data = fx.make_message(body=f"個人番号 {n}", attachments=[("a.xlsx", fx.make_xlsx([[1]]))])
    report = scan_message(data, LIMITS, key=KEY)
    assert [(u.location, u.reason) for u in report.unscannable] == \
        [("attachment:a.xlsx", MEMORY_LIMIT_REASON)]
    assert report.persons == 1


def test_memory_error_outside_any_item_makes_the_message_unscannable(monkeypatch):
    from mailguard.extract import mail

    def boom(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(mail, "parse_message", boom)
    report = scan_message(fx.make_message(body="x"), LIMITS, key=KEY)
    assert [(u.location, u.reason) for u in report.unscannable] == \
        [("message", MEMORY_LIMIT_REASON)]


def test_a_table_too_big_to_detect_is_dropped_not_retried(monkeypatch):
    """MemoryError while detecting one giant group: that item is unscannable,
    its pending spans are dropped (not retried by every later flush), and the
    rest of the message is still detected."""
    import mailguard.scan as scan_mod

    class Tight(Findings):
        def __call__(self, spans):
            if len(spans) > 2500:
                raise MemoryError
            super().__call__(spans)

    monkeypatch.setattr(scan_mod, "Findings", Tight)
    big = _csv([fx.my_number(i) for i in range(3000)], "氏名,個人番号")
    small = _csv([fx.my_number(i) for i in range(5000, 5010)], "氏名,個人番号")
    data = fx.make_message(body=f"個人番号 {fx.my_number(1)}",
                           attachments=[("big.csv", big), ("small.csv", small)])
    report = scan_message(data, LIMITS, key=KEY)
    assert [(u.location, u.reason) for u in report.unscannable] == \
        [("attachment:big.csv", MEMORY_LIMIT_REASON)]
    assert report.persons == 11  # the body and small.csv
    assert not any(f.location.startswith("attachment:big.csv!") for f in report.findings)


def test_parts_are_decoded_when_used_and_released_after():
    from mailguard.extract import Context
    from mailguard.extract.mail import extract_parsed
    from mailguard.parse import parse_message

    data = fx.make_message(body=f"個人番号 {fx.my_number(3)}", attachments=[
        ("a.csv", _csv([fx.my_number(4)], "氏名,個人番号")), ("b.bin", bytes(range(256)) * 64)])
    msg = parse_message(data)
    attachments = [p for p in msg.parts if p.is_attachment]
    assert all(p._payload is None for p in attachments)  # noqa: SLF001 - not decoded at parse time
    ctx = Context(LIMITS)
    extract_parsed(ctx, msg, "", 0)
    assert all(p.payload == b"" for p in msg.parts)  # released once extracted
    assert [a.size for a in ctx.attachments][1] == 256 * 64
