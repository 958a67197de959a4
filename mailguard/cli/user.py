"""`mailguard user`: the people of the approval page (add, list, disable).

The password is read from standard input (one line; asked twice on a terminal),
never from the command line where `ps` and shell history would show it.

SECURITY: names and roles are validated (mailguard.web.users); the hash is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from mailguard.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_option
from mailguard.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="people of the approval page: add, list, disable")
    add_config_option(p)
    us = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    q = us.add_parser("add", help="add a user; the password is read from stdin")
    add_config_option(q)
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=("sender", "approver", "admin"))
    q.add_argument("--email", default="", help="the user's own sender address (a sender sees their own held mail)")
    q.set_defaults(func=run_add)

    q = us.add_parser("list", help="users: name, role, email, disabled")
    add_config_option(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=run_list)

    q = us.add_parser("disable", help="stop a user from logging in (takes effect at their next request)")
    add_config_option(q)
    q.add_argument("name")
    q.set_defaults(func=run_disable)


def _users(config: Config):  # noqa: ANN202 - imported lazily: the CLI starts fast
    from mailguard.web.users import UserStore

    return UserStore(config.store.path)


def _read_password() -> str | None:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            print("mailguard user add: the passwords differ", file=sys.stderr)
            return None
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def run_add(args: argparse.Namespace, config: Config) -> int:
    from mailguard.web.users import UserError

    password = _read_password()
    if password is None:
        return EXIT_USAGE
    try:
        user = _users(config).add(args.name, args.role, password, email=args.email)
    except UserError as exc:
        print(f"mailguard user add: {exc}", file=sys.stderr)
        return EXIT_USAGE if "exists" not in str(exc) else EXIT_FAILED
    print(f"{user.name}: added ({user.role}{', ' + user.email if user.email else ''})")
    return EXIT_OK


def run_list(args: argparse.Namespace, config: Config) -> int:
    from mailguard.web.users import user_summary

    users = _users(config).list()
    if args.json:
        for u in users:
            print(json.dumps(user_summary(u), ensure_ascii=False))
        return EXIT_OK
    if not users:
        print("no users (add one: mailguard user add NAME --role approver --email ADDR)")
        return EXIT_OK
    print(f"{'NAME':20}  {'ROLE':8}  {'STATE':8}  EMAIL")
    for u in users:
        print(f"{u.name:20}  {u.role:8}  {'disabled' if u.disabled else 'active':8}  {u.email}")
    return EXIT_OK


def run_disable(args: argparse.Namespace, config: Config) -> int:
    from mailguard.web.users import UserError

    try:
        user = _users(config).disable(args.name)
    except UserError as exc:
        print(f"mailguard user disable: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{user.name}: disabled")
    return EXIT_OK
