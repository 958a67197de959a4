"""PDF -> spans, one per page, plus form fields and embedded files.

pypdf: pure Python, actively maintained, decrypts RC4/AES (with the
`cryptography` package) and maps CID fonts through their ToUnicode CMaps or
the predefined Adobe-Japan1 CMaps, which is what Japanese PDFs use. A PDF
that the empty password does not open is unscannable; so is one with pages
but no text layer at all (a scan: we do no OCR).

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

logging.getLogger("pypdf").setLevel(logging.CRITICAL)


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
    for n in range(count):
        ctx.check_time()
        page_loc = f"{location}/page{n + 1}"
        try:
            text = pages[n].extract_text() or ""
        except (FileNotDecryptedError, DependencyError) as exc:
            raise Unreadable(f"encrypted PDF could not be read ({type(exc).__name__})") from None
        except Exception as exc:  # one broken page must not hide the others
            ctx.add_unscannable(page_loc, f"PDF page could not be read ({type(exc).__name__})")
            continue
        if text.strip():
            any_text = True
            ctx.add_text(text, page_loc)
    try:
        fields = reader.get_fields() or {}
    except Exception:  # broken AcroForms are common; the pages were read
        fields = {}
    values = [f"{name}: {f.get('/V')}" for name, f in fields.items()
              if isinstance(f, dict) and f.get("/V") not in (None, "")]
    if values:
        any_text = True
        ctx.add_text("\n".join(values), f"{location}/form")
    if count and not any_text:
        ctx.add_unscannable(location, "PDF has no text layer (scanned image?); not read (no OCR)")
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
