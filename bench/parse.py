#!/usr/bin/env python3
"""parse_message on single-part text mail: the fast path beside the full feed,
in the same run.

    .venv/bin/python bench/parse.py [--runs 5]

Inputs: a 10 KB message shaped like `smtp-source -l 10240` (a few headers,
~80-character CRLF lines), timed over 1,000 parses per run; a 1 MB message of
the same shape, 20 parses per run. "full" is parse_message with the fast path
switched off (parse._feed replaced by parse._feed_full for this process only).
A second line per size times the tree alone (_feed_full vs _feed), without
the walk into parts. Figures are medians of --runs runs, in us per message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import parse  # noqa: E402

HEADERS = (b"From: <foo@example.com>\r\nTo: <bar@example.net>\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0900\r\n"
           b"Message-Id: <20240101000000.1234@example.com>\r\n"
           b"Subject: La de da\r\n\r\n")
LINE = b"La de da de da 1. La de da de da 2. La de da de da 3. La de da de da 4. La de\r\n"


def message(size: int) -> bytes:
    body = LINE * (size // len(LINE) + 1)
    return HEADERS + body[:size]


def per_message_us(data: bytes, count: int, runs: int, fn=None) -> float:
    fn = fn or parse.parse_message
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(count):
            fn(data)
        times.append((time.perf_counter() - t0) / count)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    fast_feed, full_feed = parse._feed, parse._feed_full
    for label, size, count in (("10 KB", 10 * 1024, 1000), ("1 MB", 1 << 20, 20)):
        data = message(size)
        assert parse._feed_fast(data) is not None
        parse._feed = full_feed
        full = per_message_us(data, count, args.runs)
        parse._feed = fast_feed
        fast = per_message_us(data, count, args.runs)
        print(f"{label:>6} single-part, {count:4d} parses x {args.runs}, parse_message: "
              f"full {full:9.1f} us/msg  fast {fast:9.1f} us/msg  ({full / fast:.1f}x)")
        full = per_message_us(data, count, args.runs, parse._feed_full)
        fast = per_message_us(data, count, args.runs, parse._feed)
        print(f"{label:>6} single-part, {count:4d} parses x {args.runs}, tree (_feed):  "
              f"full {full:9.1f} us/msg  fast {fast:9.1f} us/msg  ({full / fast:.1f}x)")


if __name__ == "__main__":
    main()
