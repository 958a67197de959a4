"""Notices that reach the sender in Japanese (issue 13.3): a block sends one too,
and every reason shows in Japanese in the Japanese part.

A real `mailguard serve` with a capturing sink as its upstream; the notices are
read from the sink as the sender's mail server would get them.
"""

from __future__ import annotations

import email
from email.policy import default

from hold_support import INTERNAL, NUMBERS, SENDER, Serve, Sink, message_with_numbers, send, write_config

AUTO = b"Auto-Submitted: auto-generated"


def _notice_text(sink: Sink, kind_subject: str) -> str:
    got = sink.wait_for(lambda m: m[1] == [SENDER] and AUTO in m[2]
                        and kind_subject in str(email.message_from_bytes(m[2], policy=default)["Subject"]))
    assert got, f"no {kind_subject!r} notice reached the sender"
    msg = email.message_from_bytes(got[0][2], policy=default)
    return msg.get_body().get_content()


def test_block_and_hold_notices_are_japanese_first_with_japanese_reasons(tmp_path):
    sink = Sink().start()
    cfg = write_config(tmp_path, sink.port)
    srv = Serve(cfg, tmp_path / "serve.log").start()
    try:
        reply_all = message_with_numbers(NUMBERS[:2], subject="Re: 名簿", to="a@example.com, b@example.net")
        reply_all = reply_all.replace(b"To: ", b"In-Reply-To: <q1@example.com>\r\nTo: ", 1)
        code, text = send(srv.port, ["a@example.com", "b@example.net"], reply_all)
        assert code == 550 and "reply-all-external" in text
        body = _notice_text(sink, "blocked")
        ja, _, en = body.partition("[English]")
        assert ja.startswith("[日本語]")
        assert "送信を止めました" in ja and "宛先には届いていません" in ja
        assert "規則: reply-all-external" in ja
        # The rule's own notice.ja, which the ASCII 550 can never carry.
        assert "「全員に返信」で外部に送ろうとしたため" in ja
        assert "対応:" in ja  # what to do
        assert "個人番号 2 人分" in ja and "全員に返信" in ja and "外部の宛先 2 件" in ja
        assert "My Number(s)" not in ja and "external recipient(s)" not in ja
        assert "Rule: reply-all-external" in en and "What to do" in en and "reply-all" in en
        assert "Hold ID" not in body and "保留ID" not in body  # nothing was kept
        for n in NUMBERS:
            assert n not in body
        assert "********" + NUMBERS[0][-4:] in ja
        # Blocked mail itself never reached the upstream.
        assert not [m for m in sink.messages if AUTO not in m[2]]

        code, _ = send(srv.port, ["someone@example.com"], message_with_numbers(NUMBERS[:1]))
        assert code == 250
        ja = _notice_text(sink, "on hold").partition("[English]")[0]
        assert "規則: external-hold" in ja and "外部の宛先 1 件(1 組織): example.com" in ja
        assert "個人番号 1 人分" in ja and "My Number(s)" not in ja
    finally:
        srv.stop()
        sink.stop()
    assert not any(n in (tmp_path / "serve.log").read_text() for n in NUMBERS)
