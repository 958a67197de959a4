"""Envelope + headers -> Facts: internal/external, organisations, visibility, replies.

Messages are built with the stdlib email package; hostile headers are raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.facts import build_facts, is_internal, is_reply_subject, organisation_of
from mailguard.scan import ScanReport, Unscannable

INTERNAL = ("city.example.lg.jp", "xn--eckwd4c7c.jp")  # the second is ドメイン.jp


def message(to=(), cc=(), sender="tanaka@city.example.lg.jp", subject="資料", **headers) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    if to:
        m["To"] = ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = subject
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content("本文です。")
    return m.as_bytes()


def facts(rcpts, data=b"", sender="tanaka@city.example.lg.jp", report=ScanReport()):
    return build_facts(sender, rcpts, data or message(to=rcpts), report, INTERNAL)


@pytest.mark.parametrize(
    "domain, internal",
    [
        ("city.example.lg.jp", True),
        ("CITY.Example.LG.JP", True),
        ("kyoiku.city.example.lg.jp", True),  # a domain covers its subdomains
        ("evilcity.example.lg.jp", False),  # suffix match is by label, not by string
        ("city.example.lg.jp.attacker.example", False),
        ("example.lg.jp", False),  # the parent is not covered
        ("ドメイン.jp", True),  # IDNA-aware
        ("sub.ドメイン.JP", True),
        ("", False),
    ],
)
def test_internal_external(domain: str, internal: bool) -> None:
    f = facts([f"user@{domain}" if domain else "user"])
    assert f.all_internal is internal
    assert f.any_external is (not internal)


def test_distinct_external_domains_and_organisations() -> None:
    f = facts([
        "a@city.example2.lg.jp",
        "b@soumu.city.example2.lg.jp",  # same organisation, another domain
        "c@town.example3.lg.jp",
        "D@Town.Example3.lg.jp",
        "e@city.example.lg.jp",  # internal
        "a@city.example2.lg.jp",  # duplicate RCPT
    ])
    assert f.recipients == (
        "a@city.example2.lg.jp", "b@soumu.city.example2.lg.jp", "c@town.example3.lg.jp",
        "d@town.example3.lg.jp", "e@city.example.lg.jp",
    )
    assert len(f.external_recipients) == 4
    assert f.external_domains == ("city.example2.lg.jp", "soumu.city.example2.lg.jp", "town.example3.lg.jp")
    assert f.external_orgs == ("example2.lg.jp", "example3.lg.jp")
    assert organisation_of("mail.example.co.jp") == "example.co.jp"


def test_bcc_recipients_are_in_the_envelope_not_visible() -> None:
    data = message(to=["kacho@city.example.lg.jp"])
    f = build_facts("tanaka@city.example.lg.jp", ["kacho@city.example.lg.jp", "x@other.example"],
                    data, ScanReport(), INTERNAL)
    assert f.visible == ("kacho@city.example.lg.jp",)
    assert f.visible_external == ()
    assert f.external_recipients == ("x@other.example",)


def test_visible_to_and_cc_with_display_names() -> None:
    to = [formataddr(("山田 太郎", "yamada@city.example2.lg.jp")), '"Sato, Hanako" <sato@town.example3.lg.jp>']
    cc = ["kacho@city.example.lg.jp", "YAMADA@city.example2.lg.jp"]
    f = facts(["yamada@city.example2.lg.jp"], data=message(to=to, cc=cc))
    assert f.visible == ("yamada@city.example2.lg.jp", "sato@town.example3.lg.jp", "kacho@city.example.lg.jp")
    assert f.visible_external == ("yamada@city.example2.lg.jp", "sato@town.example3.lg.jp")


@pytest.mark.parametrize(
    "subject, reply",
    [
        ("Re: 照会の件", True),
        ("RE: 照会の件", True),
        ("re:照会の件", True),
        ("Re[2]: 照会の件", True),
        ("Re(3): 照会の件", True),
        ("Ｒｅ：照会の件", True),  # full-width
        ("ＲＥ： 照会の件", True),
        ("返信: 照会の件", True),
        ("返信：照会の件", True),
        ("AW: Anfrage", True),
        ("SV: Förfrågan", True),
        ("[city-list:123] Re: 照会", True),
        ("【重要】Re: 照会", True),
        ("Fwd: 照会の件", False),
        ("FW: 照会の件", False),
        ("転送: 照会の件", False),
        ("Fwd: Re: 照会の件", False),  # a forward of a reply is a forward
        ("Report: 集計", False),
        ("Request: 依頼", False),
        ("照会の件 Re:", False),
        ("", False),
    ],
)
def test_reply_subject(subject: str, reply: bool) -> None:
    assert is_reply_subject(subject) is reply


def test_reply_by_in_reply_to_or_references() -> None:
    to = ["asker@city.example2.lg.jp"]
    assert facts(to, data=message(to=to, In_Reply_To="<q1@city.example2.lg.jp>")).is_reply
    assert facts(to, data=message(to=to, References="<q1@city.example2.lg.jp>")).is_reply
    assert not facts(to, data=message(to=to)).is_reply


def test_encoded_subject_reply_prefix() -> None:
    to = ["asker@city.example2.lg.jp"]
    raw = message(to=to, subject="返信: 照会の件")  # EmailMessage encodes it as RFC 2047
    assert b"=?utf-8?" in raw
    assert facts(to, data=raw).is_reply


@pytest.mark.parametrize(
    "to, cc, reply_all",
    [
        (["asker@city.example2.lg.jp"], [], False),
        (["asker@city.example2.lg.jp"], ["tanaka@city.example.lg.jp"], False),  # less the sender
        (["asker@city.example2.lg.jp"], ["other@town.example3.lg.jp"], True),
        (["asker@city.example2.lg.jp", "kacho@city.example.lg.jp"], [], True),
    ],
)
def test_reply_all(to: list[str], cc: list[str], reply_all: bool) -> None:
    data = message(to=to, cc=cc, subject="Re: 照会")
    assert facts(to + cc, data=data).is_reply_all is reply_all
    # the same recipients without a reply marker are never a reply-all
    assert facts(to + cc, data=message(to=to, cc=cc, subject="照会")).is_reply_all is False


def test_sender_in_to_does_not_count_for_reply_all() -> None:
    data = message(to=["Tanaka@City.Example.LG.JP", "asker@city.example2.lg.jp"], subject="RE: 照会")
    assert facts(["asker@city.example2.lg.jp"], data=data).is_reply_all is False


@dataclass(frozen=True)
class _F:
    masked: str
    confidence: str
    fingerprint: str
    location: str = "body"


def test_persons_by_confidence_count_distinct_numbers() -> None:
    findings = (
        _F("********0001", "high", "fp1"),
        _F("********0001", "medium", "fp1", "attachment:a.csv"),  # same person twice
        _F("********0002", "medium", "fp2"),
        _F("********0003", "low", "fp3"),
    )
    report = ScanReport(findings=findings, persons=2, unscannable=(Unscannable("attachment:x.zip", "encrypted"),))
    f = facts(["a@city.example.lg.jp"], report=report)
    assert f.persons == 2
    assert f.persons_by_confidence == {"low": 3, "medium": 2, "high": 1}
    assert f.masked_at("medium") == ("********0001", "********0002")
    assert f.unscannable[0].reason == "encrypted"


def test_persons_beyond_the_findings_cap_come_from_the_scanners_counts() -> None:
    # The report keeps limits.max_findings findings but counts every number; a
    # rule with confidence = "high" must see the full count, not the kept list.
    kept = tuple(_F(f"********{i:04d}", "high", f"fp{i}") for i in range(3))
    report = ScanReport(findings=kept, persons=1600, persons_high=1500, numbers=1700, findings_total=1800)
    f = facts(["a@city.example.lg.jp"], report=report)
    assert f.persons_by_confidence == {"low": 1700, "medium": 1600, "high": 1500}


HOSTILE = [
    b"To: =?bogus-charset?B?!!!?= <a@x.example>\r\nSubject: =?utf-8?Q?Re=3A_x?=\r\n\r\nbody",
    b"To: \"unterminated <a@x.example>, b@y.example\r\nCc: <<<@@@>>>\r\n\r\n",
    b"To: group: a@x.example, b@y.example;\r\nSubject: \xff\xfe\x00Re:\r\n\r\n",
    b"To: " + b"a@x.example," * 20000 + b"\r\n\r\n",
    b"\r\n\r\nno headers at all",
    b"",
    b"To: (comment a@hidden.example) b@y.example\r\n\r\n",
    b"To: \x00\x01\x02\r\n Cc:\r\n\tfolded@z.example\r\n\r\n",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_headers_do_not_break_facts(raw: bytes) -> None:
    f = build_facts("<tanaka@city.example.lg.jp>", ["a@x.example"], raw, ScanReport(), INTERNAL)
    assert f.external_recipients == ("a@x.example",)
    assert len(f.visible) <= 10000


def test_unparseable_to_still_counts_its_addresses() -> None:
    raw = b'To: "unterminated <a@x.example>, b@y.example\r\n\r\n'
    f = build_facts("s@city.example.lg.jp", ["a@x.example"], raw, ScanReport(), INTERNAL)
    assert {"a@x.example", "b@y.example"} <= set(f.visible_external)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=60))
def test_arbitrary_bytes_never_raise(raw: bytes, rcpt: str) -> None:
    build_facts(rcpt, [rcpt, "a@x.example"], b"To: " + raw + b"\r\nSubject: " + raw + b"\r\n\r\n",
                ScanReport(), INTERNAL)


def test_is_internal_needs_a_domain() -> None:
    assert not is_internal("", INTERNAL)
    assert is_internal("a.city.example.lg.jp", INTERNAL)


def test_a_raw_utf8_subject_is_read_as_text():
    """A subject in raw UTF-8 (no RFC 2047: SMTPUTF8 mailers, some Japanese clients)
    is read as the email package's default policy reads it (issue 15 made facts and
    the hold store read it one way): the reply prefix is seen, the text is intact."""
    from mailguard.facts import build_facts
    from mailguard.records import ScanReport

    data = ("From: a@city.example.lg.jp\r\nTo: b@example.com, c@example.com, d@example.com\r\n"
            "Subject: 返信: 名簿の送付\r\nMessage-ID: <r@x>\r\n\r\nbody\r\n").encode("utf-8")
    f = build_facts("a@city.example.lg.jp", ["b@example.com"], data, ScanReport(), ["city.example.lg.jp"])
    assert f.subject == "返信: 名簿の送付" and f.is_reply and f.message_id == "<r@x>"
    latin = b"From: a@city.example.lg.jp\r\nSubject: caf\xe9\r\n\r\nx\r\n"
    g = build_facts("a@city.example.lg.jp", ["b@example.com"], latin, ScanReport(), ["city.example.lg.jp"])
    assert g.subject.startswith("caf") and "\r" not in g.subject and "\n" not in g.subject
