"""`mailguard serve`: placeholder until its issue lands (the parser exists so the CLI loads)."""

from __future__ import annotations

import argparse

from mailguard.cli import add_config_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="(not built yet)")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: object) -> int:
    raise SystemExit("mailguard serve: not built yet")
