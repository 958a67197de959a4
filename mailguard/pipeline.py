"""The seam between receiving a message and acting on it: scan, facts, decide.

INTERFACE (fixed; the relay codes against it):

    Pipeline(config)                 loads the policy; raises PolicyError if it is bad
    async inspect(mail_from: str, rcpt_tos: list[str], data: bytes) -> Decision
    inspect_sync(mail_from, rcpt_tos, data) -> Decision     (added by issue 5)
        the same decision, scanned in the calling thread; `mailguard check` uses it
    decide_report(mail_from, rcpt_tos, data, report) -> Decision   (added by issue 5)
        the one place both paths turn a ScanReport into a Decision
    policy                           the loaded Policy (read-only)
    async aclose()                   (added by issue 5) after scans in flight finish,
                                     stop the scan workers; for SIGHUP's old services

The relay calls ``inspect`` once per message after DATA. Any exception it raises
is a tempfail (451 4.3.0) at the relay, never a pass: a scanner failure is a
ScanError, and anything else unexpected propagates as is. On SIGHUP the relay
builds a new Pipeline; if that raises PolicyError it keeps the old one.

SECURITY: sees the whole message; never logs its content. Scanning runs off the
event loop (scan.Scanner, worker processes), bounded by limits.scan_timeout. The
relay's scanner fingerprints numbers under the store's key (secret.py) so held
mail and audit records correlate; `check` uses detect's per-process key, which
changes no decision (persons are distinct numbers within one message).

DIAGNOSTICS: one ``decided`` event per message: action, rule, reasons (masked),
persons, recipient counts.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from mailguard import scan
from mailguard.errors import ScanError
from mailguard.facts import build_facts
from mailguard.log import get_logger
from mailguard.policy import Decision, decide, load_policy


class Pipeline:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.policy = load_policy(config.policy.dir)
        self._internal = tuple(config.organisation.internal_domains)
        self._lists = tuple(config.organisation.list_addresses)
        self._scanner: scan.Scanner | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = get_logger(component="pipeline")

    @property
    def scanner(self) -> scan.Scanner:
        # Built on first use so `mailguard check`, `policy check` and a refused
        # SIGHUP reload never start scan workers or touch the store.
        if self._scanner is None:
            from mailguard.holdstore import fingerprint_key

            self._scanner = scan.Scanner(
                self.config.limits,
                keywords=self.policy.keywords,
                negative=self.policy.negative,
                key=fingerprint_key(self.config),
            )
        return self._scanner

    async def inspect(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> Decision:
        self._inflight += 1
        self._idle.clear()
        try:
            report = await self.scanner.scan(data)
            return self.decide_report(mail_from, rcpt_tos, data, report)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def aclose(self) -> None:
        """Let scans in flight finish (bounded by the scan timeout), then stop the workers."""
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.limits.scan_timeout + 5)
        except asyncio.TimeoutError:
            pass
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await scanner.aclose()

    def inspect_sync(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> Decision:
        try:
            report = scan.scan_message(
                data, self.config.limits, keywords=self.policy.keywords, negative=self.policy.negative
            )
        except ScanError:
            raise
        except Exception as exc:  # noqa: BLE001 - the scanner failed: never a pass
            raise ScanError(f"scanner failed: {type(exc).__name__}") from exc
        return self.decide_report(mail_from, rcpt_tos, data, report)

    def decide_report(self, mail_from: str, rcpt_tos: list[str], data: bytes, report: Any) -> Decision:
        facts = build_facts(mail_from, rcpt_tos, data, report, self._internal, self._lists)
        # The facts travel with the decision so the audit record can name the
        # organisations, reply-all and visible addresses (issue 17).
        decision = replace(decide(facts, self.policy), facts=facts)
        # Details at debug: act logs the one info line per message (issue 15).
        self._log.debug(
            "decided",
            action=decision.action,
            rule=decision.rule,
            reasons=list(decision.reasons),
            persons=decision.persons,
            recipients=len(facts.recipients),
            external_recipients=len(facts.external_recipients),
            unscannable=len(facts.unscannable),
        )
        return decision

