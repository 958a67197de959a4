"""replies.py: the upstream-reply sanitiser and the policy block text.

Upstream replies and policy texts are untrusted: a reply the relay writes must be
printable ASCII, one status per line, bounded, and never carry a number.
"""

from __future__ import annotations

import pytest

from mynumbers import my_numbers

from mailguard.replies import MAX_LINE, MAX_LINES, REPLIES, blocked, relayed, reply, sanitise_outgoing, with_upstream

NUMBER = my_numbers(1, seed=3)[0]


def lines(text: str) -> list[str]:
    return text.split("\r\n")


def test_relayed_keeps_the_upstreams_status_of_the_same_class_on_every_line() -> None:
    out = relayed(550, "5.1.1 <a@example.com>: user unknown\n5.1.1 second line")
    assert lines(out) == ["550-5.1.1 <a@example.com>: user unknown", "550 5.1.1 second line"]


def test_relayed_replaces_a_status_of_another_class() -> None:
    assert relayed(450, "2.0.0 looks fine") == "450 4.0.0 looks fine"


@pytest.mark.parametrize("code", [0, 199, 600, 999])
def test_relayed_turns_an_impossible_code_into_a_tempfail(code: int) -> None:
    assert relayed(code, "odd").startswith("451 ")


@pytest.mark.parametrize("text", [
    "ok\r\n250 injected", "bad\x00nul", "tab\there", "bell\x07", "utf8 ünïcode", "esc\x1b[31m",
], ids=["crlf", "nul", "tab", "bell", "utf8", "ansi"])
def test_relayed_lines_are_printable_ascii_and_cannot_inject_a_reply(text: str) -> None:
    out = relayed(250, text)
    for line in lines(out):
        assert line.isascii() and line.isprintable()
        assert line.startswith(("250-2.0.0 ", "250 2.0.0 "))
    assert "\r\n250 injected" not in out


def test_relayed_is_bounded_in_line_length_and_count() -> None:
    out = relayed(250, "\n".join("x" * 5000 for _ in range(100)))
    assert len(lines(out)) == MAX_LINES
    assert all(len(line) <= MAX_LINE + len("250-2.0.0 ") for line in lines(out))


def test_relayed_empty_text_still_gives_one_reply_line() -> None:
    assert relayed(250, "") == "250 2.0.0"


def test_with_upstream_puts_our_line_first_and_quotes_the_upstream() -> None:
    out = lines(with_upstream("upstream_tempfail", 421, "4.7.0 try\x00 later"))
    ours = REPLIES["upstream_tempfail"]
    assert out[0].startswith(f"{ours.code}-{ours.status} ")
    assert out[-1] == f"{ours.code} {ours.status} 421 4.7.0 try? later"


def test_blocked_names_the_rule_without_any_digit_run() -> None:
    out = blocked(f"rule-{NUMBER}", [f"1 My Number(s) at medium: ********{NUMBER[-4:]}", f"number {NUMBER}"],
                  "Not sent.\n送信を止めました")
    assert out.startswith("550-5.7.1 Message blocked by mailguard policy")
    assert NUMBER not in out and NUMBER[-4:] not in out and "****" not in out
    assert all(line.isascii() for line in lines(out))


def test_sanitise_outgoing_is_the_last_ascii_guard() -> None:
    assert sanitise_outgoing("250 ok\x00\r\n250 ü") == "250 ok?\r\n250 ?"


def test_every_reply_in_the_table_formats_to_ascii() -> None:
    for name, r in REPLIES.items():
        text = reply(name, limit=10) if "{limit}" in r.text else reply(name)
        assert text.isascii() and text.startswith(str(r.code)), name
