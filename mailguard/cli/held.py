"""`mailguard held`: list, show, release, reject, expire and purge held mail.

Talks to the store directly (SQLite with a busy timeout, per-message flocks), so
it works while `mailguard serve` runs. The operator is MAILGUARD_OPERATOR if set,
else SUDO_USER, else the login user; it is written to every audit record.

SECURITY: ids are validated before they become paths; output shows masked
findings only. ``show --raw`` prints the stored bytes (numbers in the clear) and
is audited before anything is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mailguard.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_option
from mailguard.config import Config
from mailguard.holdstore import HoldStore, open_store
from mailguard.records import STATES, HeldMessage
from mailguard.heldrows import ID_RE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("held", help="list, show, release or reject held mail")
    add_config_option(p)
    hs = p.add_subparsers(dest="held_command", metavar="ACTION", required=True)

    q = hs.add_parser("list", help="held mail: id, state, rule, from, to, persons, received")
    add_config_option(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.add_argument("--state", default="held", choices=(*STATES, "all"), help="which state to list (default held)")
    q.set_defaults(func=run_list)

    q = hs.add_parser("show", help="one held message, findings masked")
    add_config_option(q)
    q.add_argument("id")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="one JSON object")
    g.add_argument("--raw", action="store_true", help="print the stored message bytes (audited)")
    q.set_defaults(func=run_show)

    for name, helptext in (("release", "approve and deliver (once enough operators approved)"),
                           ("reject", "refuse it and notify the sender")):
        q = hs.add_parser(name, help=helptext)
        add_config_option(q)
        q.add_argument("id")
        q.add_argument("--reason", required=True, type=non_blank_reason,
                       help="why (recorded in the audit log; must not be blank)")
        if name == "release":
            q.add_argument("--force", action="store_true",
                           help="release even though an earlier release was cut off (may deliver twice)")
        q.set_defaults(func=run_release if name == "release" else run_reject)

    q = hs.add_parser("expire", help="expire mail held past store.hold_expiry_hours (never releases)")
    add_config_option(q)
    q.set_defaults(func=run_expire)

    q = hs.add_parser("purge", help="delete message files of released, rejected and expired mail")
    add_config_option(q)
    q.add_argument("--older-than", type=float, required=True, metavar="DAYS",
                   help="decided more than DAYS days ago")
    q.set_defaults(func=run_purge)


def non_blank_reason(text: str) -> str:
    """argparse type: a reason an auditor can read later (exit 2 when blank)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank: say why, e.g. --reason \"confirmed with the sender\"")
    return text.strip()


def _open(config: Config) -> HoldStore:
    return open_store(config)


def _bad_id(hold_id: str) -> bool:
    if ID_RE.match(hold_id):
        return False
    print(f"mailguard held: {hold_id[:40]!r} is not a hold id (16 letters, from `mailguard held list`)",
          file=sys.stderr)
    return True


# Hex digests: a 64-hex-digit value holds a 12-digit run about one time in six,
# and masking it would corrupt it. Every other string is scrubbed on the way out.
_NOT_SCRUBBED = frozenset({"id", "sha256", "fingerprint", "fingerprints"})


def _masked(value: Any, key: str = "") -> Any:
    """Scrub every 12+ digit run from output (an envelope sender like
    123456789018@city... is stored as received, but is shown masked like the log
    and the audit log show it)."""
    from mailguard.log import scrub

    if key in _NOT_SCRUBBED:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _operator() -> str:
    from mailguard.hold import operator_identity

    return operator_identity()


INTERRUPTED_NOTE = ("a release was cut off after it began: the upstream may already have delivered it;"
                    " `held release --force` sends it again")


def _cut_off(store: HoldStore, h: HeldMessage) -> bool:
    """A release of ``h`` was cut off: marked by recovery, or its marker left by a
    dead process (the lock is free; a live release holds it)."""
    from mailguard.errors import StoreError
    from mailguard.hold import release_cut_off

    if release_cut_off(h, lock_free=False):
        return True
    if not (h.state == "held" and h.release_started):
        return False
    try:
        with store.locked(h.id) as now:
            return release_cut_off(now, lock_free=True)
    except StoreError:
        return False  # busy: a release is running now


