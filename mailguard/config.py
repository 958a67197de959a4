"""mailguard.toml -> frozen dataclasses, validated before any socket is bound.

SECURITY: reads an admin-owned TOML file. Every key is checked against the schema
below; an unknown key, a wrong type, a bad address or a missing file is a
ConfigError naming the file, the key path and what would be valid.
Relative paths are resolved against the directory of the config file (or the
current directory when the built-in defaults are used), so a systemd unit and a
newcomer in a checkout both get what they expect.

DIAGNOSTICS: none; the caller logs or prints the error.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from mailguard.errors import ConfigError

SYSTEM_CONFIG = "/etc/mailguard/mailguard.toml"
CONFIG_ENV = "MAILGUARD_CONFIG"
BUILTIN_SOURCE = "(built-in defaults)"
# The built-in defaults are for trying mailguard out of a checkout: the DESIGN's
# example domain, so a demo sender is internal and every real address external.
EXAMPLE_INTERNAL_DOMAIN = "city.example.lg.jp"
UPSTREAM_SCHEMES = ("smtp", "smtps", "smtp+starttls", "maildir")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:10025"
    allowed_clients: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    max_message_size: int = 52428800
    max_recipients: int = 1000
    max_commands: int = 10000  # per connection; stops a client that loops forever
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2 minimums are 5 minutes
    hostname: str = ""  # banner / EHLO name; empty = the machine's FQDN
    # serve processes sharing the listening socket (issue 15); "auto" in the
    # file = os.cpu_count(), resolved at load
    processes: int = 1
    max_connections: int = 200  # client connections at once; over it: 421 4.7.0 and close
    # "auto": uvloop when it imports (C transports: ~20% more mail per core), else
    # asyncio's own loop; "asyncio" forces the standard loop (debugging, a platform
    # without uvloop)
    event_loop: str = "auto"

    @property
    def host(self) -> str:
        return split_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen)[1]

    @functools.cached_property  # read on every connection: parsed once
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_clients)


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = "maildir:var/outbox"
    auth_file: str = ""  # file with "username:password" on one line, never argv
    verify_tls: bool = True
    ca_file: str = ""
    timeout: float = 60.0
    pool_size: int = 4
    max_connections: int = 20  # links to the upstream at once (leased + idle)
    connection_wait: float = 30.0  # seconds a transaction waits for a link; then 451 4.4.5

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0].lower()

    @property
    def maildir(self) -> str:
        return self.url.split(":", 1)[1] if self.scheme == "maildir" else ""


@dataclass(frozen=True)
class OrganisationConfig:
    internal_domains: tuple[str, ...] = ()  # required in a config file; see require_internal_domains
    list_addresses: tuple[str, ...] = ()  # internal distribution lists (globs allowed): count as many recipients
    timezone: str = "Asia/Tokyo"  # times shown to people (CLI text, notices, status) carry this offset


@dataclass(frozen=True)
class StoreConfig:
    path: str = "var/mailguard"
    hold_expiry_hours: float = 72.0
    notify_sender: bool = True
    notice_from: str = ""  # envelope/From of notices; empty = postmaster@<first internal domain>
    group: str = ""  # admin group that may read and change the store (files 0660, dirs 2770); empty = owner only
    min_free: int = 64 * 1024 * 1024  # bytes free on store.path below which new mail is 451 4.3.1
    # "postgresql://user@host:port/dbname" (libpq URI; the password from the URI,
    # PGPASSFILE or PGPASSWORD): the shared PostgreSQL store of several nodes
    # (mailguard.pgstore). Empty = the embedded files + SQLite store under `path`.
    url: str = ""


@dataclass(frozen=True)
class PolicyConfig:
    dir: str = "policies"


@dataclass(frozen=True)
class LimitsConfig:
    """Scan limits; hitting one makes the item unscannable (DESIGN §3.5)."""

    max_expanded_bytes: int = 200 * 1024 * 1024
    max_ratio: int = 100  # expanded / compressed, per archive member
    max_depth: int = 5  # nesting of archives and attached messages
    max_parts: int = 5000  # MIME parts plus archive members per message
    scan_timeout: float = 60.0  # seconds per message
    scan_workers: int = 2
    max_findings: int = 1000  # findings kept per message for reports (persons stay exact)
    max_worker_memory: int = 1024 * 1024 * 1024  # address space per scan worker; 0 = no cap
    # OCR of images (issue 12). The per-message budget also ends at the scan's
    # own deadline; an image beyond either budget is unscannable, never skipped.
    ocr_time_per_image: float = 20.0  # seconds for one image file (all its pages/frames)
    ocr_time_per_message: float = 60.0  # seconds of OCR per message, all images together
    ocr_max_pixels: int = 60_000_000  # pixels per image/page; larger is refused before decoding
    ocr_min_side: int = 64  # px: an image with both sides below this is decorative (skipped)
    ocr_max_frames: int = 50  # pages/frames per image file (multi-page TIFF, GIF)


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # e.g. "127.0.0.1:9125"; empty = off


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class WebConfig:
    """The approval page (`mailguard web`, mailguard/web/): people approve held mail."""

    listen: str = "127.0.0.1:8025"
    base_url: str = ""  # e.g. "https://mailguard.city.example.lg.jp/": links in notices; empty = no links
    approvers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sender address or domain -> user names
    cookie_secure: bool = True  # false only for plain-http testing on loopback
    session_minutes: int = 30  # idle time before a session ends
    login_attempts: int = 5  # failed logins per user name or address per 15 minutes
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # may set X-Forwarded-For / the SSO header
    sso_header: str = ""  # e.g. "X-Remote-User" set by the reverse proxy; empty = off


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    organisation: OrganisationConfig = field(default_factory=OrganisationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str = BUILTIN_SOURCE

    @property
    def is_builtin(self) -> bool:
        return self.source == BUILTIN_SOURCE

    @property
    def store_path(self) -> Path:
        return Path(self.store.path)

    @property
    def policy_dir(self) -> Path:
        return Path(self.policy.dir)


def split_hostport(value: str) -> tuple[str, int]:
    """'127.0.0.1:10025' or '[::1]:10025' -> (host, port); ValueError if malformed."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPv6]:PORT")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep or not host:
            raise ValueError("expected HOST:PORT")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"port {port_s!r} is not 1-65535")
    return host, int(port_s)


