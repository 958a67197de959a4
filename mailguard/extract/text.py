"""Plain text, CSV, HTML and RTF -> spans.

SECURITY: untrusted text in any charset. HTML goes through the stdlib's
tolerant, non-recursive HTMLParser (a 500 KB tag soup cannot blow the stack);
scripts and styles are skipped, alt/title/value attributes are kept because a
recipient can see them. RTF is reduced to its text with a small linear scanner
(hex escapes decoded with the document's ANSI code page, \\uN escapes honoured).
CSV cells become one span each with their column header and a shared group, so
the detector's header and list rules apply.

DIAGNOSTICS: none.
"""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

from mailguard.charsets import decode_text, guess_decode, looks_garbled, normalise_label
from mailguard.detect.grid import keep_grid_cell
from mailguard.extract.context import Context

MAX_CSV_CELLS = 2_000_000


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    if 0 <= index < len(_LETTERS):
        return _LETTERS[index]
    return _column_letter(index)


def _column_letter(index: int) -> str:
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


_LETTERS = tuple(_column_letter(i) for i in range(26 * 27))  # A .. ZZ


def add_table(ctx: Context, rows, location: str, sep: str = "!", grid: bool = False,
              short_only: bool = False) -> None:
    """Cells -> spans; the first non-empty row is the header of its columns.

    grid: the table is a grid a person reads (sheet, document or HTML table,
    not CSV): cells carry row/col and short digit cells and label cells are kept
    too, so the detector can join a number split over cells. short_only: keep
    only those short cells (HTML, whose full text is scanned as the body)."""
    with ctx.group():
        _add_table(ctx, rows, location, sep, grid, short_only)


def _add_table(ctx: Context, rows, location: str, sep: str, grid: bool, short_only: bool) -> None:
    header: list[str] | None = None
    cells = 0
    keep = ctx.grid_filter() if grid else ctx.cell_filter()
    if short_only and not ctx.all_cells:
        keep = keep_grid_cell
    add = ctx.add_text
    prefix = location + sep
    shortest = 1 if ctx.all_cells or grid else 12  # a shorter cell cannot hold 12 digits
    for r, row in enumerate(rows, 1):
        if r % 1000 == 0:
            ctx.check_time()
        if header is None:
            if any(c.strip() for c in row):
                header = [c.strip() for c in row]
                ctx.note_headers(location, header)
                for c, value in enumerate(row):
                    if keep(value):
                        if grid:
                            add(value, f"{prefix}{column_letter(c)}{r}", "", location, r - 1, c)
                        else:
                            add(value, f"{prefix}{column_letter(c)}{r}", "", location)
            continue
        for c, value in enumerate(row):
            if len(value) < shortest or not keep(value):
                continue
            cells += 1
            if cells > MAX_CSV_CELLS:
                ctx.add_unscannable(location, f"more than {MAX_CSV_CELLS} cells")
                return
            col_header = header[c] if c < len(header) else ""
            if grid:
                add(value, f"{prefix}{column_letter(c)}{r}", col_header, location, r - 1, c)
            else:
                add(value, f"{prefix}{column_letter(c)}{r}", col_header, location)


def looks_like_csv(text: str, name: str, mime: str) -> bool:
    lname = name.lower()
    if lname.endswith((".csv", ".tsv")) or mime in ("text/csv", "application/csv"):
        return True
    lines = [ln for ln in text[:20000].splitlines() if ln.strip()][:20]
    if len(lines) < 3:
        return False
    for delim in (",", "\t"):
        counts = {ln.count(delim) for ln in lines}
        if len(counts) == 1 and counts.pop() >= 1:
            return True
    return False


def extract_csv(ctx: Context, text: str, location: str) -> None:
    sample = text[:4096]
    delim = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    try:
        add_table(ctx, reader, location)
    except csv.Error:
        ctx.add_text(text, location)


