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

COMMAND_MODULES = ("serve", "scan", "check", "policy", "held", "audit", "incident", "status", "store", "web", "user")
# Commands whose answer depends on who is internal: without internal domains every
# colleague is external, so these refuse to run rather than decide wrongly.
NEEDS_INTERNAL_DOMAINS = ("serve", "check", "policy")


def add_config_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # Accepted before and after the subcommand: the sub-parser's copy only
    # overrides when given (SUPPRESS), so `mailguard -c X held list` works too.
    parser.add_argument(
        "-c", "--config", metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="configuration file (default $MAILGUARD_CONFIG, else /etc/mailguard/mailguard.toml, "
             "else built-in defaults)",
    )
    # Like -c, accepted before and after the subcommand.
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
        help="also print the library's log lines (JSON) on stderr; without it a failing command "
             "prints only its message",
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


class _Stderr:
    """Whatever sys.stderr is at write time (the CLI's log stream).

    structlog's PrintLogger keeps the file object it was given; resolving it per
    write keeps logs on the current stderr even when a caller swaps it later.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _error(text: str) -> None:
    from mailguard.log import scrub

    print(f"mailguard: {scrub(text)}", file=sys.stderr)


PERMISSION_FIX = ("the store belongs to the user that runs `mailguard serve`: run this command as that "
                  "user (sudo -u mailguard mailguard ...), or set store.group to your admins' group "
                  "(see docs/operations.md)")


def share_store_with_group(config: object) -> None:
    """store.group: the store's files 0660 and directories 2770 owned by that group,
    so admins in the group can use `mailguard held` next to serve (issue 13.7)."""
    import grp
    from pathlib import Path

    from mailguard.durable import dir_mode, share_with_group

    name = config.store.group  # type: ignore[attr-defined]
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(config.source, "store.group",  # type: ignore[attr-defined]
                          f"{name!r}: no such group (create it: groupadd {name})") from None
    share_with_group(True)
    os.umask(0o007)
    store = Path(config.store.path)  # type: ignore[attr-defined]
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = store.stat()
    if st.st_uid == os.geteuid():  # only the owner can hand the directory to the group
        if st.st_gid != gid:
            os.chown(store, -1, gid)
        os.chmod(store, dir_mode())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Held mail, the audit log and the fingerprint key are private; modes are set
    # explicitly where they are created, and the umask is the second belt.
    os.umask(0o077)
    try:
        from mailguard.config import CONFIG_ENV, SYSTEM_CONFIG, load_config, require_internal_domains
        from mailguard.log import configure_logging

        # Library warnings (an upstream that refused a notice, ...) go to stderr
        # as scrubbed JSON lines with --verbose, never to stdout where they would
        # corrupt `--json` output; without it the admin sees only the command's
        # own message (issue 13.11). `serve` sets its own level from the config.
        configure_logging("warning" if args.verbose else "critical", stream=_Stderr())
        config = load_config(args.config)
        if config.is_builtin:
            # Never silently: an admin in /opt/mailguard without -c would otherwise
            # read (and create) an empty store while the real one holds mail.
            print(f"mailguard: no configuration file (-c, ${CONFIG_ENV}, {SYSTEM_CONFIG}); "
                  f"using built-in defaults with store {config.store.path}", file=sys.stderr)
        if args.command in NEEDS_INTERNAL_DOMAINS:
            require_internal_domains(config)
        if config.store.group:
            share_store_with_group(config)
        status = int(args.func(args, config) or EXIT_OK)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return status
    except (ConfigError, PolicyError) as exc:
        _error(f"configuration error: {exc}")
        return EXIT_USAGE
    except MailguardError as exc:
        cause = exc.__cause__
        if isinstance(cause, PermissionError) or "Permission denied" in str(exc):
            where = f" ({cause.filename})" if isinstance(cause, OSError) and cause.filename \
                and str(cause.filename) not in str(exc) else ""
            _error(f"{exc}{where}; {PERMISSION_FIX}")
        else:
            _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mailguard held list | head`: the reader left; nothing more to say.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAILED
    except OSError as exc:
        # A store path that is a file, a directory that is not writable, ...:
        # say which file and why, without a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        why = exc.strerror or str(exc)
        if isinstance(exc, NotADirectoryError):
            why += " (part of this path is a file; check store.path and the other paths in the config)"
        if isinstance(exc, PermissionError):
            why += f"; {PERMISSION_FIX}"
        _error(f"{where}{why}")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into exit 1
        if os.environ.get("MAILGUARD_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} "
               "(run again with MAILGUARD_DEBUG=1 for the traceback)")
        return EXIT_FAILED
