"""Office Open XML (xlsx/xlsm, docx, pptx) -> spans.

Read directly from the package XML with lxml.iterparse rather than through
openpyxl/python-docx/python-pptx (those are used by the tests to *build*
fixtures): streaming keeps a 10,000-row sheet well under a second, numeric
cells are taken from the stored `<v>` text so a 12-digit number written as
1.23456789018E+11 comes out as its 12 digits, furigana (`rPh`, `w:rt`) is
skipped instead of being glued to the name, and every member is read through
the archive reader's bounded decompression. docx covers body, tables, text
boxes (once: the VML fallback copy is skipped), headers, footers, footnotes,
endnotes, comments and tracked deletions; pptx covers slides, tables, notes,
comments and SmartArt; xlsx covers cells (with their column header and one
group per sheet), sheet headers/footers, comments and drawing text boxes.
Embedded objects (`*/embeddings/*`) are read as nested attachments; pictures
(`*/media/*`) go to OCR (extract.images).

SECURITY: hostile XML: no DTD loading, no entity resolution, no network,
huge_tree off (libxml2's own amplification limits stay on).

DIAGNOSTICS: none.
"""

from __future__ import annotations

import io
import posixpath
import re
from decimal import Decimal, InvalidOperation

from lxml import etree

from mailguard.extract.context import Context, Unreadable, location_join
from mailguard.extract.archive import open_zip, read_zip_member
from mailguard.extract.images import add_picture
from mailguard.extract.text import add_table, column_letter

SKIP = frozenset(("rPh", "rt", "Fallback", "instrText", "delInstrText", "phoneticPr"))
RUN_TEXT = frozenset(("t", "delText"))
_NOT_PLAIN = SKIP | RUN_TEXT | {"tab", "br", "cr"}
_MEDIA = re.compile(r"(word|xl|ppt)/media/[^/]+$")
_XESC = re.compile(r"_x([0-9A-Fa-f]{4})_")
_CELL_REF = re.compile(r"([A-Za-z]{1,3})(\d+)")


_LOCAL: dict[str, str] = {}


def _local(tag) -> str:
    try:
        return _LOCAL[tag]
    except (KeyError, TypeError):
        pass
    if not isinstance(tag, str):
        return ""  # comments, processing instructions
    local = tag.rsplit("}", 1)[-1]
    if len(_LOCAL) < 10_000:  # hostile XML may use endless distinct names
        _LOCAL[tag] = local
    return local


def _unescape(text: str) -> str:
    """OOXML's _xHHHH_ escapes -> characters."""
    if "_x" not in text:
        return text
    return _XESC.sub(lambda m: chr(int(m.group(1), 16)), text)


def _iterparse(data: bytes, events=("end",), tag=None):
    return etree.iterparse(io.BytesIO(data), events=events, tag=tag, resolve_entities=False,
                           no_network=True, huge_tree=False, load_dtd=False, recover=False)


_SHEET_TAGS = tuple("{*}" + t for t in ("row", "c", "oddHeader", "oddFooter", "evenHeader",
                                        "evenFooter", "firstHeader", "firstFooter"))


def gather_text(el) -> str:
    """Text of the run-text descendants of el, skipping furigana and fallbacks."""
    if len(el) == 1 and _local(el.tag) not in _NOT_PLAIN:
        # fast path: <si><t>text</t></si>, the usual shared string
        child = el[0]
        if not len(child) and _local(child.tag) in RUN_TEXT:
            return _unescape(child.text or "")
    out: list[str] = []
    stack = [el]
    while stack:
        node = stack.pop()
        tag = _local(node.tag)
        if tag in SKIP:
            continue
        if tag in RUN_TEXT:
            if node.text:
                out.append(node.text)
        elif tag == "tab":
            out.append("\t")
        elif tag in ("br", "cr"):
            out.append("\n")
        stack.extend(reversed(node))
    return _unescape("".join(out))


def exact_number(raw: str) -> str:
    """A stored numeric cell value -> its exact digits (no float rounding, no exponent)."""
    raw = raw.strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 30:  # the usual integer cell
        return str(int(raw))
    try:
        d = Decimal(raw)
    except InvalidOperation:
        return raw
    if not d.is_finite():
        return raw
    if d == d.to_integral_value() and abs(d) < Decimal(10) ** 30:
        return str(int(d))
    return format(d.normalize(), "f")