def run_list(args: argparse.Namespace, config: Config) -> int:
    store = _open(config)
    rows = store.list(None if args.state == "all" else args.state)
    if args.json:
        for h in rows:
            d = h.summary()
            if _cut_off(store, h):
                d["release_interrupted"] = True
            print(json.dumps(_masked(d), ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"no {args.state} mail" if args.state != "all" else "no mail in the store")
        return EXIT_OK
    from mailguard.localtime import show_time

    tz = config.organisation.timezone
    print(f"{'ID':16}  {'STATE':8}  {'RECEIVED':23}  {'PERSONS':>7}  {'RULE':20}  FROM -> TO")
    for h in rows:
        to = ", ".join(h.rcpt_tos[:3]) + (f" (+{len(h.rcpt_tos) - 3})" if len(h.rcpt_tos) > 3 else "")
        print(f"{h.id:16}  {h.state:8}  {show_time(h.received, tz):23}  {h.persons:>7}  {h.rule[:20]:20}  "
              + _masked(f"{h.mail_from or '<>'} -> {to}")
              + ("  [RELEASE INTERRUPTED]" if _cut_off(store, h) else ""))
    return EXIT_OK


def run_show(args: argparse.Namespace, config: Config) -> int:
    if _bad_id(args.id):
        return EXIT_USAGE
    store = _open(config)
    if args.raw:
        from mailguard.hold import show_raw

        data = show_raw(store, store.audit, args.id, _operator())
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    held = store.get(args.id)
    d = _masked(held.detail())
    d["expires"] = hold_expiry(held, config)
    cut_off = _cut_off(store, held)
    if cut_off:
        d["release_interrupted"] = True
    if args.json:
        print(json.dumps(d, ensure_ascii=False))
        return EXIT_OK
    from mailguard.localtime import show_time

    tz = config.organisation.timezone
    if cut_off:
        print(f"{'WARNING:':20}{INTERRUPTED_NOTE}")
    for key in ("id", "state", "rule", "from", "to", "persons", "received", "expires", "subject", "message_id",
                "size", "sha256", "approvals_required", "decided_at", "decided_by", "decided_reason",
                "upstream_reply", "purged_at"):
        v = d[key]
        if v is None or v == "":
            continue
        if key in ("received", "expires", "decided_at", "purged_at"):
            v = show_time(v, tz)  # local, with its offset (issue 13.9)
        print(f"{key + ':':20}{', '.join(v) if isinstance(v, list) else v}")
    for r in d["reasons"]:
        print(f"{'reason:':20}{r}")
    for a in d["approvals"]:
        print(f"{'approved:':20}{a['operator']} at {show_time(a['time'], tz)}: {a['reason']}")
    for f in d["findings"]:
        print(f"{'finding:':20}{f['masked']}  {f['confidence']}  {f['location']}  ({f['reason']})")
    for u in d["unscannable"]:
        print(f"{'unscannable:':20}{u['location']}: {u['reason']}")
    return EXIT_OK


def hold_expiry(held: Any, config: Config) -> str | None:
    """When a held message expires (received + store.hold_expiry_hours), ISO 8601
    with offset; None once it is no longer held."""
    from datetime import datetime, timedelta

    from mailguard.localtime import iso_time

    received = iso_time(held.received)
    if held.state != "held" or received is None:
        return None
    return (datetime.fromisoformat(received) + timedelta(hours=config.store.hold_expiry_hours)).isoformat()


def run_release(args: argparse.Namespace, config: Config) -> int:
    if _bad_id(args.id):
        return EXIT_USAGE
    from mailguard.hold import release_message

    store = _open(config)
    out = asyncio.run(release_message(config, store, store.audit, args.id, _operator(), args.reason,
                                      force=args.force))
    if out.delivered:
        print(f"{args.id}: released; upstream replied {out.reply}")
        return EXIT_OK
    if out.error:
        print(f"mailguard held release: {args.id}: {out.error}; it stays held", file=sys.stderr)
        for rcpt, reply in out.refused.items():
            print(f"  refused {rcpt}: {reply}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.id}: approval recorded ({out.approvals} of {out.needed}); "
          f"{out.needed - out.approvals} more distinct operator(s) must approve before it is sent")
    return EXIT_OK


def run_reject(args: argparse.Namespace, config: Config) -> int:
    if _bad_id(args.id):
        return EXIT_USAGE
    from mailguard.hold import reject_message

    store = _open(config)
    from mailguard.notifier import QUEUED, SENT

    done, notice = asyncio.run(reject_message(config, store, store.audit, args.id, _operator(), args.reason))
    if notice == SENT:
        print(f"{args.id}: rejected; the sender was notified")
    elif notice == QUEUED:
        # The rejection stands; the notice waits in the store's queue and the
        # running relay sends it once the upstream takes it (issue 13.5).
        print(f"{args.id}: rejected; the notice to the sender could not be sent yet: it is queued "
              "and `mailguard serve` retries it (see `mailguard status`)")
    elif not config.store.notify_sender or not done.mail_from or done.mail_from == "<>":
        print(f"{args.id}: rejected (no notice: notices are off or the sender is empty)")
    else:
        print(f"{args.id}: rejected, but the notice to the sender could neither be sent nor queued "
              "(see the log and `mailguard audit export`)", file=sys.stderr)
    return EXIT_OK


def run_expire(args: argparse.Namespace, config: Config) -> int:
    from mailguard.hold import Holder

    holder = Holder(config, _open(config))
    expired = asyncio.run(holder.expire_due(_operator()))
    for hold_id in expired:
        print(f"{hold_id}: expired")
    print(f"{len(expired)} expired")
    return EXIT_OK


def run_purge(args: argparse.Namespace, config: Config) -> int:
    from mailguard.hold import purge_messages

    if args.older_than < 0:
        print("mailguard held purge: --older-than must be 0 or more days", file=sys.stderr)
        return EXIT_USAGE
    store = _open(config)
    purged = purge_messages(store, store.audit, args.older_than, _operator())
    for hold_id in purged:
        print(f"{hold_id}: purged")
    print(f"{len(purged)} purged")
    return EXIT_OK
