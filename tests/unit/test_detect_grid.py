"""Numbers a person reads across table cells (issue 11 items 1, 3, 5, 8).

Real files (openpyxl, python-docx, odfpy, HTML as Excel pastes it, a
fixed-width export), each with a negative beside it. Numbers are synthetic
(tests/mynumbers.py); assertions compare, never print them.
"""

from __future__ import annotations

import io

import pytest

import docs_fixtures as fx
from mynumbers import complete, my_numbers

from mailguard import detect
from mailguard.config import LimitsConfig
from mailguard.detect import Span
from mailguard.scan import extract_document, scan_message

LIMITS = LimitsConfig()


def scan_doc(data: bytes, name: str):
    return detect.detect(extract_document(data, name, LIMITS).spans)


class Numbers(frozenset):
    """A set of numbers whose repr is masked, so a failing assert prints no number."""

    def __repr__(self) -> str:
        return "{" + ", ".join(sorted("********" + n[-4:] for n in self)) + "}"


def numbers_of(result) -> Numbers:
    return Numbers(f.number for f in result.findings)


def masked(nums) -> Numbers:
    return Numbers(nums)


def split444(n: str) -> list[str]:
    return [n[:4], n[4:8], n[8:]]


def workbook(fill) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "Sheet1"
    fill(wb.active)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# ------------------------------------------------------------------- xlsx

def test_xlsx_three_4digit_cells_under_merged_header():
    n = my_numbers(1, seed=11)[0]

    def fill(ws):
        ws.append(["氏名", "個人番号", None, None, "備考"])
        ws.merge_cells("B1:D1")
        ws.append(["山田", *split444(n), "なし"])

    result = scan_doc(workbook(fill), "名簿.xlsx")
    assert numbers_of(result) == masked({n})
    f = result.findings[0]
    assert f.confidence == "high"
    assert f.location == "file:名簿.xlsx/Sheet1!B2:D2"
    assert "4-4-4" in f.reason and "個人番号" in f.reason
    assert n not in f.reason and result.persons == 1


def test_xlsx_phone_column_next_to_id_column_joins_nothing():
    # Adversarial: every phone+ID pair happens to make a valid number, and there
    # are enough rows for the list rule. They are unrelated columns: nothing.
    nums = my_numbers(8, seed=12)

    def fill(ws):
        ws.append(["氏名", "電話", "職員ID"])
        for i, n in enumerate(nums):
            ws.append([f"職員{i}", n[:6], n[6:]])

    result = scan_doc(workbook(fill), "職員.xlsx")
    assert result.findings == () and result.persons == 0


def test_xlsx_amounts_in_adjacent_cells_without_label_join_nothing():
    valid = my_numbers(3, seed=13)

    def fill(ws):
        ws.append(["売上集計"])
        for n in valid:  # even valid joins: no header, no label, no list
            ws.append(split444(n))

    result = scan_doc(workbook(fill), "売上.xlsx")
    assert result.findings == ()


def test_xlsx_list_rule_joins_a_column_group():
    nums = my_numbers(6, seed=14)

    def fill(ws):
        for n in nums:
            ws.append(split444(n))

    result = scan_doc(workbook(fill), "list.xlsx")
    assert numbers_of(result) == masked(nums) and result.persons == 6
    assert all("list rule" in f.reason for f in result.findings)


def test_xlsx_twelve_single_digit_boxes_after_label_cell():
    n = my_numbers(1, seed=15)[0]

    def fill(ws):
        ws.append(["扶養控除等申告書"])
        ws.append([])
        ws.append(["個人番号", *[int(d) for d in n]])

    result = scan_doc(workbook(fill), "申告書.xlsx")
    assert numbers_of(result) == masked({n})
    assert result.findings[0].location == "file:申告書.xlsx/Sheet1!B3:M3"
    assert "12 x 1" in result.findings[0].reason


def test_xlsx_twelve_boxes_without_label_or_one_short_join_nothing():
    n = my_numbers(1, seed=16)[0]

    def fill(ws):
        ws.append(["チェック欄", *[int(d) for d in n]])  # not a My Number label
        ws.append(["個人番号", *[int(d) for d in n[:11]]])  # 11 boxes

    assert scan_doc(workbook(fill), "form.xlsx").findings == ()


def test_xlsx_vertical_boxes_under_label():
    n = my_numbers(1, seed=17)[0]

    def fill(ws):
        ws["B1"] = "個人番号"
        for i, d in enumerate(n, 2):
            ws.cell(row=i, column=2, value=int(d))

    result = scan_doc(workbook(fill), "v.xlsx")
    assert numbers_of(result) == masked({n})
    assert result.findings[0].location == "file:v.xlsx/Sheet1!B2:B13"


def _leading_zero(seed: int) -> str:
    for k in range(100):
        n = complete("0" + str(10**9 + seed * 7919 + k * 104729)[:10])
        if n[1] != "0" and len(set(n)) > 1:
            return n
    raise AssertionError


