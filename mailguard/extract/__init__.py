"""Parts and documents -> text spans with locations, no I/O.

One module per format family. `extract.context` holds the shared state
(`Context`: spans found, unscannable items, attachments seen, and the limits
budget); `extract.dispatch` picks a reader by the *real* type of the bytes
(libmagic plus container sniffing in `extract.sniff`), never by declared type
or extension. This package wires the two: `Context` here is the context with
the dispatcher set, so a reader reaches nested containers through the context
it is handed. Imports run one way: this package -> dispatch -> readers
(archive, legacy, mail, odf, ooxml, pdf, text; images, which they queue
pictures with for OCR, read by `read_images` at the end) -> context, sniff,
mailguard.charsets, mailguard.parse, mailguard.records.

SECURITY: every reader handles hostile bytes. A reader signals "cannot read
this" by raising `Unreadable(reason)`; any other exception from a third-party
library on corrupt input is caught by the dispatcher and reported as
unscannable with the exception's type, so a broken file is never silently
clean. Limits are charged through the Context; hitting one makes that item
unscannable.

DIAGNOSTICS: none; everything is returned in the Context.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.extract import context
from mailguard.extract.context import (
    FLUSH_SPANS,
    RATIO_GRACE,
    Dispatch,
    TimeUp,
    Unreadable,
    clean_name,
    location_join,
    may_hold_number,
)
from mailguard.extract.dispatch import extract_blob
from mailguard.extract.images import drop_images, read_images

__all__ = ["FLUSH_SPANS", "RATIO_GRACE", "Context", "Dispatch", "TimeUp", "Unreadable",
           "clean_name", "drop_images", "extract_blob", "location_join", "may_hold_number",
           "read_images"]


@dataclass
class Context(context.Context):
    """An extraction Context whose nested blobs go through `extract.dispatch`."""

    dispatch: Dispatch | None = extract_blob
