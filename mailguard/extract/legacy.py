"""OLE2/CFB containers: legacy Excel, encrypted OOXML, legacy Word/PowerPoint, Outlook .msg.

olefile (pure Python, the standard CFB reader) lists the streams; what they
are decides the reader:
- `EncryptedPackage`: an encrypted xlsx/docx/pptx -> unscannable;
- `Workbook`/`Book`: legacy xls via xlrd (maintained for .xls only, exact
  doubles, detects FILEPASS: RC4 and XOR obfuscation) -> cells with headers;
- `WordDocument`, `PowerPoint Document`: no well-kept pure-Python text
  extractor exists, so they are unscannable (encryption named when the FIB or
  an EncryptedSummary stream says so);
- `__substg1.0_*`: an Outlook message: subject, body and attachments read.

SECURITY: hostile CFB: olefile and xlrd parse in memory only; any exception is
an unscannable item (see extract.dispatch).

DIAGNOSTICS: none.
"""

from __future__ import annotations

import io

from mailguard.charsets import guess_decode
from mailguard.extract.context import Context, Unreadable, location_join
from mailguard.extract.text import add_table


def extract_ole(ctx: Context, data: bytes, location: str, depth: int) -> None:
    import olefile

    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception as exc:  # olefile raises OSError and others on corrupt input
        raise Unreadable(f"corrupt OLE2 file ({type(exc).__name__})") from None
    with ole:
        streams = {"/".join(p) for p in ole.listdir(streams=True, storages=False)}
        top = {s.split("/", 1)[0] for s in streams}
        if "EncryptedPackage" in top:
            raise Unreadable("encrypted Office document (password protected)")
        if "Workbook" in top or "Book" in top:
            _extract_xls(ctx, data, location)
        elif "WordDocument" in top:
            fib = ole.openstream("WordDocument").read(12)
            if len(fib) >= 12 and fib[11] & 0x01:
                raise Unreadable("encrypted Word document (.doc, password protected)")
            raise Unreadable("legacy Word document (.doc): text extraction not supported")
        elif "PowerPoint Document" in top:
            if "EncryptedSummary" in top:
                raise Unreadable("encrypted PowerPoint presentation (.ppt, password protected)")
            raise Unreadable("legacy PowerPoint presentation (.ppt): text extraction not supported")
        elif any(s.startswith("__substg1.0_") for s in top):
            _extract_msg(ctx, ole, streams, location, depth)
        elif top & {"\x01Ole10Native", "Package", "CONTENTS"}:
            _extract_embedded(ctx, ole, top, location, depth)
        else:
            raise Unreadable("unrecognised OLE2 document")


def _extract_embedded(ctx: Context, ole, top: set[str], location: str, depth: int) -> None:
    """An OLE object wrapping a file (oleObject*.bin in Office packages)."""
    if "Package" in top:  # an embedded Office document, stored whole
        name, blob = "Package", ole.openstream("Package").read()
    elif "CONTENTS" in top:  # e.g. an embedded PDF
        name, blob = "CONTENTS", ole.openstream("CONTENTS").read()
    else:
        name, blob = _ole10native(ole.openstream("\x01Ole10Native").read())
    ctx.charge(len(blob))
    ctx.extract_blob(blob, name, location_join(location, name), depth + 1)


def _ole10native(raw: bytes) -> tuple[str, bytes]:
    """[MS-OLEDS] Ole10Native: size, flags, label, path, ..., data size, data."""
    import struct

    try:
        pos = 6
        label_end = raw.index(b"\x00", pos)
        label = raw[pos:label_end].decode("cp932", "replace")
        pos = raw.index(b"\x00", label_end + 1) + 1 + 4  # source path, reserved
        tmp_len = struct.unpack_from("<I", raw, pos)[0]
        pos += 4 + tmp_len
        size = struct.unpack_from("<I", raw, pos)[0]
        pos += 4
        if size <= len(raw) - pos:
            return label or "Ole10Native", raw[pos:pos + size]
    except (ValueError, struct.error):
        pass
    raw_size = int.from_bytes(raw[:4], "little")
    return "Ole10Native", raw[4:4 + raw_size] if 0 < raw_size <= len(raw) - 4 else raw


def _extract_xls(ctx: Context, data: bytes, location: str) -> None:
    import xlrd

    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True, logfile=io.StringIO())
    except xlrd.biffh.XLRDError as exc:
        if "encrypt" in str(exc).lower():
            raise Unreadable("encrypted Excel workbook (.xls, password protected)") from None
        raise Unreadable(f"corrupt Excel workbook ({exc})") from None
    try:
        for index in range(book.nsheets):
            ctx.check_time()
            sheet = book.get_sheet(index)
            rows = (
                [_xls_value(sheet.cell(r, c)) for c in range(sheet.ncols)]
                for r in range(sheet.nrows)
            )
            add_table(ctx, rows, location_join(location, sheet.name), grid=True)
            book.unload_sheet(index)
    finally:
        book.release_resources()


def _xls_value(cell) -> str:
    import xlrd

    if cell.ctype == xlrd.XL_CELL_NUMBER:
        v = cell.value
        if v == int(v) and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    if cell.ctype == xlrd.XL_CELL_TEXT:
        return cell.value
    return ""


def _msg_text(ole, stream: str) -> str:
    raw = ole.openstream(stream).read(32 * 1024 * 1024)
    if stream.endswith("001F"):
        return raw.decode("utf-16-le", "replace")
    return guess_decode(raw)


def _extract_msg(ctx: Context, ole, streams: set[str], location: str, depth: int) -> None:
    """Outlook .msg: subject (0x0037), body (0x1000), attachments (0x3701, names 0x3707/0x3704)."""
    for prop, label in (("0037", "header:Subject"), ("1000", "body"), ("0E1D", "header:Subject")):
        for suffix in ("001F", "001E"):
            name = f"__substg1.0_{prop}{suffix}"
            if name in streams:
                ctx.add_text(_msg_text(ole, name), f"{location}/{label}")
                break
    attach_dirs = sorted({s.split("/", 1)[0] for s in streams if s.startswith("__attach_version1.0_")})
    for n, folder in enumerate(attach_dirs, 1):
        fname = ""
        for prop in ("3707", "3704"):
            for suffix in ("001F", "001E"):
                if f"{folder}/__substg1.0_{prop}{suffix}" in streams:
                    fname = _msg_text(ole, f"{folder}/__substg1.0_{prop}{suffix}").strip("\x00")
                    break
            if fname:
                break
        fname = fname or f"attachment{n}"
        member_loc = location_join(location, fname)
        data_stream = f"{folder}/__substg1.0_37010102"
        if data_stream not in streams:
            ctx.add_unscannable(member_loc, "embedded Outlook item not read")
            continue
        if ctx.take_part(member_loc):
            blob = ole.openstream(data_stream).read()
            ctx.charge(len(blob))
            ctx.extract_blob(blob, fname, member_loc, depth + 1)
