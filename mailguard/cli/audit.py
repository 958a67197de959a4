"""`mailguard audit`: verify the hash chain; export records for an inspection.

    mailguard audit verify [--checkpoint SEQ:HASH] exit 0 intact, 1 naming the first bad line,
                                                   or saying the log ends before a checkpoint
    mailguard audit export --since DATE [--format csv|json]

SECURITY: the audit log holds masked numbers and fingerprints only; export
writes it as it is.
"""

from __future__ import annotations

import argparse
import sys
from mailguard.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_option
from mailguard.config import Config
from mailguard.holdstore import open_audit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="verify or export the audit log")
    add_config_option(p)
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    q = asub.add_parser("verify", help="check the hash chain and its checkpoints; exit 1 if broken or cut")
    add_config_option(q)
    q.add_argument("--checkpoint", metavar="SEQ:HASH",
                   help="a chain head kept off the host (syslog line or an earlier `audit verify`)")
    q.set_defaults(func=run_verify)
    q = asub.add_parser("export", help="records since a date, as JSON lines or CSV")
    add_config_option(q)
    q.add_argument("--since", required=True, metavar="DATE", help="2025-04-01 or an ISO 8601 time (UTC if no zone)")
    q.add_argument("--format", choices=("json", "csv"), default="json")
    q.set_defaults(func=run_export)


def run_verify(args: argparse.Namespace, config: Config) -> int:
    from mailguard.audit import Checkpoint

    checkpoint = None
    if args.checkpoint is not None:
        try:
            checkpoint = Checkpoint.parse(args.checkpoint)
        except ValueError as exc:
            print(f"mailguard audit verify: --checkpoint: {exc}", file=sys.stderr)
            return EXIT_USAGE
    log = open_audit(config)
    result = log.verify(checkpoint=checkpoint)
    if result.ok:
        parts = log.part_count()
        files = f" in {parts} files" if parts > 1 else ""
        print(f"{log.location()}: {result.records} records{files}, chain intact")
        if result.first_seq > 1:
            print(f"(older rotated files are gone; the chain was checked from record {result.first_seq})")
        for c in result.checked:
            print(f"checkpoint {c.seq} matches")
        if not result.checked:
            print("no checkpoint to check against (none recorded yet; pass --checkpoint SEQ:HASH)")
        if result.head is not None:
            print(f"head {result.head}")
        return EXIT_OK
    if result.bad_line is None:
        print(f"{log.location()}: {result.reason}", file=sys.stderr)
        print(f"audit log cut: {result.reason}")
        return EXIT_FAILED
    where = log.location(result.bad_file)
    print(f"{where}:{result.bad_line}: {result.reason}", file=sys.stderr)
    print(f"audit chain broken at line {result.bad_line} ({result.records} records before it are intact)")
    return EXIT_FAILED


def run_export(args: argparse.Namespace, config: Config) -> int:
    from mailguard.audit import parse_since

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"mailguard audit export: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for chunk in open_audit(config).export(since, args.format):
        sys.stdout.write(chunk)
    return EXIT_OK
