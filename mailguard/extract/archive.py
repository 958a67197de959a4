"""zip, gzip, bzip2, xz and tar -> their members, each read by its real type.

SECURITY: archives are the classic attack on scanners. Nothing is written to
disk (so zip-slip names are only labels, shown cleaned). Declared sizes are
never trusted: every member is decompressed in bounded chunks and charged to
the message's expanded-bytes budget, and a member that grows past
max(1 MiB, ratio x its compressed size) is cut off and reported. Overlapping
(Fifield) bombs therefore stop at the budget; quines stop at the depth limit.
Encrypted entries are reported, not guessed at: ZipCrypto (flag bit 0), WinZip
AES (method 99), PKWARE strong encryption (flag bit 6) and an encrypted central
directory (flag bit 13 / unreadable central directory behind an encrypted
local header).

DIAGNOSTICS: none.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import tarfile
import zipfile
import zlib

from mailguard.extract.context import Context, Unreadable, location_join

CHUNK = 1 << 20


def extract_archive(ctx: Context, data: bytes, kind: str, name: str, location: str,
                    depth: int) -> None:
    if kind == "zip":
        extract_zip(ctx, data, location, depth)
    elif kind == "tar":
        extract_tar(ctx, data, location, depth)
    else:
        inner_name, blob = decompress_stream(ctx, data, kind, name)
        if ctx.take_part(location):
            ctx.extract_blob(blob, inner_name, location_join(location, inner_name), depth + 1)


def _bounded_read(ctx: Context, stream, cap: int) -> bytes:
    out = bytearray()
    while True:
        ctx.check_time()
        chunk = stream.read(CHUNK)
        if not chunk:
            return bytes(out)
        ctx.charge(len(chunk))
        out += chunk
        if len(out) > cap:
            raise Unreadable(f"expansion ratio limit ({ctx.limits.max_ratio}:1) exceeded")


def decompress_stream(ctx: Context, data: bytes, kind: str, name: str) -> tuple[str, bytes]:
    """gzip/bzip2/xz -> (inner name, bytes), decompressing with max_length bounds."""
    inner = name
    for ext in (".gz", ".tgz", ".bz2", ".xz", ".gzip"):
        if inner.lower().endswith(ext):
            inner = inner[: -len(ext)] + (".tar" if ext == ".tgz" else "")
            break
    else:
        inner = (inner or "data") + ".out"
    if kind == "gzip":
        inner = _gzip_name(data) or inner
        make = lambda: zlib.decompressobj(wbits=47)  # noqa: E731 - gzip header, multi-member loop below
    elif kind == "bzip2":
        make = bz2.BZ2Decompressor
    else:
        make = lzma.LZMADecompressor
    cap = ctx.member_cap(len(data))
    out = bytearray()
    rest = data
    while rest:
        dec = make()
        buf = rest
        while True:
            ctx.check_time()
            try:
                if kind == "gzip":
                    chunk = dec.decompress(buf, CHUNK)
                    buf = dec.unconsumed_tail
                else:
                    chunk = dec.decompress(buf, max_length=CHUNK)
                    buf = b""
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
                raise Unreadable(f"corrupt {kind} stream ({type(exc).__name__})") from None
            ctx.charge(len(chunk))
            out += chunk
            if len(out) > cap:
                raise Unreadable(f"expansion ratio limit ({ctx.limits.max_ratio}:1) exceeded")
            if kind == "gzip":
                if dec.eof or (not chunk and not buf):
                    break
            elif dec.eof or (not chunk and dec.needs_input):
                break
        if not dec.eof:
            if not out:
                raise Unreadable(f"truncated {kind} stream")
            break
        rest = dec.unused_data
        if kind != "gzip" or not rest.startswith(b"\x1f\x8b"):
            break
    return inner, bytes(out)


def _gzip_name(data: bytes) -> str:
    """The FNAME field of a gzip header (RFC 1952), "" when absent."""
    if len(data) < 10 or not data[3] & 0x08:
        return ""
    pos = 10
    if data[3] & 0x04:  # FEXTRA
        if len(data) < 12:
            return ""
        pos += 2 + struct.unpack_from("<H", data, 10)[0]
    end = data.find(b"\x00", pos, pos + 1024)
    return data[pos:end].decode("latin-1", "replace") if end > pos else ""


def _zip_name(info: zipfile.ZipInfo) -> str:
    """Entry name: Info-ZIP Unicode Path extra field, else UTF-8 flag, else CP932 guess."""
    extra = info.extra
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        if tag == 0x7075 and size > 5:
            try:
                return extra[i + 9: i + 4 + size].decode("utf-8")
            except UnicodeDecodeError:
                break
        i += 4 + size
    if info.flag_bits & 0x800:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    for codec in ("utf-8", "cp932"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            pass
    return raw.decode("cp932", "replace")


def _encryption(info: zipfile.ZipInfo) -> str:
    if info.compress_type == 99:
        return "encrypted zip entry (WinZip AES)"
    if info.flag_bits & 0x40:
        return "encrypted zip entry (PKWARE strong encryption)"
    if info.flag_bits & 0x1:
        return "encrypted zip entry (ZipCrypto)"
    return ""


def _central_directory_encrypted(data: bytes) -> bool:
    """PKWARE SES: local header flag bit 13 masks the local header, CD is encrypted."""
    pos = data.find(b"PK\x03\x04")
    if pos < 0 or pos + 8 > len(data):
        return False
    flags = struct.unpack_from("<H", data, pos + 6)[0]
    return bool(flags & 0x2000) and bool(flags & 0x1)


def open_zip(data: bytes) -> zipfile.ZipFile:
    """zipfile.ZipFile, or Unreadable with the reason a zip cannot be opened."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
            struct.error, NotImplementedError) as exc:
        if _central_directory_encrypted(data):
            raise Unreadable("zip with encrypted central directory (PKWARE strong encryption)") \
                from None
        raise Unreadable(f"corrupt zip ({exc})") from None


