"""Images wherever they are go through OCR (issue 12): attachments, pictures in
Office and OpenDocument files, scanned PDF pages; decorative images are
skipped with a reason; anything unreadable is unscannable; numbers read by OCR
are told apart from text for the policy.

Images are drawn with Pillow and IPA Gothic (tests/ocr_images.py). OCR costs
1-3 s per image here, so each test reads as few as it can; tests that need no
Tesseract run everywhere. Numbers come from tests/mynumbers.py, never printed.
"""

from __future__ import annotations

import dataclasses
import io
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import docs_fixtures as fx
from mailguard.config import LimitsConfig
from mailguard.facts import build_facts
from mailguard.policy import decide, load_policy
from mailguard.records import Facts
from mailguard.scan import extract_message, scan_file, scan_message
from ocr_images import NUMBER, card, chart, encode, logo, require_engine

ROOT = Path(__file__).resolve().parents[2]
LIMITS = LimitsConfig()
SHIPPED = load_policy(ROOT / "policies")
SENDER = "clerk@city.example.lg.jp"
OUTSIDE = "tanto@example.com"


@pytest.fixture(scope="module")
def engine() -> None:
    require_engine()


def ocr_hits(report, location: str) -> bool:
    """The card's number found at medium or high, read by OCR, at `location`."""
    return any(f.number == NUMBER and f.confidence in ("high", "medium") and f.from_ocr
               and f.location == location for f in report.findings)


def outside(data: bytes, report) -> str:
    facts = build_facts(SENDER, [OUTSIDE], data, report, ["city.example.lg.jp"])
    return decide(facts, SHIPPED).action


def png_bytes(im: Image.Image) -> bytes:
    return encode(im, "PNG")


# ---------------------------------------------------------------- read by OCR


def test_card_photo_attachment_is_read_and_held(engine):
    jpg = encode(card(), "JPEG", quality=85)
    data = fx.make_message(body="資料を送ります", attachments=[
        ("IMG_0421.JPG", fx.as_attachment("IMG_0421.JPG", jpg, "image", "jpeg"))])
    report = scan_message(data, LIMITS)
    assert ocr_hits(report, "attachment:IMG_0421.JPG (OCR)")
    assert report.persons == 1 and report.ocr_persons[1] == 1 and report.text_persons == (0, 0, 0)
    assert not report.unscannable
    assert outside(data, report) == "hold"
    facts = build_facts(SENDER, [OUTSIDE], data, report, ["city.example.lg.jp"])
    reasons = decide(facts, SHIPPED).reasons
    assert any("read from images (OCR)" in r for r in reasons) and not any(NUMBER in r for r in reasons)


