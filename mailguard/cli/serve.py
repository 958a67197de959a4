"""`mailguard serve`: run the relay in the foreground until SIGTERM.

Logs are JSON lines on stderr (journald-friendly). SIGHUP reloads the
configuration; a bad one is refused and the running one kept.
"""

from __future__ import annotations

import argparse
import os
import sys

from mailguard.cli import EXIT_OK, EXIT_USAGE, add_config_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the relay in the foreground (SIGHUP reloads, SIGTERM stops)")
    add_config_option(p)
    p.set_defaults(func=run)


ALLOW_ROOT_ENV = "MAILGUARD_ALLOW_ROOT"


def refuse_root() -> bool:
    """True (and a message) when serve would run as root without the escape hatch:
    held files written by root lock the admins' `sudo -u mailguard mailguard held ...`
    out with "Permission denied" (issue 13.7)."""
    if os.geteuid() != 0 or os.environ.get(ALLOW_ROOT_ENV, "") == "1":
        return False
    print("mailguard serve: refusing to run as root: held mail and the audit log would be "
          "owned by root and the admins' commands would fail. Run it as the mailguard user "
          "(deploy/systemd/mailguard.service: User=mailguard; by hand: "
          "sudo -u mailguard mailguard -c /etc/mailguard/mailguard.toml serve). "
          f"Containers and tests that must run as root: set {ALLOW_ROOT_ENV}=1.", file=sys.stderr)
    return True


def run(args: argparse.Namespace, config: object) -> int:
    from mailguard.log import configure_logging

    if refuse_root():
        return EXIT_USAGE
    from mailguard.server import serve

    configure_logging(config.log.level)  # type: ignore[attr-defined]
    # SIGHUP re-reads the file that was given (or the default lookup when none was).
    return serve(config, getattr(args, "config", None)) or EXIT_OK  # type: ignore[arg-type]
