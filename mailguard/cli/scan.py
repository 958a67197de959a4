"""`mailguard scan FILE... [--json]`: scan .eml files or bare documents.

Per file, one JSON object per line (`path`, `persons`, `findings` with
`masked`/`confidence`/`location`, `unscannable` with `location`/`reason`;
additive: `findings_total`, `skipped` with `location`/`reason`), or a readable
table. Findings read from images carry " (OCR)" at the end of their location. Exit 0 when every file was scanned (whatever was found), 1 if
a file could not be read, 2 on usage errors (argparse).

SECURITY: output shows masked numbers only; locations come from extraction,
where names are already scrubbed of 12-digit runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from mailguard.cli import EXIT_FAILED, EXIT_OK, add_config_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="scan messages or documents for My Numbers")
    p.add_argument("files", nargs="+", metavar="FILE", help=".eml file or document")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    add_config_option(p)
    p.set_defaults(func=run)


def report_dict(path: str, report) -> dict:
    return {
        "path": path,
        "persons": report.persons,
        "findings": [{"masked": f.masked, "confidence": f.confidence, "location": f.location}
                     for f in report.findings],
        "unscannable": [{"location": u.location, "reason": u.reason} for u in report.unscannable],
        # Additive to DESIGN §8: findings are capped at limits.max_findings,
        # persons never are; this says how many the list stands for.
        "findings_total": max(report.findings_total, len(report.findings)),
        # Additive (issue 12): items not read on purpose (decorative images), with why.
        "skipped": [{"location": s.location, "reason": s.reason} for s in report.skipped],
    }


def _print_table(out: dict) -> None:
    shown, total = len(out["findings"]), out["findings_total"]
    more = f" (first {shown} of {total} shown; limits.max_findings)" if total > shown else ""
    print(f"{out['path']}: {out['persons']} person(s), {total} finding(s){more}, "
          f"{len(out['unscannable'])} unscannable")
    for f in out["findings"]:
        print(f"  {f['masked']}  {f['confidence']:<6}  {f['location']}")
    for u in out["unscannable"]:
        print(f"  UNSCANNABLE  {u['location']}: {u['reason']}")
    for s in out["skipped"]:
        print(f"  skipped      {s['location']}: {s['reason']}")


def run(args: argparse.Namespace, config) -> int:
    from mailguard.log import scrub
    from mailguard.scan import scan_file

    status = EXIT_OK
    for path in args.files:
        # A file name can carry a number (山田_123456789018.pdf); it is shown
        # masked like the locations are.
        shown = scrub(path)
        try:
            report = scan_file(path, config.limits)
        except OSError as exc:
            print(f"mailguard scan: {shown}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        out = report_dict(shown, report)
        if args.json:
            print(json.dumps(out, ensure_ascii=False), flush=True)
        else:
            _print_table(out)
    return status
