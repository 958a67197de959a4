"""Warnings about a policy that loads but cannot do what its author meant.

    shadowed_rules(policy, internal_domains) -> list[Shadow]

A rule is shadowed when an earlier rule matches every message it matches: the
first matching rule decides, so the later one can never decide. The classic trap
(issue 13.2) is docs/policy.md's own example added as ``50-local.toml``: its
"hold for two approvers" rule for mail to the pension office sorts after the
default ``external-hold`` rule, which already holds every external message with
My Numbers, so the two-person rule never fires and ``policy check`` said OK.

The check is conservative: it warns only when it can prove that every message
the later rule matches also matches the earlier one, from the conditions alone
(bounds on counts, booleans, and lists that are subsets), plus a few facts that
always hold together (``is_reply_all`` implies ``is_reply``; an external
``recipient_domain`` implies ``any_external``). It never claims more.

SECURITY: reads the already validated policy only. DIAGNOSTICS: none.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from mailguard.facts import CONFIDENCES, is_internal, normalise_domain
from mailguard.policy import Policy, Rule

_RANK = {c: i for i, c in enumerate(CONFIDENCES)}
_DEFAULT_FLOOR = "medium"
_PERSONS_MIN = ("persons_min", "ocr_persons_min", "text_persons_min")
_PERSONS_MAX = ("persons_max", "ocr_persons_max", "text_persons_max")


@dataclass(frozen=True, slots=True)
class Shadow:
    rule: Rule  # the rule that can never decide
    by: Rule  # the earlier rule that takes all its messages

    def __str__(self) -> str:
        return (f"warning: rule {self.rule.name!r} ({self.rule.source}) can never decide: the earlier "
                f"rule {self.by.name!r} ({self.by.source}) matches every message it matches; move it "
                "before that rule (rules run in file-name order: e.g. 05-local.toml) or narrow the earlier rule")


def shadowed_rules(policy: Policy, internal_domains: tuple[str, ...]) -> list[Shadow]:
    """Each rule that an earlier rule shadows, with the first such rule."""
    out = []
    for i, later in enumerate(policy.rules):
        known = _known(later, internal_domains)
        for earlier in policy.rules[:i]:
            if _covers(earlier, later, known):
                out.append(Shadow(later, earlier))
                break
    return out


class _Known:
    """What every message matching a rule is known to satisfy."""

    def __init__(self) -> None:
        self.low: dict[str, int] = {}  # count -> lower bound
        self.high: dict[str, int] = {}  # count -> upper bound
        self.bools: dict[str, bool] = {}
        self.floor = _DEFAULT_FLOOR  # confidence the persons bounds were counted at

    def at_least(self, name: str, n: int) -> None:
        self.low[name] = max(self.low.get(name, 0), n)

    def at_most(self, name: str, n: int) -> None:
        self.high[name] = min(self.high.get(name, n), n)


def _known(rule: Rule, internal_domains: tuple[str, ...]) -> _Known:
    k = _Known()
    c = rule.conditions
    k.floor = c.get("confidence", _DEFAULT_FLOOR)
    for name, value in c.items():
        if name.endswith("_min"):
            k.at_least(name[:-4], value)
        elif name.endswith("_max"):
            k.at_most(name[:-4], value)
        elif isinstance(value, bool):
            k.bools[name] = value
    domains = c.get("recipient_domain")
    if domains and not any(is_internal(normalise_domain(d), internal_domains) for d in domains):
        k.bools.setdefault("any_external", True)
    if k.bools.get("is_reply_all"):
        k.bools.setdefault("is_reply", True)
    for count in ("external_recipients", "external_domains", "external_orgs"):
        if k.low.get(count, 0) >= 1:
            k.bools.setdefault("any_external", True)
    if k.bools.get("any_external"):
        k.at_least("external_recipients", 1)
        k.at_least("external_domains", 1)
        k.at_least("recipients", 1)
        k.bools.setdefault("all_internal", False)
    if k.bools.get("all_internal"):
        k.bools.setdefault("any_external", False)
        k.at_least("recipients", 1)
    k.at_least("recipients", k.low.get("external_recipients", 0))
    # Numbers read by OCR or from text are among the persons (same floor).
    k.at_least("persons", max(k.low.get("ocr_persons", 0), k.low.get("text_persons", 0)))
    return k


def _covers(earlier: Rule, later: Rule, k: _Known) -> bool:
    """True if every message matching ``later`` (described by ``k``) matches ``earlier``."""
    floor = earlier.conditions.get("confidence", _DEFAULT_FLOOR)
    return all(_implied(name, value, floor, later.conditions, k) for name, value in earlier.conditions.items())


def _implied(name: str, value: Any, floor: str, later: dict[str, Any], k: _Known) -> bool:
    if name == "confidence":
        return True
    if name in _PERSONS_MIN:
        # Counting at a lower floor finds at least as many persons.
        return _RANK[floor] <= _RANK[k.floor] and k.low.get(name[:-4], 0) >= value
    if name in _PERSONS_MAX:
        return floor == k.floor and name[:-4] in k.high and k.high[name[:-4]] <= value
    if name.endswith("_min"):
        return k.low.get(name[:-4], 0) >= value
    if name.endswith("_max"):
        return name[:-4] in k.high and k.high[name[:-4]] <= value
    if isinstance(value, bool):
        return k.bools.get(name) is value
    theirs = later.get(name)
    if theirs is None:
        return False
    if name in ("sender_domain", "recipient_domain"):
        return all(is_internal(normalise_domain(d), value) for d in theirs)
    if name in ("attachment_type", "attachment_name"):
        return all(any(fnmatch.fnmatchcase(p, q) for q in value) for p in theirs)
    if name == "unscannable_except":
        # Fewer exceptions match more: the earlier rule must excuse no more than the later.
        return set(value) <= set(theirs)
    return set(theirs) <= set(value)
