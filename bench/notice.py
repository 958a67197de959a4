#!/usr/bin/env python3
"""Building one sender notice: build_notice (bytes composed directly) beside the
same notice put together with email.message.EmailMessage, in the same run.

    .venv/bin/python bench/notice.py [--n 1000] [--rounds 5]

The baseline is what build_notice did before issue 15: the same From/To, Subject,
Date, Message-ID, Auto-Submitted, X-Mailguard-Hold-Id, In-Reply-To/References and
body text (from the same helpers), set on an EmailMessage under mailguard's SMTP
policy, set_content(..., cte="base64"), as_bytes(). Prints the median of
``--rounds`` timings of ``--n`` builds each; figures are for this machine now.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailguard import notices  # noqa: E402
from mailguard.log import scrub  # noqa: E402
from mailguard.mailpolicy import SMTP  # noqa: E402
from mailguard.records import HeldMessage  # noqa: E402

SENDER = "postmaster@city.example.lg.jp"
HELD = HeldMessage(
    id="abcdefghjkmnpqrs", state="held", rule="hold-external",
    reasons=("2 My Number(s) at medium confidence or above (high 1, medium 1): ********1234, ********5678",
             "1 external recipient(s) in 1 organisation(s): example.com"),
    notice="管理者の確認が必要です。/ Needs review.", mail_from="tanaka.taro@city.example.lg.jp",
    rcpt_tos=("b@example.com",), persons=2,
    findings=({"masked": "********1234", "confidence": "high", "location": "attachment:名簿.csv"},
              {"masked": "********5678", "confidence": "medium", "location": "body"}),
    fingerprints=(), unscannable=(), subject="住民票の写しの送付について", message_id="<20240401.1@city.example.lg.jp>",
    size=60_000, sha256="", approvals_required=1, approvals=(), received="2024-04-01T09:00:00+00:00",
    updated="2024-04-01T09:00:00+00:00")


def with_emailmessage(kind: str, held: HeldMessage, *, sender: str, expiry_hours: float) -> bytes:
    """The baseline: the notice's headers and body through EmailMessage."""
    ja_subj, en_subj = notices._SUBJECTS[kind]
    msg = EmailMessage(policy=SMTP)
    msg["From"] = notices._address(sender)
    msg["To"] = notices._address(held.mail_from)
    msg["Subject"] = f"[mailguard] {ja_subj} / {en_subj} ({held.id})"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid("mailguard-notice", domain=sender.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailguard-Hold-Id"] = held.id
    original_id = notices.safe_text(held.message_id, 250)
    msg["In-Reply-To"] = original_id
    msg["References"] = original_id
    body = notices._body(kind, held, reason="", expiry_hours=expiry_hours, link="")
    msg.set_content(scrub(body), charset="utf-8", cte="base64")
    return msg.as_bytes(policy=SMTP)


def direct(kind: str, held: HeldMessage, *, sender: str, expiry_hours: float) -> bytes:
    return notices.build_notice(kind, held, sender=sender, expiry_hours=expiry_hours)


def timed(build, n: int, rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            build(notices.HELD_NOTICE, HELD, sender=SENDER, expiry_hours=72)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    for build in (direct, with_emailmessage):  # warm caches (header classes, regexes, zoneinfo)
        timed(build, 50, 1)
    base = timed(with_emailmessage, args.n, args.rounds)
    new = timed(direct, args.n, args.rounds)
    print(f"{args.n} held notices, median of {args.rounds} rounds")
    print(f"  EmailMessage (before issue 15)  {base * 1000:8.1f} ms  {base / args.n * 1e6:7.1f} us/notice")
    print(f"  build_notice (direct bytes)     {new * 1000:8.1f} ms  {new / args.n * 1e6:7.1f} us/notice")
    print(f"  {base / new:.1f}x faster")


if __name__ == "__main__":
    main()
