"""Real messages for the shipped policy, shared by the in-process tests and the
`mailguard check` process tests: each built with the stdlib email package (CSV,
xlsx via openpyxl, an encrypted zip written by hand), numbers with valid check
digits that never appear in ids or assertion text."""

from __future__ import annotations

import io
import struct
import zlib
from email.message import EmailMessage
from pathlib import Path

import openpyxl

from mynumbers import my_numbers

import pytest

from mailguard.config import load_config
from mailguard.pipeline import Pipeline
from mailguard.policy import BLOCK, HOLD, PASS

ROOT = Path(__file__).resolve().parents[1]
ME = "tanaka@city.example.lg.jp"
ASKER_INTERNAL = "suzuki@kyoiku.city.example.lg.jp"
COLLEAGUE = "kacho@city.example.lg.jp"
OTHER_CITIES = ["asker@city.example2.lg.jp", "sato@town.example3.lg.jp", "ito@vill.example4.lg.jp"]


def csv_bytes(numbers: list[str]) -> bytes:
    rows = ["氏名,個人番号"] + [f"住民{i},{n}" for i, n in enumerate(numbers)]
    return ("\r\n".join(rows) + "\r\n").encode("utf-8")


def xlsx_bytes(numbers: list[str]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "名簿"
    ws.append(["氏名", "マイナンバー"])
    for i, n in enumerate(numbers):
        ws.append([f"住民{i}", n])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def zipcrypto_zip(name: str, content: bytes, password: bytes = b"secret") -> bytes:
    """A one-member zip encrypted with traditional PKWARE encryption (stored)."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def crc_byte(crc: int, b: int) -> int:
        return zlib.crc32(bytes([b]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def update(b: int) -> None:
        keys[0] = crc_byte(keys[0], b)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = crc_byte(keys[2], keys[1] >> 24)

    def encrypt(data: bytes) -> bytes:
        out = bytearray()
        for p in data:
            t = (keys[2] | 2) & 0xFFFF
            out.append(p ^ (((t * (t ^ 1)) >> 8) & 0xFF))
            update(p)
        return bytes(out)

    for b in password:
        update(b)
    crc = zlib.crc32(content)
    body = encrypt(bytes(range(11)) + bytes([crc >> 24])) + encrypt(content)
    fname = name.encode("utf-8")
    flags = 0x1 | 0x800  # encrypted, UTF-8 name
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0x21, crc, len(body),
                        len(content), len(fname), 0) + fname
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0, 0, 0x21, crc,
                          len(body), len(content), len(fname), 0, 0, 0, 0, 0, 0) + fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(body), 0)
    return local + body + central + end


def build(to=(), cc=(), subject="資料の送付", body="ご確認ください。", reply_to_id="",
          attachments=()) -> bytes:
    m = EmailMessage()
    m["From"] = f"田中 <{ME}>"
    m["To"] = ", ".join(to) if to else "undisclosed-recipients:;"
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = subject
    m["Message-ID"] = "<answer-1@city.example.lg.jp>"
    if reply_to_id:
        m["In-Reply-To"] = reply_to_id
        m["References"] = reply_to_id
    m.set_content(body)
    for filename, data, maintype, subtype in attachments:
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return m.as_bytes()


def csv_attachment(numbers: list[str], name: str = "回答_個人番号.csv"):
    return (name, csv_bytes(numbers), "text", "csv")


def xlsx_attachment(numbers: list[str]):
    return ("名簿.xlsx", xlsx_bytes(numbers), "application",
            "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


THREE = my_numbers(3)
VISIBLE_30 = [f"kokyaku{i}@corp{i % 7}.example.co.jp" for i in range(30)]
ANSWER = dict(subject="Re: 照会の件（個人番号の確認）", reply_to_id="<inquiry-1@city.example2.lg.jp>",
              body="照会のあった方の個人番号を添付のとおり回答します。")

# (id, envelope recipients, message, action, rule)
CASES = [
    ("motivating: reply-all to other cities with a CSV of numbers",
     OTHER_CITIES, build(to=OTHER_CITIES[:1], cc=OTHER_CITIES[1:], attachments=[csv_attachment(THREE)], **ANSWER),
     BLOCK, "reply-all-external"),
    ("motivating: the same answer to the one internal asker",
     [ASKER_INTERNAL], build(to=[ASKER_INTERNAL], attachments=[csv_attachment(THREE)], **ANSWER),
     PASS, "internal-single-pass"),
    ("over 100 persons to one external",
     OTHER_CITIES[:1], build(to=OTHER_CITIES[:1], attachments=[csv_attachment(my_numbers(120, 1))]),
     BLOCK, "serious-external"),
    ("over 100 persons in xlsx to one external",
     OTHER_CITIES[:1], build(to=OTHER_CITIES[:1], attachments=[xlsx_attachment(my_numbers(101, 2))]),
     BLOCK, "serious-external"),
    ("plain reply to the external asker",
     OTHER_CITIES[:1], build(to=OTHER_CITIES[:1], attachments=[csv_attachment(THREE)], **ANSWER),
     HOLD, "external-hold"),
    ("number in the body to an external recipient",
     OTHER_CITIES[1:2], build(to=OTHER_CITIES[1:2], body=f"個人番号: {THREE[0]} です。"),
     HOLD, "external-hold"),
    ("bcc-only external: headers internal, envelope external",
     [COLLEAGUE, "x@agency.example.go.jp"], build(to=[COLLEAGUE], attachments=[xlsx_attachment(THREE)]),
     HOLD, "external-hold"),
    ("internal multi-recipient",
     [COLLEAGUE, ASKER_INTERNAL], build(to=[COLLEAGUE, ASKER_INTERNAL], attachments=[csv_attachment(THREE)]),
     HOLD, "internal-multi-hold"),
    ("internal reply-all is held, not blocked",
     [COLLEAGUE, ASKER_INTERNAL],
     build(to=[COLLEAGUE], cc=[ASKER_INTERNAL], attachments=[csv_attachment(THREE)], **ANSWER),
     HOLD, "internal-multi-hold"),
    ("one internal recipient",
     [COLLEAGUE], build(to=[COLLEAGUE], attachments=[xlsx_attachment(THREE)]),
     PASS, "internal-single-pass"),
    ("encrypted attachment to external",
     OTHER_CITIES[:1], build(to=OTHER_CITIES[:1], attachments=[
         ("名簿.zip", zipcrypto_zip("名簿.csv", csv_bytes(THREE)), "application", "zip")]),
     HOLD, "unscannable-external-hold"),
    ("encrypted attachment to internal",
     [COLLEAGUE], build(to=[COLLEAGUE], attachments=[
         ("名簿.zip", zipcrypto_zip("名簿.csv", csv_bytes(THREE)), "application", "zip")]),
     PASS, "default"),
    ("30 external addresses visible in To",
     VISIBLE_30, build(to=VISIBLE_30, body="年末のご挨拶"), HOLD, "many-visible-external-hold"),
    ("the same 30 as Bcc",
     VISIBLE_30, build(to=[ME], body="年末のご挨拶"), PASS, "default"),
    ("clean mail to other cities",
     OTHER_CITIES, build(to=OTHER_CITIES, body="会議の日程です。"), PASS, "default"),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("cfg")
    cfg = d / "mailguard.toml"
    cfg.write_text(
        '[organisation]\ninternal_domains = ["City.Example.LG.JP"]\n'
        f'[policy]\ndir = "{ROOT / "policies"}"\n[store]\npath = "{d / "store"}"\n',
        encoding="utf-8",
    )
    return load_config(cfg)


@pytest.fixture(scope="module")
def pipeline(config) -> Pipeline:
    return Pipeline(config)