def test_pdf_typed_cover_and_scanned_page_two(engine, tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setFont("HeiseiKakuGo-W5", 11)
    for i, line in enumerate(["送付状", "市民課 御中", "いつもお世話になっております。ご依頼の書類を次のページに添付します。"] * 3):
        c.drawString(50, 800 - 16 * i, line)
    c.showPage()
    c.drawImage(ImageReader(card()), 50, 450, width=400, height=250)  # page 2: an image only
    c.showPage()
    c.save()
    path = tmp_path / "scan.pdf"
    path.write_bytes(buf.getvalue())
    report = scan_file(path, LIMITS)
    assert ocr_hits(report, "file:scan.pdf p.2 (OCR)")
    assert not report.unscannable and report.persons == 1


def test_pdf_card_photo_pasted_into_a_typed_letter_is_read(engine, tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setFont("HeiseiKakuGo-W5", 11)
    lines = ["市民課 御中", "いつもお世話になっております。ご依頼の本人確認書類の写しを下に貼り付けました。"] * 5
    for i, line in enumerate(lines):
        c.drawString(50, 800 - 16 * i, line)
    c.drawImage(ImageReader(card()), 50, 350, width=400, height=250)  # 640 x 400 pixels
    c.showPage()
    c.save()
    path = tmp_path / "scan.pdf"
    path.write_bytes(buf.getvalue())
    report = scan_file(path, LIMITS)
    assert sum(len("".join(x.split())) for x in lines) >= 200  # a typed page, not a scan
    assert ocr_hits(report, "file:scan.pdf p.1 (OCR)")
    assert not report.unscannable and not report.skipped


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx"])
def test_picture_inside_office_file(engine, tmp_path, kind):
    pic = tmp_path / "card.png"
    card().save(pic)
    path = tmp_path / f"a.{kind}"
    if kind == "docx":
        import docx

        d = docx.Document()
        d.add_paragraph("写しを貼ります")
        d.add_picture(str(pic))
        d.save(path)
        where = "file:a.docx/word/media/image1.png (OCR)"
    elif kind == "xlsx":
        import openpyxl
        from openpyxl.drawing.image import Image as XlImage

        wb = openpyxl.Workbook()
        wb.active["A1"] = "写し"
        wb.active.add_image(XlImage(str(pic)), "B2")
        wb.save(path)
        where = "file:a.xlsx/xl/media/image1.png (OCR)"
    else:
        import pptx
        from pptx.util import Inches

        p = pptx.Presentation()
        slide = p.slides.add_slide(p.slide_layouts[6])
        slide.shapes.add_picture(str(pic), Inches(1), Inches(1))
        p.save(path)
        where = "file:a.pptx/ppt/media/image1.png (OCR)"
    report = scan_file(path, LIMITS)
    assert ocr_hits(report, where), [f.location for f in report.findings]
    assert not report.unscannable


def test_picture_inside_odt(engine):
    content = ('<?xml version="1.0" encoding="UTF-8"?><office:document-content '
               'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
               'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
               '<text:p>写しを貼ります</text:p></office:text></office:body></office:document-content>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", content)
        z.writestr("Pictures/card.png", png_bytes(card()))
        z.writestr("Thumbnails/thumbnail.png", png_bytes(Image.new("RGB", (100, 140), "white")))
    data = fx.make_message(attachments=[("a.odt", fx.as_attachment("a.odt", buf.getvalue()))])
    report = scan_message(data, LIMITS)
    assert ocr_hits(report, "attachment:a.odt/Pictures/card.png (OCR)")
    assert [s.location for s in report.skipped] == ["attachment:a.odt/Thumbnails/thumbnail.png"]


def test_multipage_tiff_pages_are_located(engine):
    tif = encode(card(None), "TIFF", save_all=True, append_images=[card()], compression="tiff_lzw")
    data = fx.make_message(attachments=[("scan.tif", fx.as_attachment("scan.tif", tif, "image", "tiff"))])
    report = scan_message(data, LIMITS)
    assert ocr_hits(report, "attachment:scan.tif p.2 (OCR)")
    assert not any(f.location.startswith("attachment:scan.tif p.1") for f in report.findings)


def test_same_image_twice_is_read_once_and_found_at_both(engine):
    png = png_bytes(card())
    data = fx.make_message(attachments=[(n, fx.as_attachment(n, png, "image", "png")) for n in ("a.png", "b.png")])
    t = time.monotonic()
    report = scan_message(data, LIMITS)
    once = time.monotonic() - t
    assert ocr_hits(report, "attachment:a.png (OCR)") and ocr_hits(report, "attachment:b.png (OCR)")
    assert report.persons == 1 and once < 2 * LIMITS.ocr_time_per_image


# ---------------------------------------------------------------- clean, skipped, unscannable


def test_logo_and_chart_without_numbers_are_clean_and_pass(engine):
    data = fx.make_message(body="来週の会議資料です", attachments=[
        ("logo.png", fx.as_attachment("logo.png", png_bytes(logo()), "image", "png")),
        ("chart.png", fx.as_attachment("chart.png", png_bytes(chart()), "image", "png"))])
    report = scan_message(data, LIMITS)
    assert (report.findings, report.unscannable, report.skipped) == ((), (), ())
    assert outside(data, report) == "pass"


def test_tiny_icon_is_skipped_with_a_reason_not_unscannable():
    icon = encode(Image.new("RGB", (16, 16), "red"), "GIF")
    data = fx.make_message(attachments=[("icon.gif", fx.as_attachment("icon.gif", icon, "image", "gif"))])
    report = scan_message(data, LIMITS)
    assert not report.unscannable
    assert [(s.location, "decorative" in s.reason) for s in report.skipped] == [("attachment:icon.gif", True)]
    assert outside(data, report) == "pass"


def test_bomb_png_is_refused_before_decoding():
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    data = fx.make_message(attachments=[("bomb.png", fx.as_attachment("bomb.png", bomb, "image", "png"))])
    t = time.monotonic()
    report = scan_message(data, LIMITS)
    assert time.monotonic() - t < 2
    [u] = report.unscannable
    assert u.location == "attachment:bomb.png" and "not decoded" in u.reason and u.reason.startswith("image (image/png)")
    assert outside(data, report) == "hold"


def test_message_ocr_budget_leaves_text_scanned_and_images_unscannable():
    # No Tesseract call: the budget is spent before the first image.
    limits = dataclasses.replace(LIMITS, ocr_time_per_message=0.1)
    png = png_bytes(Image.new("RGB", (300, 200), "white"))
    data = fx.make_message(body=f"個人番号 {NUMBER}", attachments=[
        (n, fx.as_attachment(n, png + n.encode(), "image", "png")) for n in ("a.png", "b.png")])
    report = scan_message(data, limits)
    assert any(f.location == "body" and f.number == NUMBER for f in report.findings)
    assert sorted(u.location for u in report.unscannable) == ["attachment:a.png", "attachment:b.png"]
    assert all("limits.ocr_time_per_message" in u.reason or "OCR unavailable" in u.reason
               for u in report.unscannable)


def test_images_near_the_scan_deadline_are_unscannable_not_a_timeout():
    png = png_bytes(Image.new("RGB", (300, 200), "white"))
    data = fx.make_message(attachments=[("a.png", fx.as_attachment("a.png", png, "image", "png"))])
    ex = extract_message(data, LIMITS, deadline=time.monotonic() + 0.5)  # less than the reserve
    assert [u.location for u in ex.unscannable] == ["attachment:a.png"]
    assert "scan time" in ex.unscannable[0].reason or "OCR unavailable" in ex.unscannable[0].reason


def test_pdf_page_with_a_text_layer_keeps_it_and_notes_its_small_images():
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for i in range(12):
        c.drawString(50, 800 - 16 * i, f"Line {i} of the typed minutes of the meeting held on the third floor.")
    c.drawImage(ImageReader(logo()), 50, 400)  # 320 x 100: a letterhead logo, not read
    c.showPage()
    c.save()
    data = fx.make_message(attachments=[("m.pdf", fx.as_attachment("m.pdf", buf.getvalue(), "application", "pdf"))])
    report = scan_message(data, LIMITS)
    assert not report.unscannable
    assert [s.location for s in report.skipped] == ["attachment:m.pdf"]
    assert "text layer" in report.skipped[0].reason


def test_pdf_without_text_or_images_is_unscannable():
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.rect(50, 50, 200, 200)
    c.showPage()
    c.save()
    data = fx.make_message(attachments=[("d.pdf", fx.as_attachment("d.pdf", buf.getvalue(), "application", "pdf"))])
    assert [u.location for u in scan_message(data, LIMITS).unscannable] == ["attachment:d.pdf"]


def test_emf_picture_in_docx_is_unscannable(tmp_path):
    import docx

    path = tmp_path / "e.docx"
    docx.Document().save(path)
    emf = b"\x01\x00\x00\x00" + b"\x6c\x00\x00\x00" + b"\x00" * 32 + b" EMF" + b"\x00" * 80
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("word/media/image1.emf", emf)
    report = scan_file(path, LIMITS)
    assert [(u.location, "EMF" in u.reason) for u in report.unscannable] == [("file:e.docx/word/media/image1.emf", True)]


def test_a_file_named_like_ocr_output_is_not_counted_as_ocr():
    data = fx.make_message(attachments=[("x (OCR)", fx.as_attachment("x (OCR)", f"個人番号 {NUMBER}".encode(), "text", "plain"))])
    report = scan_message(data, LIMITS)
    assert report.persons == 1 and not any(f.from_ocr for f in report.findings)
    assert report.ocr_persons == (0, 0, 0)


# ---------------------------------------------------------------- policy


def _facts(ocr: int, text: int) -> Facts:
    both = max(ocr, text)
    return Facts(recipients=(OUTSIDE,), external_recipients=(OUTSIDE,), external_domains=("example.com",),
                 persons_by_confidence={"low": both, "medium": both, "high": both},
                 persons_ocr_by_confidence={"low": ocr, "medium": ocr, "high": ocr},
                 persons_text_by_confidence={"low": text, "medium": text, "high": text})


def test_policy_conditions_tell_ocr_numbers_from_text(tmp_path):
    (tmp_path / "10.toml").write_text(
        '[[rule]]\nname = "only-ocr"\nocr_persons_min = 1\ntext_persons_max = 0\naction = "hold"\n'
        '[[rule]]\nname = "text"\ntext_persons_min = 1\naction = "block"\n'
        '[default]\naction = "pass"\n', encoding="utf-8")
    policy = load_policy(tmp_path)
    assert decide(_facts(ocr=1, text=0), policy).rule == "only-ocr"
    assert decide(_facts(ocr=1, text=1), policy).rule == "text"
    assert decide(_facts(ocr=0, text=0), policy).rule == "default"
    # The shipped policy treats them alike.
    assert decide(_facts(ocr=1, text=0), SHIPPED).rule == decide(_facts(ocr=0, text=1), SHIPPED).rule == "external-hold"
    # Facts built without the split (older callers): every number counts as text.
    legacy = dataclasses.replace(_facts(0, 0), persons_by_confidence={"low": 2, "medium": 2, "high": 2},
                                 persons_text_by_confidence=None)
    assert decide(legacy, policy).rule == "text"


def test_documented_ocr_only_hold_example(tmp_path):
    """docs/policy.md's 04-ocr.toml: numbers found only in images are held, not blocked."""
    import re
    import shutil

    doc = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    snippet = re.search(r"```toml\n# policies/04-ocr.toml\n(.*?)```", doc, re.S).group(1)
    shutil.copy(ROOT / "policies" / "10-default.toml", tmp_path / "10-default.toml")
    (tmp_path / "04-ocr.toml").write_text(snippet, encoding="utf-8")
    policy = load_policy(tmp_path)
    reply_all = dataclasses.replace(_facts(ocr=1, text=0), is_reply=True, is_reply_all=True)
    assert decide(reply_all, SHIPPED).action == "block"
    assert decide(reply_all, policy).rule == "ocr-only-external-hold"
    text_too = dataclasses.replace(_facts(ocr=1, text=1), is_reply=True, is_reply_all=True)
    assert decide(text_too, policy).action == "block"
