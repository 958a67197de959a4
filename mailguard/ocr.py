"""Read the text in images (OCR) so the detector can see numbers in photos and scans.

INTERFACE (issue 12; extraction wires it in):

    available() -> (ok: bool, detail: str)
        ok=False when Tesseract or its jpn data is missing; detail is the reason
        ("tesseract not found on PATH") or the version ("tesseract 5.3.0, jpn").
    read_image(data, name, *, time_budget, max_pixels, min_side, max_frames=50)
        -> OcrResult; never raises for bad input.
    OcrResult(name, kind, status, reason, pages)   .text  .read  .unscannable
    OcrPage(index, status, text, reason, rotation, skew, confidence, seconds)
    location(name, index, count) -> "IMG_0421.JPG (OCR)" / "scan.tif p.2 (OCR)"
    status: READ | SKIPPED (decorative: tiny) | UNSCANNABLE (reason says why)

HOW: the type comes from the magic bytes (libmagic's names, checked again
against Pillow's decoder, restricted to the raster formats we accept); sizes
are read from the header and checked against max_pixels BEFORE any pixel is
decoded (a 50,000 x 50,000 PNG costs a header read); each frame of a TIFF,
GIF or WebP is its own page; EXIF orientation is applied; ocr_prepare
grays, scales (down to ~6 MP, up for small images), measures skew on a
binarised copy and deskews up to 15 degrees; the image is read upright first
(jpn, --psm 3) and that reading stands when it is clear or when it found
nothing shaped like text (a photo, a chart: one Tesseract run); otherwise
Tesseract OSD picks the quarter turn, or, when it is unsure (a card has little
text), each quarter turn is read and the reading with the most confident
digits kept.
Lines with digits are read a second time with the eng model (jpn misread one
digit in about a quarter of the numbers on blurred photos; bench/ocr.py), runs
of 10+ digits a third time (eng, enlarged, digits only), and where those
readings disagree their digit-by-digit majority is added; each reading follows
its line, so keywords stay next to the number.

Engine: pytesseract runs the tesseract binary as a child process. A crash or
hang in a decoder inside Tesseract/Leptonica kills only that child, and the
timeout kills it for sure; bench/ocr.py has the comparison with RapidOCR.

SECURITY: `data` and `name` are untrusted. Decoders are limited to JPEG, PNG,
GIF, BMP, WebP, TIFF (and ICO/MPO, which phones and favicons use); dimensions
are checked before decoding, frames are capped, every Tesseract call gets the
remaining time budget as its timeout. The image is handed to Tesseract as a
PNG we wrote ourselves (pytesseract's temp file, 0600 under TMPDIR), never as
the original bytes. `name` is only echoed in OcrResult.
DIAGNOSTICS: logs nothing. OCR text may hold a My Number: callers must not
log it; reasons and OcrPage fields never contain recognised text.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import struct
import subprocess
import time
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from mailguard import ocr_prepare

READ, SKIPPED, UNSCANNABLE = "read", "skipped", "unscannable"

LANG = "jpn"  # layout, kanji and kana (keywords)
DIGIT_LANG = "eng"  # re-reads lines with digits: jpn misreads one digit in ~4 numbers, eng far fewer
DIGIT_SCALE = 2.0  # the digits-only reading enlarges the number first ...
DIGIT_CHARS = "0123456789-"  # ... and reads nothing but these
LONG_DIGITS = 10  # digits in a run that earns that third reading
MIN_STRIP = 8  # px: thinner than this is a spacer or a rule, never text
WEAK_CONFIDENCE = 60.0  # mean word confidence below which other rotations are tried
CLEAR_CONFIDENCE = 80.0  # ... but a short text (a logo's name) read this confidently stands
TEXT_LIKE_WORDS = 6  # fewer words at 0 degrees: no text to turn (a photo, a flat chart)
OSD_CONFIDENCE = 2.0  # Tesseract OSD orientation confidence we trust

# Tesseract uses OpenMP threads per process; scan workers are processes already,
# and threads across them only contend on shared cores (2x slower measured).
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

# libmagic / signature -> (kind, Pillow formats allowed to decode it)
_ACCEPT = {
    "image/jpeg": ("JPEG", ("JPEG", "MPO")),
    "image/png": ("PNG", ("PNG",)),
    "image/gif": ("GIF", ("GIF",)),
    "image/bmp": ("BMP", ("BMP",)),
    "image/x-ms-bmp": ("BMP", ("BMP",)),
    "image/webp": ("WEBP", ("WEBP",)),
    "image/tiff": ("TIFF", ("TIFF",)),
    "image/vnd.microsoft.icon": ("ICO", ("ICO",)),
    "image/x-icon": ("ICO", ("ICO",)),
}
_NO_DECODER = {
    "image/heic": "HEIC", "image/heif": "HEIF", "image/avif": "AVIF",
    "image/heic-sequence": "HEIC", "image/heif-sequence": "HEIF",
    "image/jxl": "JPEG XL", "image/jp2": "JPEG 2000", "image/x-canon-cr2": "camera RAW",
    "image/svg+xml": "SVG",
}
# OCR confusions of the keyword characters seen on card photos: the detector
# needs 個人番号 verbatim for "high". Only whole words are mapped.
_FIXUPS = (("固人番号", "個人番号"), ("個入番号", "個人番号"), ("固入番号", "個人番号"),
           ("マイナンパー", "マイナンバー"), ("マイナン バー", "マイナンバー"))


@dataclass(frozen=True)
class OcrPage:
    index: int  # 0-based page/frame
    status: str  # READ | SKIPPED | UNSCANNABLE
    text: str = ""  # lines in reading order, "\n"-separated
    reason: str = ""  # why skipped/unscannable; "" when read
    rotation: int = 0  # quarter turn (degrees clockwise) that read best
    skew: float = 0.0  # degrees corrected by deskew
    confidence: float = 0.0  # mean Tesseract word confidence, 0-100
    seconds: float = 0.0


@dataclass(frozen=True)
class OcrResult:
    name: str
    kind: str  # "PNG", "JPEG", ... ("" when the type is unknown)
    status: str  # UNSCANNABLE if any page is; SKIPPED if all are; else READ
    reason: str = ""
    pages: tuple[OcrPage, ...] = ()

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages if p.text)

    @property
    def read(self) -> bool:
        return self.status == READ

    @property
    def unscannable(self) -> bool:
        return self.status == UNSCANNABLE


def location(name: str, index: int = 0, count: int = 1) -> str:
    """The finding location for page `index` of `count` of image `name`."""
    return f"{name} (OCR)" if count <= 1 else f"{name} p.{index + 1} (OCR)"


# ---------------------------------------------------------------- engine


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """Whether OCR can run here, with the reason or the engine version."""
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return False, "pytesseract is not installed"
    exe = shutil.which("tesseract")
    if not exe:
        return False, "tesseract not found on PATH (Debian: apt-get install tesseract-ocr tesseract-ocr-jpn)"
    try:
        out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=20)
        ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"tesseract does not run: {exc}"
    langs = set(out.stdout.split()) | set(out.stderr.split())
    missing = [x for x in (LANG, "osd") if x not in langs]
    if missing:
        return False, f"tesseract has no {'/'.join(missing)} data (Debian: tesseract-ocr-jpn)"
    first = (ver.stdout or ver.stderr).splitlines()[:1]
    return True, f"{first[0].strip() if first else 'tesseract'}, {LANG}"


class _OcrFailed(Exception):
    """Tesseract failed or timed out; the message is the reason."""


def _tesseract(img: Image.Image, psm: int, timeout: float, lang: str = LANG, config: str = "") -> list[tuple]:
    """Words as (block, par, line, left, top, width, height, conf, text), in reading order."""
    import pytesseract

    if timeout < 0.2:
        raise _OcrFailed("OCR time budget exhausted")
    try:
        tsv = pytesseract.image_to_data(img, lang=lang, config=f"--psm {psm} {config}".strip(), timeout=timeout)
    except RuntimeError as exc:  # pytesseract's timeout
        raise _OcrFailed("OCR timed out" if "timeout" in str(exc).lower() else "OCR failed") from exc
    except pytesseract.TesseractNotFoundError as exc:
        raise _OcrFailed("tesseract not found") from exc
    except pytesseract.TesseractError as exc:
        raise _OcrFailed(f"tesseract failed (status {exc.status})") from exc
    except OSError as exc:
        raise _OcrFailed(f"OCR failed: {exc.__class__.__name__}") from exc
    words = []
    for row in tsv.splitlines()[1:]:
        f = row.split("\t")
        if len(f) < 12 or not f[11].strip():
            continue
        try:
            words.append((int(f[2]), int(f[3]), int(f[4]), int(f[6]), int(f[7]), int(f[8]), int(f[9]),
                          float(f[10]), f[11].strip()))
        except ValueError:
            continue
    return words


def _is_cjk(c: str) -> bool:
    return not c.isascii() and unicodedata.east_asian_width(c) in "WF"


def _lines(words) -> list[list[tuple]]:
    out: list[list[tuple]] = []
    key = None
    for w in words:
        if w[:3] != key:
            out.append([])
            key = w[:3]
        out[-1].append(w)
    return out


def _join(line: list[tuple]) -> str:
    """A space between words unless both sides are CJK (Tesseract's jpn model
    splits 個人番号 into characters)."""
    cur = ""
    for *_, text in line:
        if cur and _is_cjk(cur[-1]) and _is_cjk(text[0]):
            cur += text
        else:
            cur += (" " if cur else "") + text
    return cur


def words_to_text(words, extra: dict[int, str] | None = None) -> str:
    """Lines in reading order; extra[i] (a second reading of line i) follows line i."""
    lines = []
    for i, line in enumerate(_lines(words)):
        lines.append(_join(line))
        if extra and extra.get(i):
            lines.append(extra[i])
    out = "\n".join(lines)
    for wrong, right in _FIXUPS:
        out = out.replace(wrong, right)
    return out


def _score(words) -> tuple[float, float]:
    """(score, mean confidence): confident characters count, digits triple
    (the numbers are what we are after; upside-down text reads as
    low-confidence kanji soup)."""
    if not words:
        return 0.0, 0.0
    score, confs = 0.0, []
    for *_, conf, text in words:
        if conf < 0:
            continue
        confs.append(conf)
        if conf >= 50:
            score += sum(3 if c.isdigit() else 1 for c in text) * conf / 100
    return score, (sum(confs) / len(confs) if confs else 0.0)


def _orientation(img: Image.Image, deadline: float) -> int | None:
    """Tesseract OSD's quarter turn (clockwise degrees to apply), or None when
    it is unsure (too little text, as on a card)."""
    import pytesseract

    timeout = deadline - time.monotonic()
    if timeout < 0.5:
        return None
    try:
        osd = pytesseract.image_to_osd(img, config="--psm 0", timeout=timeout)
    except (RuntimeError, OSError, pytesseract.TesseractError):
        return None  # "Too few characters": the rotation search below decides
    fields = dict(line.split(":", 1) for line in osd.splitlines() if ":" in line)
    try:
        rotate, conf = int(fields["Rotate"]), float(fields["Orientation confidence"])
    except (KeyError, ValueError):
        return None
    return rotate % 360 if conf >= OSD_CONFIDENCE else None


def _digits(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", text) if "0" <= c <= "9")


def _crop(img: Image.Image, words, scale: float = 1.0) -> Image.Image:
    left, top = min(w[3] for w in words), min(w[4] for w in words)
    right, bottom = max(w[3] + w[5] for w in words), max(w[4] + w[6] for w in words)
    pad = max(4, (bottom - top) // 3)
    crop = img.crop((max(0, left - pad), max(0, top - pad), right + pad, bottom + pad))
    if crop.height > 1.5 * crop.width:
        # Tesseract read this line as vertical Japanese, whose Latin and digits
        # lie turned 90 degrees clockwise: stand them up for the eng model.
        crop = crop.rotate(90, expand=True)
    if scale != 1.0:
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC)
    return crop


def _read_crops(crops: list[Image.Image], where: list[int], deadline: float, config: str = "") -> dict[int, str]:
    """Read crops stacked into one strip in one Tesseract call (eng, --psm 6)
    -> text per line index `where[k]` (a screenshot has dozens of digit
    lines; a call each cost 10 s). Raises _OcrFailed."""
    gap = 20
    strip = Image.new("L", (max(c.width for c in crops) + 2 * gap,
                            sum(c.height + gap for c in crops) + gap), 255)
    starts, y = [], gap
    for c in crops:
        strip.paste(c, (gap, y))
        starts.append(y)
        y += c.height + gap
    got = _tesseract(strip, 6, deadline - time.monotonic(), lang=DIGIT_LANG, config=config)
    texts: dict[int, list[str]] = {}
    for w in got:
        mid = w[4] + w[6] // 2
        k = max(j for j, s0 in enumerate(starts) if s0 - gap <= mid) if mid >= starts[0] - gap else 0
        texts.setdefault(where[k], []).append(w[-1])
    return {i: " ".join(t) for i, t in texts.items()}


def _digit_runs(line) -> list[list[tuple]]:
    """Runs of consecutive words that hold digits (or are a lone separator),
    each with LONG_DIGITS digits or more: the number itself, without the
    label before it (read with a digits-only whitelist, a label's kanji
    would turn into digits)."""
    runs: list[list[tuple]] = [[]]
    for w in line:
        if any(c.isdigit() for c in w[-1]) or w[-1] in ("-", "‐", "ー", "−", "・"):
            runs[-1].append(w)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if len(_digits("".join(w[-1] for w in r))) >= LONG_DIGITS]


def _vote(readings: list[str], layout: str) -> str:
    """Digit by digit majority of three readings of the same length (a tie
    goes to the first), written in `layout`'s grouping; "" when they do not
    line up or all agree."""
    if len(readings) != 3 or len({len(r) for r in readings}) != 1 or len(set(readings)) == 1:
        return ""
    voted = iter(b if b == c else a for a, b, c in zip(*readings))  # a tie: jpn, which read it in context
    return "".join(next(voted) if "0" <= ch <= "9" else ch for ch in layout)


def _reread_digits(img: Image.Image, words, deadline: float) -> dict[int, str]:
    """More readings of the digits, which are what we are after; each follows
    its line in the text, so keywords stay next to the number:
    - each line holding 4+ digits, with the eng model (jpn misread one digit
      in about a quarter of the numbers on blurred photos);
    - each run of LONG_DIGITS+ digits again, scaled up, with a digits-only
      whitelist; where the three readings differ in a digit, the majority
      is written out as a fourth line (jpn and eng each misread a different
      digit of a number in most of the misses left; bench/ocr.py)."""
    lines = _lines(words)
    where = [i for i, line in enumerate(lines) if sum(c.isdigit() for *_, t in line for c in t) >= 4]
    if not where:
        return {}
    try:
        second = _read_crops([_crop(img, lines[i]) for i in where], where, deadline)
    except _OcrFailed:
        return {}  # the first reading stands
    runs = [(i, run) for i in where for run in _digit_runs(lines[i])]
    third: dict[int, str] = {}
    if runs:
        try:
            third = _read_crops([_crop(img, run, DIGIT_SCALE) for _, run in runs], [i for i, _ in runs],
                                deadline, config=f"-c tessedit_char_whitelist={DIGIT_CHARS}")
        except _OcrFailed:
            pass  # two readings stand
    out = {}
    for i in where:
        first = " ".join(w[-1] for run in _digit_runs(lines[i]) for w in run)
        readings = [second.get(i, ""), third.get(i, "")]
        readings.append(_vote([_digits(first), _digits(readings[0]), _digits(readings[1])], first))
        # Only readings whose digits differ from what the line already says:
        # the same number twice would be two findings of one card.
        seen = {_digits(_join(lines[i]))}
        keep = []
        for text in readings:
            if len(_digits(text)) >= 4 and _digits(text) not in seen:
                seen.add(_digits(text))
                keep.append(text)
        if keep:
            out[i] = "\n".join(keep)
    return out


def _clear(score: float, conf: float) -> bool:
    """A reading good enough to stop the rotation search: confident digits
    and words, or a short text read very confidently (a logo's name).
    Upside-down or sideways text reads as low-confidence kanji soup."""
    return (conf >= WEAK_CONFIDENCE and score >= 12) or (conf >= CLEAR_CONFIDENCE and score >= 6)


def _text_like(words) -> bool:
    """Did the first pass find something shaped like text? Sideways or upside
    down text still gives dozens of (garbled) words at 0 degrees; a photo, a
    flat chart or a texture gives none or a few stray marks, and then the
    other quarter turns find nothing either (bench/ocr.py)."""
    return sum(1 for w in words if w[7] >= 0) >= TEXT_LIKE_WORDS


def _recognise(img: Image.Image, deadline: float) -> tuple[str, int, float]:
    """Best reading over orientations -> (text, rotation, mean confidence).

    Most images in mail are upright, and most without text (logos, charts,
    photos) are upright too: one reading at 0 degrees decides for them. Only a
    weak reading that still looks like text asks OSD for the quarter turn and,
    if need be, tries the other turns (each is another Tesseract run: six runs
    cost a 12 MP photo without text ~9 s, a sixth of the message budget)."""
    words = _tesseract(img, 3, deadline - time.monotonic())
    score, conf = _score(words)
    best = (score, conf, 0, words, img)
    if not _clear(score, conf) and _text_like(words):
        rot = _orientation(img, deadline)
        # OSD's pick first; the other turns only if its reading is weak (OSD is
        # sometimes confidently wrong on skewed, blurred forms).
        order = [r for r in ([rot] if rot else []) + [90, 270, 180] if r]
        for r in dict.fromkeys(order):
            if deadline - time.monotonic() < 1.0:
                break  # keep what we have rather than fail the page
            turned = img.rotate(-r, expand=True)
            words = _tesseract(turned, 3, deadline - time.monotonic())
            score, conf = _score(words)
            if score > best[0]:
                best = (score, conf, r, words, turned)
            if _clear(score, conf):
                break
    score, conf, r, words, turned = best
    return words_to_text(words, _reread_digits(turned, words, deadline)), r, conf


# ---------------------------------------------------------------- decoding


def _sniff(data: bytes) -> str:
    """MIME type by libmagic, falling back to signatures when it is absent."""
    try:
        import magic

        mime = magic.from_buffer(data[:8192], mime=True)
        if mime and mime != "application/octet-stream":
            return mime
    except Exception:  # libmagic missing or broken: the signatures below suffice
        pass
    sigs = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
            (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))
    for sig, mime in sigs:
        if data.startswith(sig):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypheim"):
        return "image/heic"
    return "application/octet-stream"


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes, for formats where that is trivial;
    Pillow's own header parse (also before decoding) covers the rest."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] in (b"GIF8",) and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"BM") and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _too_big(w: int, h: int, max_pixels: int) -> str:
    if w * h > max_pixels:
        return f"image is {w} x {h} pixels, over the {max_pixels} pixel limit (decompression bomb?); not decoded"
    return ""


def _decorative(w: int, h: int, min_side: int) -> str:
    if (w < min_side and h < min_side) or min(w, h) < MIN_STRIP:
        return f"decorative: {w} x {h} pixels is too small to hold a readable number"
    return ""


def _summary(name: str, kind: str, pages: list[OcrPage]) -> OcrResult:
    bad = [p for p in pages if p.status == UNSCANNABLE]
    if bad:
        where = "" if len(pages) == 1 else f"page {bad[0].index + 1}: "
        return OcrResult(name, kind, UNSCANNABLE, where + bad[0].reason, tuple(pages))
    if pages and all(p.status == SKIPPED for p in pages):
        return OcrResult(name, kind, SKIPPED, pages[0].reason, tuple(pages))
    return OcrResult(name, kind, READ, "", tuple(pages))


def read_image(data: bytes, name: str, *, time_budget: float, max_pixels: int, min_side: int,
               max_frames: int = 50) -> OcrResult:
    """OCR every page/frame of one image file; bad input gives a reason, not an exception."""
    start = time.monotonic()
    deadline = start + max(0.0, time_budget)
    mime = _sniff(data)
    if mime in _NO_DECODER:
        return OcrResult(name, _NO_DECODER[mime], UNSCANNABLE, f"{_NO_DECODER[mime]} image ({mime}) cannot be decoded here")
    if mime not in _ACCEPT:
        return OcrResult(name, "", UNSCANNABLE, f"not a readable image ({mime})")
    kind, formats = _ACCEPT[mime]
    size = _header_size(data)
    if size and (why := _too_big(*size, max_pixels)):
        return OcrResult(name, kind, UNSCANNABLE, why)
    ok, detail = available()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()  # registers every plugin, so `formats` can name MPO
            im = Image.open(io.BytesIO(data), formats=formats)  # header only
            pages = _read_frames(im, kind, ok, detail, deadline, max_pixels, min_side, max_frames)
    except Image.DecompressionBombError:
        return OcrResult(name, kind, UNSCANNABLE, "image is over Pillow's pixel limit (decompression bomb?); not decoded")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
            IndexError, KeyError, TypeError, MemoryError) as exc:
        return OcrResult(name, kind, UNSCANNABLE, f"{kind} image cannot be decoded ({exc.__class__.__name__})")
    return _summary(name, kind, pages)


def _read_frames(im, kind, ok, detail, deadline, max_pixels, min_side, max_frames) -> list[OcrPage]:
    count = getattr(im, "n_frames", 1) or 1
    if count > max_frames:
        return [OcrPage(0, UNSCANNABLE, reason=f"{count} pages/frames, over the limit of {max_frames}")]
    pages = []
    for i in range(count):
        t0 = time.monotonic()
        if i:
            im.seek(i)  # reads this frame's header (TIFF IFD), not its pixels
        w, h = im.size
        if why := _too_big(w, h, max_pixels):
            pages.append(OcrPage(i, UNSCANNABLE, reason=why))
            continue
        if why := _decorative(w, h, min_side):
            pages.append(OcrPage(i, SKIPPED, reason=why))
            continue
        if not ok:
            pages.append(OcrPage(i, UNSCANNABLE, reason=f"OCR unavailable: {detail}"))
            continue
        if deadline - time.monotonic() < 0.2:
            pages.append(OcrPage(i, UNSCANNABLE, reason="OCR time budget exhausted"))
            continue
        pages.append(_read_frame(im, i, kind, deadline, t0))
    return pages


def _read_frame(im: Image.Image, i: int, kind: str, deadline: float, t0: float) -> OcrPage:
    if kind in ("JPEG",) and im.size[0] * im.size[1] > 2 * ocr_prepare.WORK_PIXELS:
        # Decode a big photo at 1/2-1/8 scale straight from the DCT: 4-16x less
        # memory and time, and still more pixels than the OCR needs.
        w, h = im.size
        f = (ocr_prepare.WORK_PIXELS / (w * h)) ** 0.5
        im.draft("RGB", (int(w * f), int(h * f)))
    frame = im.copy() if kind != "JPEG" else im
    frame.load()
    try:
        frame = ImageOps.exif_transpose(frame) if i == 0 else frame
    except Exception:  # a broken EXIF block: read the pixels as stored
        pass
    img, skew = ocr_prepare.prepare(frame)
    try:
        text, rotation, conf = _recognise(img, deadline)
    except _OcrFailed as exc:
        return OcrPage(i, UNSCANNABLE, reason=str(exc), skew=skew, seconds=time.monotonic() - t0)
    return OcrPage(i, READ, text=text, rotation=rotation, skew=round(skew, 2), confidence=round(conf, 1),
                   seconds=round(time.monotonic() - t0, 3))
