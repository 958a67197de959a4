"""`mailguard check MESSAGE --from ADDR --to ADDR... [--json]`: dry-run the policy.

Runs the relay's own decision path (Pipeline.inspect_sync: scan, facts, decide)
on a saved message so an admin can try a policy change before deploying it.
Exit 0 whatever the decision; 1 if the message cannot be read or scanned.

SECURITY: prints masked numbers only (the Decision's reasons are masked and
scrubbed); the message file is read, never changed.
"""

from __future__ import annotations

import argparse
import json
import sys

import re

from mailguard.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_option

# local@domain, no spaces, no second @ (what RCPT TO would take; not a full RFC 5321 parser).
_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="dry-run the policy on a saved message: action, rule, reasons, persons"
    )
    add_config_option(p)
    p.add_argument("message", metavar="MESSAGE", help="the message (.eml, RFC 5322 bytes)")
    p.add_argument("--from", dest="mail_from", required=True, metavar="ADDR",
                   help="envelope sender (MAIL FROM)")
    p.add_argument("--to", dest="rcpt_tos", action="append", required=True, metavar="ADDR",
                   help="envelope recipient (RCPT TO); repeat for each recipient")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: object) -> int:
    from mailguard.errors import ScanError
    from mailguard.log import scrub
    from mailguard.pipeline import Pipeline

    # stdout is the answer (one JSON object with --json); the pipeline's own
    # "decided" event would only repeat it, so logs go to stderr, warnings only
    # (cli.main configures that for every command but serve).

    shown = scrub(args.message)  # the file name may carry a number
    # A typo in an address would silently count as one more external recipient
    # and answer a different question than the admin asked.
    for opt, addr in [("--from", args.mail_from)] + [("--to", a) for a in args.rcpt_tos]:
        if (opt == "--from" and addr == "") or _ADDRESS.fullmatch(addr):
            continue
        print(f"mailguard check: {opt} {scrub(addr)[:100]!r} is not an address like "
              f"user@city.example.lg.jp" + (" (or \"\" for the null sender)" if opt == "--from" else ""),
              file=sys.stderr)
        return EXIT_USAGE

    try:
        with open(args.message, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        print(f"mailguard check: {shown}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    pipeline = Pipeline(config)  # PolicyError -> exit 2 in cli.main
    try:
        decision = pipeline.inspect_sync(args.mail_from, list(args.rcpt_tos), data)
    except ScanError as exc:
        print(f"mailguard check: {shown}: cannot scan: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({
            "action": decision.action,
            "rule": decision.rule,
            "reasons": list(decision.reasons),
            "persons": decision.persons,
            "notice": decision.notice,
        }, ensure_ascii=False))
    else:
        print(f"action: {decision.action}")
        print(f"rule: {decision.rule}")
        print(f"persons: {decision.persons}")
        print("reasons:" + ("" if decision.reasons else " (none)"))
        for reason in decision.reasons:
            print(f"  - {reason}")
        if decision.notice:
            print("notice:")
            for line in decision.notice.splitlines():
                print(f"  {line}")
    return EXIT_OK