def read_zip_member(ctx: Context, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes, decompressed under the budget; Unreadable when not possible."""
    reason = _encryption(info)
    if reason:
        raise Unreadable(reason)
    cap = ctx.member_cap(info.compress_size)
    try:
        try:
            with zf.open(info) as stream:
                return _bounded_read(ctx, stream, cap)
        except zipfile.BadZipFile as exc:
            if "differ" not in str(exc):
                raise
            # Central and local names disagree (an Info-ZIP Unicode path extra
            # field, or a tool that wrote one name twice differently): the local
            # header's name is only a label to us, so read the entry anyway.
            with zf.open(_with_local_name(zf, info)) as stream:
                return _bounded_read(ctx, stream, cap)
    except NotImplementedError:
        raise Unreadable(f"zip compression method {info.compress_type} not supported") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, lzma.LZMAError, ValueError,
            struct.error) as exc:
        raise Unreadable(f"corrupt zip entry ({exc})") from None


def _with_local_name(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    import copy

    fp = zf.fp
    fp.seek(info.header_offset + 26)
    name_len = struct.unpack("<H", fp.read(2))[0]
    fp.seek(info.header_offset + 30)
    local = fp.read(name_len)
    clone = copy.copy(info)
    clone.orig_filename = local.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
    return clone


def extract_zip(ctx: Context, data: bytes, location: str, depth: int) -> None:
    zf = open_zip(data)
    with zf:
        infos = zf.infolist()
        if not infos and _central_directory_encrypted(data):
            raise Unreadable("zip with encrypted central directory (PKWARE strong encryption)")
        for info in infos:
            ctx.check_time()
            if info.is_dir():
                continue
            name = _zip_name(info)
            member_loc = location_join(location, name)
            if not ctx.take_part(member_loc):
                return
            try:
                blob = read_zip_member(ctx, zf, info)
            except Unreadable as exc:
                ctx.add_text(name, member_loc + "#name")
                ctx.add_unscannable(member_loc, exc.reason)
                if "expanded size limit" in exc.reason:
                    # The budget is spent: the rest of the archive cannot be read either.
                    ctx.add_unscannable(location, exc.reason)
                    return
                continue
            ctx.extract_blob(blob, name, member_loc, depth + 1)


def extract_tar(ctx: Context, data: bytes, location: str, depth: int) -> None:
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Unreadable(f"corrupt tar ({exc})") from None
    with tf:
        try:
            for member in tf:
                ctx.check_time()
                if not member.isfile():
                    continue
                member_loc = location_join(location, member.name)
                if not ctx.take_part(member_loc):
                    return
                stream = tf.extractfile(member)
                if stream is None:
                    continue
                try:
                    blob = _bounded_read(ctx, stream, ctx.limits.max_expanded_bytes)
                except Unreadable as exc:
                    ctx.add_unscannable(member_loc, exc.reason)
                    return
                ctx.extract_blob(blob, member.name, member_loc, depth + 1)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise Unreadable(f"corrupt tar ({exc})") from None
