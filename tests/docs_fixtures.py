"""Builders of positive fixtures with the real libraries, for any test that needs them.

Every builder returns bytes. Numbers are synthetic and check-digit-valid
(`my_number(seed)`); never write a real one. Tests must not print them:
compare with booleans and masked values only.

    my_number(seed) -> 12 digits          make_message(...) -> .eml bytes
    make_xlsx(rows, ...) -> xlsx          make_xlsx_raw(...) -> xlsx with furigana / float cells
    make_docx(...)  make_pptx(...)  make_odt(...)  make_ods(...)  make_pdf(...)
    make_zip(members, encrypt=None)  make_gzip(data, name)  mark_zip_encrypted(zip, kind)
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import encode_rfc2231

from mynumbers import check_digit


def my_number(seed: int) -> str:
    """A synthetic, check-digit-valid 12-digit number (not a repeated digit)."""
    # First digit 1-9: the number survives being stored as an int (xlsx, ods).
    first11 = str(10**10 + (seed * 7919 + 31415926) * 104729 % (9 * 10**10))
    if len(set(first11)) == 1:
        first11 = "1" + first11[1:]
    return first11 + str(check_digit(first11))


def grouped(number: str, sep: str = "-") -> str:
    return sep.join((number[:4], number[4:8], number[8:]))


# ------------------------------------------------------------------- mail

def make_message(subject: str = "お知らせ", body: str = "本文", charset: str = "utf-8",
                 cte: str | None = None, html: str | None = None,
                 attachments: list[tuple[str, bytes]] = (), from_: str = "a@city.example.lg.jp",
                 to: str = "b@example.com", name_style: str = "rfc2231") -> bytes:
    """A message with a text (and optional HTML) body and attachments.

    charset: any Python codec name used for the body (iso-2022-jp, shift_jis,
    euc-jp, utf-8); cte: "base64", "quoted-printable", "8bit" or "7bit".
    name_style: "rfc2231" (filename*=UTF-8''...) or "rfc2047" (=?UTF-8?B?...?=).
    """
    text_part = _text_part(body, "plain", charset, cte)
    if html is not None:
        alt = MIMEMultipart("alternative")
        alt.attach(text_part)
        alt.attach(_text_part(html, "html", charset, cte))
        text_part = alt
    if attachments:
        msg = MIMEMultipart("mixed")
        msg.attach(text_part)
        for name, data in attachments:
            if isinstance(data, MIMEBase):
                part = data
            else:
                part = MIMEApplication(data, "octet-stream")
            if name_style == "rfc2231":
                part.add_header("Content-Disposition", "attachment",
                                filename=("utf-8", "", name))
            else:
                part["Content-Disposition"] = \
                    f'attachment; filename="{Header(name, "utf-8").encode()}"'
            msg.attach(part)
    else:
        msg = text_part
    msg["Subject"] = Header(subject, "iso-2022-jp" if charset == "iso-2022-jp" else "utf-8")
    msg["From"] = from_
    msg["To"] = to
    msg["Date"] = "Mon, 01 Apr 2024 09:00:00 +0900"
    msg["Message-ID"] = "<fixture@city.example.lg.jp>"
    msg["MIME-Version"] = "1.0"
    return msg.as_bytes()


def _text_part(text: str, subtype: str, charset: str, cte: str | None) -> MIMEBase:
    raw = text.encode(charset)
    part = MIMEBase("text", subtype)
    part.set_param("charset", charset)
    cte = cte or ("7bit" if charset == "iso-2022-jp" else "base64")
    if cte == "base64":
        import base64

        part.set_payload(base64.encodebytes(raw).decode("ascii"))
    elif cte == "quoted-printable":
        import quopri

        part.set_payload(quopri.encodestring(raw).decode("ascii"))
    else:
        part.set_payload(raw.decode("ascii", "surrogateescape"))
    part["Content-Transfer-Encoding"] = cte
    return part


def make_forward(inner: bytes, body: str = "転送します", subject: str = "Fwd") -> bytes:
    """A message carrying `inner` as a message/rfc822 attachment."""
    import email

    outer = MIMEMultipart("mixed")
    outer.attach(MIMEText(body, "plain", "utf-8"))
    attached = MIMEMessage(email.message_from_bytes(inner))
    attached.add_header("Content-Disposition", "attachment", filename="forwarded.eml")
    outer.attach(attached)
    outer["Subject"] = subject
    outer["From"] = "a@city.example.lg.jp"
    outer["To"] = "b@example.com"
    return outer.as_bytes()


# ---------------------------------------------------------------- office

def make_xlsx(rows: list[list], sheet: str = "Sheet1", extra_sheets: dict | None = None) -> bytes:
    """openpyxl workbook; ints are written as numbers (how Excel stores typed digits)."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for row in rows:
        ws.append(row)
    for name, more in (extra_sheets or {}).items():
        other = wb.create_sheet(name)
        for row in more:
            other.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def make_xlsx_raw(shared: list[str], cells: list[tuple[str, str, str]], sheet: str = "名簿") -> bytes:
    """A hand-written xlsx: `shared` are <si> bodies (raw XML, e.g. with <rPh>),
    `cells` are (ref, type, value) with type "s" (shared index), "n" (raw <v> text,
    e.g. "1.23456789018E+11") or "inlineStr"."""
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    rows: dict[int, list[str]] = {}
    for ref, typ, value in cells:
        r = int("".join(ch for ch in ref if ch.isdigit()))
        if typ == "inlineStr":
            xml = f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'
        elif typ == "s":
            xml = f'<c r="{ref}" t="s"><v>{value}</v></c>'
        else:
            xml = f'<c r="{ref}"><v>{value}</v></c>'
        rows.setdefault(r, []).append(xml)
    sheet_xml = (f'<?xml version="1.0" encoding="UTF-8"?><worksheet {ns}><sheetData>'
                 + "".join(f'<row r="{r}">{"".join(c)}</row>' for r, c in sorted(rows.items()))
                 + "</sheetData></worksheet>")
    files = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
        "_rels/.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<?xml version="1.0"?><workbook {ns} {rel_ns}><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
        "xl/sharedStrings.xml": f'<?xml version="1.0"?><sst {ns} count="{len(shared)}">'
                                + "".join(f"<si>{s}</si>" for s in shared) + "</sst>",
        "xl/worksheets/sheet1.xml": sheet_xml,
    }
    return make_zip({k: v.encode("utf-8") for k, v in files.items()})


