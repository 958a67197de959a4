"""Images, wherever they are, -> OCR text spans (issue 12).

Readers find the images: image attachments and inline parts (dispatch),
pictures inside Office and OpenDocument packages (ooxml, odf: `add_picture`),
the images of PDF pages without a usable text layer (pdf). They queue them
here; `read_images` reads the queue after everything else in the message, so
a slow picture never starves the message's text of scan time. Each image is
then one of:

    read         its text is a span located `<item> (OCR)` / `<item> p.2 (OCR)`
    skipped      decorative (both sides under limits.ocr_min_side): Context.skipped
    unscannable  undecodable, over limits.ocr_max_pixels / ocr_max_frames, OCR
                 failed or out of time, or the OCR engine missing (fail closed)

Budgets: one image (all its pages) gets at most limits.ocr_time_per_image; all
images of a message together limits.ocr_time_per_message, and never past the
scan's own deadline (Context.deadline, the soft deadline inside
limits.scan_timeout) less a reserve, so a message with many pictures ends with
some of them unscannable ("OCR time ... used up"), not with the whole scan
timing out. The same bytes seen twice in a message are read once.

SECURITY: image bytes are hostile; mailguard.ocr checks type and dimensions
before decoding and runs Tesseract as a child process with a timeout. OCR text
may hold a My Number: it goes to the detector as spans and nowhere else.

DIAGNOSTICS: none; everything is returned in the Context.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from mailguard import ocr
from mailguard.extract.context import Context, Unreadable
from mailguard.extract.sniff import libmagic_type
from mailguard.records import MEMORY_LIMIT_REASON

# Bytes of queued images kept in memory; past it an image is read at once.
QUEUE_BYTES = 128 * 1024 * 1024
# Seconds of the scan deadline kept free of OCR (detection of the OCR text,
# the report); an image that would need them is unscannable instead.
RESERVE = 1.0
MIN_BUDGET = 0.5  # less than this for an image: not worth starting Tesseract

Loader = Callable[[], bytes]


def queue_image(ctx: Context, data: bytes | Loader, label: str, location: str) -> None:
    """Read this image (bytes, or a function that returns them) after the rest
    of the message. `label` names it in reasons ("image/png", "PDF image")."""
    size = len(data) if isinstance(data, (bytes, bytearray)) else 0
    if size and ctx.images_bytes + size > QUEUE_BYTES:
        _read_one(ctx, data, label, location, {})
        return
    ctx.images_bytes += size
    ctx.images.append((data, label, location))  # type: ignore[arg-type]


def add_picture(ctx: Context, data: bytes, location: str) -> None:
    """A picture inside a document package (word/media, Pictures/): raster
    images are read by OCR; other media cannot be read and say so."""
    mime = libmagic_type(data)
    if mime.startswith("image/") or data[:8] in (b"\x89PNG\r\n\x1a\n",) or data[:3] == b"\xff\xd8\xff":
        queue_image(ctx, data, mime, location)
    elif mime.startswith(("audio/", "video/")):
        ctx.add_unscannable(location, f"audio/video ({mime}) is not read")
    elif data[40:44] == b" EMF":
        ctx.add_unscannable(location, "image (EMF vector picture): text in it is not read")
    elif data[:4] == b"VCLM" or data[:6] == b"VCLMTF":
        ctx.add_unscannable(location, "image (StarView metafile): text in it is not read")
    else:
        ctx.add_unscannable(location, f"image ({mime}): picture of an unknown type is not read")


def read_images(ctx: Context) -> None:
    """OCR the queued images in the order they were found."""
    seen: dict[str, ocr.OcrResult] = {}
    while ctx.images:
        data, label, location = ctx.images.pop(0)
        if isinstance(data, (bytes, bytearray)):
            ctx.images_bytes -= len(data)
        _read_one(ctx, data, label, location, seen)


def drop_images(ctx: Context, reason: str) -> None:
    """The scan stopped (time, memory): every image still queued is unscannable."""
    while ctx.images:
        _data, label, location = ctx.images.pop(0)
        ctx.add_unscannable(location, f"image ({label}): not read: {reason}")
    ctx.images_bytes = 0


def _budget(ctx: Context) -> tuple[float, str]:
    """Seconds this image may take, and which limit bounds it."""
    left_message = ctx.limits.ocr_time_per_message - ctx.ocr_seconds
    left_scan = ctx.deadline - time.monotonic() - RESERVE
    per_image = ctx.limits.ocr_time_per_image
    budget = min(per_image, left_message, left_scan)
    if budget == left_scan and left_scan < per_image:
        return budget, f"scan time (limits.scan_timeout = {ctx.limits.scan_timeout:g} s) used up before OCR"
    if budget == left_message and left_message < per_image:
        return budget, f"OCR time for the message (limits.ocr_time_per_message = {ctx.limits.ocr_time_per_message:g} s) used up"
    return budget, f"OCR time for one image (limits.ocr_time_per_image = {per_image:g} s) used up"


def _read_one(ctx: Context, data: bytes | Loader, label: str, location: str,
              seen: dict[str, ocr.OcrResult]) -> None:
    if not isinstance(data, (bytes, bytearray)):
        try:
            data = data()
        except Unreadable as exc:
            ctx.add_unscannable(location, exc.reason)
            return
        except MemoryError:  # the worker's cap (limits.max_worker_memory): this image only
            ctx.add_unscannable(location, f"image ({label}): {MEMORY_LIMIT_REASON}")
            return
        except Exception as exc:  # a PDF image filter choking on hostile data
            ctx.add_unscannable(location, f"image ({label}) cannot be decoded ({type(exc).__name__})")
            return
    digest = hashlib.sha256(data).hexdigest()
    result = seen.get(digest)
    if result is None:
        budget, limit = _budget(ctx)
        started = time.monotonic()
        result = ocr.read_image(data, location, time_budget=max(0.0, budget) if budget >= MIN_BUDGET else 0.0,
                                max_pixels=ctx.limits.ocr_max_pixels, min_side=ctx.limits.ocr_min_side,
                                max_frames=ctx.limits.ocr_max_frames)
        ctx.ocr_seconds += time.monotonic() - started
        result = _explain_budget(result, limit)
        seen[digest] = result
    _record(ctx, result, label, location)


def _explain_budget(result: ocr.OcrResult, limit: str) -> ocr.OcrResult:
    """"OCR time budget exhausted" -> which limit ran out."""
    def fix(reason: str) -> str:
        return reason.replace("OCR time budget exhausted", limit) if "budget exhausted" in reason else reason

    if "budget exhausted" not in result.reason and not any("budget exhausted" in p.reason for p in result.pages):
        return result
    pages = tuple(ocr.OcrPage(p.index, p.status, p.text, fix(p.reason), p.rotation, p.skew, p.confidence,
                              p.seconds) for p in result.pages)
    return ocr.OcrResult(result.name, result.kind, result.status, fix(result.reason), pages)


def _record(ctx: Context, result: ocr.OcrResult, label: str, location: str) -> None:
    kind = f"image ({label})"
    if not result.pages:  # refused as a whole: type, size, decoder
        if result.status == ocr.SKIPPED:
            ctx.add_skipped(location, result.reason)
        else:
            ctx.add_unscannable(location, f"{kind}: {result.reason}")
        return
    count = len(result.pages)
    for page in result.pages:
        where = ocr.location(location, page.index, count)
        if page.status == ocr.READ:
            ctx.add_text(page.text, where)
        elif page.status == ocr.SKIPPED:
            ctx.add_skipped(where if count > 1 else location, page.reason)
        else:
            ctx.add_unscannable(where if count > 1 else location, f"{kind}: {page.reason}")
