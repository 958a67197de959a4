"""Notices: Japanese first then English, MIME-correct UTF-8, masked, no content of the mail."""

from __future__ import annotations

import email
from email.policy import default

import pytest

from mailguard.notices import EXPIRED_NOTICE, HELD_NOTICE, REJECTED_NOTICE, build_notice
from mailguard.store import Store


from mynumbers import complete as valid_number  # noqa: E402

NUMBER = valid_number("31415926535")
FULLWIDTH = NUMBER.translate(str.maketrans("0123456789", "０１２３４５６７８９"))


@pytest.fixture
def held(tmp_path):
    s = Store(tmp_path)
    data = (f"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nMessage-ID: <m1@city.example.lg.jp>\r\n"
            f"Subject: =?utf-8?b?5ZCN57C/?= {FULLWIDTH}\r\n\r\nsecret attachment {NUMBER}\r\n").encode()
    return s.add("a@city.example.lg.jp", ["b@example.com"], data, rule="hold-external",
                 reasons=("個人番号 1 件 / 1 person",), notice="管理者の確認が必要です。/ Needs review.",
                 persons=1, subject=f"名簿 {NUMBER[:4]} {NUMBER[4:8]} {NUMBER[8:]}",
                 message_id="<m1@city.example.lg.jp>",
                 findings=[{"masked": "********" + NUMBER[-4:], "confidence": "high",
                            "reason": "keyword", "location": "attachment:名簿.csv", "fingerprint": "ef" * 32}])


@pytest.mark.parametrize("kind", [HELD_NOTICE, REJECTED_NOTICE, EXPIRED_NOTICE])
def test_notice_is_bilingual_masked_and_mime_correct(held, kind):
    raw = build_notice(kind, held, sender="postmaster@city.example.lg.jp",
                       reason=f"contains {NUMBER}", expiry_hours=72)
    raw.decode("ascii")  # 7-bit on the wire: RFC 2047 header, base64 body
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=default)
    assert msg["To"] == "a@city.example.lg.jp" and msg["Auto-Submitted"] == "auto-generated"
    assert held.id in msg["Subject"] and msg["In-Reply-To"] == "<m1@city.example.lg.jp>"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    body = msg.get_content()
    assert body.index("[日本語]") < body.index("[English]")
    assert held.id in body and "hold-external" in body and "********" + NUMBER[-4:] in body
    assert "attachment:名簿.csv" in body
    whole = raw.decode() + body + str(msg["Subject"])
    clear = NUMBER in whole.replace(" ", "") or NUMBER[:8] in whole
    assert not clear, "a number in the clear in the notice"  # never show it in test output
    assert "secret attachment" not in body
    if kind == REJECTED_NOTICE:
        assert "contains ********" + NUMBER[-4:] in body
    if kind == EXPIRED_NOTICE:
        assert "72" in body


def test_header_injection_in_the_sender_does_not_add_headers(held, tmp_path):
    import dataclasses

    evil = dataclasses.replace(held, mail_from="a@x.example\r\nBcc: victim@example.net")
    raw = build_notice(HELD_NOTICE, evil, sender="postmaster@city.example.lg.jp")
    msg = email.message_from_bytes(raw, policy=default)
    assert msg["Bcc"] is None


def test_rule_notice_parts_go_to_their_language_sections(tmp_path):
    from mailguard.policy import load_policy

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "10.toml").write_text(
        '[[rule]]\nname = "r"\naction = "hold"\npersons_min = 1\n'
        'notice = { ja = "外部宛てのため保留しました。\\n\\n確認してください。", en = "Held: external recipient." }\n'
        '[default]\naction = "pass"\n', encoding="utf-8")
    notice = load_policy(tmp_path / "p").rules[0].notice
    s = Store(tmp_path / "store")
    h = s.add("a@city.example.lg.jp", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n", rule="r",
              reasons=("r",), notice=notice, persons=1, subject="x", message_id="", findings=[])
    body = email.message_from_bytes(
        build_notice(HELD_NOTICE, h, sender="postmaster@city.example.lg.jp", expiry_hours=72),
        policy=default).get_content()
    ja, en = body.split("[English]")
    assert "外部宛てのため保留しました。" in ja and "確認してください。" in ja and "Held: external" not in ja
    assert "Held: external recipient." in en and "保留しました" not in en


def test_utf8_sender_gets_a_utf8_to_header_and_an_ascii_one_does_not_change(held):
    import dataclasses

    from mailguard.notices import notice_mail_options

    utf8 = dataclasses.replace(held, mail_from="山田@city.example.lg.jp")
    raw = build_notice(HELD_NOTICE, utf8, sender="postmaster@city.example.lg.jp")
    msg = email.message_from_string(raw.decode("utf-8"), policy=default)  # RFC 6532
    assert [a.addr_spec for a in msg["To"].addresses] == ["山田@city.example.lg.jp"]
    assert held.id in msg["Subject"] and "[English]" in msg.get_content()
    assert notice_mail_options("postmaster@city.example.lg.jp", utf8.mail_from) == ["SMTPUTF8"]
    assert notice_mail_options("postmaster@city.example.lg.jp", held.mail_from) == []


@pytest.mark.parametrize("mail_from", ["山田@x.example, victim@example.net", "山田 <a@x.example>", "山田@",
                                       "山田@x.example\r\nBcc: victim@example.net"])
def test_utf8_sender_that_is_not_one_addr_spec_adds_no_address(held, mail_from):
    import dataclasses

    raw = build_notice(HELD_NOTICE, dataclasses.replace(held, mail_from=mail_from),
                       sender="postmaster@city.example.lg.jp")
    msg = email.message_from_string(raw.decode("utf-8"), policy=default)
    assert msg["Bcc"] is None and "victim" not in str(msg["To"]) and "a@x.example" not in str(msg["To"])


@pytest.mark.parametrize("english, japanese", [
    ("3 My Number(s) at medium confidence or above (high 2, medium 1): ********9018, ********1234",
     "個人番号 3 人分(信頼度「中」以上; 高 2、中 1): ********9018, ********1234"),
    ("no My Number at high confidence or above", "信頼度「高」以上の個人番号は見つかりませんでした"),
    ("reply-all: 3 address(es) in To/Cc", "全員に返信(To/Cc に 3 件のアドレス)"),
    ("a reply", "返信"),
    ("2 external recipient(s) in 1 organisation(s): a.example.com, b.example.com",
     "外部の宛先 2 件(1 組織): a.example.com, b.example.com"),
    ("4 internal recipient(s)", "内部の宛先 4 件"),
    ("1 item(s) could not be inspected: attachment:a.zip (encrypted zip)",
     "検査できなかった内容 1 件: attachment:a.zip (encrypted zip)"),
    ("12 external address(es) visible in To/Cc (of 13)", "To/Cc に見える外部のアドレス 12 件(13 件中)"),
    ("something new", "something new"),
])
def test_reasons_read_in_japanese(english: str, japanese: str) -> None:
    from mailguard.notices import reason_ja

    assert reason_ja(english) == japanese
