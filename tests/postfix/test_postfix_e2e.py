"""The whole path with a real Postfix: staff MUA -> Postfix -> mailguard -> upstream.

Each scenario of issue 7 is one test. Postfix is configured with the lines an
admin pastes from deploy/postfix/ (see postfix_harness.read_deploy_lines), so a
wrong line there fails here.

My Numbers in these messages are synthetic (check digit computed here) and are
never printed: assertions compare bytes and report only counts and masked forms.
"""

from __future__ import annotations

import json
import random
import re
import email.policy
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from postfix_harness import MailguardProcess, PostfixInstance, Sink, wait_for
from mynumbers import mask as masked, my_numbers

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

CLERK = "clerk@city.example.lg.jp"


def my_number(rng: random.Random) -> str:
    return my_numbers(1, rng.randrange(2**32))[0]


def numbers(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [my_number(rng) for _ in range(count)]


def message(subject: str, body: str, *, to: list[str], cc: list[str] = (),
            csv_rows: list[str] | None = None, reply: bool = False) -> tuple[bytes, str]:
    """A staff message; returns (bytes, a unique marker found in the body)."""
    marker = make_msgid(domain="test")[1:-1]
    m = EmailMessage()
    m["From"] = f"Clerk <{CLERK}>"
    m["To"] = ", ".join(to) if to else "undisclosed-recipients:;"
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = ("Re: " if reply else "") + subject
    if reply:
        m["In-Reply-To"] = "<inquiry-1@other-city.example.jp>"
        m["References"] = "<inquiry-1@other-city.example.jp>"
    m["Message-ID"] = f"<{marker}>"
    m.set_content(f"{body}\n\nmarker: {marker}\n")
    if csv_rows is not None:
        csv = "氏名,個人番号\r\n" + "".join(f"住民{i},{n}\r\n" for i, n in enumerate(csv_rows))
        m.add_attachment(csv.encode("utf-8"), maintype="text", subtype="csv",
                         filename="名簿.csv")
    return m.as_bytes(), marker


def attachment_text(data: bytes) -> bytes:
    msg = message_from_bytes(data, policy=email.policy.default)
    (part,) = list(msg.iter_attachments())
    return part.get_content().encode("utf-8") if part.get_content_maintype() == "text" else part.get_content()


def held_list(mg: MailguardProcess) -> list[dict]:
    r = mg.cli("held", "list", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def assert_no_clear_numbers(text: str | bytes, nums: list[str], where: str) -> None:
    t = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    leaked = [masked(n) for n in nums if n in t]
    assert not leaked, f"{where} shows My Numbers in the clear: {leaked}"


# ------------------------------------------------------------------ scenarios


def test_clean_mail_arrives_at_the_upstream(postfix: PostfixInstance, mailguard: MailguardProcess,
                                            upstream: Sink) -> None:
    data, marker = message("会議のご案内", "来週の会議は3階で行います。", to=["someone@example.com"])
    qid = postfix.submit(data, CLERK, ["someone@example.com"])

    line = postfix.wait_status(qid, "sent")
    assert f"relay=127.0.0.1[127.0.0.1]:{mailguard.port}" in line  # it went through mailguard
    (got,) = upstream.wait_for(marker, on_timeout=mailguard.log_tail)
    assert got.mail_from == CLERK and got.rcpt_tos == ["someone@example.com"]
    assert data.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n") in got.data  # body untouched


def test_my_numbers_to_an_external_recipient_are_held_then_released(
        postfix: PostfixInstance, mailguard: MailguardProcess, upstream: Sink) -> None:
    nums = numbers(3, seed=7)
    data, marker = message("ご依頼の名簿", "ご依頼の名簿を添付します。", to=["tanto@example.com"],
                           csv_rows=nums)
    qid = postfix.submit(data, CLERK, ["tanto@example.com"])

    # mailguard took responsibility (250 after the message was durably held), so
    # Postfix is done with it; nothing reached the recipient.
    postfix.wait_status(qid, "sent")
    assert not postfix.queue_ids()
    held = [h for h in held_list(mailguard) if h["to"] == ["tanto@example.com"] and h["state"] == "held"]
    assert len(held) == 1, held
    assert held[0]["rule"] == "external-hold" and held[0]["persons"] == 3
    assert not [r for r in upstream.find(marker) if "tanto@example.com" in r.rcpt_tos]

    # The admin checks it and releases it: the very bytes mailguard received
    # reach the upstream, to the original recipient.
    shown = mailguard.cli("held", "show", held[0]["id"])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert_no_clear_numbers(shown.stdout + shown.stderr, nums, "held show")
    rel = mailguard.cli("held", "release", held[0]["id"], "--reason", "送付先を本人に確認済み")
    assert rel.returncode == 0, rel.stderr[-2000:]
    assert_no_clear_numbers(rel.stdout + rel.stderr, nums, "held release")

    (got,) = [r for r in upstream.wait_for(marker) if "tanto@example.com" in r.rcpt_tos]
    assert got.mail_from == CLERK and got.rcpt_tos == ["tanto@example.com"]
    assert attachment_text(got.data) == attachment_text(data)  # the attachment arrived intact
    states = {h["id"]: h["state"] for h in held_list(mailguard)}
    assert held[0]["id"] not in states or states[held[0]["id"]] == "released"
    assert_no_clear_numbers(mailguard.log(), nums, "mailguard's log")
    assert_no_clear_numbers(postfix.log(), nums, "Postfix's log")


def test_blocked_reply_all_bounces_to_the_sender_with_the_reason(
        postfix: PostfixInstance, mailguard: MailguardProcess, upstream: Sink,
        mailbox: Sink) -> None:
    # The Commission's case: "reply all" to an inquiry, with a file of My Numbers,
    # to officials of other cities.
    others = ["asker@a-city.example.jp", "staff@b-town.example.jp", "staff@c-village.example.jp"]
    nums = numbers(5, seed=11)
    data, marker = message("住民情報の照会について", "照会のあった件、名簿を添付します。",
                           to=others[:1], cc=others[1:], csv_rows=nums, reply=True)
    qid = postfix.submit(data, CLERK, others)

    line = postfix.wait_status(qid, "bounced")
    assert re.search(r"said: 550[ -]5\.7\.1", line), line
    # The sender gets Postfix's bounce, with mailguard's reason in it.
    (bounce,) = mailbox.wait_for("reply-all", on_timeout=postfix.log_tail)
    assert bounce.mail_from in ("", "<>") and bounce.rcpt_tos == [CLERK]
    text = bounce.data.decode("utf-8", "replace")
    assert "550" in text and "5.7.1" in text
    assert "reply-all" in text.lower()
    assert qid in text or marker in text
    # Nothing reached the outside.
    assert not [r for r in upstream.snapshot() if set(r.rcpt_tos) & set(others)]
    assert_no_clear_numbers(mailguard.log(), nums, "mailguard's log")
    assert_no_clear_numbers(postfix.log(), nums, "Postfix's log")


def test_sixty_recipients_reach_mailguard_as_one_transaction(
        postfix: PostfixInstance, mailguard: MailguardProcess, upstream: Sink) -> None:
    # Postfix's default recipient limit (50) would split this into two deliveries,
    # and a policy that counts recipients would see two smaller messages.
    rcpts = [f"member{i:02d}@org{i:02d}.example.com" for i in range(60)]
    data, marker = message("お知らせ", "年末の窓口時間のお知らせです。", to=[])  # all Bcc
    qid = postfix.submit(data, CLERK, rcpts)

    wait_for(lambda: f"{qid}: removed" in postfix.log(), 30, "Postfix to finish",
             on_timeout=postfix.log_tail)
    assert "status=sent" in postfix.wait_status(qid, "sent")
    got = upstream.wait_for(marker)
    # mailguard forwards each transaction it receives as one transaction.
    assert [sorted(r.rcpt_tos) for r in got] == [sorted(rcpts)]
    connects = re.findall(rf"{qid}: to=<[^>]+>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{mailguard.port}",
                          postfix.log())
    assert len(connects) == 60


def test_postfix_defers_while_mailguard_is_stopped_and_delivers_when_it_is_back(
        postfix: PostfixInstance, mailguard: MailguardProcess, upstream: Sink) -> None:
    mailguard.stop()
    data, marker = message("議事録", "議事録を送ります。", to=["partner@example.com"])
    qid = postfix.submit(data, CLERK, ["partner@example.com"])

    line = postfix.wait_status(qid, "deferred")
    assert "Connection refused" in line
    # kept, not lost; the queue file moves between directories while we list them
    wait_for(lambda: qid in postfix.queue_ids("deferred", "active", "incoming"), 10,
             f"{qid} in Postfix's queue", on_timeout=postfix.log_tail)

    mailguard.start()
    postfix.wait_status(qid, "sent", timeout=60)
    got = upstream.wait_for(marker)
    assert len(got) == 1 and got[0].rcpt_tos == ["partner@example.com"]
    wait_for(lambda: not postfix.queue_ids(), 30, "Postfix's queue to empty", on_timeout=postfix.log_tail)


def test_postfix_defers_while_the_upstream_is_down_and_delivers_when_it_is_back(
        postfix: PostfixInstance, mailguard: MailguardProcess, upstream: Sink) -> None:
    upstream.stop()
    data, marker = message("見積書", "見積書を送ります。", to=["vendor@example.com"])
    qid = postfix.submit(data, CLERK, ["vendor@example.com"])

    # mailguard cannot hand it on, so it answers 451 and Postfix keeps the mail.
    line = postfix.wait_status(qid, "deferred")
    assert re.search(r"said: 451[ -]4\.\d\.\d", line), line
    wait_for(lambda: qid in postfix.queue_ids("deferred", "active", "incoming"), 10,
             f"{qid} in Postfix's queue", on_timeout=postfix.log_tail)
    assert not held_list(mailguard)  # a tempfail, not a hold

    upstream.start()
    postfix.wait_status(qid, "sent", timeout=60)
    got = upstream.wait_for(marker)
    assert len(got) == 1 and got[0].rcpt_tos == ["vendor@example.com"]
    wait_for(lambda: not postfix.queue_ids(), 30, "Postfix's queue to empty", on_timeout=postfix.log_tail)
