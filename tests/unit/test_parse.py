"""parse.py and mailguard.charsets: MIME walk and decoding on real mail bytes."""

from __future__ import annotations

import base64

import pytest

from mailguard.charsets import decode_header_value, decode_iso2022jp, decode_text, guess_decode
from mailguard.parse import parse_message


def _b_word(charset: str, raw: bytes) -> str:
    return f"=?{charset}?B?{base64.b64encode(raw).decode()}?="


def test_subject_iso2022jp_with_nec_vendor_characters():
    # ①㈱ are NEC row 13: CP50220 bytes the strict iso2022_jp codec rejects.
    raw = "①㈱髙橋".encode("cp932")
    jis = b"\x1b$B" + bytes(_sjis_to_jis(raw)) + b"\x1b(B"
    assert decode_header_value(_b_word("ISO-2022-JP", jis)) == "①㈱髙橋"


def _sjis_to_jis(raw: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(raw), 2):
        s1, s2 = raw[i], raw[i + 1]
        s1 -= 0xB0 if s1 >= 0xE0 else 0x70
        if s2 >= 0x9F:
            j1, j2 = s1 * 2, s2 - 0x7E
        else:
            j1, j2 = s1 * 2 - 1, s2 - (0x20 if s2 >= 0x80 else 0x1F)
        out += bytes((j1, j2))
    return bytes(out)


def test_encoded_words_split_inside_a_character_are_joined():
    raw = "個人番号の確認".encode("utf-8")
    header = _b_word("UTF-8", raw[:4]) + " \r\n " + _b_word("UTF-8", raw[4:])
    assert decode_header_value(header) == "個人番号の確認"


@pytest.mark.parametrize("header", ["=?NONE?B?VEVTVA=?=", "=?utf-8?B?!!!?=", "=?x?Q?=ZZ?="])
def test_broken_encoded_words_never_raise(header):
    assert isinstance(decode_header_value(header), str)


@pytest.mark.parametrize("codec", ["cp932", "euc_jp", "utf-8", "iso2022_jp"])
def test_guess_decode_japanese_without_label(codec):
    text = "マイナンバーの提出について、総務課までお願いします。"
    assert guess_decode(text.encode(codec)) == text


@pytest.mark.parametrize("label", ["shift_jis", "x-sjis", "Shift-JIS", "windows-31j"])
def test_shift_jis_labels_decode_as_cp932(label):
    text = "①髙﨑～"  # CP932-only characters
    assert decode_text(text.encode("cp932"), label) == text


def test_iso2022jp_halfwidth_katakana_escape():
    assert decode_iso2022jp(b"\x1b(I\x36\x45\x1b(B") == "ｶﾅ"


def test_unknown_charset_label_falls_back_to_guessing():
    assert decode_text("個人番号".encode("cp932"), "x-unknown-charset") == "個人番号"


def _mail(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


def test_bom_before_headers():
    msg = parse_message(b"\xef\xbb\xbf" + _mail("Subject: hello\nFrom: a@b\n", b"body\r\n"))
    assert msg.header("Subject") == "hello"


def test_rfc2231_percent_encoded_shift_jis_filename():
    pct = "".join(f"%{b:02X}" for b in "名簿.xlsx".encode("cp932"))
    raw = _mail("From: a@b\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=X\n",
                b"--X\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Disposition: attachment; filename*=shift_jis''" + pct.encode()
                + b"\r\n\r\nabc\r\n--X--\r\n")
    parts = parse_message(raw).parts
    assert [p.filename for p in parts] == ["名簿.xlsx"]


def test_rfc2231_percent_encoded_iso2022jp_filename_wrongly_quoted():
    jis = "名簿".encode("iso2022_jp")
    pct = "".join(f"%{b:02X}" for b in jis)
    raw = _mail("From: a@b\nContent-Type: multipart/mixed; boundary=X\n",
                b"--X\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Disposition: attachment; filename*=\"ISO-2022-JP'ja'" + pct.encode()
                + b".txt\"\r\n\r\nabc\r\n--X--\r\n")
    assert parse_message(raw).parts[0].filename == "名簿.txt"


def test_raw_utf8_filename_is_decoded():
    raw = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
           b"Content-Disposition: attachment; filename=\"" + "名簿.csv".encode() + b"\"\r\n\r\n"
           b"abc\r\n--X--\r\n")
    assert parse_message(raw).parts[0].filename == "名簿.csv"


def test_base64_with_semicolon_and_garbage():
    payload = base64.encodebytes("個人番号".encode("utf-8")).replace(b"\n", b"\n!!\n")
    raw = _mail("From: a@b\nContent-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: base64;\n", payload)
    assert parse_message(raw).parts[0].payload.decode("utf-8") == "個人番号"


def test_uuencoded_file_in_body_becomes_a_part():
    import binascii

    data = b"hello uuencoded world"
    block = b"begin 644 note.txt\r\n" + binascii.b2a_uu(data) + b"`\r\nend\r\n"
    raw = _mail("From: a@b\nContent-Type: text/plain\n", b"see below\r\n" + block)
    parts = parse_message(raw).parts
    assert [p.filename for p in parts] == ["", "note.txt"]
    assert parts[1].payload == data


def test_part_limit_reported_not_crashing():
    body = b"".join(b"--X\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(50))
    raw = _mail("From: a@b\nContent-Type: multipart/mixed; boundary=X\n", body + b"--X--\r\n")
    msg = parse_message(raw, max_parts=10)
    assert "too many MIME parts" in msg.problems
    assert len(msg.parts) <= 10


def test_hostile_deep_multipart_nesting():
    depth = 300
    head = b"".join(b"--B%d\r\nContent-Type: multipart/mixed; boundary=B%d\r\n\r\n" % (i, i + 1)
                    for i in range(depth))
    raw = _mail("From: a@b\nContent-Type: multipart/mixed; boundary=B0\n",
                head + b"--B%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % depth)
    msg = parse_message(raw, max_parts=100000)
    assert msg.problems  # nesting or structure reported; nothing raised


def test_hostile_giant_header():
    raw = _mail("From: a@b\nTo: " + ",\n ".join(f"=?utf-8?q?x{i}?= <u{i}@e.jp>" for i in range(5000))
                + "\nSubject: s\n", b"b\r\n")
    msg = parse_message(raw)
    assert msg.header("Subject") == "s"
