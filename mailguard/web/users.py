"""People of the approval page: names, roles, e-mail addresses, password hashes.

    UserStore(store_path)                 <store.path>/web-users.json (0600, durable writes)
        add(name, role, password, email="") -> User      UserError if the name is taken
        disable(name) -> User
        get(name) -> User | None
        list() -> [User]
        verify(name, password) -> User | None             None: unknown, disabled or wrong
    hash_password(password) -> str        scrypt (memory-hard, stdlib), random salt
    check_password(stored, password) -> bool              constant-time compare
    approvers_for(web_config, address) -> set[str]         user names assigned to a sender
    ROLES = ("sender", "approver", "admin")

The file is one JSON object, rewritten whole with mailguard.durable (temporary
name, O_EXCL, fsync, rename, fsync the directory) under an flock on
``web-users.lock`` so `mailguard user add` and the running page never lose an
update; the page re-reads it when it changes, so `user disable` takes effect at
the next request.

SECURITY: passwords are never stored or logged, only scrypt(N=2**15, r=8, p=1)
hashes with a 16-byte salt; a login for an unknown or disabled name still costs
one hash so timing does not tell which names exist. Names are checked against
NAME_RE before they are stored or shown.

DIAGNOSTICS: none; the CLI prints, the page audits logins.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailguard.config import WebConfig
from mailguard.durable import file_mode, write_file
from mailguard.errors import MailguardError

USERS_FILE = "web-users.json"
LOCK_FILE = "web-users.lock"
ROLES = ("sender", "approver", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# scrypt: 128 * r * N bytes = 32 MiB per hash, about 0.1 s.
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


class UserError(MailguardError):
    """A user could not be added, changed or found."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    email: str = ""
    disabled: bool = False
    created: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_approver(self) -> bool:
        return self.role in ("approver", "admin")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def check_password(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(password.encode("utf-8")[:MAX_PASSWORD * 4], salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = hash_password(secrets.token_hex(16))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UserError("a user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must be at most {MAX_PASSWORD} characters")
    return password


class UserStore:
    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.dir = Path(store_path)
        self.path = self.dir / USERS_FILE
        self._cache: tuple[tuple[int, int, int], dict[str, dict]] | None = None
        self._mutex = threading.Lock()

    # reading

    def _read(self) -> dict[str, dict]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._mutex:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.path}: cannot read the user file: {exc}") from exc
        users = data.get("users", {}) if isinstance(data, dict) else {}
        with self._mutex:
            self._cache = (stamp, users)
        return users

    def get(self, name: str) -> User | None:
        row = self._read().get(name)
        return _user(name, row) if row else None

    def list(self) -> list[User]:
        return [_user(n, row) for n, row in sorted(self._read().items())]

    def verify(self, name: str, password: str) -> User | None:
        row = self._read().get(name) if NAME_RE.match(name or "") else None
        ok = check_password(row["hash"] if row else _DUMMY_HASH, password)
        if not row or not ok or row.get("disabled"):
            return None
        return _user(name, row)

    # changing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict]]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = {k: dict(v) for k, v in self._read().items()}
            yield users
            body = json.dumps({"version": 1, "users": users}, ensure_ascii=False, indent=1, sort_keys=True)
            write_file(self.path, (body + "\n").encode("utf-8"),
                       tmp=self.dir / f".{USERS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        finally:
            os.close(fd)

    def add(self, name: str, role: str, password: str, email: str = "") -> User:
        check_name(name)
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        check_new_password(password)
        email = email.strip().lower()
        if email and (email.count("@") != 1 or " " in email or email.startswith("@") or email.endswith("@")):
            raise UserError(f"{email!r} is not an e-mail address")
        hashed = hash_password(password)
        with self._locked() as users:
            if name in users:
                raise UserError(f"user {name} exists")
            users[name] = {"role": role, "email": email, "hash": hashed, "disabled": False,
                           "created": datetime.now(UTC).isoformat(timespec="seconds")}
            row = users[name]
        return _user(name, row)

    def disable(self, name: str) -> User:
        check_name(name)
        with self._locked() as users:
            if name not in users:
                raise UserError(f"no user {name}")
            users[name]["disabled"] = True
            row = users[name]
        return _user(name, row)


def _user(name: str, row: dict) -> User:
    return User(name=name, role=str(row.get("role", "sender")), email=str(row.get("email", "")),
                disabled=bool(row.get("disabled", False)), created=str(row.get("created", "")))


def user_summary(user: User) -> dict[str, object]:
    """`user list --json`: never the hash."""
    return asdict(user)


def approvers_for(web: WebConfig, address: str) -> set[str]:
    """User names assigned (web.approvers) to the sender ``address``: by the whole
    address, by its domain or by a parent domain."""
    addr = (address or "").strip().lower()
    domain = addr.rpartition("@")[2]
    names: set[str] = set()
    for key, assigned in web.approvers.items():
        if "@" in key:
            hit = key == addr
        else:
            hit = bool(domain) and (domain == key or domain.endswith("." + key))
        if hit:
            names.update(assigned)
    return names