def find_config(path: str | os.PathLike[str] | None = None) -> str | None:
    """The config file to read: ``-c``, else ``$MAILGUARD_CONFIG``, else
    /etc/mailguard/mailguard.toml if it exists; None means the built-in defaults.

    A file named by ``-c`` or the environment must exist (an error otherwise):
    a typo there must never fall back to defaults and an empty store.
    """
    if path is not None:
        return os.fspath(path)
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return env
    # lexists: a dangling link or a directory at the system path is a mistake to
    # report, not a reason to fall back to the defaults silently.
    return SYSTEM_CONFIG if os.path.lexists(SYSTEM_CONFIG) else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config file that find_config() names.

    With no file anywhere, the built-in defaults (``config.is_builtin``); the CLI
    announces that on stderr with the store path it uses.
    """
    path = find_config(path)
    if path is None:
        return _finish(Config(organisation=OrganisationConfig((EXAMPLE_INTERNAL_DOMAIN,))),
                       Path.cwd(), BUILTIN_SOURCE)
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(p), "", "is a directory; -c/--config names the mailguard.toml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(p), "", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), "", f"not valid TOML: {exc}") from None
    cfg = _build(Config, raw, str(p), "")
    return _finish(cfg, p.resolve().parent, str(p))


def require_internal_domains(config: Config) -> None:
    """Refuse a config without internal domains: every colleague would count as
    external, and mail between offices would be held or blocked (issue 13.4)."""
    if not config.organisation.internal_domains:
        raise ConfigError(
            config.source, "organisation.internal_domains",
            'is missing or empty; list your own domains, e.g. internal_domains = ["city.example.lg.jp"] '
            "(a domain covers its subdomains)")


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix.rstrip(".") or "(top level)", f"expected a table, got {raw!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name != "source"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{prefix}{key}"
        if key not in known:
            valid = ", ".join(sorted(known))
            raise ConfigError(source, where, f"unknown key; valid keys here: {valid}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, source, where + ".")
        elif where == "server.processes":
            values[key] = _processes(value, source, where)
        elif where == "server.event_loop":
            values[key] = _choice(value, EVENT_LOOPS, source, where)
        else:
            values[key] = _coerce(hint, value, source, where)
    return cls(**values)


MAX_PROCESSES = 64
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def _choice(value: Any, choices: tuple[str, ...], source: str, where: str) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise ConfigError(source, where, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _processes(value: Any, source: str, where: str) -> int:
    """server.processes: a count from 1 to MAX_PROCESSES, or "auto" (one per core)."""
    if value == "auto":
        return max(1, min(MAX_PROCESSES, os.cpu_count() or 1))
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PROCESSES:
        return value
    raise ConfigError(source, where, f'expected "auto" or a whole number from 1 to {MAX_PROCESSES}, '
                                     f"got {value!r}")


def _coerce(hint: Any, value: Any, source: str, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, where, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ConfigError(source, where, f"expected a non-negative integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        raise ConfigError(source, where, f"expected a positive number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, where, f"expected a string, got {value!r}")
    if hint == dict[str, tuple[str, ...]]:  # web.approvers: a table of lists of strings
        if isinstance(value, dict) and all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()):
            return {str(k): tuple(v) for k, v in value.items()}
        raise ConfigError(source, where, f'expected a table of lists of strings like {{ "a.example" = ["name"] }}, '
                          f"got {value!r}")
    # tuple[str, ...]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(source, where, f"expected a list of strings, got {value!r}")


def _resolve(base: Path, value: str) -> str:
    return str(value and (Path(value) if os.path.isabs(value) else base / value))


def _finish(cfg: Config, base: Path, source: str) -> Config:
    """Check values that need more than a type, and resolve relative paths."""
    s, u = cfg.server, cfg.upstream
    try:
        split_hostport(s.listen)
    except ValueError as exc:
        raise ConfigError(source, "server.listen", f"{s.listen!r}: {exc}") from None
    for net in s.allowed_clients:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                source, "server.allowed_clients", f"{net!r} is not an IP network like 127.0.0.1/32"
            ) from None
    if s.max_message_size < 1024:
        raise ConfigError(source, "server.max_message_size", "must be at least 1024 bytes")
    if s.max_recipients < 1:
        raise ConfigError(source, "server.max_recipients", "must be at least 1")
    if s.max_connections < 1:
        raise ConfigError(source, "server.max_connections", "must be at least 1")
    if u.max_connections < 1:
        raise ConfigError(source, "upstream.max_connections", "must be at least 1")
    mem = cfg.limits.max_worker_memory
    if mem and mem < 256 * 1024 * 1024:
        # Python and the parsers alone need ~100 MB: a smaller cap would make every
        # scan fail and the relay tempfail all mail.
        raise ConfigError(source, "limits.max_worker_memory",
                          f"{mem} bytes is too small to scan anything; use 0 (no cap) or at least 268435456 (256 MiB)")

    if u.scheme not in UPSTREAM_SCHEMES:
        raise ConfigError(
            source, "upstream.url",
            f"{u.url!r}: scheme must be one of smtp://, smtps://, smtp+starttls://, maildir:PATH",
        )
    upstream = u
    if u.scheme == "maildir":
        if not u.maildir:
            raise ConfigError(source, "upstream.url", "maildir: needs a path, e.g. maildir:var/outbox")
        upstream = dataclasses.replace(u, url="maildir:" + _resolve(base, u.maildir))
    else:
        try:
            parts = urlsplit(u.url)
            port = parts.port
        except ValueError as exc:  # a bad port, or an unclosed [IPv6 literal
            raise ConfigError(source, "upstream.url", f"{u.url!r}: {exc}") from None
        if not parts.hostname or port is None:
            raise ConfigError(source, "upstream.url", f"{u.url!r}: expected SCHEME://HOST:PORT")
        if parts.username or parts.password:
            raise ConfigError(
                source, "upstream.url",
                "credentials do not belong in the URL; put them in upstream.auth_file",
            )
    if u.auth_file:
        af = _resolve(base, u.auth_file)
        if not Path(af).is_file():
            raise ConfigError(source, "upstream.auth_file", f"{af}: file not found")
        upstream = dataclasses.replace(upstream, auth_file=af)
    if u.ca_file:
        ca = _resolve(base, u.ca_file)
        if not Path(ca).is_file():
            raise ConfigError(source, "upstream.ca_file", f"{ca}: file not found")
        upstream = dataclasses.replace(upstream, ca_file=ca)

    domains = []
    for d in cfg.organisation.internal_domains:
        norm = d.strip().strip(".").lower()
        try:
            norm = norm.encode("idna").decode("ascii") if norm else norm
        except UnicodeError:
            raise ConfigError(source, "organisation.internal_domains", f"{d!r} is not a domain") from None
        if not norm or "@" in norm or " " in norm:
            raise ConfigError(source, "organisation.internal_domains", f"{d!r} is not a domain")
        domains.append(norm)

    lists = []
    for a in cfg.organisation.list_addresses:
        norm = a.strip().lower()
        local, at, domain = norm.rpartition("@")
        if not at or not local or not domain or " " in norm:
            raise ConfigError(source, "organisation.list_addresses",
                              f"{a!r} is not an address or pattern like all-staff@city.example.lg.jp "
                              "or all-*@city.example.lg.jp")
        lists.append(norm)

    try:
        from mailguard.localtime import zone

        zone(cfg.organisation.timezone)
    except ValueError as exc:
        raise ConfigError(source, "organisation.timezone", str(exc)) from None

    if cfg.metrics.listen:
        try:
            split_hostport(cfg.metrics.listen)
        except ValueError as exc:
            raise ConfigError(source, "metrics.listen", f"{cfg.metrics.listen!r}: {exc}") from None
    web = _finish_web(cfg.web, source)
    if cfg.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(source, "log.level", "must be debug, info, warning or error")

    for key, value in (("store.path", cfg.store.path), ("policy.dir", cfg.policy.dir)):
        if not value.strip():
            # "" would silently mean the current directory.
            raise ConfigError(source, key, "must not be empty; give a directory path")
    if cfg.store.url:
        check_store_url(cfg.store.url, source)
    policy_dir = _resolve(base, cfg.policy.dir)
    if not Path(policy_dir).is_dir():
        raise ConfigError(source, "policy.dir", f"{policy_dir}: directory not found")

    return dataclasses.replace(
        cfg,
        upstream=upstream,
        organisation=dataclasses.replace(cfg.organisation, internal_domains=tuple(domains),
                                         list_addresses=tuple(lists)),
        store=dataclasses.replace(cfg.store, path=_resolve(base, cfg.store.path)),
        policy=PolicyConfig(policy_dir),
        web=web,
        source=source,
    )


STORE_URL_SCHEMES = ("postgresql", "postgres")


def check_store_url(url: str, source: str = "store.url") -> str:
    """A libpq URI naming a database, else ConfigError (never echoes a password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ConfigError(source, "store.url", f"not a URL: {exc}") from None
    if parts.scheme not in STORE_URL_SCHEMES:
        raise ConfigError(source, "store.url",
                          f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not supported;"
                          " expected postgresql://user@host:port/dbname")
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ConfigError(source, "store.url", "names no database; expected postgresql://user@host:port/dbname")
    return url
def _finish_web(web: WebConfig, source: str) -> WebConfig:
    try:
        split_hostport(web.listen)
    except ValueError as exc:
        raise ConfigError(source, "web.listen", f"{web.listen!r}: {exc}") from None
    if web.base_url:
        parts = urlsplit(web.base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(source, "web.base_url",
                              f"{web.base_url!r}: expected https://HOST/ (the address people open)")
    for net in web.trusted_proxies:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(source, "web.trusted_proxies", f"{net!r} is not an IP network like 127.0.0.1/32") from None
    if web.session_minutes < 1:
        raise ConfigError(source, "web.session_minutes", "must be at least 1")
    if web.login_attempts < 1:
        raise ConfigError(source, "web.login_attempts", "must be at least 1")
    approvers = {}
    for key, names in web.approvers.items():
        norm = key.strip().strip(".").lower()
        if not norm or " " in norm or norm.startswith("@"):
            raise ConfigError(source, "web.approvers",
                              f"{key!r}: expected a sender address (kacho@jinji.example) or a domain (jinji.example)")
        if not names:
            raise ConfigError(source, f"web.approvers.{key}", "lists no user names")
        approvers[norm] = tuple(n.strip() for n in names)
    return dataclasses.replace(web, approvers=approvers)
