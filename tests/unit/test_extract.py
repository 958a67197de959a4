"""Extraction end to end: fixtures built with the real libraries -> spans -> findings.

Numbers are synthetic (docs_fixtures.my_number) and never shown: assertions
compare booleans and masked values, parametrize ids name the carrier only.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import docs_fixtures as fx  # noqa: E402

from mailguard.config import LimitsConfig  # noqa: E402
from mailguard.detect import mask  # noqa: E402
from mailguard.scan import extract_document, extract_message, scan_message  # noqa: E402

LIMITS = LimitsConfig()
N1, N2, N3 = fx.my_number(11), fx.my_number(12), fx.my_number(13)


def _digits(text: str) -> str:
    return re.sub(r"[\s\-.]", "", text)


def spans_with(extraction, number: str) -> list:
    return [s for s in extraction.spans if number in _digits(s.text)]


def locations_with(extraction, number: str) -> set[str]:
    return {s.location for s in spans_with(extraction, number)}


def cells_with(extraction, number: str) -> list[tuple[str, str, str]]:
    """(location, header, group) of the spans holding the number: no text, safe to show."""
    return [(s.location, s.header, s.group) for s in spans_with(extraction, number)]


def has(extraction, number: str) -> bool:
    return bool(spans_with(extraction, number))


def finding_at(report, number: str, location: str) -> bool:
    return any(f.masked == mask(number) and f.location == location for f in report.findings)


# ------------------------------------------------------------ bodies

@pytest.mark.parametrize("charset,cte", [
    ("utf-8", "base64"), ("utf-8", "quoted-printable"), ("utf-8", "8bit"),
    ("iso-2022-jp", "7bit"), ("shift_jis", "8bit"), ("shift_jis", "base64"),
    ("euc-jp", "8bit"), ("cp932", "quoted-printable"),
], ids=lambda v: str(v))
def test_body_in_each_charset(charset, cte):
    body = f"お世話になります。\n個人番号は {fx.grouped(N1)} です。\n"
    data = fx.make_message(body=body, charset=charset, cte=cte)
    report = scan_message(data, LIMITS)
    found = finding_at(report, N1, "body")
    assert found, f"number not found in a {charset}/{cte} body"
    assert report.persons == 1


def test_quoted_printable_soft_break_inside_number():
    import quopri

    body = quopri.encodestring("マイナンバー ".encode()) + N1[:5].encode() + b"=\r\n" + \
        N1[5:].encode() + b"\r\n"
    data = (b"From: a@b\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)
    found = finding_at(scan_message(data, LIMITS), N1, "body")
    assert found


def test_html_body_keeps_cell_boundaries():
    html = (f"<table><tr><th>氏名</th><th>個人番号</th></tr><tr><td>山田</td><td>{N1}</td></tr>"
            f"</table><script>var x='{N2}'</script>")
    data = fx.make_message(body="see html", html=html)
    ex = extract_message(data, LIMITS)
    assert locations_with(ex, N1) == {"body"}
    assert not has(ex, N2)  # script is not shown to the recipient


def test_subject_and_filename():
    data = fx.make_message(subject=f"個人番号 {N1} の件", body="本文",
                           attachments=[(f"名簿{N2}.txt", b"hello")])
    ex = extract_message(data, LIMITS)
    assert "header:Subject" in locations_with(ex, N1)
    name_locs = locations_with(ex, N2)
    assert any(loc.endswith("#name") for loc in name_locs)
    # The location shown to admins masks the number in the file name.
    assert all(N2 not in loc for loc in name_locs)


@pytest.mark.parametrize("style", ["rfc2231", "rfc2047"])
def test_attachment_name_styles(style):
    data = fx.make_message(attachments=[("名簿.csv", f"氏名,個人番号\n山田,{N1}\n".encode("cp932"))],
                           name_style=style)
    ex = extract_message(data, LIMITS)
    assert locations_with(ex, N1) == {"attachment:名簿.csv!B2"}
    assert cells_with(ex, N1) == [("attachment:名簿.csv!B2", "個人番号", "attachment:名簿.csv")]


# ------------------------------------------------------------ office

def test_xlsx_cells_headers_and_group():
    rows = [["職員名簿"], ["氏名", "個人番号", "備考"], ["山田", int(N1), ""], ["佐藤", int(N2), "x"]]
    data = fx.make_message(attachments=[("名簿.xlsx", fx.make_xlsx(rows))])
    ex = extract_message(data, LIMITS)
    assert locations_with(ex, N1) == {"attachment:名簿.xlsx/Sheet1!B3"}
    assert cells_with(ex, N2) == [("attachment:名簿.xlsx/Sheet1!B4", "個人番号",
                                   "attachment:名簿.xlsx/Sheet1")]
    report = scan_message(data, LIMITS)
    assert report.persons == 2
    assert any(a.mime_type.endswith("spreadsheetml.sheet") and a.name == "名簿.xlsx"
               for a in report.attachments)


def test_xlsx_float_exponent_cell_is_read_exactly_and_furigana_skipped():
    exp = f"{N1[0]}.{N1[1:]}E+11"
    shared = ["<t>個人番号</t>",
              f"<r><t>山田 {N2}</t></r><rPh sb=\"0\" eb=\"2\"><t>ヤマダ</t></rPh>"]
    data = fx.make_xlsx_raw(shared, [("A1", "s", "1"), ("B1", "s", "0"), ("A2", "s", "1"),
                                     ("B2", "n", exp)])
    ex = extract_document(data, "名簿.xlsx", LIMITS)
    assert locations_with(ex, N1) == {"file:名簿.xlsx/名簿!B2"}
    texts = {s.text for s in ex.spans}
    has_name, has_furigana = f"山田 {N2}" in texts, any("ヤマダ" in t for t in texts)
    assert (has_name, has_furigana) == (True, False)


def test_docx_body_table_header_footer_comment():
    data = fx.make_docx(paragraphs=[f"個人番号：{N1}"],
                        table=[["氏名", "個人番号"], ["山田", N2]],
                        header=f"控え {N3}", footer="総務課", comment=f"番号 {fx.my_number(14)}")
    ex = extract_document(data, "a.docx", LIMITS)
    assert locations_with(ex, N1) == {"file:a.docx/document"}
    assert cells_with(ex, N2) == [("file:a.docx/document/table1!B2", "個人番号",
                                   "file:a.docx/document/table1")]
    assert locations_with(ex, N3) == {"file:a.docx/header1"}
    assert locations_with(ex, fx.my_number(14)) == {"file:a.docx/comments"}


def test_pptx_slide_notes_table_textbox():
    data = fx.make_pptx(slides=[f"番号 {N1}"], notes=f"メモ {N2}",
                        table=[["氏名", "個人番号"], ["山田", N3]], textbox=f"{fx.my_number(14)}")
    ex = extract_document(data, "a.pptx", LIMITS)
    assert locations_with(ex, N1) == {"file:a.pptx/slide1"}
    assert locations_with(ex, N2) == {"file:a.pptx/notes1"}
    assert [h for _, h, _ in cells_with(ex, N3)] == ["個人番号"]
    assert locations_with(ex, fx.my_number(14)) == {"file:a.pptx/slide1"}


def test_odt_and_ods_exact_float():
    ex = extract_document(fx.make_odt([f"個人番号 {N1}"]), "a.odt", LIMITS)
    assert locations_with(ex, N1) == {"file:a.odt"}
    ex = extract_document(fx.make_ods([["氏名", "個人番号"], ["山田", int(N2)]]), "a.ods", LIMITS)
    assert cells_with(ex, N2) == [("file:a.ods/名簿!B2", "個人番号", "file:a.ods/名簿")]


def test_pdf_japanese_cid_font():
    data = fx.make_pdf([f"個人番号一覧\n山田　{N1}", f"佐藤　{fx.grouped(N2, ' ')}"])
    ex = extract_document(data, "a.pdf", LIMITS)
    assert locations_with(ex, N1) == {"file:a.pdf/page1"}
    assert locations_with(ex, N2) == {"file:a.pdf/page2"}
    keyword = any("個人番号" in s.text for s in ex.spans)
    assert keyword


def test_pdf_encrypted_with_password_is_unscannable_and_empty_password_is_read():
    from pypdf import PdfReader, PdfWriter

    def encrypt(user: str) -> bytes:
        w = PdfWriter(clone_from=PdfReader(io.BytesIO(fx.make_pdf([f"番号 {N1}"]))))
        w.encrypt(user_password=user, owner_password="owner", algorithm="AES-128")
        buf = io.BytesIO()
        w.write(buf)
        return buf.getvalue()

    locked = extract_document(encrypt("secret"), "a.pdf", LIMITS)
    assert [u.reason for u in locked.unscannable] == ["encrypted PDF (password required)"]
    assert not has(locked, N1)
    opened = extract_document(encrypt(""), "b.pdf", LIMITS)
    assert has(opened, N1)
    assert not opened.unscannable


# ------------------------------------------------------------ archives

def test_zip_in_zip_with_cp932_names_and_gzip():
    inner = fx.make_zip({"名簿.csv": f"個人番号\n{N1}\n".encode("cp932")}, cp932_names=True)
    outer = fx.make_zip({"内側.zip": inner, "b.txt.gz": fx.make_gzip(f"番号 {N2}".encode(), "b.txt")})
    data = fx.make_message(attachments=[("外側.zip", outer)])
    ex = extract_message(data, LIMITS)
    assert locations_with(ex, N1) == {"attachment:外側.zip/内側.zip/名簿.csv!A2"}
    assert locations_with(ex, N2) == {"attachment:外側.zip/b.txt.gz/b.txt"}


@pytest.mark.parametrize("kind,reason", [
    ("zipcrypto", "encrypted zip entry (ZipCrypto)"),
    ("aes", "encrypted zip entry (WinZip AES)"),
    ("strong", "encrypted zip entry (PKWARE strong encryption)"),
])
def test_encrypted_zip_entries_are_unscannable(kind, reason):
    data = fx.mark_zip_encrypted(fx.make_zip({"名簿.csv": N1.encode()}), kind)
    ex = extract_document(data, "a.zip", LIMITS)
    assert [(u.location, u.reason) for u in ex.unscannable] == [("file:a.zip/名簿.csv", reason)]


def test_forwarded_message():
    inner = fx.make_message(subject=f"番号 {N1}", body=f"マイナンバー {N2}",
                            attachments=[("a.xlsx", fx.make_xlsx([["個人番号"], [int(N3)]]))])
    ex = extract_message(fx.make_forward(inner), LIMITS)
    assert locations_with(ex, N1) == {"attachment:forwarded.eml/header:Subject"}
    assert locations_with(ex, N2) == {"attachment:forwarded.eml/body"}
    assert locations_with(ex, N3) == {"attachment:forwarded.eml/attachment:a.xlsx/Sheet1!A2"}


def test_eml_attached_as_octet_stream_is_read_as_message():
    inner = fx.make_message(body=f"個人番号 {N1}")
    ex = extract_message(fx.make_message(attachments=[("old.dat", inner)]), LIMITS)
    assert locations_with(ex, N1) == {"attachment:old.dat/body"}


def test_disguised_type_is_read_by_content():
    xlsx = fx.make_xlsx([["個人番号"], [int(N1)]])
    part = fx.as_attachment("photo.jpg", xlsx, "image", "jpeg")
    ex = extract_message(fx.make_message(attachments=[("photo.jpg", part)]), LIMITS)
    assert locations_with(ex, N1) == {"attachment:photo.jpg/Sheet1!A2"}
    assert ex.attachments[0].mime_type != "image/jpeg"


# ------------------------------------------------------- hostile input

def test_zip_bomb_stops_at_ratio_limit_without_reading_it_all():
    bomb = fx.make_zip({"zeros.txt": b"\0" * (30 << 20)})
    ex = extract_document(bomb, "bomb.zip", LIMITS)
    assert [u.reason for u in ex.unscannable] == ["expansion ratio limit (100:1) exceeded"]


def test_expanded_bytes_budget():
    members = {f"m{i}.txt": bytes(range(256)) * 4096 for i in range(8)}  # 1 MiB each
    limits = dataclasses.replace(LIMITS, max_expanded_bytes=3 << 20)
    ex = extract_document(fx.make_zip(members), "big.zip", limits)
    assert any("expanded size limit" in u.reason for u in ex.unscannable)


def test_nesting_depth_limit_quine_like():
    blob = fx.make_zip({"x.txt": b"x"})
    for i in range(8):
        blob = fx.make_zip({f"z{i}.zip": blob})
    ex = extract_document(blob, "deep.zip", LIMITS)
    assert any(u.reason.startswith("nested deeper than 5") for u in ex.unscannable)


def test_member_count_limit():
    data = fx.make_zip({f"f{i}.txt": b"a" for i in range(50)})
    ex = extract_document(data, "many.zip", dataclasses.replace(LIMITS, max_parts=10))
    assert any("more than 10 parts" in u.reason for u in ex.unscannable)


def test_zip_slip_names_are_labels_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = fx.make_zip({"../../../../tmp/evil.txt": f"個人番号 {N1}".encode()})
    ex = extract_document(data, "slip.zip", LIMITS)
    assert has(ex, N1)
    assert list(tmp_path.iterdir()) == [] and not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize("kind,blob", [
    ("truncated-xlsx", fx.make_xlsx([["a"]])[:700]),
    ("garbage-pdf", b"%PDF-1.7\n" + bytes(range(256)) * 20),
    ("random-binary", bytes(range(256)) * 50),
    ("empty-zip", b"PK\x05\x06" + b"\0" * 18),
    ("bad-gzip", b"\x1f\x8b\x08\x00" + b"\xff" * 100),
    ("bad-ole", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600),
], ids=lambda v: v if isinstance(v, str) else "")
def test_corrupt_attachments_are_unscannable_never_clean_never_raise(kind, blob):
    ex = extract_message(fx.make_message(attachments=[("f.bin", blob)]), LIMITS)
    if kind != "empty-zip":
        assert ex.unscannable, kind


def test_broken_images_are_unscannable():
    # Images are read by OCR (issue 12, tests/unit/test_ocr_extract.py); one
    # that cannot be decoded is unscannable, never clean.
    png = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 40
    ex = extract_message(fx.make_message(attachments=[("scan.png", png)]), LIMITS)
    assert [u.location for u in ex.unscannable] == ["attachment:scan.png"]
    assert ex.unscannable[0].reason.startswith("image (image/png): ")


def test_time_limit_gives_partial_report():
    data = fx.make_message(body=f"個人番号 {N1}", attachments=[("a.xlsx", fx.make_xlsx([[1]]))])
    ex = extract_message(data, LIMITS, deadline=0.0)
    assert ("message", "scan time limit exceeded") in [(u.location, u.reason) for u in ex.unscannable]
