"""Fault injection for crash tests: die at one named point, exactly there.

    fault_point(name)    if $MAILGUARD_FAULT == name: os._exit(137) (as kill -9 would)

TEST ONLY. The crash tests (tests/integration/test_hold_unit.py, test_crash.py)
set MAILGUARD_FAULT on a `serve` or CLI subprocess to stop it at a precise step
instead of relying on timing luck. Never set it in production: the process dies
without cleanup, on purpose. Points:

    after_hold_file          a hold's file and row are durable, its audit record not yet written
    after_hold_audit         the hold record is written, the 250 and the sender's notice not yet sent
    release_after_upstream   a release's upstream said 250, the message is not yet marked released

SECURITY: reads one environment variable; no input from mail.
DIAGNOSTICS: none (the process ends with status 137).
"""

from __future__ import annotations

import os

FAULT_ENV = "MAILGUARD_FAULT"
FAULT_EXIT = 137


def fault_point(name: str) -> None:
    """Exit at once, without cleanup, when the crash test asked for this point."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(FAULT_EXIT)
