"""`mailguard incident report REF [--json]`: the first report to the Commission,
drafted from the audit records of one message (REF: a Message-ID or a hold id).

Markdown (Japanese) on stdout; ``--json`` gives the same facts as one object
(at least ``persons`` and ``serious``). No record for REF: exit 1.

SECURITY: built from the audit records alone (masked, fingerprints); no number
in the clear is ever read or written.
"""

from __future__ import annotations

import argparse
import json
import sys

from mailguard.cli import EXIT_FAILED, EXIT_OK, add_config_option
from mailguard.config import Config
from mailguard.holdstore import open_audit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incident", help="draft the report of a leak to the Commission")
    add_config_option(p)
    isub = p.add_subparsers(dest="incident_command", metavar="ACTION", required=True)
    q = isub.add_parser("report", help="Japanese Markdown draft of the first report for one message")
    add_config_option(q)
    q.add_argument("ref", metavar="REF", help="a Message-ID or a hold id")
    q.add_argument("--json", action="store_true", help="the same facts as one JSON object")
    q.set_defaults(func=run_report)


def run_report(args: argparse.Namespace, config: Config) -> int:
    from mailguard.incident import build_incident, render_markdown
    from mailguard.log import scrub

    facts = build_incident(open_audit(config).records(), args.ref, config)
    if facts is None:
        print(f"mailguard incident report: no audit record for {scrub(args.ref)!r} "
              "(try `mailguard audit find --message-id ...`)", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(facts, ensure_ascii=False, sort_keys=True))
    else:
        sys.stdout.write(render_markdown(facts, config))
    return EXIT_OK
