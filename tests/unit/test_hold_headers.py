"""A hold's Subject and Message-ID (row, notices, audit): read from the header block
with the email policy's registry only where a value needs it (issue 15). The result
must be what the default policy gives when it parses the whole message."""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path

import pytest

from mailguard.hold import _headers, _shown
from mailguard.mailpolicy import default_header as _header
from mynumbers import complete

NUMBER = complete("31415926535")
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

HEADERS = {
    "ascii": b"Subject: quarterly report\r\n",
    "japanese": "Subject: =?utf-8?b?5ZCN57C/44Gu6YCB5LuY?=\r\n".encode(),
    "two encoded words": b"Subject: =?utf-8?b?5ZCN57C/?= =?utf-8?b?44Gu6YCB5LuY?=\r\n",
    "iso-2022-jp folded": b"Subject: =?ISO-2022-JP?B?GyRCTD4kSTxSGyhC?=\r\n =?ISO-2022-JP?B?GyRCTD4kSTxSGyhC?= x\r\n",
    "raw utf-8": "Subject: 名簿\u3000送付\t  です\r\n".encode(),
    "raw latin-1 bytes": b"Subject: caf\xe9 list\r\n",
    "number": f"Subject: 番号 {NUMBER}\r\n".encode(),
    "unknown charset": b"Subject: =?x-unknown?b?5ZCN57C/?=\r\n",
    "folded ascii": b"Subject: a long\r\n\tfolded subject\r\n",
    "control chars": b"Subject: a\x01b\x7fc\r\n",
    "empty": b"Subject:\r\n",
    "twice": b"Subject: first\r\nSubject: second\r\n",
    "lower-case name": b"subject: lower\r\nmessage-id: <low@x>\r\n",
    "odd message-id": b"Message-ID: <a b@c> (comment)\r\n",
    "quoted message-id": b'Message-ID: <"a b"@c>\r\n',
    "bare message-id": b"Message-ID: a@b\r\n",
    "message-id trailing blank": b"Message-ID: <t@x> \r\n",
    "encoded message-id": b"Message-ID: =?utf-8?b?PGFAYj4=?=\r\n",
    "nothing": b"",
}


def _default(data: bytes, name: str) -> str:
    return str(BytesHeaderParser(policy=default).parsebytes(data).get(name, "") or "")


def _cases():
    for name, head in HEADERS.items():
        yield name, b"From: a@city.example.lg.jp\r\n" + head + b"Message-ID: <m@x>\r\n\r\nbody\r\n"
        yield name + " (LF)", (b"From: a@city.example.lg.jp\n" + head + b"\n\nbody\n").replace(b"\r\n", b"\n")
    if CORPUS.is_dir():
        for path in sorted(CORPUS.rglob("*.eml")):
            yield path.name, path.read_bytes()


@pytest.mark.parametrize("name,data", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_reads_what_the_default_policy_reads(name, data):
    from email.policy import compat32

    from mailguard.parse import header_block
    msg = BytesHeaderParser(policy=compat32).parsebytes(header_block(data, 262144))
    for header in ("Subject", "Message-ID"):
        assert _header(msg, header) == _default(data[:262144], header), (name, header)
    want = _shown(_default(data[:262144], "Subject"), _default(data[:262144], "Message-ID"))
    assert _headers(data) == want
    assert NUMBER not in "".join(_headers(data))


@pytest.mark.parametrize("name,data", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_relay_path_through_facts_shows_the_same(name, data):
    """The relay holds with the facts the policy decided on: Subject and Message-ID
    come from them (read once) and must equal a hold built from the bytes alone."""
    from mailguard.facts import build_facts
    from mailguard.hold import _evidence
    from mailguard.records import Decision, ScanReport

    facts = build_facts("a@city.example.lg.jp", ["b@example.com"], data, ScanReport(), ["city.example.lg.jp"])
    with_facts = _evidence("a@city.example.lg.jp", ["b@example.com"], data, Decision("hold", "r", facts=facts))
    from_bytes = _evidence("a@city.example.lg.jp", ["b@example.com"], data, Decision("hold", "r"))
    assert (with_facts["subject"], with_facts["message_id"]) == (from_bytes["subject"], from_bytes["message_id"])