class _Package:
    """A zip-based Office package with case-insensitive, budgeted member reads."""

    def __init__(self, ctx: Context, data: bytes) -> None:
        self.ctx = ctx
        self.zf = open_zip(data)
        self.infos = {i.filename.lower(): i for i in self.zf.infolist() if not i.is_dir()}

    def has(self, path: str) -> bool:
        return path.lower() in self.infos

    def read(self, path: str) -> bytes:
        return read_zip_member(self.ctx, self.zf, self.infos[path.lower()])

    def names(self) -> list[str]:
        return [i.filename for i in self.infos.values()]

    def rels(self, part: str) -> dict[str, tuple[str, str]]:
        """Relationship id -> (type, resolved target path) for a part."""
        folder, base = posixpath.split(part)
        rel_path = posixpath.join(folder, "_rels", base + ".rels")
        out: dict[str, tuple[str, str]] = {}
        if not self.has(rel_path):
            return out
        for _, el in _iterparse(self.read(rel_path)):
            if _local(el.tag) == "Relationship" and el.get("TargetMode") != "External":
                target = el.get("Target") or ""
                path = target.lstrip("/") if target.startswith("/") else \
                    posixpath.normpath(posixpath.join(folder, target))
                out[el.get("Id") or ""] = (el.get("Type") or "", path)
        return out

    def main_part(self, default: str) -> str:
        for rtype, path in self.rels("").values():
            if rtype.endswith("/officeDocument"):
                return path
        return default

    def embeddings(self, location: str, depth: int) -> None:
        for name in self.names():
            if "/embeddings/" in name.lower():
                try:
                    blob = self.read(name)
                except Unreadable as exc:
                    self.ctx.add_unscannable(location_join(location, name), exc.reason)
                    continue
                self.ctx.extract_blob(blob, posixpath.basename(name),
                             location_join(location, name), depth + 1)

    def pictures(self, location: str) -> None:
        """Pictures (word/media, xl/media, ppt/media) are read by OCR (issue 12):
        a photo of a card pasted into a report is as readable as typed text."""
        for name in self.names():
            lower = name.lower()
            where = location_join(location, name)
            if _MEDIA.match(lower):
                try:
                    blob = self.read(name)
                except Unreadable as exc:
                    self.ctx.add_unscannable(where, exc.reason)
                    continue
                add_picture(self.ctx, blob, where)
            elif lower.startswith("docprops/thumbnail"):
                self.ctx.add_skipped(where, "document thumbnail: a small preview of the pages read above")

    def properties(self, location: str) -> None:
        if self.has("docProps/core.xml"):
            texts = [el.text.strip() for _, el in _iterparse(self.read("docProps/core.xml"))
                     if el.text and el.text.strip() and len(el) == 0]
            self.ctx.add_text("\n".join(texts), location + "/properties")


# ---------------------------------------------------------------- spreadsheets

def _shared_strings(pkg: _Package, path: str) -> list[str]:
    out: list[str] = []
    if not path or not pkg.has(path):
        return out
    for _, el in _iterparse(pkg.read(path)):
        if _local(el.tag) == "si":
            out.append(gather_text(el))
            el.clear()
    return out


def extract_xlsx(ctx: Context, data: bytes, location: str, depth: int) -> None:
    pkg = _Package(ctx, data)
    with pkg.zf:
        wb_path = pkg.main_part("xl/workbook.xml")
        if not pkg.has(wb_path):
            raise Unreadable("spreadsheet has no workbook part")
        rels = pkg.rels(wb_path)
        shared_path = next((p for t, p in rels.values() if t.endswith("/sharedStrings")),
                           posixpath.join(posixpath.dirname(wb_path), "sharedStrings.xml"))
        shared = _shared_strings(pkg, shared_path)
        styles_path = next((p for t, p in rels.values() if t.endswith("/styles")), "")
        padded = _padded_styles(pkg, styles_path)
        sheets: list[tuple[str, str]] = []
        for _, el in _iterparse(pkg.read(wb_path)):
            if _local(el.tag) == "sheet":
                rid = next((v for k, v in el.attrib.items() if _local(k) == "id"), "")
                target = rels.get(rid, ("", ""))[1]
                sheets.append((el.get("name") or f"sheet{len(sheets) + 1}", target))
        for sheet_name, path in sheets:
            ctx.check_time()
            sheet_loc = location_join(location, sheet_name)
            if not path or not pkg.has(path):
                continue  # chartsheets, dialog sheets, dangling ids
            _read_sheet(ctx, pkg.read(path), shared, sheet_loc, padded)
            for rtype, rel_target in pkg.rels(path).values():
                if rtype.endswith(("/comments", "/drawing")) and pkg.has(rel_target):
                    _read_loose_text(ctx, pkg.read(rel_target), f"{sheet_loc}/{'comments' if rtype.endswith('/comments') else 'drawing'}")
        pkg.properties(location)
        pkg.embeddings(location, depth)
        pkg.pictures(location)


_PAD_FORMAT = re.compile(r"0{12}|0{4}([- ])0{4}(?:\1)0{4}")


