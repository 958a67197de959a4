"""OpenDocument (odt, ods, odp, ...) -> spans.

Read from content.xml and styles.xml (page headers/footers) with lxml.iterparse
rather than odfpy: odfpy builds a full DOM of the whole document, which is slow
and unbounded for a large spreadsheet. Spreadsheet cells take the exact
`office:value` for numbers (the displayed text may be rounded, "1.23457E+11"),
carry their column header and share a group per table; repeated rows/columns
only move the cursor. Ruby text is skipped like furigana. A package whose
manifest declares encryption is unscannable. Pictures (`Pictures/`) go to
OCR (extract.images).

SECURITY: same XML hardening as extract.ooxml; members read through the
archive reader's bounded decompression.

DIAGNOSTICS: none.
"""

from __future__ import annotations

from mailguard.extract.context import Context, Unreadable, location_join
from mailguard.extract.archive import open_zip, read_zip_member
from mailguard.extract.images import add_picture
from mailguard.extract.ooxml import _iterparse, _local, exact_number
from mailguard.extract.text import add_table

_SKIP = frozenset(("ruby-text", "annotation-end", "tracked-changes"))
_TEXT_BLOCKS = frozenset(("p", "h"))
MAX_REPEAT = 1000


def _block_text(el) -> str:
    out: list[str] = []

    def walk(node) -> None:
        stack = [(node, False)]
        while stack:
            item, is_tail = stack.pop()
            if is_tail:
                out.append(item)
                continue
            tag = _local(item.tag)
            if tag in _SKIP:
                if item.tail and item is not node:
                    out.append(item.tail)
                continue
            if item.text and tag not in ("note-citation",):
                out.append(item.text)
            elif tag == "s":
                out.append(" " * min(int(item.get(_attr(item, "c")) or 1), 100))
            elif tag == "tab":
                out.append("\t")
            elif tag == "line-break":
                out.append("\n")
            if item.tail and item is not node:
                stack.append((item.tail, True))
            stack.extend((child, False) for child in reversed(item))

    walk(el)
    return "".join(out)


def _attr(el, local: str) -> str:
    for key in el.attrib:
        if _local(key) == local:
            return key
    return local


def _get(el, local: str) -> str | None:
    for key, value in el.attrib.items():
        if _local(key) == local:
            return value
    return None


def extract_odf(ctx: Context, data: bytes, location: str, depth: int) -> None:
    zf = open_zip(data)
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        manifest = infos.get("META-INF/manifest.xml")
        if manifest is not None and b"encryption-data" in read_zip_member(ctx, zf, manifest):
            raise Unreadable("encrypted OpenDocument (password protected)")
        if "content.xml" not in infos:
            raise Unreadable("OpenDocument package has no content.xml")
        for part, label in (("content.xml", "content"), ("styles.xml", "styles"),
                            ("meta.xml", "properties")):
            if part in infos:
                ctx.check_time()
                _read_odf_xml(ctx, read_zip_member(ctx, zf, infos[part]),
                              location if label == "content" else f"{location}/{label}")
        for name, info in infos.items():
            where = location_join(location, name)
            if name.startswith("Pictures/") and not info.is_dir():
                try:
                    add_picture(ctx, read_zip_member(ctx, zf, info), where)  # OCR (issue 12)
                except Unreadable as exc:
                    ctx.add_unscannable(where, exc.reason)
            elif name.startswith("Thumbnails/") and not info.is_dir():
                ctx.add_skipped(where, "document thumbnail: a small preview of the pages read above")


def _read_odf_xml(ctx: Context, xml: bytes, location: str) -> None:
    body: list[str] = []
    table_rows: list[list[str]] | None = None
    table_name = ""
    cell_text: list[str] | None = None
    cell_value: str | None = None
    depth_in_cell = 0
    for event, el in _iterparse(xml, ("start", "end")):
        tag = _local(el.tag)
        if event == "start":
            if tag == "table" and table_rows is None:
                table_rows, table_name = [], _get(el, "name") or "table"
            elif tag == "table-row" and table_rows is not None:
                table_rows.append([])
            elif tag in ("table-cell", "covered-table-cell") and table_rows is not None:
                depth_in_cell += 1
                if depth_in_cell == 1:
                    cell_text = []
                    vtype = _get(el, "value-type")
                    raw = _get(el, "value")
                    cell_value = exact_number(raw) if raw and vtype in (
                        "float", "currency", "percentage") else None
            continue
        if tag in _TEXT_BLOCKS:
            text = _block_text(el)
            el.clear()
            if cell_text is not None:
                cell_text.append(text)
            elif text:
                body.append(text)
        elif tag in ("title", "description", "subject", "keyword", "initial-creator",
                     "creator") and el.text and len(el) == 0:
            body.append(el.text)
        elif tag in ("table-cell", "covered-table-cell") and table_rows is not None:
            depth_in_cell -= 1
            if depth_in_cell == 0 and table_rows:
                shown = "\n".join(cell_text or []).strip()
                value = cell_value or shown
                if cell_value and len(shown) == 12 + shown.count("-") and shown.replace("-", "").isdigit() \
                        and shown.replace("-", "").lstrip("0") == cell_value:
                    value = shown  # a format that pads to 12 digits: read as displayed
                repeat = int(_get(el, "number-columns-repeated") or 1)
                row = table_rows[-1]
                row.append(value)
                if not value:
                    repeat = min(repeat, MAX_REPEAT)
                    row.extend([""] * min(repeat - 1, MAX_REPEAT))
                cell_text, cell_value = None, None
            el.clear()
        elif tag == "table-row" and table_rows is not None:
            row = table_rows[-1]
            while row and not row[-1]:
                row.pop()
            if not row:
                table_rows.pop()  # empty (possibly repeated 1,048,576 times)
            el.clear()
        elif tag == "table" and table_rows is not None:
            add_table(ctx, table_rows, location_join(location, table_name), grid=True)
            table_rows = None
            ctx.check_time()
    ctx.add_text("\n".join(body), location)
