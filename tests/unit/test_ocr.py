"""mailguard.ocr on small generated images (Pillow + IPA Gothic; tests/ocr_images.py).

Tests that run Tesseract skip when it (or the font) is missing; set
MAILGUARD_REQUIRE_OCR=1 (CI does) to make those skips failures. Numbers come
from tests/mynumbers.py and are never printed: assertions compare booleans.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mailguard import ocr
from mailguard.detect import HIGH, MEDIUM, Span, detect
from ocr_images import NUMBER, card, encode, require_engine

LIMITS = dict(time_budget=30.0, max_pixels=40_000_000, min_side=64)


@pytest.fixture(scope="module")
def engine() -> None:
    require_engine()


def found(result: ocr.OcrResult, number: str = NUMBER) -> bool:
    d = detect([Span(result.text, ocr.location("card.png"))])
    return any(f.number == number and f.confidence in (HIGH, MEDIUM) for f in d.findings)


def any_finding(text: str) -> bool:
    return any(f.confidence in (HIGH, MEDIUM) for f in detect([Span(text, "x")]).findings)


# ---------------------------------------------------------------- read


@pytest.mark.parametrize("turn", [0, 90, 180])
def test_card_read_at_any_quarter_turn(engine, turn):
    data = encode(card().rotate(turn, expand=True), "PNG")
    r = ocr.read_image(data, "card.png", **LIMITS)
    assert (r.status, r.kind, len(r.pages)) == (ocr.READ, "PNG", 1)
    assert found(r)
    assert "個人番号" in r.text  # keyword context for "high"


def test_exif_rotated_jpeg(engine):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": pixels stored turned back
    data = encode(card().transpose(Image.ROTATE_90), "JPEG", quality=85, exif=exif.tobytes())
    r = ocr.read_image(data, "IMG_0421.JPG", **LIMITS)
    assert r.status == ocr.READ and r.kind == "JPEG"
    assert found(r)


def test_multipage_tiff_one_result_per_page(engine):
    pages = [card(None), card()]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    r = ocr.read_image(data, "scan.tif", **LIMITS)
    assert r.status == ocr.READ and len(r.pages) == 2
    assert not any_finding(r.pages[0].text)
    assert found(ocr.OcrResult("scan.tif", "TIFF", ocr.READ, "", (r.pages[1],)))
    assert ocr.location("scan.tif", 1, 2) == "scan.tif p.2 (OCR)"


def test_fax_g4_tiff(engine):
    bw = card().convert("L").point(lambda v: 255 if v > 128 else 0).convert("1")
    r = ocr.read_image(encode(bw, "TIFF", compression="group4"), "fax.tif", **LIMITS)
    assert r.status == ocr.READ and r.kind == "TIFF"
    assert found(r)


def test_image_without_numbers_is_read_and_clean(engine):
    r = ocr.read_image(encode(card(None), "PNG"), "notice.png", **LIMITS)
    assert r.status == ocr.READ and r.text  # read, not skipped
    assert not any_finding(r.text)


def test_image_without_text_costs_one_tesseract_run(engine, monkeypatch):
    """A photo or a flat picture is read upright once: no OSD, no other quarter
    turns (six runs made a mail with a few photos run out of OCR time)."""
    calls = []
    real = ocr._tesseract
    monkeypatch.setattr(ocr, "_tesseract", lambda img, psm, *a, **k: calls.append(psm) or real(img, psm, *a, **k))
    monkeypatch.setattr(ocr, "_orientation", lambda *a: calls.append("osd"))
    photo = Image.radial_gradient("L").resize((1200, 900)).convert("RGB")
    r = ocr.read_image(encode(photo, "JPEG", quality=60), "IMG_0001.JPG", **LIMITS)
    assert r.status == ocr.READ and not r.text
    assert calls == [3]


@pytest.mark.parametrize("readings, layout, voted", [
    (["1234", "1934", "1234"], "12 34", "12 34"),  # the majority (the caller drops repeats)
    (["1834", "1294", "1234"], "18 34", "12 34"),  # each misread a different digit
    (["1234", "1934", "1034"], "12 34", "12 34"),  # three-way tie: the first (jpn, in context)
    (["1234", "12345", "1234"], "12 34", ""),  # not the same length: no vote
    (["1234", "1234", "1234"], "12 34", ""),  # all agree
])
def test_digit_vote(readings, layout, voted):
    assert ocr._vote(readings, layout) == voted


def test_time_budget_exhausted_is_unscannable(engine):
    r = ocr.read_image(encode(card(), "PNG"), "card.png", **{**LIMITS, "time_budget": 0.05})
    assert r.status == ocr.UNSCANNABLE and "time" in r.reason


# ---------------------------------------------------------------- refused or skipped (no OCR run)


def test_tiny_logo_is_skipped():
    logo = Image.new("RGB", (48, 32), "navy")
    r = ocr.read_image(encode(logo, "GIF"), "logo.gif", **LIMITS)
    assert r.status == ocr.SKIPPED and "decorative" in r.reason
    pixel = ocr.read_image(encode(Image.new("RGBA", (1, 1)), "PNG"), "t.png", **LIMITS)
    assert pixel.status == ocr.SKIPPED


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_bomb_png_refused_before_decoding():
    # 50,000 x 50,000 RGB: 7.5 GB once decoded; the header alone must refuse it.
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))
    t = time.monotonic()
    r = ocr.read_image(data, "bomb.png", **LIMITS)
    assert time.monotonic() - t < 0.5
    assert r.status == ocr.UNSCANNABLE and "50000 x 50000" in r.reason and "not decoded" in r.reason


def test_tiff_page_over_pixel_limit_is_refused():
    big = Image.new("1", (4000, 3000), 1)
    r = ocr.read_image(encode(big, "TIFF", compression="group4"), "big.tif",
                       **{**LIMITS, "max_pixels": 1_000_000})
    assert r.status == ocr.UNSCANNABLE and "pixel limit" in r.reason


@pytest.mark.parametrize("data, words", [
    (b"\x00\x01garbage" * 50, "not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot be decoded"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "cannot be decoded"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
    (b"", "not a readable image"),
])
def test_bad_input_gives_a_reason_not_an_exception(data, words):
    r = ocr.read_image(data, "x", **LIMITS)
    assert r.status == ocr.UNSCANNABLE and words in r.reason
    assert r.text == ""


def test_too_many_frames_is_unscannable():
    frames = [Image.new("L", (80, 80), v) for v in range(0, 250, 10)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r = ocr.read_image(data, "anim.gif", **LIMITS, max_frames=5)
    assert r.status == ocr.UNSCANNABLE and "frames" in r.reason


def test_engine_missing_makes_images_unscannable(tmp_path):
    # A fresh interpreter whose PATH has no tesseract: fail closed with a reason.
    png = tmp_path / "c.png"
    Image.new("L", (300, 200), 255).save(png)
    code = ("import sys; from mailguard import ocr; ok, why = ocr.available(); "
            "r = ocr.read_image(open(sys.argv[1], 'rb').read(), 'c.png', time_budget=5, max_pixels=10**7, min_side=64); "
            "print(ok, r.status, r.reason)")
    out = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False unscannable OCR unavailable: tesseract not found")
