"""Facts + Policy -> Decision (pure).

INTERFACE (fixed; the relay and hold store code against it):

    Decision(action, rule, reasons, notice="", approvals=1)
        action     "pass" | "hold" | "block"
        rule       the deciding rule's name
        reasons    short masked texts (never a number in the clear)
        notice     the rule's text for the sender (Japanese first, English second)
        approvals  distinct approvers needed to release a hold (two-person rule)
"""

from __future__ import annotations

from dataclasses import dataclass

PASS, HOLD, BLOCK = "pass", "hold", "block"
ACTIONS = (PASS, HOLD, BLOCK)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    rule: str
    reasons: tuple[str, ...] = ()
    notice: str = ""
    approvals: int = 1

# TODO(issue 5): load_policy, decide.
