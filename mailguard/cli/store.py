"""`mailguard store`: set up the PostgreSQL store; move an embedded store into it.

    mailguard store init                     apply the schema to store.url's database
    mailguard store migrate --to URL         copy store.path's embedded store (held mail,
                                             audit chain, key) into an empty database

Exit 0 done, 1 refused or failed (the reason on stderr). `serve` applies a missing
schema by itself; `store init` lets an admin do it first, with the rights to.

SECURITY: the URL's password is never printed (pgstore.redact).
"""

from __future__ import annotations

import argparse

from mailguard.cli import EXIT_OK, add_config_option
from mailguard.config import Config, check_store_url
from mailguard.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="set up the PostgreSQL hold store or migrate into it")
    add_config_option(p)
    ssub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    q = ssub.add_parser("init", help="apply the schema to the database of store.url")
    add_config_option(q)
    q.set_defaults(func=run_init)
    q = ssub.add_parser("migrate", help="copy the embedded store (store.path) into an empty PostgreSQL database")
    add_config_option(q)
    q.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host:port/dbname")
    q.set_defaults(func=run_migrate)


def run_init(args: argparse.Namespace, config: Config) -> int:
    from mailguard.pgstore import apply_schema, redact, schema_version

    if not config.store.url:
        raise ConfigError(config.source, "store.url",
                          "not set; `store init` sets up a PostgreSQL store (postgresql://user@host:port/dbname)")
    applied = apply_schema(config.store.url)
    version = schema_version(config.store.url)
    state = f"{applied} schema file(s) applied" if applied else "already up to date"
    print(f"{redact(config.store.url)}: mailguard schema v{version}, {state}")
    return EXIT_OK


def run_migrate(args: argparse.Namespace, config: Config) -> int:
    from mailguard.pgmigrate import migrate
    from mailguard.pgstore import redact

    url = check_store_url(args.to, "--to")
    done = migrate(config.store.path, url)
    print(f"{config.store.path} -> {redact(url)}: {done.held} held message rows ({done.messages} with their bytes),"
          f" {done.audit_records} audit records, {done.notices} queued notice(s), fingerprint key {'copied' if done.key else 'absent (created on first use)'};"
          " both audit chains verified")
    print("now set [store] url in the configuration of every node and restart them")
    return EXIT_OK