def _padded_styles(pkg: _Package, path: str) -> dict[str, str]:
    """Cell style index (the `s` attribute) -> separator ("" or "-"/" ") for the
    styles whose number format pads a number to 12 digits (`000000000000`,
    `0000-0000-0000`): such a cell is read as displayed, leading zeros and all.
    Empty (the usual case) when no style does, so cells cost no lookup."""
    if not path or not pkg.has(path):
        return {}
    formats: dict[str, str] = {}
    xf_formats: list[str] = []
    in_xfs = False
    for event, el in _iterparse(pkg.read(path), ("start", "end")):
        tag = _local(el.tag)
        if tag == "cellXfs":
            in_xfs = event == "start"
        elif event == "end" and tag == "numFmt":
            code = (el.get("formatCode") or "").split(";", 1)[0]
            code = code.replace("\\", "").replace('"', "")
            m = _PAD_FORMAT.fullmatch(code)
            if m:
                formats[el.get("numFmtId") or ""] = m.group(1) or ""
        elif event == "end" and tag == "xf" and in_xfs:
            xf_formats.append(el.get("numFmtId") or "0")
    return {str(i): formats[f] for i, f in enumerate(xf_formats) if f in formats}


def _pad_number(value: str, sep: str) -> str:
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        return value
    z = value.zfill(12)
    return f"{z[:4]}{sep}{z[4:8]}{sep}{z[8:]}" if sep else z


def _read_sheet(ctx: Context, xml: bytes, shared: list[str], sheet_loc: str,
                padded: dict[str, str] | None = None) -> None:
    with ctx.group():  # one group per sheet: handed to detection whole
        _read_sheet_cells(ctx, xml, shared, sheet_loc, padded or {})


def _read_sheet_cells(ctx: Context, xml: bytes, shared: list[str], sheet_loc: str,
                      padded: dict[str, str]) -> None:
    keep = ctx.grid_filter()
    add = ctx.add_text
    prefix = sheet_loc + "!"
    header: dict[int, str] | None = None
    first_row: dict[int, str] | None = None
    row_no, col_no, rows = 0, -1, 0
    row_cells: list[tuple[int, str, bool, bool]] = []  # (column, value, is_text, kept)
    cell_ref = _CELL_REF.fullmatch
    # End events only (half the events of start+end): a row "starts" at its
    # first cell's end (the row element's attributes are known by then) or, for
    # a row without cells, at its own end.
    row_open = False
    for _event, el in _iterparse(xml, ("end",), _SHEET_TAGS):
        tag = _local(el.tag)
        if tag == "c":
            if not row_open:
                parent = el.getparent()
                if parent is not None and _local(parent.tag) == "row":
                    r = parent.get("r")
                    row_no = int(r) if r and r.isdigit() else row_no + 1
                    col_no, row_cells = -1, []
                    row_open = True
            ref = el.get("r")
            m = cell_ref(ref) if ref else None
            if m:
                col_no = _column_index(m.group(1))
                if not row_no:
                    row_no = int(m.group(2))
            else:
                col_no += 1
            value, is_text = _cell_value(el, shared)
            if padded and not is_text and value and (style := el.get("s")) in padded:
                value = _pad_number(value, padded[style])
            if value:
                kept = keep(value)
                if is_text or header is None or kept:
                    row_cells.append((col_no, value, is_text, kept))
            el.clear()
        elif tag == "row":
            if not row_open:  # a row without cells still counts
                r = el.get("r")
                row_no = int(r) if r and r.isdigit() else row_no + 1
                col_no, row_cells = -1, []
            row_open = False
            rows += 1
            if rows % 2000 == 0:
                ctx.check_time()
            if header is None and row_cells:
                texts = [c for c in row_cells if c[2]]
                if len(texts) >= 2:
                    header = {c: v.strip() for c, v, _, _ in row_cells}
                    ctx.note_headers(sheet_loc, header.values())
                elif first_row is None:
                    first_row = {c: v.strip() for c, v, _, _ in row_cells}
                for c, v, _, kept in row_cells:
                    if kept:
                        add(v, f"{prefix}{column_letter(c)}{row_no}", "", sheet_loc, row_no - 1, c)
            else:
                cols = header or first_row or {}
                for c, v, _, kept in row_cells:
                    if kept:
                        add(v, f"{prefix}{column_letter(c)}{row_no}", cols.get(c, ""), sheet_loc,
                            row_no - 1, c)
            row_cells = []
            el.clear()
            parent = el.getparent()
            while parent is not None and el.getprevious() is not None:
                del parent[0]
        elif tag in ("oddHeader", "oddFooter", "evenHeader", "evenFooter", "firstHeader",
                     "firstFooter") and el.text:
            # &L/&C/&R and font codes are formatting, not text.
            text = re.sub(r"&(?:\"[^\"]*\"|[LCRKBIUSEXYOHPNDTGZF]|\d+)", " ", el.text)
            ctx.add_text(text, f"{sheet_loc}/{tag}")


