"""PDF -> spans, one per page, plus form fields and embedded files.

pypdf: pure Python, actively maintained, decrypts RC4/AES (with the
`cryptography` package) and maps CID fonts through their ToUnicode CMaps or
the predefined Adobe-Japan1 CMaps, which is what Japanese PDFs use. A PDF
that the empty password does not open is unscannable. Each page is judged on
its own (issue 12): a page whose text layer has fewer than PAGE_TEXT_MIN
characters (a scan, a scanned page 2 behind a typed cover page) has its
images read by OCR (extract.images), located `<pdf> p.2 (OCR)`; a page with
a text layer has its large images read too (a card photo pasted into a typed
letter), its small ones recorded as skipped; pypdf cannot
render a page, so the page's embedded images are what is read. A PDF with no
text layer and no images at all (text drawn as outlines) is unscannable.

SECURITY: hostile PDFs are parsed in non-strict mode; pypdf's own
decompression limits stay on, the per-message deadline is checked between
pages, and the scan runs in a worker that the Scanner kills at the hard
timeout if a single page hangs.

DIAGNOSTICS: pypdf's warnings logger is silenced (it would echo document
content fragments).
"""

from __future__ import annotations

import io
import logging

from mailguard.extract.context import Context, Unreadable, location_join
from mailguard.extract.images import queue_image

logging.getLogger("pypdf").setLevel(logging.CRITICAL)

# A page with fewer non-space characters in its text layer than this, and with
# images, is a scan (perhaps with a printed header line or a stamp): its images
# are read by OCR. A page with more text keeps its text layer, and only its
# large images are read too (a card photo pasted into a typed letter); small
# ones (a letterhead logo, a stamp) are recorded as skipped.
PAGE_TEXT_MIN = 100
# "Large" on a page with a text layer: both sides at least this many pixels, or
# at least TEXT_PAGE_IMAGE_AREA pixels (a wide strip such as a screenshot of
# one table row). A phone photo or scan of a card is far above both; a logo,
# a seal or an icon is below. Not a limits key: it only sorts images that are
# read from those that are recorded as skipped, and ocr_min_side already is
# the admin's knob for "too small to hold a number".
TEXT_PAGE_IMAGE_SIDE = 300
TEXT_PAGE_IMAGE_AREA = 150_000
MAX_PAGE_IMAGES = 20  # images per page handed to OCR; more: unscannable
_RASTER = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"GIF8", b"BM")


def _xobject(page, image_id):
    """The image XObject dictionary behind one of page.images' ids (None for
    inline images, which live in the content stream and are small)."""
    ids = [image_id] if isinstance(image_id, str) else list(image_id)
    obj = page
    for key in ids:
        if key.startswith("~"):
            return None
        resources = obj.get("/Resources")
        resources = resources.get_object() if resources is not None else None
        xobjects = resources.get("/XObject").get_object() if resources is not None and "/XObject" in resources else None
        if xobjects is None or key not in xobjects:
            return None
        obj = xobjects[key].get_object()
    return obj


def _has_images(page) -> bool:
    """Does the page's own resource dictionary name an image? (cheap: no content stream)"""
    try:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        if xobjects is None:
            return False
        return any(x.get_object().get("/Subtype") == "/Image" for x in xobjects.get_object().values())
    except Exception:  # a broken resource dictionary: the page text was read
        return False


def _image_bytes(page, image_id) -> bytes:
    """Decode one image of a page for OCR: JPEG/PNG/TIFF bytes as stored, anything
    else (JPEG 2000, raw samples, CCITT) re-encoded as PNG by Pillow."""
    image = page.images[image_id]
    data = image.data or b""
    if data.startswith(_RASTER):
        return data
    out = io.BytesIO()
    image.image.save(out, "PNG")
    return out.getvalue()


def _large(w: int, h: int) -> bool:
    return (w >= TEXT_PAGE_IMAGE_SIDE and h >= TEXT_PAGE_IMAGE_SIDE) or w * h >= TEXT_PAGE_IMAGE_AREA


