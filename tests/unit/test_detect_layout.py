"""Numbers as a person reads them (issue 11, the text half): format characters,
the separators people type, quoted and folded lines, box forms, kanji numerals,
negative labels, and masking of every spelling the detector accepts. Each
positive has a negative beside it. Numbers come from tests/mynumbers.py and are
never printed (assertions compare masks or booleans)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mynumbers import mask, my_numbers  # noqa: E402

from mailguard.detect import Span, detect  # noqa: E402

N1, N2, N3 = my_numbers(3, seed=1101)


def g(n: str, sep: str = " ") -> str:
    return n[:4] + sep + n[4:8] + sep + n[8:]


def found(text: str, **kw) -> list[tuple[str, str]]:
    """(masked, confidence) of each finding; never the number."""
    return [(f.masked, f.confidence) for f in detect([Span(text, "body")], **kw).findings]


def invalid(n: str) -> str:
    return n[:11] + str((int(n[11]) + 1) % 10)


# ------------------------------------------------------------ negative labels


@pytest.mark.parametrize("label", ["送り状番号：", "伝票番号 ", "請求書番号: ", "注文番号 ", "追跡番号：",
                                   "受付番号 ", "管理番号：", "お問い合わせ番号 ", "問合せ番号：", "予約番号 ",
                                   "会員番号 ", "顧客番号 ", "口座番号 ", "証券番号 ", "整理番号："])
@pytest.mark.parametrize("sep", ["-", " ", ""])
def test_negative_label_before_a_number_makes_it_low(label, sep):
    assert found(f"{label}{g(N1, sep)} をご確認ください") == [(mask(N1), "low")]


def test_without_label_grouped_stays_medium_and_keyword_nearer_wins():
    assert found(f"お知らせ {g(N1, '-')} をご確認ください") == [(mask(N1), "medium")]
    # the keyword is nearer than the label: it names the number
    assert found(f"送り状番号 ABC-1 / 個人番号 {g(N1, '-')}") == [(mask(N1), "high")]


def test_policy_negative_words_reach_the_rule(tmp_path):
    from mailguard.policy import load_policy

    (tmp_path / "10.toml").write_text(
        '[default]\naction = "pass"\n[detector]\nnegative = ["配達票番号"]\n', encoding="utf-8")
    policy = load_policy(tmp_path)
    text = f"配達票番号 {g(N1, '-')}"
    assert found(text) == [(mask(N1), "medium")]
    assert found(text, extra_negative=policy.negative) == [(mask(N1), "low")]


# ------------------------------------------------------------------ characters

from mailguard.detect.view import FORMAT_CHARS  # noqa: E402


def one(text: str):
    fs = detect([Span(text, "body")]).findings
    assert len(fs) == 1, f"expected one finding, got {len(fs)}"
    return fs[0]


def test_format_characters_are_category_cf():
    import unicodedata

    assert all(unicodedata.category(c) == "Cf" for c in FORMAT_CHARS)


@pytest.mark.parametrize("cf", list(FORMAT_CHARS), ids=[f"U+{ord(c):04X}" for c in FORMAT_CHARS])
def test_format_character_inside_a_number_is_transparent(cf):
    for shown in (g(N1, cf), g(N1, " " + cf), N1[:5] + cf + N1[5:], cf + g(N1, "-") + cf):
        text = f"個人番号：{shown}です"
        f = one(text)
        assert f.masked == mask(N1) and f.confidence == "high"
        assert text[f.start:f.end].strip(cf) == shown.strip(cf)  # location in the original text
    # negative: still no number when the check digit fails or a digit glues on
    assert found(f"個人番号：{g(invalid(N1), cf)}") == []
    assert found(f"個人番号：{N1[:6]}{cf}{N1[6:]}{cf}7") == []


@pytest.mark.parametrize("sep", ["・", "･", " - ", " ー ", "  ", "   ", "    ", "\u3000", "\u3000\u3000", " ・ "],
                         ids=["nakaguro", "halfwidth-nakaguro", "space-hyphen-space", "space-chouon-space",
                              "2-spaces", "3-spaces", "4-spaces", "fullwidth-space", "2-fullwidth-spaces",
                              "spaced-nakaguro"])
def test_separators_people_type(sep):
    text = f"連絡先 {g(N1, sep)} です"
    f = one(text)
    assert (f.masked, f.confidence) == (mask(N1), "medium")
    assert text[f.start:f.end] == g(N1, sep)


@pytest.mark.parametrize("text", [
    "1234     5678     9018",  # five spaces: a layout gap, not a separator
    "1234・5678 - 9018",  # mixed kinds
    "1111・1234・5678・9018",  # a slice of a longer chain
    "1234 - 5678 - 9018 - 1111",
    "1111  1234  5678  9018",
], ids=["5-spaces", "mixed-kinds", "chain-before", "chain-after", "chain-spaces"])
def test_not_a_number_with_wide_separators(text):
    digits = "".join(c for c in text if c.isdigit())
    # rebuild the last 12 digits as a valid number so a wrong acceptance shows up
    n = N2
    k = 0
    out = []
    for c in text:
        if c.isdigit():
            idx = len(digits) - 12
            out.append(n[k - idx] if k >= idx else c)
            k += 1
        else:
            out.append(c)
    assert found("".join(out)) == []


def test_quoted_reply_wrapped_number_in_a_real_eml():
    from email.message import EmailMessage

    from mailguard.config import LimitsConfig
    from mailguard.scan import scan_message

    def eml(body: str) -> bytes:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "a@city.example.lg.jp", "b@example.com", "Re: 照会"
        m.set_content(body)
        return bytes(m)

    wrapped = f"承知しました。\n\n> 個人番号は {N1[:4]} {N1[4:8]}\n> {N1[8:]} です。\n>> {N2[:4]}-{N2[4:8]}-\n>> {N2[8:]}\n"
    report = scan_message(eml(wrapped), LimitsConfig())
    got = sorted((f.masked, f.confidence, f.location) for f in report.findings)
    assert got == sorted([(mask(N1), "high", "body"), (mask(N2), "high", "body")])
    # negatives: three quoted lines of four digits are a column; a failing check digit is nothing
    column = f"> 個人番号\n> {N1[:4]}\n> {N1[4:8]}\n> {N1[8:]}\n"
    bad = f"> 個人番号 {invalid(N1)[:4]} {invalid(N1)[4:8]}\n> {invalid(N1)[8:]}\n"
    assert scan_message(eml(column), LimitsConfig()).findings == ()
    assert scan_message(eml(bad), LimitsConfig()).findings == ()


def test_quoted_view_offsets_point_at_the_original():
    text = f"> 個人番号 {N1[:4]} {N1[4:8]}\n> {N1[8:]}\n"
    f = one(text)
    assert text[f.start:f.end] == f"{N1[:4]} {N1[4:8]}\n> {N1[8:]}"


@pytest.mark.parametrize("suffix,body", [
    ("ics", "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:面談\r\n"
            "DESCRIPTION:本人確認 個人番号 {a}\r\n {b}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"),
    ("vcf", "BEGIN:VCARD\nVERSION:4.0\nFN:山田太郎\nNOTE:マイナンバー {a}\n\t{b}\nEND:VCARD\n"),
])
def test_folded_calendar_and_vcard_through_the_document_path(tmp_path, suffix, body):
    from mailguard.config import LimitsConfig
    from mailguard.scan import scan_file

    split = g(N1, "-")
    path = tmp_path / f"a.{suffix}"
    path.write_text(body.format(a=split[:7], b=split[7:]), encoding="utf-8")
    report = scan_file(path, LimitsConfig())
    assert [(f.masked, f.confidence) for f in report.findings] == [(mask(N1), "high")]
    # negative: the same folded lines outside an iCalendar/vCard object stay two lines
    plain = tmp_path / "b.txt"
    plain.write_text(body.format(a=split[:7], b=split[7:]).replace("BEGIN:", "START:"), encoding="utf-8")
    assert scan_file(plain, LimitsConfig()).findings == ()


# ------------------------------------------------------------------ box forms

BOXES = [" ", "  ", "\t", "|", " | ", "\u3000", "｜"]


@pytest.mark.parametrize("box", BOXES, ids=["space", "2-spaces", "tab", "bar", "spaced-bar", "fw-space", "fw-bar"])
@pytest.mark.parametrize("label", ["個人番号 ", "個人番号（マイナンバー）\n", "マイナンバー：", "本人の個人番号欄 "])
def test_box_form_after_a_label(box, label):
    shown = box.join(N1)
    text = f"扶養控除等申告書\n{label}{shown}\n氏名 山田太郎"
    f = one(text)
    assert (f.masked, f.confidence) == (mask(N1), "high") and "box" in f.reason
    assert text[f.start:f.end] == shown


@pytest.mark.parametrize("text", [
    "結果 " + " ".join(N1),  # no label: runs of single digits are common in data
    "個人番号 " + " ".join(invalid(N1)),  # check digit fails
    "個人番号 " + " ".join(N1) + " 7",  # thirteen boxes
    "個人番号 " + " ".join(N1[:11]),  # eleven boxes
    "個人番号の記載は不要です。" + "あ" * 40 + " ".join(N1),  # label too far away
    "伝票番号 " + " ".join(N1),  # a negative label is no label
], ids=["no-label", "invalid", "13-boxes", "11-boxes", "far-label", "negative-label"])
def test_box_form_negatives(text):
    assert found(text) == []


def test_box_form_pdf_through_the_document_path(tmp_path):
    import docs_fixtures as fx

    from mailguard.config import LimitsConfig
    from mailguard.scan import scan_file

    path = tmp_path / "申告書.pdf"
    path.write_bytes(fx.make_pdf([f"個人番号 {' '.join(N1)}"]))
    report = scan_file(path, LimitsConfig())
    assert [(f.masked, f.confidence) for f in report.findings] == [(mask(N1), "high")]
    other = tmp_path / "結果.pdf"
    other.write_bytes(fx.make_pdf([f"得点 {' '.join(N1)}"]))
    assert scan_file(other, LimitsConfig()).findings == ()


# ------------------------------------------------------------ kanji numerals

KANJI = str.maketrans("0123456789", "〇一二三四五六七八九")


@pytest.mark.parametrize("shape", ["flat", "space", "nakaguro", "hyphen", "zero-rei"])
def test_kanji_numerals_after_a_label(shape):
    k = N1.translate(KANJI)
    shown = {"flat": k, "space": g(k, " "), "nakaguro": g(k, "・"), "hyphen": g(k, "-"),
             "zero-rei": k.replace("〇", "零")}[shape]
    text = f"申請者のマイナンバーは{shown}です。"
    f = one(text)
    assert (f.masked, f.confidence) == (mask(N1), "high") and "kanji" in f.reason
    assert text[f.start:f.end] == shown


@pytest.mark.parametrize("text", [
    "第" + N1.translate(KANJI) + "号",  # no label
    "個人番号は" + invalid(N1).translate(KANJI),
    "個人番号は" + N1.translate(KANJI) + "三",  # thirteen numerals
    "個人番号は一二三四五六七八九〇一二三四五六",
    "個人番号について。" + "説明" * 15 + N1.translate(KANJI),  # label too far
], ids=["no-label", "invalid", "13", "16", "far-label"])
def test_kanji_numeral_negatives(text):
    assert found(text) == []


# -------------------------------------------------------------------- masking

from mailguard.log import scrub  # noqa: E402

_FROM_KANJI = str.maketrans("〇一二三四五六七八九零", "01234567890")
_TO_KANJI = str.maketrans("0123456789", "〇一二三四五六七八九")


def _recoverable(out: str, n: str) -> bool:
    """Could the clear number be read back from `out`, in any spelling?"""
    import unicodedata

    digits = "".join(c for c in unicodedata.normalize("NFKC", out.translate(_FROM_KANJI)) if c.isdigit())
    return n in digits


SPELLINGS = {
    "nakaguro": g(N1, "・"), "halfwidth-nakaguro": g(N1, "･"), "space-hyphen-space": g(N1, " - "),
    "space-run": g(N1, "    "), "fullwidth-spaces": g(N1, "\u3000\u3000"),
    "fullwidth-digits": g(N1.translate(str.maketrans("0123456789", "０１２３４５６７８９")), "\u3000"),
    "zwsp": g(N1, "\u200b"), "soft-hyphen": N1[:6] + "\u00ad" + N1[6:], "bidi": "\u2066" + g(N1, "-") + "\u2069",
    "word-joiner-space": g(N1, "\u2060 "), "box-spaces": " ".join(N1), "box-bars": "|".join(N1),
    "box-spaced-bars": " | ".join(N1), "box-tabs": "\t".join(N1), "kanji": N1.translate(_TO_KANJI),
    "kanji-grouped": g(N1.translate(_TO_KANJI), "・"), "quoted-wrap": f"{N1[:4]} {N1[4:8]}\n> {N1[8:]}",
    "folded": f"{N1[:6]}\r\n {N1[6:]}",
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_scrub_masks_every_spelling_the_detector_reads(spelling):
    shown = SPELLINGS[spelling]
    out = scrub(f"件名 {shown} 送付")
    assert not _recoverable(out, N1)
    assert out.startswith("件名 ") and out.endswith(" 送付") and "********" in out


@pytest.mark.parametrize("text", ["tel 03-1234-5678", "2026-11-26T07:46:42.123456+00:00", "一二三四五六七八九〇一",
                                  "第一二三号", "1 2 3 4 5 6 7 8 9 0 1"])
def test_scrub_leaves_short_runs_in_any_spelling(text):
    assert scrub(text) == text


@pytest.mark.parametrize("spelling", ["nakaguro", "space-hyphen-space", "zwsp", "box-spaces", "kanji"])
def test_scan_cli_masks_new_spellings(tmp_path, capsys, monkeypatch, spelling):
    from mailguard.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "policies").mkdir()
    shown = SPELLINGS[spelling]
    # the number in the file name (printed by the CLI) and in the content (found)
    path = tmp_path / f"名簿 {shown.replace('|', '_')}.txt"
    path.write_text(f"個人番号 {shown}\n", encoding="utf-8")
    assert main(["scan", str(path)]) == 0
    out = capsys.readouterr()
    assert not _recoverable(out.out + out.err, N1)
    assert mask(N1) in out.out and "1 person(s)" in out.out
    assert main(["scan", str(path), "--json"]) == 0
    out = capsys.readouterr()
    assert not _recoverable(out.out + out.err, N1)