_COLUMNS: dict[str, int] = {}


def _column_index(letters: str) -> int:
    try:
        return _COLUMNS[letters]
    except KeyError:
        pass
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    _COLUMNS[letters] = n - 1  # at most 3 letters (_CELL_REF): a bounded table
    return n - 1


def _cell_value(el, shared: list[str]) -> tuple[str, bool]:
    ctype = el.get("t") or "n"
    v = None
    inline = None
    for child in el:
        tag = _local(child.tag)
        if tag == "v":
            v = child.text or ""
        elif tag == "is":
            inline = gather_text(child)
    if ctype == "s":
        try:
            return shared[int(v or "")], True
        except (ValueError, IndexError):
            return "", True
    if ctype == "inlineStr":
        return inline or v or "", True
    if ctype in ("str", "e", "d"):
        return _unescape(v or ""), True
    if ctype == "b":
        return "", False
    return (exact_number(v) if v else ""), False


def _read_loose_text(ctx: Context, xml: bytes, location: str) -> None:
    """Comments and drawings: text grouped per comment / per paragraph."""
    out: list[str] = []
    for _, el in _iterparse(xml):
        tag = _local(el.tag)
        if tag in ("comment", "p"):
            out.append(gather_text(el))
            el.clear()
    ctx.add_text("\n".join(t for t in out if t), location)


# ----------------------------------------------------- documents and slides

_DOCX_PARTS = re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml$",
                         re.I)
_PPTX_PARTS = re.compile(r"ppt/(slides/slide|notesSlides/notesSlide|comments/\w*?)(\d*)\.xml$", re.I)
_DIAGRAM_PARTS = re.compile(r"(word|ppt)/diagrams/data\d*\.xml$", re.I)


def _part_label(name: str) -> tuple[tuple[int, int, str], str]:
    m = _PPTX_PARTS.match(name)
    if m:
        kind, num = m.group(1).lower(), int(m.group(2) or 0)
        if kind.startswith("slides"):
            return (num, 0, name), f"slide{num}"
        if kind.startswith("notes"):
            return (num, 1, name), f"notes{num}"
        return (10**6, num, name), posixpath.splitext(posixpath.basename(name))[0]
    m = _DOCX_PARTS.match(name)
    if m:
        label = m.group(1).lower()
        return (0 if label == "document" else 1, 0, name), label
    return (10**7, 0, name), posixpath.splitext(posixpath.basename(name))[0]


def extract_wordprocessing(ctx: Context, data: bytes, kind: str, location: str,
                           depth: int) -> None:
    pkg = _Package(ctx, data)
    with pkg.zf:
        parts = [n for n in pkg.names()
                 if _DOCX_PARTS.match(n) or _PPTX_PARTS.match(n) or _DIAGRAM_PARTS.match(n)]
        if not parts and kind in ("docx", "pptx"):
            raise Unreadable(f"{kind} package has no document parts")
        for name in sorted(parts, key=lambda n: _part_label(n)[0]):
            ctx.check_time()
            _read_flow(ctx, pkg.read(name), f"{location}/{_part_label(name)[1]}")
        pkg.properties(location)
        pkg.embeddings(location, depth)
        pkg.pictures(location)


class _Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None


def _read_flow(ctx: Context, xml: bytes, location: str) -> None:
    """Paragraphs (one span per part) and tables (one span per cell, with headers)."""
    body: list[str] = []
    tables: list[_Table] = []
    table_no = 0
    skip = 0
    for event, el in _iterparse(xml, ("start", "end")):
        tag = _local(el.tag)
        if event == "start":
            if tag in SKIP:
                skip += 1
            elif skip:
                pass
            elif tag == "tbl":
                tables.append(_Table())
            elif tag == "tr" and tables:
                tables[-1].rows.append([])
            elif tag == "tc" and tables:
                tables[-1].cell = []
            continue
        if tag in SKIP:
            skip -= 1
            continue
        if skip:
            continue
        if tag == "p":
            text = gather_text(el)
            el.clear()
            if tables and tables[-1].cell is not None:
                tables[-1].cell.append(text)
            elif text:
                body.append(text)
        elif tag == "text" and el.text:  # pptx legacy comment text
            body.append(el.text)
        elif tag == "tc" and tables and tables[-1].cell is not None:
            if tables[-1].rows:
                tables[-1].rows[-1].append("\n".join(tables[-1].cell).strip())
            tables[-1].cell = None
        elif tag == "tbl" and tables:
            table = tables.pop()
            table_no += 1
            table_loc = f"{location}/table{table_no}"
            add_table(ctx, table.rows, table_loc, grid=True)
            el.clear()
    ctx.add_text("\n".join(body), location)