def make_docx(paragraphs: list[str] = (), table: list[list[str]] | None = None,
              header: str = "", footer: str = "", comment: str = "") -> bytes:
    import docx

    doc = docx.Document()
    for text in paragraphs:
        doc.add_paragraph(text)
    if table:
        t = doc.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    if header:
        doc.sections[0].header.paragraphs[0].text = header
    if footer:
        doc.sections[0].footer.paragraphs[0].text = footer
    if comment:
        para = doc.add_paragraph("確認してください")
        doc.add_comment(para.runs, text=comment, author="fixture")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def make_pptx(slides: list[str] = (), notes: str = "", table: list[list[str]] | None = None,
              textbox: str = "") -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    layout = prs.slide_layouts[5]
    for text in slides or ["スライド"]:
        slide = prs.slides.add_slide(layout)
        slide.shapes.title.text = text
    slide = prs.slides[0]
    if notes:
        slide.notes_slide.notes_text_frame.text = notes
    if table:
        shape = slide.shapes.add_table(len(table), len(table[0]), Inches(1), Inches(2),
                                       Inches(6), Inches(2))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                shape.table.cell(r, c).text = value
    if textbox:
        box = slide.shapes.add_textbox(Inches(1), Inches(5), Inches(4), Inches(1))
        box.text_frame.text = textbox
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def make_odt(paragraphs: list[str]) -> bytes:
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    doc = OpenDocumentText()
    for text in paragraphs:
        doc.text.addElement(P(text=text))
    buf = io.BytesIO()
    doc.write(buf)
    return buf.getvalue()


def make_ods(rows: list[list], name: str = "名簿") -> bytes:
    """Numbers become float cells (office:value) displayed in exponent form."""
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    table = Table(name=name)
    for row in rows:
        tr = TableRow()
        for value in row:
            if isinstance(value, (int, float)):
                cell = TableCell(valuetype="float", value=str(value))
                cell.addElement(P(text=f"{float(value):.5E}"))
            else:
                cell = TableCell(valuetype="string")
                cell.addElement(P(text=str(value)))
            tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    buf = io.BytesIO()
    doc.write(buf)
    return buf.getvalue()


def make_pdf(pages: list[str], font: str = "HeiseiKakuGo-W5") -> bytes:
    """reportlab with a built-in Japanese CID font (no font download)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont(font))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for text in pages:
        c.setFont(font, 11)
        y = 800
        for line in text.splitlines() or [""]:
            c.drawString(50, y, line)
            y -= 16
            if y < 50:
                c.showPage()
                c.setFont(font, 11)
                y = 800
        c.showPage()
    c.save()
    return buf.getvalue()


# -------------------------------------------------------------- archives

def make_zip(members: dict[str, bytes], cp932_names: bool = False) -> bytes:
    """Deflated zip; cp932_names writes names as Shift_JIS bytes without the
    UTF-8 flag, as Windows' built-in zip and many Japanese tools do."""
    placeholders: dict[bytes, bytes] = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (name, data) in enumerate(members.items()):
            if cp932_names:
                sj = name.encode("cp932")
                ph = (f"{i}" + "~" * len(sj))[: len(sj)]
                placeholders[ph.encode("ascii")] = sj
                name = ph
            zf.writestr(name, data)
    raw = buf.getvalue()
    for ph, sj in placeholders.items():
        raw = raw.replace(ph, sj)  # same length: headers stay valid
    return raw


def _patch_flags(raw: bytes, set_: int = 0, clear: int = 0, method: int | None = None) -> bytes:
    out = bytearray(raw)
    for sig, flag_off, method_off in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        pos = out.find(sig)
        while pos >= 0:
            flags = struct.unpack_from("<H", out, pos + flag_off)[0]
            struct.pack_into("<H", out, pos + flag_off, (flags | set_) & ~clear)
            if method is not None:
                struct.pack_into("<H", out, pos + method_off, method)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def mark_zip_encrypted(raw: bytes, kind: str) -> bytes:
    """Set the header bits an encrypting zip tool sets (content stays as is):
    "zipcrypto" (bit 0), "aes" (bit 0 + method 99), "strong" (bits 0 and 6)."""
    if kind == "zipcrypto":
        return _patch_flags(raw, set_=0x1)
    if kind == "aes":
        return _patch_flags(raw, set_=0x1, method=99)
    if kind == "strong":
        return _patch_flags(raw, set_=0x41)
    raise ValueError(kind)


def make_gzip(data: bytes, name: str = "meibo.csv") -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def as_attachment(name: str, data: bytes, maintype: str = "application",
                  subtype: str = "octet-stream") -> MIMEBase:
    part = MIMEBase(maintype, subtype)
    part.set_payload(data)
    from email import encoders

    encoders.encode_base64(part)
    return part


__all__ = [n for n in dir() if n.startswith(("make_", "my_number", "grouped", "mark_", "check_"))]
_ = encode_rfc2231  # re-exported for tests building their own RFC 2231 headers