def extract_text_blob(ctx: Context, data: bytes, kind: str, mime: str, name: str,
                      location: str, charset: str = "") -> None:
    """A text-like attachment (or body) of real type text/html/rtf."""
    if kind == "html":
        add_html(ctx, decode_html(data, charset), location)
    elif kind == "rtf":
        ctx.add_text(rtf_to_text(data), location)
    else:
        text = decode_text(data, charset) if charset else guess_decode(data)
        if b"\0" in data[:65536] and looks_garbled(text):
            # NUL bytes and a decoding that is mostly control characters: not
            # text we can read with confidence; say so rather than pass it clean.
            ctx.add_unscannable(location, "binary-looking text: no charset decodes it with confidence")
        if looks_like_csv(text, name, mime):
            extract_csv(ctx, text, location)
        else:
            ctx.add_text(text, location)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def decode_html(data: bytes, declared: str = "") -> str:
    if normalise_label(declared):
        return decode_text(data, declared)
    m = _META_CHARSET.search(data[:8192])
    return decode_text(data, m.group(1).decode("ascii")) if m else guess_decode(data)


_BLOCK = frozenset(
    "p div br li ul ol tr table h1 h2 h3 h4 h5 h6 pre blockquote section article header footer "
    "dt dd dl hr title caption form fieldset address center option".split())
_CELL = frozenset(("td", "th"))
_SKIP = frozenset(("script", "style", "template", "noscript"))
_ATTRS = ("alt", "title", "value", "placeholder", "aria-label")


MAX_HTML_TABLE_CELLS = 200_000  # cells kept as a grid per HTML part; the text is scanned anyway