def test_xlsx_eleven_digit_numeric_under_header_is_zero_padded():
    n = _leading_zero(1)

    def fill(ws):
        ws.append(["氏名", "個人番号"])
        ws.append(["山田", int(n)])  # Excel stores 11 digits

    result = scan_doc(workbook(fill), "zero.xlsx")
    assert numbers_of(result) == masked({n}) and result.persons == 1
    assert "leading 0" in result.findings[0].reason


def test_xlsx_eleven_digit_numeric_beside_label():
    n = _leading_zero(2)

    def fill(ws):
        ws.append(["申請書"])
        ws.append(["マイナンバー", int(n)])

    assert numbers_of(scan_doc(workbook(fill), "z.xlsx")) == masked({n})


def test_xlsx_eleven_digit_number_without_header_is_nothing():
    n = _leading_zero(3)

    def fill(ws):
        ws.append(["氏名", "携帯"])
        ws.append(["山田", int(n)])
        ws.append(["田中", int(n[1:])])

    assert scan_doc(workbook(fill), "tel.xlsx").findings == ()


@pytest.mark.parametrize("fmt, grouped", [("000000000000", False), ("0000-0000-0000", True),
                                          ('0000"-"0000"-"0000', True)])
def test_xlsx_number_format_padding_to_12_is_read_as_displayed(fmt, grouped):
    n = _leading_zero(4)

    def fill(ws):
        ws.append(["氏名", "番号"])
        ws.append(["山田", int(n)])
        ws["B2"].number_format = fmt

    result = scan_doc(workbook(fill), "fmt.xlsx")
    assert numbers_of(result) == masked({n})
    assert result.findings[0].confidence == ("medium" if grouped else "low")


def test_xlsx_other_number_formats_are_not_padded():
    n = _leading_zero(5)

    def fill(ws):
        ws.append(["氏名", "金額"])
        ws.append(["山田", int(n)])
        ws["B2"].number_format = "#,##0"

    assert scan_doc(workbook(fill), "amount.xlsx").findings == ()


def test_persons_exact_and_over_100_with_joins():
    nums = my_numbers(120, seed=18)
    rows = [["氏名", "個人番号", "", ""]] + [[f"住民{i}", *split444(n)] for i, n in enumerate(nums)]
    rows.append(["重複", *split444(nums[0])])  # the same person twice
    msg = fx.make_message(attachments=[("名簿.xlsx", fx.make_xlsx(rows))])
    report = scan_message(msg, LIMITS)
    assert report.persons == 120 and report.persons_high == 120


# -------------------------------------------------------- docx, odt, ods

def test_docx_table_cells_joined_under_header():
    n = my_numbers(1, seed=21)[0]
    data = fx.make_docx(["送付します"], table=[["氏名", "個人番号", "", ""], ["山田", *split444(n)]])
    result = scan_doc(data, "a.docx")
    assert numbers_of(result) == masked({n})
    assert result.findings[0].location == "file:a.docx/document/table1!B2:D2"


def test_docx_table_of_amounts_joins_nothing():
    n = my_numbers(1, seed=22)[0]
    data = fx.make_docx(table=[["品目", "4月", "5月", "6月"], ["用紙", *split444(n)]])
    assert scan_doc(data, "b.docx").findings == ()


def _odf_table(doc_cls, rows):
    from odf.opendocument import OpenDocumentSpreadsheet, OpenDocumentText  # noqa: F401
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import P

    doc = doc_cls()
    table = Table(name="表1")
    table.addElement(TableColumn(numbercolumnsrepeated=max(map(len, rows))))
    for row in rows:
        tr = TableRow()
        for value in row:
            if isinstance(value, int):
                cell = TableCell(valuetype="float", value=str(value))
                cell.addElement(P(text=str(value)))
            else:
                cell = TableCell(valuetype="string")
                cell.addElement(P(text=value))
            tr.addElement(cell)
        table.addElement(tr)
    (doc.spreadsheet if hasattr(doc, "spreadsheet") and doc.spreadsheet is not None
     else doc.text).addElement(table)
    buf = io.BytesIO()
    doc.write(buf)
    return buf.getvalue()


def test_odt_table_boxes_beside_label_and_negative():
    from odf.opendocument import OpenDocumentText

    n = my_numbers(1, seed=23)[0]
    good = _odf_table(OpenDocumentText, [["氏名", "山田"], ["個人番号", *list(n)]])
    result = scan_doc(good, "a.odt")
    assert numbers_of(result) == masked({n})
    bad = _odf_table(OpenDocumentText, [["受付番号", *list(n)]])  # a negative label
    assert scan_doc(bad, "b.odt").findings == ()


