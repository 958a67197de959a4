"""`mailguard audit`: verify the hash chain; export records for an inspection;
trace numbers and find messages after a leak (issue 17).

    mailguard audit verify [--checkpoint SEQ:HASH] exit 0 intact, 1 naming the first bad line,
                                                   or saying the log ends before a checkpoint
    mailguard audit export --since DATE [--format csv|json]
    mailguard audit trace [--json] [--since DATE] [--file F]   numbers on stdin (or in F)
    mailguard audit find [--message-id ID] [--sender A] [--recipient A] [--domain D]
                         [--since DATE] [--until DATE] [--json]

trace and find: one JSON object per line (time, event, id, message_id, from, to,
rule, persons); nothing found is exit 0, empty stdout and a line on stderr.

SECURITY: the audit log holds masked numbers and fingerprints only; export
writes it as it is. trace never prints, logs or keeps the numbers it reads:
input errors name line numbers, never the line.
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
    q = asub.add_parser("trace", help="every audited message that carried any of the numbers on stdin (or in --file)")
    add_config_option(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.add_argument("--since", metavar="DATE", help="only records at or after DATE")
    q.add_argument("--file", metavar="F", help="a CSV, xlsx or other document holding the numbers")
    q.set_defaults(func=run_trace)
    q = asub.add_parser("find", help="audited messages by Message-ID, sender, recipient, domain, time")
    add_config_option(q)
    q.add_argument("--message-id", default="", metavar="ID")
    q.add_argument("--sender", default="", metavar="ADDR")
    q.add_argument("--recipient", default="", metavar="ADDR")
    q.add_argument("--domain", default="", metavar="DOMAIN", help="sender or recipient domain or organisation")
    q.add_argument("--since", metavar="DATE")
    q.add_argument("--until", metavar="DATE")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=run_find)


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


def _dates(args: argparse.Namespace, *names: str) -> list | None:
    from mailguard.audit import parse_since

    out = []
    for name in names:
        text = getattr(args, name, None)
        try:
            out.append(parse_since(text) if text else None)
        except ValueError as exc:
            print(f"mailguard audit {args.audit_command}: --{name}: {exc}", file=sys.stderr)
            return None
    return out


def _print_hits(hits: list, args: argparse.Namespace, config: Config, what: str) -> int:
    import json

    from mailguard.tracefmt import hit_lines

    if not hits:
        print(f"mailguard audit {args.audit_command}: no audited message {what}", file=sys.stderr)
        return EXIT_OK
    for h in hits:
        if args.json:
            print(json.dumps(h.as_json(), ensure_ascii=False, sort_keys=True))
        else:
            print("\n".join(hit_lines(h, config)))
    return EXIT_OK


def run_trace(args: argparse.Namespace, config: Config) -> int:
    import secrets

    from mailguard.trace import fingerprints_from_file, fingerprints_from_lines, trace
    from mailguard.tracefmt import trace_key

    dates = _dates(args, "since")
    if dates is None:
        return EXIT_USAGE
    # No key yet: no record can match, but the input is still checked.
    key = trace_key(config) or secrets.token_bytes(32)
    if args.file:
        try:
            fps = fingerprints_from_file(args.file, config.limits, key)
        except OSError as exc:
            print(f"mailguard audit trace: {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        if not fps:
            print(f"mailguard audit trace: {args.file}: no valid My Number found in the file", file=sys.stderr)
            return EXIT_USAGE
    else:
        fps, valid, bad = fingerprints_from_lines(sys.stdin, key)
        if bad:
            shown = ", ".join(str(n) for n in bad[:20]) + (" ..." if len(bad) > 20 else "")
            print(f"mailguard audit trace: line(s) {shown} hold no valid My Number (check digit?); "
                  "skipped", file=sys.stderr)
        if not valid:
            print("mailguard audit trace: no valid My Number on stdin (one per line: 12 digits, "
                  "plain, grouped 4-4-4 or full-width)", file=sys.stderr)
            return EXIT_USAGE
    hits = trace(open_audit(config).records(), fps, since=dates[0])
    return _print_hits(hits, args, config, f"carried any of the {len(fps)} number(s) given")


def run_find(args: argparse.Namespace, config: Config) -> int:
    from mailguard.trace import find

    dates = _dates(args, "since", "until")
    if dates is None:
        return EXIT_USAGE
    if not any((args.message_id, args.sender, args.recipient, args.domain, args.since, args.until)):
        print("mailguard audit find: give at least one of --message-id, --sender, --recipient, "
              "--domain, --since, --until", file=sys.stderr)
        return EXIT_USAGE
    hits = find(open_audit(config).records(), message_id=args.message_id, sender=args.sender,
                recipient=args.recipient, domain=args.domain, since=dates[0], until=dates[1])
    return _print_hits(hits, args, config, "matches")