class _TextParser(HTMLParser):
    """HTML -> text; with `tables`, also each <table> as rows of cell texts
    (colspan honoured so columns line up, as Excel and Outlook paste a range;
    a missing </td> or </tr> is closed by the next cell, row or table end)."""

    def __init__(self, tables: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.want_tables = tables
        self.tables: list[list[list[str]]] = []  # finished tables
        self.open: list[list[list[str]]] = []  # tables being read (nested)
        # open cells, innermost last: (table depth, row, index in row, text pieces)
        self.cell: list[tuple[int, list[str], int, list[str]]] = []
        self.cells = 0

    def _close_cells(self, depth: int) -> None:
        while self.cell and self.cell[-1][0] >= depth:
            _, row, i, pieces = self.cell.pop()
            row[i] = "".join(pieces).strip()

    def _table_tag(self, tag: str, attrs, start: bool) -> None:
        depth = len(self.open)
        if tag == "table":
            if start:
                self.open.append([])
            elif self.open:
                self._close_cells(depth)
                table = self.open.pop()
                if table:
                    self.tables.append(table)
            return
        if not depth:
            return
        self._close_cells(depth)  # a row or cell tag ends the open cell of this table
        rows = self.open[-1]
        if tag == "tr":
            if start:
                rows.append([])
        elif start and self.cells < MAX_HTML_TABLE_CELLS:  # td, th
            self.cells += 1
            if not rows:
                rows.append([])
            span = next((v for k, v in attrs if k == "colspan"), None)
            extra = min(int(span), 100) - 1 if span and span.isdigit() and int(span) > 1 else 0
            row = rows[-1]
            row.append("")
            self.cell.append((depth, row, len(row) - 1, []))
            row.extend([""] * extra)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        if self.want_tables and tag in _TABLE_TAGS:
            self._table_tag(tag, attrs, True)
        if tag in _BLOCK:
            self.out.append("\n")
        elif tag in _CELL:
            self.out.append("\t")
        for key, value in attrs:
            if key in _ATTRS and value and value.strip():
                self.out.append(f" {value} ")

    def handle_startendtag(self, tag: str, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIP:
            self.skip -= 1

    def handle_endtag(self, tag: str) -> None:
        if self.want_tables and tag in _TABLE_TAGS and not self.skip:
            self._table_tag(tag, (), False)
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.out.append("\n")
        elif tag in _CELL:
            self.out.append("\t")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)
            if self.cell:
                self.cell[-1][3].append(data)


_TABLE_TAGS = frozenset(("table", "tr", "td", "th"))


def html_to_text(html: str) -> str:
    """HTML -> text, with block and cell boundaries kept as separators."""
    return _parse_html(html, False)[0]


def _parse_html(html: str, tables: bool) -> tuple[str, list[list[list[str]]]]:
    parser = _TextParser(tables)
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    return re.sub(r"\n\s*\n+", "\n", text), parser.tables + [t for t in parser.open if t]


def add_html(ctx: Context, html: str, location: str) -> None:
    """An HTML part: its text as one span, and each <table> as a grid of its
    short cells (digit cells that may join, label cells), so a range pasted
    from Excel (`<td>1234</td><td>5678</td><td>9012</td>`) is read as a person
    reads it. Longer cells are in the text span already."""
    if "<t" not in html and "<T" not in html:
        ctx.add_text(html_to_text(html), location)
        return
    text, tables = _parse_html(html, True)
    ctx.add_text(text, location)
    for n, rows in enumerate(tables, 1):
        add_table(ctx, rows, f"{location}/table{n}", grid=True, short_only=True)


_RTF_TOKEN = re.compile(rb"\\([a-zA-Z]+)(-?\d+)? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}\r\n]+)|[\r\n]+",
                        re.S)
_RTF_SKIP_DEST = frozenset((b"fonttbl", b"colortbl", b"stylesheet", b"info", b"pict", b"object",
                            b"themedata", b"colorschememapping", b"datastore", b"latentstyles",
                            b"listtable", b"listoverridetable", b"rsidtbl", b"generator",
                            b"xmlnstbl", b"mmathPr", b"header", b"footer")) - {b"header", b"footer"}


def rtf_to_text(data: bytes) -> str:
    """RTF -> text. Linear, no recursion; unknown control words are dropped."""
    m = re.search(rb"\\ansicpg(\d+)", data[:4096])
    codepage = f"cp{m.group(1).decode()}" if m else "cp1252"
    try:
        "".encode(codepage)
    except LookupError:
        codepage = "cp932"
    out: list[str] = []
    pending = bytearray()
    stack: list[tuple[bool, int]] = []
    skipping, uc, skip_chars = False, 1, 0
    star = False

    def flush() -> None:
        if pending:
            out.append(bytes(pending).decode(codepage, "replace"))
            pending.clear()

    for tok in _RTF_TOKEN.finditer(data):
        word, arg, hexb, sym, brace, plain = tok.groups()
        if brace == b"{":
            stack.append((skipping, uc))
            star = False
            continue
        if brace == b"}":
            flush()
            skipping, uc = stack.pop() if stack else (False, 1)
            continue
        if skip_chars and (hexb or plain):
            if plain:
                drop = min(skip_chars, len(plain))
                skip_chars -= drop
                plain = plain[drop:]
                if not plain:
                    continue
            else:
                skip_chars -= 1
                continue
        if word is not None:
            if word in _RTF_SKIP_DEST or star:
                skipping = True
                star = False
                continue
            if skipping:
                continue
            if word == b"u" and arg:
                flush()
                out.append(chr(int(arg) % 65536))
                skip_chars = uc
            elif word == b"uc" and arg:
                uc = int(arg)
            elif word in (b"par", b"line", b"row", b"sect", b"page"):
                flush()
                out.append("\n")
            elif word in (b"tab", b"cell"):
                flush()
                out.append("\t")
            continue
        if sym is not None:
            if sym == b"*":
                star = True
            elif not skipping and sym in (b"\\", b"{", b"}"):
                pending += sym
            elif not skipping and sym == b"~":
                pending += b" "
            continue
        if skipping:
            continue
        if hexb is not None:
            pending.append(int(hexb, 16))
        elif plain:
            pending += plain
    flush()
    return "".join(out)
