"""`mailguard status`: is the relay healthy? For monitoring, a timer or a watchdog.

Checks, each reported on one line:

    relay     something answers SMTP (a 220 greeting) on server.listen
    store     store.path exists and this user can create, fsync and remove a file in it
    upstream  smtp/smtps/smtp+starttls: a 220 greeting (TLS verified as the relay
              would, STARTTLS included); maildir: the directory (or the nearest
              existing parent, which the relay will create it under) is writable
    ocr       the OCR engine (Tesseract with jpn data) the scan workers read images
              with; missing, every image is unscannable (fail closed): a failure
    held      held messages and the age of the oldest (information, never a failure)
    notices   sender notices waiting in the store's queue for the upstream: count,
              the oldest, the last error (information; `serve` retries them)
    reload    the running serve's last start or SIGHUP reload: result and time
              (a refused reload fails: the files on disk are not what runs, and
              a restart would not start); then the policy in force (files,
              rules, sha256), as serve recorded them (relaystate.py)

Exit 0 when every check passed, 1 naming what failed, 2 for a bad configuration.
``--json`` prints one JSON object: ``ok``, ``checks`` (name -> ok, detail),
``held``, ``oldest_held_age_seconds``, ``notices`` (``queued``, ``oldest``,
``oldest_age_seconds``, ``next_attempt``, ``last_error``, ``last_error_at``; null
when the store cannot be read), ``reload`` (``result``, ``time``, ``error``,
``pid``) and ``policy`` (``dir``, ``files``, ``rules``, ``summary``, ``sha256``), null
when no serve has recorded them yet.

SECURITY: reads only the configuration and the store's metadata (counts and
times); never message content. It connects only to the addresses in the config.
DIAGNOSTICS: output on stdout; nothing is logged.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailguard.cli import EXIT_FAILED, EXIT_OK, add_config_option
from mailguard.config import Config
from mailguard.durable import probe_dir
from mailguard.errors import StoreError
from mailguard.holdstore import open_store, probe_store, store_exists

TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="check the relay, the store and the upstream; show the held queue")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--timeout", type=float, default=TIMEOUT, metavar="SECONDS",
                   help=f"per network check (default {TIMEOUT:g})")
    p.set_defaults(func=run)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _greeting(host: str, port: int, timeout: float, *, tls: ssl.SSLContext | None = None,
              starttls: ssl.SSLContext | None = None) -> str:
    """Connect, read the 220 greeting (and STARTTLS if asked), QUIT. Raises on failure."""
    cls = smtplib.SMTP_SSL if tls else smtplib.SMTP
    kwargs: dict[str, Any] = {"context": tls} if tls else {}
    client = cls(timeout=timeout, local_hostname="mailguard-status", **kwargs)
    try:
        code, banner = client.connect(host, port)
        if code != 220:
            raise OSError(f"greeting {code} {banner[:80].decode('ascii', 'replace')}")
        if starttls is not None:
            client.ehlo()
            code, msg = client.starttls(context=starttls)
            if code != 220:
                raise OSError(f"STARTTLS refused: {code}")
        ctx = tls or starttls
        if ctx is None:
            return "answered 220"
        return "answered 220, TLS " + ("verified" if ctx.verify_mode != ssl.CERT_NONE else "NOT verified")
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer (timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (not running?)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def check_relay(config: Config, timeout: float) -> Check:
    host, port = config.server.host, config.server.port
    # A relay bound to every address is reached on loopback.
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    where = f"{config.server.listen}"
    try:
        return Check("relay", True, f"{where} {_greeting(target, port, timeout)}")
    except (OSError, smtplib.SMTPException) as exc:
        return Check("relay", False, f"{where}: {_why(exc)}")


def check_store(config: Config) -> Check:
    try:
        return Check("store", True, probe_store(config))
    except StoreError as exc:
        return Check("store", False, str(exc))


def check_upstream(config: Config, timeout: float) -> Check:
    u = config.upstream
    if u.scheme == "maildir":
        path = Path(u.maildir)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            probe_dir(existing / "tmp" if existing == path and (path / "tmp").is_dir() else existing)
        except OSError as exc:
            return Check("upstream", False, f"maildir:{path}: not writable: {exc.strerror or exc}")
        note = "" if existing == path else f" (will be created under {existing})"
        return Check("upstream", True, f"maildir:{path} writable{note}")
    parts = urlsplit(u.url)
    from mailguard.upstream import tls_context

    try:
        ctx = tls_context(u) if u.scheme in ("smtps", "smtp+starttls") else None
        detail = _greeting(parts.hostname or "", parts.port or 25, timeout,
                           tls=ctx if u.scheme == "smtps" else None,
                           starttls=ctx if u.scheme == "smtp+starttls" else None)
        return Check("upstream", True, f"{u.url} {detail}")
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        return Check("upstream", False, f"{u.url}: {_why(exc)}")


def check_ocr() -> Check:
    """Can the scan workers read images? Without the engine every image is
    unscannable (fail closed, issue 12), so mail with pictures gets held."""
    from mailguard import ocr

    ok, detail = ocr.available()
    if ok:
        return Check("ocr", True, detail)
    return Check("ocr", False, f"OCR unavailable: {detail}; images are unscannable (held by the shipped policy)")


def held_queue(config: Config) -> tuple[int | None, float | None, str]:
    """(held count, age of the oldest in seconds, error) from the store's metadata."""
    if not store_exists(config):
        return 0, None, ""
    from mailguard.metrics import held_counts

    try:
        store = open_store(config)
        try:
            count, oldest = held_counts(store)
        finally:
            store.close()
    except Exception as exc:  # status reports, it does not crash
        return None, None, _why(exc)
    return count, (max(0.0, time.time() - oldest) if oldest is not None else None), ""


