"""Image clean-up before OCR: grayscale, scale, deskew, flatten lighting, binarise.

Pure Pillow, no I/O, no numpy: every step works on a decoded PIL image that
mailguard.ocr has already size-checked, and each is bounded by the pixel cap
the caller passed (work_pixels), so a hostile image costs at most a few passes
over that many pixels.

SECURITY: the input image is untrusted but already decoded and within the pixel
budget; nothing here allocates more than a small multiple of work_pixels.
DIAGNOSTICS: logs nothing.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageFilter, ImageOps

# Tesseract reads best with capital letters ~20-40 px high. Phone photos and
# scans are larger than needed (a 12 MP photo costs 4x a 3 MP one for no gain);
# screenshots and small pasted crops are smaller.
WORK_PIXELS = 6_000_000  # larger images are scaled down to about this
SMALL_SIDE = 1400  # images whose long side is below this are scaled up ...
MAX_UPSCALE = 3.0  # ... by at most this factor
MAX_SKEW = 15.0  # degrees; beyond this, only 90/180/270 are tried


def to_gray(im: Image.Image) -> Image.Image:
    """Any mode -> 8-bit grayscale; transparency composited onto white (a logo
    with a transparent background would otherwise turn black on black)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L") if im.mode == "I" else im.convert("I").point(
            lambda v: v / 256).convert("L")
    return im.convert("L") if im.mode != "L" else im


def scale_for_ocr(im: Image.Image, work_pixels: int = WORK_PIXELS) -> tuple[Image.Image, float]:
    """Scale down to about work_pixels, or up small images; returns (image, factor)."""
    w, h = im.size
    if w * h > work_pixels:
        f = (work_pixels / (w * h)) ** 0.5
    elif max(w, h) < SMALL_SIDE:
        f = min(MAX_UPSCALE, SMALL_SIDE / max(w, h), (work_pixels / (w * h)) ** 0.5)
    else:
        return im, 1.0
    size = (max(1, round(w * f)), max(1, round(h * f)))
    # LANCZOS up (keeps strokes sharp), BOX down (fast, anti-aliased).
    return im.resize(size, Image.LANCZOS if f > 1 else Image.BOX), f


def flatten(gray: Image.Image) -> Image.Image:
    """Even out lighting (shadows and gradients on phone photos): subtract a
    heavily blurred background, so ink is dark relative to its own
    surroundings, then stretch the contrast."""
    w, h = gray.size
    # The background at 1/16 scale, blurred and scaled back: a cheap large-radius
    # "closing" that follows the paper, not the strokes.
    small = gray.resize((max(1, w // 16), max(1, h // 16)), Image.BOX)
    small = small.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(2))
    background = small.resize((w, h), Image.BILINEAR)
    ink = ImageChops.subtract(background, gray)  # 0 = paper, high = ink
    return ImageOps.autocontrast(ImageOps.invert(ink), cutoff=(1, 0))


def otsu_threshold(gray: Image.Image) -> int:
    hist = gray.histogram()[:256]
    total = sum(hist)
    if not total:
        return 128
    sum_all = sum(i * n for i, n in enumerate(hist))
    best, best_t, w_bg, sum_bg = -1.0, 128, 0, 0
    for t in range(256):
        w_bg += hist[t]
        if not w_bg:
            continue
        w_fg = total - w_bg
        if not w_fg:
            break
        sum_bg += t * hist[t]
        m_bg, m_fg = sum_bg / w_bg, (sum_all - sum_bg) / w_fg
        between = w_bg * w_fg * (m_bg - m_fg) ** 2
        if between > best:
            best, best_t = between, t
    return best_t


def binarise(gray: Image.Image) -> Image.Image:
    """Flatten the lighting, light denoise, then Otsu: black ink on white, mode L."""
    flat = flatten(gray).filter(ImageFilter.MedianFilter(3))
    t = otsu_threshold(flat)
    return flat.point(lambda v: 0 if v <= t else 255)


def _profile_score(ink: Image.Image, angle: float) -> float:
    """Sharpness of the row and column ink profiles after rotating by `angle`:
    text lines at the right angle give rows alternating full/empty, a high
    variance. Columns too, so text turned 90 degrees deskews as well."""
    r = ink.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=0)
    w, h = r.size
    rows = list(r.resize((1, h), Image.BOX).tobytes())
    cols = list(r.resize((w, 1), Image.BOX).tobytes())

    def var(xs: list[int]) -> float:
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / len(xs)

    return max(var(rows), var(cols))


def estimate_skew(bw: Image.Image, max_angle: float = MAX_SKEW) -> float:
    """Angle in degrees (counter-clockwise, PIL's sense) that levels the text lines,
    by projection profiles on a small copy: 1-degree steps, then 0.25."""
    w, h = bw.size
    f = min(1.0, 700 / max(w, h))
    small = bw.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BOX)
    ink = ImageOps.invert(small)  # ink bright, paper 0, rotation fill 0
    if ink.getbbox() is None:
        return 0.0
    best = max(range(-int(max_angle), int(max_angle) + 1), key=lambda a: _profile_score(ink, a))
    fine = [best + d / 4 for d in range(-3, 4)]
    angle = max(fine, key=lambda a: _profile_score(ink, a))
    return 0.0 if abs(angle) < 0.5 else angle


def deskew(bw: Image.Image, angle: float) -> Image.Image:
    if not angle:
        return bw
    return bw.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=255)


def prepare(im: Image.Image, work_pixels: int = WORK_PIXELS) -> tuple[Image.Image, float]:
    """Decoded frame -> (contrast-stretched gray, deskewed; the skew corrected).

    The binarised copy only measures the skew: Tesseract gets the gray image
    and binarises it itself. Our own binarisation thickened the strokes of
    blurred JPEG text and cost recall (bench/ocr.py: 8/20 against 14/20)."""
    gray, _ = scale_for_ocr(to_gray(im), work_pixels)
    angle = estimate_skew(binarise(gray))
    return deskew(ImageOps.autocontrast(gray, cutoff=1), angle), angle
