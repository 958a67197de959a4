"""Pick the reader for a blob by its real type and run it under the limits.

SECURITY: the one place where a reader's failure on hostile bytes becomes an
unscannable item instead of a crash; see the package docstring.

Readers import nothing from here: they recurse through `ctx.extract_blob`,
which calls the dispatcher the Context was built with (this one, by default).

DIAGNOSTICS: none.
"""

from __future__ import annotations

import zlib

from mailguard.extract import archive, images, legacy, mail, odf, ooxml, pdf, text
from mailguard.extract.context import Context, TimeUp, Unreadable, clean_name
from mailguard.extract.sniff import real_type
from mailguard.records import MEMORY_LIMIT_REASON, Attachment


def extract_blob(ctx: Context, data: bytes, name: str, location: str, depth: int) -> None:
    """Record the blob as an attachment and read it by its real type."""
    ctx.check_time()
    if name:
        ctx.add_text(name, location + "#name")
    mime, kind = real_type(data)
    ctx.attachments.append(Attachment(clean_name(name), mime, location, len(data)))
    if depth > ctx.limits.max_depth:
        ctx.add_unscannable(location, f"nested deeper than {ctx.limits.max_depth} levels")
        return
    mark = ctx.added
    try:
        _read(ctx, data, kind, mime, name, location, depth)
    except TimeUp:
        raise
    except MemoryError:
        # The worker's memory cap (limits.max_worker_memory) or the machine's:
        # report the item and go on with the rest of the message.
        ctx.drop_pending_since(mark)
        ctx.add_unscannable(location, MEMORY_LIMIT_REASON)
    except Unreadable as exc:
        ctx.add_unscannable(location, exc.reason)
    except RecursionError:
        ctx.add_unscannable(location, f"{kind}: structure nested too deeply to read")
    except (Exception, zlib.error) as exc:  # a library choking on corrupt input
        ctx.add_unscannable(location, f"corrupt or unreadable {kind} ({type(exc).__name__})")


def _read(ctx: Context, data: bytes, kind: str, mime: str, name: str, location: str,
          depth: int) -> None:
    if kind == "empty":
        return
    if kind in ("text", "html", "rtf"):
        text.extract_text_blob(ctx, data, kind, mime, name, location)
    elif kind == "xlsx":
        ooxml.extract_xlsx(ctx, data, location, depth)
    elif kind in ("docx", "pptx", "ooxml"):
        ooxml.extract_wordprocessing(ctx, data, kind, location, depth)
    elif kind == "xlsb":
        raise Unreadable("Excel binary workbook (.xlsb) is not supported")
    elif kind == "odf":
        odf.extract_odf(ctx, data, location, depth)
    elif kind == "pdf":
        pdf.extract_pdf(ctx, data, location, depth)
    elif kind == "ole":
        legacy.extract_ole(ctx, data, location, depth)
    elif kind in ("zip", "gzip", "bzip2", "xz", "tar"):
        archive.extract_archive(ctx, data, kind, name, location, depth)
    elif kind.startswith("archive:"):
        raise Unreadable(f"archive format not supported ({kind.split(':', 1)[1]})")
    elif kind == "message":
        mail.extract_attached_message(ctx, data, location, depth)
    elif kind == "tnef":
        mail.extract_tnef(ctx, data, location, depth)
    elif kind == "image":
        images.queue_image(ctx, data, mime, location)  # read by OCR after the rest
    elif kind == "media":
        raise Unreadable(f"audio/video ({mime}) is not read")
    else:
        raise Unreadable(f"unrecognised binary format ({mime})")