def _queue_page_images(ctx: Context, page, name: str, page_loc: str, text_page: bool = False) -> tuple[bool, int]:
    """Queue the images of a page for OCR -> (any images, how many were left
    unread as small images beside a text layer). On a page without a usable
    text layer every image that is not decorative is read; on a text page
    only large ones (`_large`; an image whose size cannot be told is read)."""
    try:
        ids = list(page.images.keys())
    except Exception as exc:
        ctx.add_unscannable(page_loc, f"images of the PDF page could not be listed ({type(exc).__name__})")
        return True, 0
    limits = ctx.limits
    sizes = [_size(page, image_id) for image_id in ids]
    if text_page:
        small = sum(1 for w, h in sizes if w and h and not _large(w, h))
        ids = [i for i, (w, h) in zip(ids, sizes) if not (w and h) or _large(w, h)]
        sizes = [(w, h) for w, h in sizes if not (w and h) or _large(w, h)]
    else:
        small = 0
    if len(ids) > MAX_PAGE_IMAGES:
        ctx.add_unscannable(page_loc, f"PDF page has {len(ids)} images, over the limit of {MAX_PAGE_IMAGES} for OCR")
        return True, small
    for k, (image_id, (w, h)) in enumerate(zip(ids, sizes)):
        where = name if len(ids) == 1 else f"{name} image{k + 1}"
        if w * h > limits.ocr_max_pixels:
            ctx.add_unscannable(where, f"image (PDF image): {w} x {h} pixels, over the {limits.ocr_max_pixels} "
                                       "pixel limit (decompression bomb?); not decoded")
            continue
        if w and h and w < limits.ocr_min_side and h < limits.ocr_min_side:
            ctx.add_skipped(where, f"decorative: {w} x {h} pixels is too small to hold a readable number")
            continue
        queue_image(ctx, lambda page=page, image_id=image_id: _image_bytes(page, image_id), "PDF image", where)
    return bool(ids), small


def _size(page, image_id) -> tuple[int, int]:
    """Width and height from the image dictionary; (0, 0) when it cannot tell."""
    try:
        xobj = _xobject(page, image_id)
        return (int(xobj.get("/Width", 0)), int(xobj.get("/Height", 0))) if xobj is not None else (0, 0)
    except Exception:  # odd dictionaries: let the decoder decide
        return 0, 0


def extract_pdf(ctx: Context, data: bytes, location: str, depth: int) -> None:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise Unreadable(f"corrupt PDF ({type(exc).__name__})") from None
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except (DependencyError, NotImplementedError) as exc:
            raise Unreadable(f"encrypted PDF with an unsupported cipher ({exc})") from None
        except (FileNotDecryptedError, PdfReadError, ValueError, KeyError) as exc:
            raise Unreadable(f"encrypted PDF could not be opened ({type(exc).__name__})") from None
        if not ok:
            raise Unreadable("encrypted PDF (password required)")
    try:
        pages = reader.pages
        count = len(pages)
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Unreadable(f"corrupt PDF ({type(exc).__name__})") from None
    any_text = False
    any_images = False
    text_pages_with_images = 0
    for n in range(count):
        ctx.check_time()
        page_loc = f"{location}/page{n + 1}"
        try:
            text = pages[n].extract_text() or ""
        except (FileNotDecryptedError, DependencyError) as exc:
            raise Unreadable(f"encrypted PDF could not be read ({type(exc).__name__})") from None
        except Exception as exc:  # one broken page must not hide the others
            ctx.add_unscannable(page_loc, f"PDF page could not be read ({type(exc).__name__})")
            text = ""
        if text.strip():
            any_text = True
            ctx.add_text(text, page_loc)
        if len("".join(text.split())) < PAGE_TEXT_MIN:
            any_images |= _queue_page_images(ctx, pages[n], f"{location} p.{n + 1}", page_loc)[0]
        elif _has_images(pages[n]):
            queued, small = _queue_page_images(ctx, pages[n], f"{location} p.{n + 1}", page_loc, text_page=True)
            any_images |= queued
            text_pages_with_images += bool(small)
    if text_pages_with_images:
        ctx.add_skipped(location, f"small images on {text_pages_with_images} page(s) with a text layer were not "
                                  f"OCR'd (the text layer was read; beside one, only images of at least "
                                  f"{TEXT_PAGE_IMAGE_SIDE} x {TEXT_PAGE_IMAGE_SIDE} or {TEXT_PAGE_IMAGE_AREA} "
                                  "pixels are)")
    try:
        fields = reader.get_fields() or {}
    except Exception:  # broken AcroForms are common; the pages were read
        fields = {}
    values = [f"{name}: {f.get('/V')}" for name, f in fields.items()
              if isinstance(f, dict) and f.get("/V") not in (None, "")]
    if values:
        any_text = True
        ctx.add_text("\n".join(values), f"{location}/form")
    if count and not any_text and not any_images:
        ctx.add_unscannable(location, "PDF has neither a text layer nor images (text drawn as outlines?); not read")
    try:
        attachments = reader.attachments
        items = list(attachments.items())
    except Exception as exc:
        ctx.add_unscannable(location, f"PDF embedded files could not be read ({type(exc).__name__})")
        return
    for name, blobs in items:
        for blob in blobs:
            member_loc = location_join(location, name)
            if ctx.take_part(member_loc):
                ctx.charge(len(blob))
                ctx.extract_blob(blob, name, member_loc, depth + 1)
