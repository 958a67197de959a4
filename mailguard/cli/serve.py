"""`mailguard serve`: run the relay in the foreground until SIGTERM.

Logs are JSON lines on stderr (journald-friendly). SIGHUP reloads the
configuration; a bad one is refused and the running one kept.
"""

from __future__ import annotations

import argparse

from mailguard.cli import EXIT_OK, add_config_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the relay in the foreground (SIGHUP reloads, SIGTERM stops)")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: object) -> int:
    from mailguard.log import configure_logging
    from mailguard.server import serve

    configure_logging(config.log.level)  # type: ignore[attr-defined]
    # SIGHUP re-reads the file that was given (or the default lookup when none was).
    return serve(config, getattr(args, "config", None)) or EXIT_OK  # type: ignore[arg-type]
