"""Images for OCR tests, drawn with Pillow and the IPA Gothic font, shared by
tests/unit/test_ocr.py (the engine), tests/unit/test_ocr_extract.py (the
wiring) and the integration tests. Numbers come from tests/mynumbers.py and
are never printed: assertions compare booleans.

Tests that run Tesseract call `require_engine()` (through a fixture): they
skip when it, its jpn data or the font is missing, unless
MAILGUARD_REQUIRE_OCR=1 (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from mailguard import ocr
from mynumbers import my_numbers

REQUIRED = os.environ.get("MAILGUARD_REQUIRE_OCR") == "1"
FONTS = sorted(Path("/usr/share/fonts").glob("**/ipag*.ttf"))
NUMBER = my_numbers(1, seed=12)[0]


def require_engine() -> None:
    ok, detail = ocr.available()
    reason = "" if ok else detail
    if not reason and not FONTS:
        reason = "no IPA Gothic font (Debian: fonts-ipafont-gothic)"
    if reason:
        if REQUIRED:
            pytest.fail(f"MAILGUARD_REQUIRE_OCR=1 but: {reason}")
        pytest.skip(reason)


def font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS[0]), px)


def card(number: str | None = NUMBER) -> Image.Image:
    """A 640 x 400 card: 個人番号 and the number grouped 4-4-4, or (None) a notice without numbers."""
    im = Image.new("RGB", (640, 400), (236, 240, 250))
    d = ImageDraw.Draw(im)
    d.text((24, 20), "個人番号カード", font=font(28), fill=(20, 20, 60))
    if number:
        d.text((24, 100), "個人番号", font=font(26), fill="black")
        d.text((24, 140), f"{number[:4]} {number[4:8]} {number[8:]}", font=font(40), fill="black")
    else:
        d.text((24, 100), "会議室の予約について", font=font(26), fill="black")
        d.text((24, 140), "三階 第二会議室", font=font(34), fill="black")
    d.text((24, 230), "氏名 山田 太郎", font=font(26), fill="black")
    return im


def logo() -> Image.Image:
    """A signature logo: a coloured mark and a word, no digits."""
    im = Image.new("RGB", (320, 100), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((10, 10, 90, 90), fill=(0, 90, 160))
    d.text((110, 30), "みどり市", font=font(36), fill=(0, 90, 160))
    return im


def chart() -> Image.Image:
    """A bar chart with kanji labels and no numbers."""
    im = Image.new("RGB", (480, 320), "white")
    d = ImageDraw.Draw(im)
    d.line((40, 280, 460, 280), fill="black", width=2)
    d.line((40, 20, 40, 280), fill="black", width=2)
    for i, (h, label) in enumerate([(120, "北区"), (200, "南区"), (80, "東区"), (160, "西区")]):
        x = 70 + i * 100
        d.rectangle((x, 280 - h, x + 50, 280), fill=(200, 80 + i * 30, 60))
        d.text((x + 5, 288), label, font=font(20), fill="black")
    d.text((150, 0), "窓口の利用状況", font=font(22), fill="black")
    return im


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()
