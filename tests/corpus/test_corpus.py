"""Every corpus file through scan, within the limits; decoding ground truth where it exists.

The corpus lives in ../shared/corpus (third-party files, never copied here);
the whole module is skipped when it is absent.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from mailguard.config import LimitsConfig
from mailguard.charsets import guess_decode
from mailguard.scan import extract_document, extract_message, scan_file

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not present"),
]
LIMITS = LimitsConfig()
FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.name != "MANIFEST.txt") \
    if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_file_scans_within_limits(path):
    started = time.monotonic()
    report = scan_file(path, LIMITS)
    elapsed = time.monotonic() - started
    assert elapsed < LIMITS.scan_timeout
    time_limited = any(u.reason == "scan time limit exceeded" for u in report.unscannable)
    assert not time_limited
    # The one check-digit-valid run in the corpus sits inside a dotted token.
    if path.name == "torture.eml":
        assert report.persons == 0


def _read(rel: str) -> bytes:
    return (CORPUS / rel).read_bytes()


@pytest.mark.parametrize("rel,subject,names", [
    ("joruri-mail/iso-2022-jp.eml", "エンコードテスト ISO-2022-JP",
     ["エンコードテスト.txt", "エンコードテスト.txt"]),
    ("joruri-mail/unicode-1-1-utf-7.eml", None, ["エンコードテスト.txt"]),
    ("joruri-mail/invalid_charset_iso-2022-jp.eml", None, ["テスト"]),
])
def test_joruri_subjects_and_filenames(rel, subject, names):
    ex = extract_message(_read(rel), LIMITS)
    if subject is not None:
        subjects = [s.text for s in ex.spans if s.location == "header:Subject"]
        assert subjects == [subject]
    got = [a.name for a in ex.attachments]
    for name in names:
        assert any(g == name or g.startswith(name) for g in got), got


@pytest.mark.parametrize("stem", ["iso2022_jp", "shift_jis", "euc_jp", "shift_jisx0213"])
def test_cjkencodings_twins(stem):
    encoded = _read(f"cpython/{stem}.txt")
    expected = _read(f"cpython/{stem}-utf8.txt").decode("utf-8")
    decoded = guess_decode(encoded)
    if stem == "shift_jisx0213":
        # JIS X 0213 plane characters have no CP932 mapping; everything else must match.
        same = sum(a == b for a, b in zip(decoded, expected))
        assert same / len(expected) > 0.9
    else:
        assert decoded == expected


@pytest.mark.parametrize("stem", ["utf8", "sheets", "formatted_inline_string", "namespace",
                                  "no_cell_ids"])
def test_xlsx2csv_expected_values(stem):
    from mailguard.extract import Context
    from mailguard.extract.dispatch import extract_blob

    ctx = Context(LIMITS, all_cells=True)  # every cell, not only those that may hold a number
    extract_blob(ctx, _read(f"xlsx2csv/{stem}.xlsx"), f"{stem}.xlsx", f"file:{stem}.xlsx", 0)
    cells = {s.text.strip() for s in ctx.spans if "!" in s.location}
    expected = {v.strip() for row in csv.reader(io.StringIO(_read(f"xlsx2csv/{stem}.csv")
                                                            .decode("utf-8")))
                for v in row if v.strip() and not v.startswith("--------")}
    missing = expected - cells
    assert not missing


@pytest.mark.parametrize("rel,names", [
    ("mimekit/winmail.tnef", ["Untitled Attachment"]),
    ("mimekit/attachments.tnef", ["bookmark.htm", "zappa_av1.jpg"]),
    ("mimekit/panic.tnef", ["image001.jpg", "image002.jpg", "image003.png"]),
    ("mimekit/MAPI_ATTACH_DATA_OBJ.tnef", ["VIA_Nytt_1402.doc", "VIA_Nytt_1402.pdf",
                                           "VIA_Nytt_14021.htm"]),
    ("mimekit/data-before-name.tnef", ["AUTOEXEC.BAT", "CONFIG.SYS", "boot.ini"]),
    ("mimekit/multi-value-attribute.tnef", ["208225__5_seconds__Voice_Mail.mp3"]),
    ("mimekit/two-files.tnef", ["AUTHORS", "README"]),
    ("mimekit/unicode-mapi-attr.tnef", ["example.dat"]),
    ("mimekit/unicode-mapi-attr-name.tnef", ["spaconsole2.cfg", "image001.png", "image002.png",
                                             "image003.png"]),
    ("mimekit/garbage-at-end.tnef", []),
])
def test_tnef_expected_names(rel, names):
    ex = extract_document(_read(rel), Path(rel).name, LIMITS)
    got = [a.name for a in ex.attachments[1:]]  # [0] is the .tnef itself
    assert sorted(set(got)) == sorted(set(names))


@pytest.mark.parametrize("rel,reason", [
    ("recursiveextractor/TestDataEncryptedZipCrypto.zip", "encrypted zip entry (ZipCrypto)"),
    ("recursiveextractor/TestDataEncryptedAES.zip", "encrypted zip entry (WinZip AES)"),
    ("libarchive-zip/test_read_format_zip_encryption_data.zip",
     "encrypted zip entry (PKWARE strong encryption)"),
    ("libarchive-zip/test_read_format_zip_encryption_header.zip",
     "zip with encrypted central directory (PKWARE strong encryption)"),
    ("tika/test7Z_protected_passTika.7z", "archive format not supported (7z)"),
    ("msoffcrypto-tool/inputs__example_password.xlsx", "encrypted Office document (password protected)"),
    ("msoffcrypto-tool/inputs__rc4cryptoapi_password.xls", "encrypted Excel workbook (.xls, password protected)"),
    ("msoffcrypto-tool/inputs__xor_password_123456789012345.xls",
     "encrypted Excel workbook (.xls, password protected)"),
    ("msoffcrypto-tool/inputs__rc4cryptoapi_password.doc",
     "encrypted Word document (.doc, password protected)"),
    ("pypdf/r6-both-passwords.pdf", "encrypted PDF (password required)"),
    ("recursiveextractor/zbsm.zip", "expansion ratio limit (100:1) exceeded"),
    ("recursiveextractor/10GB.zip.bz2", "expansion ratio limit (100:1) exceeded"),
    ("tika/quine.gz", "nested deeper than 5 levels"),
])
def test_encrypted_and_hostile_files_are_unscannable(rel, reason):
    ex = extract_document(_read(rel), Path(rel).name, LIMITS)
    assert reason in {u.reason for u in ex.unscannable}


@pytest.mark.parametrize("rel", ["pypdf/r2-empty-password.pdf", "pypdf/r6-empty-password.pdf",
                                 "tika/testPDF_protected.pdf", "tika/protectedSheets.xlsx",
                                 "msoffcrypto-tool/outputs__example.xlsx"])
def test_readable_despite_protection(rel):
    ex = extract_document(_read(rel), Path(rel).name, LIMITS)
    assert ex.spans and not ex.unscannable


def test_cp932_zip_entry_names():
    ex = extract_document(_read("libarchive-zip/test_read_format_zip_filename_cp932.zip"),
                          "a.zip", LIMITS)
    names = [a.name for a in ex.attachments[1:]]
    assert all("\ufffd" not in n for n in names) and any("漢字" in n for n in names), names


def test_rph_furigana_not_in_text():
    ex = extract_document(_read("calamine/rph.xlsx"), "rph.xlsx", LIMITS)
    assert ex.spans and not ex.unscannable
