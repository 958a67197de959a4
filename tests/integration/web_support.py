"""Shared pieces of the approval-page tests: a config with a [web] section, people,
held messages put in the store the way the holder puts them (masked findings only).

Numbers come from hold_support.NUMBERS (computed, never written out).
"""

from __future__ import annotations

import re
from pathlib import Path

from hold_support import INTERNAL, NUMBERS, message_with_numbers, write_config

from mailguard.config import Config, load_config
from mailguard.holdstore import open_store
from mailguard.records import HeldMessage
from mailguard.web.users import UserStore

JINJI = f"jinji.{INTERNAL}"
SOUMU = f"soumu.{INTERNAL}"
PASSWORD = "correct horse battery"
# name -> (role, email)
PEOPLE = {
    "kacho": ("approver", f"kacho@{JINJI}"),
    "bucho": ("approver", f"bucho@{JINJI}"),
    "soumu-kacho": ("approver", f"kacho@{SOUMU}"),
    "yamada": ("sender", f"yamada@{JINJI}"),
    "root-admin": ("admin", f"admin@{INTERNAL}"),
}
TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)|\d{4}[ -.]\d{4}[ -.]\d{4}")


def web_config(tmp: Path, sink_port: int, *, secure: bool = True, extra: str = "", listen_port: int = 0) -> Path:
    cfg = write_config(tmp, sink_port)
    text = cfg.read_text(encoding="utf-8")
    web_listen = f'listen = "127.0.0.1:{listen_port}"\n' if listen_port else ""
    text += f"""
[web]
{web_listen}base_url = "https://mailguard.{INTERNAL}/"
cookie_secure = {"true" if secure else "false"}
approvers = {{ "{JINJI}" = ["kacho", "bucho"], "{SOUMU}" = ["soumu-kacho"] }}
{extra}
"""
    cfg.write_text(text, encoding="utf-8")
    return cfg


def add_people(config: Config) -> UserStore:
    users = UserStore(config.store.path)
    for name, (role, email) in PEOPLE.items():
        users.add(name, role, PASSWORD, email=email)
    return users


def hold(config: Config, mail_from: str, rcpts: list[str], *, approvals: int = 1,
         subject: str = "名簿の送付") -> HeldMessage:
    """A held message as the relay stores it: exact bytes, masked findings."""
    data = message_with_numbers(NUMBERS[:2], subject=subject, to=", ".join(rcpts))
    findings = [{"masked": "********" + n[-4:], "confidence": "high", "reason": "keyword 個人番号",
                 "location": loc, "fingerprint": f"fp{i}"}
                for i, (n, loc) in enumerate([(NUMBERS[0], "body"), (NUMBERS[1], "attachment:名簿.csv!B2")])]
    store = open_store(config)
    try:
        return store.add(mail_from, rcpts, data, rule="external-recipient", reasons=["1 external recipient(s)"],
                         notice="外部宛てのため保留しました。\n---\nHeld: an external recipient.", persons=2,
                         findings=findings, fingerprints=["fp0", "fp1"], subject=subject,
                         message_id="<t@example>", sha256="0" * 64, approvals_required=approvals)
    finally:
        store.close()


def load(cfg: Path) -> Config:
    return load_config(cfg)
