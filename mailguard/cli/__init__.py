"""The `mailguard` command: one parser, one place that maps errors to exit codes.

Each command group lives in its own module with ``register(subparsers)`` that
adds its parser(s) and sets ``func(args, config) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mailguard.errors import ConfigError, MailguardError, PolicyError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

COMMAND_MODULES = ("serve", "scan", "check", "policy", "held", "audit", "status")


def add_config_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # Accepted before and after the subcommand: the sub-parser's copy only
    # overrides when given (SUPPRESS), so `mailguard -c X held list` works too.
    parser.add_argument(
        "-c", "--config", metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="configuration file (default ./mailguard.toml, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailguard",
        description="Outbound SMTP relay that holds or blocks mail carrying My Numbers.",
    )
    add_config_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"mailguard.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Held mail, the audit log and the fingerprint key are private; modes are set
    # explicitly where they are created, and the umask is the second belt.
    os.umask(0o077)
    try:
        from mailguard.config import load_config

        config = load_config(args.config)
        return int(args.func(args, config) or EXIT_OK)
    except (ConfigError, PolicyError) as exc:
        print(f"mailguard: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MailguardError as exc:
        print(f"mailguard: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
