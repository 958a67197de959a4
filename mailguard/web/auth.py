"""Who is asking and what they may do: sessions, CSRF tokens, login limits, permissions.

    Sessions(idle_minutes)            server-side sessions (random 256-bit ids in a cookie)
        new(user_name, ip) -> Session / get(sid) -> Session | None / drop(sid)
    LoginLimiter(max_failures)        failures per user name and per address in WINDOW seconds
    client_address(peer, headers, trusted) -> str     the person's address (X-Forwarded-For
                                      believed only from web.trusted_proxies)
    Access(user, web_config)          may_view / may_approve / may_reject / may_cancel (a HeldMessage)
    same_token(a, b) -> bool          constant-time CSRF token compare

Sessions live in the page's memory: a restart logs everybody out, and a session
ends after ``web.session_minutes`` without a request or ABSOLUTE_SECONDS after
login, whichever comes first. Each has its own CSRF token, checked on every POST.

SECURITY: the cookie carries only the random id; everything else stays here. The
X-Forwarded-For header and the SSO header are believed only from trusted proxies.
An approver may never approve mail they sent themselves (their own address is the
envelope sender): the two-person rule needs two people other than the sender.

DIAGNOSTICS: none; the app audits logins and actions.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mailguard.config import WebConfig
from mailguard.records import HeldMessage
from mailguard.web.users import User, approvers_for

ABSOLUTE_SECONDS = 12 * 3600
WINDOW = 15 * 60
MAX_SESSIONS = 10000


@dataclass
class Session:
    sid: str
    user: str
    ip: str
    csrf: str
    created: float
    seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)


class Sessions:
    def __init__(self, idle_minutes: int) -> None:
        self.idle = idle_minutes * 60.0
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, user: str, ip: str) -> Session:
        now = time.monotonic()
        s = Session(secrets.token_urlsafe(32), user, ip, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sweep(now)
            if len(self._by_id) >= MAX_SESSIONS:  # bounded: drop the oldest
                oldest = min(self._by_id.values(), key=lambda x: x.seen)
                self._by_id.pop(oldest.sid, None)
            self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen > self.idle or now - s.created > ABSOLUTE_SECONDS:
                self._by_id.pop(sid, None)
                return None
            s.seen = now
            return s

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def drop_user(self, user: str) -> None:
        with self._lock:
            for sid in [k for k, v in self._by_id.items() if v.user == user]:
                del self._by_id[sid]

    def _sweep(self, now: float) -> None:
        for sid in [k for k, v in self._by_id.items()
                    if now - v.seen > self.idle or now - v.created > ABSOLUTE_SECONDS]:
            del self._by_id[sid]


class LoginLimiter:
    """At most ``max_failures`` failed logins per user name and per address in WINDOW."""

    def __init__(self, max_failures: int) -> None:
        self.max = max_failures
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > WINDOW:
            q.popleft()
        return q

    def blocked(self, name: str, ip: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.max for k in (f"u:{name}", f"a:{ip}"))

    def failed(self, name: str, ip: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100000:
                self._failures.clear()
            for k in (f"u:{name[:64]}", f"a:{ip}"):
                self._recent(k, now).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(f"u:{name}", None)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def _networks(nets: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in nets]


def trusted_peer(peer: str, trusted: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in _networks(trusted))


def client_address(peer: str, headers: Mapping[str, str], trusted: Iterable[str]) -> str:
    """The address the person came from: the proxy's last X-Forwarded-For hop when the
    direct peer is a trusted proxy, else the peer itself."""
    if trusted_peer(peer, trusted):
        forwarded = headers.get("x-forwarded-for", "")
        hop = forwarded.split(",")[-1].strip() if forwarded else ""
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            pass
    return peer or "unknown"


class Access:
    """What one person may do with held mail (DESIGN §8 `mailguard web`)."""

    def __init__(self, user: User, web: WebConfig) -> None:
        self.user, self.web = user, web

    def is_sender(self, held: HeldMessage) -> bool:
        return bool(self.user.email) and self.user.email == (held.mail_from or "").strip().lower()

    def is_assigned(self, held: HeldMessage) -> bool:
        return self.user.role == "approver" and self.user.name in approvers_for(self.web, held.mail_from)

    def may_view(self, held: HeldMessage) -> bool:
        return self.user.is_admin or self.is_assigned(held) or self.is_sender(held)

    def may_approve(self, held: HeldMessage) -> bool:
        # Never one's own mail: the approver must be another person than the sender.
        return (self.user.is_admin or self.is_assigned(held)) and not self.is_sender(held)

    def may_reject(self, held: HeldMessage) -> bool:
        return self.may_approve(held)

    def may_cancel(self, held: HeldMessage) -> bool:
        return self.is_sender(held)

    def role_here(self, held: HeldMessage) -> str:
        if self.may_approve(held):
            return "admin" if self.user.is_admin else "approver"
        return "sender" if self.is_sender(held) else ""