def notice_queue(config: Config) -> dict[str, Any] | None:
    """The notice queue's figures (noticestore.NoticeQueueStats), None if unreadable."""
    if not store_exists(config):
        return {"queued": 0, "oldest": None, "oldest_age_seconds": None, "next_attempt": None,
                "last_error": "", "last_error_at": None}
    from datetime import datetime

    from mailguard.localtime import iso_time

    try:
        store = open_store(config)
        try:
            stats = store.notice_queue_stats()
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - status reports, it does not crash (held says why)
        return None
    age = None
    if stats.oldest:
        age = round(max(0.0, time.time() - datetime.fromisoformat(stats.oldest).timestamp()), 1)
    return {"queued": stats.count, "oldest": iso_time(stats.oldest) if stats.oldest else None,
            "oldest_age_seconds": age,
            "next_attempt": iso_time(stats.next_attempt) if stats.next_attempt else None,
            "last_error": stats.last_error, "last_error_at": iso_time(stats.last_error_at)
            if stats.last_error_at else None}


def check_reload(config: Config) -> tuple[Check | None, dict[str, Any] | None]:
    """The last start/reload that serve recorded, as a check, and the whole state."""
    from mailguard.localtime import show_time
    from mailguard.relaystate import read_state, state_path

    try:
        state = read_state(config.store.path)
    except (OSError, ValueError) as exc:
        return Check("reload", False, f"{state_path(config.store.path)}: cannot read: {_why(exc)}"), None
    if state is None:
        return None, None
    last = state.get("last_reload") or {}
    when = show_time(last.get("time"), config.organisation.timezone)
    result = str(last.get("result", "?"))
    if result == "refused":
        return Check("reload", False, f"refused at {when}; still running the previous policy: "
                                      f"{last.get('error', '')}"), state
    return Check("reload", True, f"{result} at {when} (pid {state.get('pid')})"), state


def _notice_line(n: dict[str, Any], config: Config) -> str:
    from mailguard.localtime import show_time

    if not n["queued"]:
        return "0 queued"
    line = f"{n['queued']} queued for the sender(s)"
    if n["oldest_age_seconds"] is not None:
        line += f", oldest {human_age(n['oldest_age_seconds'])} (since {show_time(n['oldest'], config.organisation.timezone)})"
    if n["next_attempt"]:
        line += f"; next attempt {show_time(n['next_attempt'], config.organisation.timezone)}"
    if n["last_error"]:
        line += f"; last error: {n['last_error'][:200]}"
    return line


def human_age(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s"


def run(args: argparse.Namespace, config: Config) -> int:
    checks = [check_relay(config, args.timeout), check_store(config),
              check_upstream(config, args.timeout), check_ocr()]
    reload, state = check_reload(config)
    if reload is not None:
        checks.append(reload)
    count, age, err = held_queue(config)
    notices = notice_queue(config)
    if err:
        checks.append(Check("held", False, f"cannot read the hold store: {err}"))
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({
            "ok": ok,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
            "held": count,
            "oldest_held_age_seconds": None if age is None else round(age, 1),
            "notices": notices,
            "reload": None if state is None else {**(state.get("last_reload") or {}), "pid": state.get("pid")},
            "policy": None if state is None else state.get("policy"),
        }, ensure_ascii=False))
    else:
        for c in checks:
            print(f"{c.name:<9} {'ok' if c.ok else 'FAILED':<7} {c.detail}")
        if count is not None:
            from mailguard.localtime import show_time

            since = show_time(time.time() - age, config.organisation.timezone) if age is not None else ""
            oldest = f", oldest {human_age(age)} (since {since})" if age is not None else ""
            print(f"{'held':<9} {count} message(s){oldest}")
        if notices is not None:
            print(f"{'notices':<9} {_notice_line(notices, config)}")
        policy = (state or {}).get("policy")
        if policy:
            print(f"{'policy':<9} in force: {policy.get('dir')}: {', '.join(policy.get('files') or [])}; "
                  f"{policy.get('summary')}; sha256 {str(policy.get('sha256'))[:16]}")
    if not ok:
        failed = ", ".join(c.name for c in checks if not c.ok)
        print(f"mailguard status: failed: {failed}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
