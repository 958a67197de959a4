"""State shared by every reader of one message or document, and the helpers
they all use; imports no reader and no dispatcher.

`Context` holds the spans found, the unscannable items, the attachments seen
and the limits budget. A reader that meets a nested container (zip member,
embedded object, attached message) hands the bytes back with
`ctx.extract_blob(...)`; the Context carries the dispatcher it was built with,
so readers never import the dispatcher and imports in extract/ run one way:
package -> dispatch -> readers -> context.

SECURITY: readers handle hostile bytes. A reader signals "cannot read this" by
raising `Unreadable(reason)`. Limits (expanded bytes, expansion ratio, nesting
depth, parts/members, scan time) are charged through the Context; hitting one
makes that item unscannable.

DIAGNOSTICS: none; everything is returned in the Context. Locations and names
pass through `log.scrub` so a number in a file name is masked where it is shown.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

from mailguard.config import LimitsConfig
from mailguard.detect import Span
from mailguard.detect.grid import keep_grid_cell
from mailguard.log import scrub
from mailguard.records import OCR_SUFFIX, Attachment, Skipped, Unscannable

# How a reader hands a nested blob (attachment, archive member, embedded
# object) back for reading by its real type: (ctx, data, name, location, depth).
Dispatch = Callable[["Context", bytes, str, str, int], None]

RATIO_GRACE = 1 << 20  # the expansion ratio applies once a member passes 1 MiB
_NOT_DIGIT = re.compile(r"[^0-9\uff10-\uff19]")


def may_hold_number(text: str) -> bool:
    """A table cell with fewer than 12 digits cannot hold a candidate; skip its span."""
    if len(text) < 12:
        return False
    if text.isascii() and text.isdigit():  # the common numeric cell
        return True
    return len(_NOT_DIGIT.sub("", text)) >= 12


def may_be_grid_cell(text: str) -> bool:
    """A cell of a grid (sheet, table) worth a span: one that may hold a number
    alone, or a short digit cell that may join its neighbours, or a My Number
    label cell (the detector's grid rules need both; mailguard.detect.grid)."""
    return may_hold_number(text) or keep_grid_cell(text)


def _any_cell(_text: str) -> bool:
    return True


class Unreadable(Exception):
    """This item cannot be read; the reason is shown as unscannable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TimeUp(Exception):
    """The per-message scan time ran out (cooperative check)."""


MAX_SKIPPED_NOTED = 200  # skipped items listed per message
MAX_TABLES_NOTED = 200  # tables whose column headers are kept per message
MAX_HEADERS_NOTED = 50  # headers kept per table
FLUSH_SPANS = 2000  # ungrouped spans handed to the sink in batches of about this many


@dataclass
class Context:
    """Extraction state for one message or document.

    Without a `sink`, every span stays in `spans` (tests, bench, ground truth).
    With one, spans are handed to `sink(list_of_spans)` as extraction goes, so
    detection runs item by item and a message's spans are never all held at
    once. A group (one sheet, one CSV, one table) is handed over whole, never
    split, because the detector's list rule counts per group; spans outside
    groups go in batches of about FLUSH_SPANS, in the order they were found.
    """

    limits: LimitsConfig
    deadline: float = float("inf")
    spans: list[Span] = field(default_factory=list)
    unscannable: list[Unscannable] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    expanded: int = 0
    parts: int = 0
    all_cells: bool = False  # keep table cells without 12 digits too (ground-truth tests)
    sink: Callable[[list[Span]], None] | None = None
    open_groups: int = 0
    added: int = 0  # spans added so far (kept or handed to the sink)
    # Set by whoever builds the Context (mailguard.extract.Context sets the
    # package's dispatcher), so readers recurse without importing the dispatcher.
    dispatch: Dispatch | None = None
    # Column headers per table group (issue 17): the report names what was sent
    # beside the numbers (氏名, 住所, ...). Labels only, bounded; never cell values.
    table_headers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Issue 12: items deliberately not read (decorative images), and the images
    # waiting for OCR. Images are read after everything else (extract.images),
    # so text is never starved of time by a slow picture.
    skipped: list[Skipped] = field(default_factory=list)
    images: list[tuple[bytes, str, str]] = field(default_factory=list)  # (data, mime, location)
    images_bytes: int = 0
    ocr_seconds: float = 0.0

    def note_headers(self, group: str, headers: Iterable[str]) -> None:
        if len(self.table_headers) < MAX_TABLES_NOTED:
            self.table_headers[group] = tuple(
                " ".join(h.split())[:60] for h in list(headers)[:MAX_HEADERS_NOTED] if h and h.strip())

    def extract_blob(self, data: bytes, name: str, location: str, depth: int) -> None:
        """Read a nested blob by its real type, through this Context's dispatcher."""
        if self.dispatch is None:
            raise RuntimeError("this Context has no dispatcher; build it with mailguard.extract.Context")
        self.dispatch(self, data, name, location, depth)

    def keep_cell(self, value: str) -> bool:
        return self.all_cells or may_hold_number(value)

    def cell_filter(self) -> Callable[[str], bool]:
        """keep_cell as one plain function, for loops over many cells."""
        return _any_cell if self.all_cells else may_hold_number

    def grid_filter(self) -> Callable[[str], bool]:
        """cell_filter for the cells of a grid: also keeps joinable digit cells and labels."""
        return _any_cell if self.all_cells else may_be_grid_cell

    def add_text(self, text: str, location: str, header: str = "", group: str = "",
                 row: int = -1, col: int = -1) -> None:
        if text and not text.isspace():
            self.spans.append(Span(text, location, header, group, row, col))
            self.added += 1
            if self.sink is not None and not self.open_groups and len(self.spans) >= FLUSH_SPANS:
                self.flush()

    @contextmanager
    def group(self):
        """Spans added inside belong to one group: handed to the sink together."""
        self.open_groups += 1
        try:
            yield
        finally:
            self.open_groups -= 1
        # Not on an exception: the spans stay pending for the final flush.
        if self.sink is not None and not self.open_groups and len(self.spans) >= FLUSH_SPANS:
            self.flush()

    def drop_pending_since(self, mark: int) -> None:
        """With a sink: forget the spans added since `mark` that were not yet
        handed over (an item that failed and is reported unscannable), so a
        half-read giant table is not retried by every later flush."""
        if self.sink is not None:
            k = min(self.added - mark, len(self.spans))
            if k > 0:
                del self.spans[len(self.spans) - k:]

    def flush(self) -> None:
        """Hand the pending spans to the sink (no-op without one).

        If the sink fails (MemoryError), the spans stay pending, so no span is
        dropped undetected; the caller reports the failure.
        """
        if self.sink is not None and self.spans:
            spans, self.spans = self.spans, []
            try:
                self.sink(spans)
            except BaseException:
                self.spans[:0] = spans
                raise

    def add_unscannable(self, location: str, reason: str) -> None:
        item = Unscannable(location, reason)
        if item not in self.unscannable:
            self.unscannable.append(item)

    def add_skipped(self, location: str, reason: str) -> None:
        item = Skipped(location, reason)
        if item not in self.skipped and len(self.skipped) < MAX_SKIPPED_NOTED:
            self.skipped.append(item)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeUp

    def take_part(self, location: str) -> bool:
        """Count one MIME part or archive member; False (and unscannable) past the limit."""
        self.parts += 1
        if self.parts > self.limits.max_parts:
            self.add_unscannable(location, f"more than {self.limits.max_parts} parts or members")
            return False
        return True

    def charge(self, nbytes: int) -> None:
        """Count decompressed bytes; Unreadable once the message's budget is spent."""
        self.expanded += nbytes
        if self.expanded > self.limits.max_expanded_bytes:
            raise Unreadable(f"expanded size limit ({self.limits.max_expanded_bytes} bytes) exceeded")

    def member_cap(self, compressed: int) -> int:
        """Most bytes one member may expand to before the ratio limit applies."""
        return max(RATIO_GRACE, compressed * self.limits.max_ratio)


def location_join(parent: str, name: str) -> str:
    """`attachment:a.zip` + `b.csv` -> `attachment:a.zip/b.csv`, masked and printable."""
    return f"{parent}/{clean_name(name)}" if parent else clean_name(name)


def clean_name(name: str) -> str:
    """A name fit to show: no control characters, bounded, 12-digit runs masked."""
    # Masked first: a zero-width character inside a number is no digit gap
    # once it has become "?".
    name = "".join(ch if ch.isprintable() else "?" for ch in scrub(name))
    if len(name) > 200:
        name = name[:100] + "…" + name[-99:]
    if name.endswith(OCR_SUFFIX.strip()):
        # Only OCR text may have a location ending in " (OCR)" (records.OCR_SUFFIX):
        # a file named "x (OCR)" must not pass its text off as read from an image.
        name = name[:-1] + "?"
    return name
