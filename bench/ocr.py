#!/usr/bin/env python3
"""OCR engines on photos and scans of My Numbers: recall, false positives, ms per image.

    .venv/bin/python bench/ocr.py [--n 20] [--engines tesseract,rapidocr] [--seed 1]

Generated deterministically (Pillow + IPA Gothic, fonts-ipafont-gothic):
  cards   card photos: the card on a desk, perspective skew, rotation up to
          15 degrees, some turned 90/180/270 (half of those by EXIF only),
          blur, noise, JPEG quality 60
  forms   form scans (150 dpi A4 crops): rotation up to 15 degrees, blur,
          noise, JPEG quality 60, some upside down
  negatives  a logo, a bar chart, a photo-like gradient, scanned invoices with
          phone, postal and 13-digit corporate numbers: no medium/high finding
          may come out of them
Timing also covers a card photo and the logo, chart and photo without
numbers (the common case in mail: each must stay cheap).
Recall: a number counts when mailguard.detect.detect on the OCR text yields it
at medium or high confidence. Timing: a 12-megapixel phone photo, a 300 dpi A4
scan and a 1920x1080 screenshot, median of --runs. Numbers are never printed.

tesseract = mailguard.ocr.read_image (pytesseract + Tesseract 5 jpn, with
ocr_prepare's clean-up and the rotation search); rapidocr = rapidocr-onnxruntime
(PP-OCR det/cls/rec ONNX models inside the wheel) on the EXIF-transposed image,
quarter turns tried when the reading is weak, as for Tesseract.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps  # noqa: E402

from mailguard import ocr  # noqa: E402
from mailguard.detect import HIGH, MEDIUM, Span, detect  # noqa: E402
from mynumbers import my_numbers  # noqa: E402

FONT = "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"
LIMITS = dict(time_budget=30.0, max_pixels=60_000_000, min_side=64)
SURNAMES = ["山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村"]
GIVEN = ["太郎", "花子", "一郎", "美咲", "健太", "陽子"]


def font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT, max(6, int(px)))


def grouped(n: str, rnd: random.Random) -> str:
    return rnd.choice([f"{n[:4]} {n[4:8]} {n[8:]}", f"{n[:4]}-{n[4:8]}-{n[8:]}", n])


# ---------------------------------------------------------------- generators


def card(n: str, rnd: random.Random, width: int = 860) -> Image.Image:
    s = width / 860
    im = Image.new("RGB", (width, int(540 * s)), (rnd.randint(225, 245), rnd.randint(230, 248), 250))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, width, int(70 * s)), fill=(200, 215, 235))
    d.text((30 * s, 18 * s), "個人番号カード", font=font(34 * s), fill=(20, 20, 60))
    d.text((30 * s, 110 * s), "個人番号", font=font(30 * s), fill=(0, 0, 0))
    d.text((30 * s, 160 * s), f"{n[:4]} {n[4:8]} {n[8:]}", font=font(54 * s), fill=(0, 0, 0))
    d.text((30 * s, 270 * s), f"氏名 {rnd.choice(SURNAMES)} {rnd.choice(GIVEN)}", font=font(30 * s), fill=(0, 0, 0))
    d.text((30 * s, 330 * s), f"生年月日 平成{rnd.randint(1, 30)}年{rnd.randint(1, 12)}月{rnd.randint(1, 28)}日",
           font=font(26 * s), fill=(0, 0, 0))
    d.rectangle((620 * s, 110 * s, 820 * s, 360 * s), fill=(170, 170, 180))  # the photo
    return im


def perspective(im: Image.Image, rnd: random.Random, amount: float) -> Image.Image:
    w, h = im.size
    j = lambda v: rnd.uniform(-amount, amount) * v  # noqa: E731
    quad = (j(w), j(h), j(w), h + j(h), w + j(w), h + j(h), w + j(w), j(h))
    return im.transform((w, h), Image.QUAD, quad, Image.BICUBIC, fillcolor=(120, 100, 80))


def degrade(im: Image.Image, rnd: random.Random, blur: float, noise: int) -> Image.Image:
    im = im.filter(ImageFilter.GaussianBlur(blur))
    if noise:
        grain = Image.effect_noise(im.size, noise).convert("RGB")
        im = Image.blend(im, grain, 0.12)
    return im


def jpeg(im: Image.Image, quality: int = 60, orientation: int = 1) -> bytes:
    """JPEG bytes; orientation != 1 stores the pixels turned and the EXIF tag
    that turns them back (what phones do)."""
    exif = Image.Exif()
    if orientation != 1:
        undo = {6: Image.ROTATE_90, 3: Image.ROTATE_180, 8: Image.ROTATE_270}[orientation]
        im = im.transpose(undo)
        exif[0x0112] = orientation
    b = io.BytesIO()
    im.save(b, "JPEG", quality=quality, exif=exif.tobytes())
    return b.getvalue()


def card_photo(n: str, rnd: random.Random, size=(1600, 1200)) -> bytes:
    desk = Image.new("RGB", size, (rnd.randint(90, 150), rnd.randint(70, 120), rnd.randint(50, 90)))
    desk = Image.blend(desk, Image.effect_noise(size, 40).convert("RGB"), 0.15)
    c = card(n, rnd, width=int(size[0] * rnd.uniform(0.55, 0.75)))
    c = perspective(c, rnd, 0.04).rotate(rnd.uniform(-15, 15), expand=True, resample=Image.BICUBIC,
                                         fillcolor=(0, 0, 0))
    mask = Image.new("L", c.size, 0)
    mask.paste(255, (0, 0, *c.size))
    mask = c.convert("L").point(lambda v: 255 if v > 8 else 0)
    x = rnd.randint(0, max(0, size[0] - c.size[0]))
    y = rnd.randint(0, max(0, size[1] - c.size[1]))
    desk.paste(c, (x, y), mask)
    img = degrade(desk, rnd, rnd.uniform(0.3, 1.3), rnd.choice([0, 20, 40]))
    turn = rnd.random()
    if turn < 0.15:
        return jpeg(img, 60, rnd.choice([3, 6, 8]))  # EXIF says how to turn it back
    if turn < 0.3:
        img = img.rotate(rnd.choice([90, 180, 270]), expand=True)  # really turned
    return jpeg(img)


def form_page(n: str | None, rnd: random.Random, dpi: int = 150, extra: list[str] = ()) -> Image.Image:
    w, h = int(8.27 * dpi), int(5.5 * dpi)  # upper part of an A4 page
    s = dpi / 150
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    d.text((60 * s, 40 * s), "給与所得者の扶養控除等（異動）申告書", font=font(28 * s), fill="black")
    lines = [f"氏名 {rnd.choice(SURNAMES)} {rnd.choice(GIVEN)}",
             f"住所 東京都千代田区霞が関{rnd.randint(1, 3)}-{rnd.randint(1, 9)}-{rnd.randint(1, 20)}"]
    if n:
        lines.insert(1, f"あなたの個人番号 {grouped(n, rnd)}")
    lines += list(extra) + ["提出日 令和6年4月1日", "上記のとおり申告します。"]
    y = 110 * s
    for line in lines:
        d.rectangle((50 * s, y - 8 * s, w - 50 * s, y + 40 * s), outline="black", width=max(1, int(s)))
        d.text((60 * s, y), line, font=font(24 * s), fill="black")
        y += 60 * s
    return im


def form_scan(n: str | None, rnd: random.Random, extra: list[str] = ()) -> bytes:
    im = form_page(n, rnd, extra=extra).rotate(rnd.uniform(-15, 15), expand=True, resample=Image.BICUBIC,
                                               fillcolor="white")
    if rnd.random() < 0.2:
        im = im.rotate(180)
    im = degrade(im, rnd, rnd.uniform(0.2, 1.0), rnd.choice([0, 30]))
    return jpeg(im)


def negatives(rnd: random.Random) -> dict[str, bytes]:
    out = {}
    logo = Image.new("RGB", (400, 140), "white")
    d = ImageDraw.Draw(logo)
    d.ellipse((10, 10, 130, 130), fill=(200, 30, 30))
    d.text((150, 45), "山田商事株式会社", font=font(30), fill=(40, 40, 40))
    out["logo"] = png(logo)
    chart = Image.new("RGB", (900, 600), "white")
    d = ImageDraw.Draw(chart)
    for i, v in enumerate([120, 340, 260, 480, 390, 510]):
        d.rectangle((100 + i * 120, 520 - v, 170 + i * 120, 520), fill=(60, 120, 200))
        d.text((100 + i * 120, 530), f"{2019 + i}年", font=font(20), fill="black")
        d.text((100 + i * 120, 490 - v), f"{v * 1000:,}", font=font(18), fill="black")
    d.text((250, 20), "売上高の推移（単位：円）", font=font(28), fill="black")
    out["chart"] = png(chart)
    photo = Image.radial_gradient("L").resize((1200, 900)).convert("RGB")
    out["photo"] = jpeg(degrade(photo, rnd, 2, 40))
    for i in range(3):
        corp = "".join(str(rnd.randint(0, 9)) for _ in range(13))
        extra = [f"電話 03-{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)}  FAX 03-{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)}",
                 f"〒{rnd.randint(100, 999)}-{rnd.randint(1000, 9999)}  法人番号 {corp}",
                 f"登録番号 T{corp}  請求書番号 {rnd.randint(10**11, 10**12 - 1)}"]
        out[f"invoice{i}"] = form_scan(None, rnd, extra=extra)
    return out


def png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def timing_set(rnd: random.Random, n: str) -> dict[str, bytes]:
    photo = card_photo(n, rnd, size=(4000, 3000))  # 12 MP
    a4 = Image.new("RGB", (2480, 3508), "white")
    a4.paste(form_page(n, rnd, dpi=300), (0, 0))
    shot = Image.new("RGB", (1920, 1080), (246, 246, 246))
    d = ImageDraw.Draw(shot)
    d.rectangle((0, 0, 1920, 40), fill=(40, 60, 90))
    for i in range(40):
        row = f"{i + 1:3d}  {rnd.choice(SURNAMES)} {rnd.choice(GIVEN)}  住民票コード 確認済  世帯番号 {rnd.randint(10**5, 10**6)}"
        if i == 7:
            row += f"  個人番号 {n}"
        d.text((30, 60 + i * 25), row, font=font(15), fill=(20, 20, 20))
    return {"12 MP phone photo": photo, "card photo 1600x1200": card_photo(n, rnd),
            "300 dpi A4 scan": png(a4.convert("L")), "1920x1080 screenshot": png(shot)}


# ---------------------------------------------------------------- engines


def read_tesseract(data: bytes) -> str:
    return ocr.read_image(data, "bench.jpg", **LIMITS).text


class Rapid:
    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR()

    def _run(self, im: Image.Image):
        import numpy as np

        result, _ = self.engine(np.asarray(im))
        return result or []

    def __call__(self, data: bytes) -> str:
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        w, h = im.size
        if w * h > 6_000_000:  # same working size as the Tesseract path
            f = (6_000_000 / (w * h)) ** 0.5
            im = im.resize((int(w * f), int(h * f)), Image.BOX)
        best = None
        for rot in (0, 90, 270, 180):
            res = self._run(im.rotate(-rot, expand=True) if rot else im)
            score = sum(len(t) * s for _, t, s in res)
            mean = sum(s for *_, s in res) / len(res) if res else 0
            if best is None or score > best[0]:
                best = (score, res)
            if mean >= 0.9 and score >= 12:
                break
        lines = sorted(best[1], key=lambda r: (round(min(p[1] for p in r[0]) / 20), min(p[0] for p in r[0])))
        return "\n".join(t for _, t, _ in lines)


def found(text: str, number: str) -> bool:
    d = detect([Span(text, "bench")])
    return any(f.number == number and f.confidence in (HIGH, MEDIUM) for f in d.findings)


def false_positive(text: str) -> bool:
    return any(f.confidence in (HIGH, MEDIUM) for f in detect([Span(text, "bench")]).findings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="card photos and form scans each")
    ap.add_argument("--engines", default="tesseract,rapidocr")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="list misses (masked)")
    args = ap.parse_args()
    ok, detail = ocr.available()
    print(f"tesseract: {detail}")
    rnd = random.Random(args.seed)
    numbers = my_numbers(2 * args.n + 1, seed=args.seed)
    t0 = time.perf_counter()
    cases = [(f"card{i}", card_photo(numbers[i], rnd), numbers[i]) for i in range(args.n)]
    cases += [(f"form{i}", form_scan(numbers[args.n + i], rnd), numbers[args.n + i]) for i in range(args.n)]
    negs = negatives(rnd)
    timing = timing_set(rnd, numbers[-1])
    print(f"generated {len(cases)} positives, {len(negs)} negatives in {time.perf_counter() - t0:.1f} s")

    engines = {}
    for name in args.engines.split(","):
        if name == "tesseract" and ok:
            engines[name] = read_tesseract
        elif name == "rapidocr":
            try:
                engines[name] = Rapid()
            except ImportError:
                print("rapidocr: rapidocr-onnxruntime not installed (pip install rapidocr-onnxruntime)")
    for name, read in engines.items():
        hits, per_kind, secs = 0, {}, []
        for label, data, n in cases:
            t = time.perf_counter()
            text = read(data)
            secs.append(time.perf_counter() - t)
            hit = found(text, n)
            hits += hit
            kind = label.rstrip("0123456789")
            per_kind.setdefault(kind, [0, 0])
            per_kind[kind][0] += hit
            per_kind[kind][1] += 1
            if args.verbose and not hit:
                print(f"  {name} missed {label} ({'*' * 8}{n[-4:]})")
        fps = [label for label, data in negs.items() if false_positive(read(data))]
        kinds = ", ".join(f"{k} {a}/{b}" for k, (a, b) in per_kind.items())
        print(f"{name:10s} recall {hits}/{len(cases)} = {hits / len(cases):.0%} ({kinds}); "
              f"false positives {len(fps)}/{len(negs)} {fps or ''}; "
              f"median {statistics.median(secs) * 1000:.0f} ms/image, max {max(secs) * 1000:.0f} ms")
        for label, data in list(timing.items()) + [(f"{k} (no number)", negs[k]) for k in ("logo", "chart", "photo")]:
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                text = read(data)
                times.append(time.perf_counter() - t)
            print(f"{'':10s} {label:22s} {statistics.median(times) * 1000:6.0f} ms  "
                  + ("" if "no number" in label else f"number found: {found(text, numbers[-1])}"))


if __name__ == "__main__":
    main()