def test_ods_eleven_digit_and_split_cells_under_header():
    from odf.opendocument import OpenDocumentSpreadsheet

    a, b = _leading_zero(6), my_numbers(1, seed=24)[0]
    data = _odf_table(OpenDocumentSpreadsheet,
                      [["氏名", "個人番号", "個人番号(分割)", "", ""],
                       ["山田", int(a), *split444(b)]])
    assert numbers_of(scan_doc(data, "a.ods")) == masked({a, b})
    neg = _odf_table(OpenDocumentSpreadsheet, [["氏名", "電話", "", ""], ["山田", int(a), *split444(b)[:2]]])
    assert scan_doc(neg, "b.ods").findings == ()


# -------------------------------------------------------------- HTML mail

EXCEL_PASTE = """<html xmlns:o="urn:schemas-microsoft-com:office:office"
xmlns:x="urn:schemas-microsoft-com:office:excel"><body lang=JA>
<p class=MsoNormal>下記の通りです。<o:p></o:p></p>
<table border=0 cellpadding=0 cellspacing=0 width=360 style='border-collapse:collapse'>
 <col width=72 span=5>
 <tr height=18 style='height:13.5pt'>
  <td height=18 class=xl65 width=72 style='height:13.5pt'>氏名</td>
  <td colspan=3 class=xl66 width=216 style='border-left:none'>{label}</td>
  <td class=xl65 width=72>備考</td>
 </tr>
{rows}</table></body></html>"""


def _paste(label: str, groups: list[list[str]]) -> str:
    rows = "".join(
        " <tr height=18>\n  <td height=18 class=xl67>氏名%d</td>\n" % i
        + "".join(f"  <td class=xl68 align=right style='mso-number-format:\"\\@\"'>{g}</td>\n" for g in gs)
        + "  <td class=xl67>&nbsp;</td>\n </tr>\n"
        for i, gs in enumerate(groups))
    return EXCEL_PASTE.format(label=label, rows=rows)


def test_html_table_pasted_from_excel():
    nums = my_numbers(2, seed=31)
    msg = fx.make_message(body="下記の通りです。", html=_paste("個人番号", [split444(n) for n in nums]))
    report = scan_message(msg, LIMITS)
    assert numbers_of(report) == masked(nums) and report.persons == 2
    assert {f.location for f in report.findings} == {"body/table1!B2:D2", "body/table1!B3:D3"}


def test_html_table_of_amounts_joins_nothing():
    nums = my_numbers(2, seed=32)
    msg = fx.make_message(html=_paste("金額（円）", [split444(n) for n in nums]))
    assert scan_message(msg, LIMITS).findings == ()


def test_html_without_table_close_tags():
    n = my_numbers(1, seed=33)[0]
    html = "<table><tr><td>個人番号<td>%s<td>%s<td>%s</table>" % tuple(split444(n))
    msg = fx.make_message(html=html)
    assert numbers_of(scan_message(msg, LIMITS)) == masked({n})


# ------------------------------------------------------- fixed-width export

def _field(value: bytes) -> bytes:
    return value.ljust(64, b"\0")


def test_fixed_width_export_is_read_as_records():
    nums = my_numbers(10, seed=41)
    data = b"".join(_field(f"{i:04d}".encode()) + _field("山田　太郎".encode("cp932")) + _field(n.encode())
                    + _field("東京都千代田区".encode("cp932")) for i, n in enumerate(nums))
    report = scan_message(fx.make_message(attachments=[("export.dat", data)]), LIMITS)
    assert numbers_of(report) == masked(nums)
    assert report.persons == 10 and report.unscannable == ()


def test_binary_looking_text_without_confident_decoding_is_unscannable():
    import random

    rnd = random.Random(5)
    data = b"".join(_field(bytes(rnd.randrange(128, 256) for _ in range(20))) for _ in range(40))
    report = scan_message(fx.make_message(attachments=[("x.dat", data)]), LIMITS)
    assert report.findings == ()
    assert [u.location for u in report.unscannable] == ["attachment:x.dat"]


def test_utf16_text_is_still_utf16():
    n = my_numbers(1, seed=42)[0]
    data = f"個人番号 {n}\r\n".encode("utf-16-le") * 3
    report = scan_message(fx.make_message(attachments=[("u.txt", data)]), LIMITS)
    assert numbers_of(report) == masked({n}) and report.unscannable == ()


# ----------------------------------------------------------- the detector

def test_spans_without_grid_place_never_join():
    n = my_numbers(1, seed=51)[0]
    spans = [Span(g, f"x!{c}1", "個人番号", "x") for c, g in zip("ABC", split444(n))]
    assert detect.detect(spans).findings == ()
    placed = [Span(g, f"x!{c}1", "個人番号", "x", 0, i) for i, (c, g) in enumerate(zip("ABC", split444(n)))]
    assert numbers_of(detect.detect(placed)) == masked({n})


def test_negative_header_blocks_join():
    n = my_numbers(1, seed=52)[0]
    spans = [Span(g, f"x!{c}2", "電話番号" if i == 0 else "", "x", 1, i)
             for i, (c, g) in enumerate(zip("ABC", split444(n)))]
    assert detect.detect(spans).findings == ()
