"""Synthetic My Numbers for tests and benchmarks: one place, independent of the detector.

Deliberately not mailguard.detect's check digit: a test oracle that shares the
code under test would hide its bugs. None of these are real numbers; tests must
still never print them in the clear (use mask()).
"""

from __future__ import annotations

import random

WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)  # DESIGN §4


def check_digit(first11: str) -> int:
    r = sum(w * int(d) for w, d in zip(WEIGHTS, first11)) % 11
    return 0 if r <= 1 else 11 - r


def complete(first11: str) -> str:
    """11 digits -> the valid 12-digit number."""
    return first11 + str(check_digit(first11))


def my_numbers(count: int, seed: int = 1) -> list[str]:
    """`count` distinct valid numbers, first digit 1-9 (they survive being stored
    as an int in xlsx/ods), never one repeated digit."""
    rng, out = random.Random(seed), []
    seen: set[str] = set()
    while len(out) < count:
        n = complete(str(rng.randrange(10**10, 10**11)))
        if len(set(n)) > 1 and n not in seen:
            seen.add(n)
            out.append(n)
    return out


def mask(number: str) -> str:
    return "********" + number[-4:]
