"""A throwaway Postfix instance and SMTP sinks for the end-to-end suite.

The instance has its own config_directory, queue_directory and data_directory
under one temporary directory, listens on 127.0.0.1 only (one smtpd on a random
high port, ``inet_interfaces = loopback-only``), logs to a file of its own
(``maillog_file``), and is only ever driven with ``postfix -c DIR``: the system
instance (/etc/postfix, /var/spool/postfix) is never read for configuration,
started, stopped or flushed.

The routing lines come from ``deploy/postfix/`` (main.cf and master.cf
fragments), with mailguard's documented address ``127.0.0.1:10025`` replaced by
the port of the mailguard under test, so the suite tests exactly what the docs
tell an admin to paste.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parents[2]
DEPLOY_POSTFIX = REPO / "deploy" / "postfix"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOCUMENTED_MAILGUARD = "127.0.0.1:10025"

# The hop whose deferral/backoff the tests wait for: seconds, not the default
# 300 s / 4000 s, so "mailguard was down, then came back" finishes quickly.
FAST_QUEUE = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "smtp_connect_timeout": "5s",
    "bounce_queue_lifetime": "1h",
    "maximal_queue_lifetime": "1h",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.1, on_timeout: Callable[[], str] | None = None) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- SMTP sinks


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str = ""


class _SinkHandler:
    def __init__(self, sink: "Sink") -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd hook)
        msg = Received(envelope.mail_from, list(envelope.rcpt_tos),
                       bytes(envelope.original_content or envelope.content),
                       str(session.peer))
        with self.sink.lock:
            self.sink.messages.append(msg)
        return "250 2.0.0 Ok: queued by sink"


class Sink:
    """A capturing SMTP server on 127.0.0.1 that can be stopped and restarted
    on the same port (the "upstream is down" scenario)."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port,
                                      server_hostname=f"{self.name}.sink.test",
                                      decode_data=False, enable_SMTPUTF8=True)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def find(self, marker: str | bytes) -> list[Received]:
        m = marker.encode() if isinstance(marker, str) else marker
        return [r for r in self.snapshot() if m in r.data]

    def wait_for(self, marker: str | bytes, timeout: float = 30.0, count: int = 1,
                 on_timeout: Callable[[], str] | None = None) -> list[Received]:
        return wait_for(lambda: (len(self.find(marker)) >= count) and self.find(marker),
                        timeout, f"{count} message(s) containing {marker!r} at sink {self.name}",
                        on_timeout=on_timeout)


# ------------------------------------------------------- deploy/postfix lines


@dataclass
class DeployLines:
    """Parsed deploy/postfix/ fragments: main.cf parameters and master.cf entries."""

    main: list[tuple[str, str]] = field(default_factory=list)
    master: list[str] = field(default_factory=list)  # whole entries, continuation lines joined
    files: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    """Postfix config syntax: '#' comments, a line starting with whitespace continues
    the previous one."""
    out: list[str] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0] in " \t" and out:
            out[-1] += " " + raw.strip()
        else:
            out.append(raw.rstrip())
    return out


def read_deploy_lines(mailguard_port: int, directory: Path = DEPLOY_POSTFIX) -> DeployLines:
    """Read the admin-facing fragments and point them at the mailguard under test.

    Files whose name contains 'master' are master.cf entries; every other *.cf
    file is main.cf parameters.
    """
    lines = DeployLines()
    if not directory.is_dir():
        return lines
    sub = lambda s: (s.replace(DOCUMENTED_MAILGUARD, f"127.0.0.1:{mailguard_port}")  # noqa: E731
                     .replace("127.0.0.1]:10025", f"127.0.0.1]:{mailguard_port}"))
    for path in sorted(directory.glob("*.cf")):
        text = sub(path.read_text(encoding="utf-8"))
        lines.files.append(path.name)
        if "master" in path.name:
            lines.master.extend(_logical_lines(text))
        else:
            for line in _logical_lines(text):
                key, sep, value = line.partition("=")
                if not sep:
                    raise ValueError(f"{path}: not a 'name = value' line: {line!r}")
                lines.main.append((key.strip(), value.strip()))
    return lines


# ------------------------------------------------------------ the instance

# Our own master.cf: the Debian defaults minus chroot (the throwaway queue has
# no chroot jail set up) and with smtpd bound to one loopback port.
_MASTER_BASE = """\
{smtpd_addr} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixUnavailable(Exception):
    """Postfix is missing or cannot run here; the suite skips with this reason."""


def postfix_unavailable_reason() -> str:
    if not Path(POSTFIX).exists():
        return "Postfix is not installed (Debian: apt-get install postfix)"
    if os.geteuid() != 0:
        return "Postfix's master daemon must be started as root"
    try:
        import pwd, grp  # noqa: E401

        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or postdrop group is missing (broken Postfix install)"
    return ""


class PostfixInstance:
    """One throwaway Postfix: build() writes config, start()/stop() run it."""

    def __init__(self, mailguard_port: int, mailbox_port: int, *,
                 internal_domain: str = "city.example.lg.jp",
                 myhostname: str = "mta.city.example.lg.jp") -> None:
        self.smtpd_port = free_port()
        self.mailguard_port = mailguard_port
        self.mailbox_port = mailbox_port
        self.internal_domain = internal_domain
        self.myhostname = myhostname
        # Not pytest's tmp_path: that lives under a 0700 directory the postfix
        # user cannot traverse.
        self.base = Path(tempfile.mkdtemp(prefix="mailguard-postfix-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "spool"
        self.data_dir = self.base / "lib"
        self.maillog = self.base / "maillog"
        self.deploy = read_deploy_lines(mailguard_port)
        self.started = False

    # -- configuration

    def main_cf(self) -> list[tuple[str, str]]:
        own = [
            ("compatibility_level", "3.6"),
            ("queue_directory", str(self.queue_dir)),
            ("data_directory", str(self.data_dir)),
            ("mail_owner", "postfix"),
            ("setgid_group", "postdrop"),
            ("inet_interfaces", "loopback-only"),
            ("inet_protocols", "ipv4"),
            ("myhostname", self.myhostname),
            ("mydomain", self.internal_domain),
            ("myorigin", "$mydomain"),
            ("mydestination", ""),
            ("mynetworks", "127.0.0.0/8"),
            ("smtpd_relay_restrictions", "permit_mynetworks, reject"),
            ("alias_maps", ""),
            ("alias_database", ""),
            ("local_recipient_maps", ""),
            ("biff", "no"),
            ("readme_directory", "no"),
            ("html_directory", "no"),
            ("smtputf8_enable", "yes"),
            ("maillog_file", str(self.maillog)),
            ("maillog_file_prefixes", str(self.base)),
            # The org's own mailboxes (where bounces to staff land) are another
            # server; here a second sink. Outgoing mail takes the relayhost.
            ("transport_maps",
             f"inline:{{ {self.internal_domain}=smtp:[127.0.0.1]:{self.mailbox_port} }}"),
            ("relayhost", f"[127.0.0.1]:{self.mailguard_port}"),
        ]
        own += list(FAST_QUEUE.items())
        merged: dict[str, str] = {}
        for k, v in own + self.deploy.main:
            merged[k] = v
        # Test-harness guarantees that deploy lines must not override.
        for k in ("queue_directory", "data_directory", "inet_interfaces", "inet_protocols",
                  "maillog_file", "maillog_file_prefixes", *FAST_QUEUE):
            merged[k] = dict(own)[k]
        # If the deploy lines route through a transport, keep our bounce route too.
        return list(merged.items())

    def master_cf(self) -> str:
        text = _MASTER_BASE.format(smtpd_addr=f"127.0.0.1:{self.smtpd_port}")
        for entry in self.deploy.master:
            name = entry.split()[0]
            if re.fullmatch(r"[\w.:\[\]-]*:\d+", name) and "inet" in entry.split()[1:2]:
                continue  # never let a fragment add a network listener to the test instance
            text += entry + "\n"
        return text

    def build(self) -> None:
        os.chmod(self.base, 0o755)
        for d in (self.config_dir, self.queue_dir):
            d.mkdir(mode=0o755)
            os.chmod(d, 0o755)  # mkdir's mode is narrowed by the umask; postfix must enter
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in self.main_cf()), encoding="utf-8")
        (self.config_dir / "master.cf").write_text(self.master_cf(), encoding="utf-8")
        self._assert_loopback_only()

    def _assert_loopback_only(self) -> None:
        main = self.postconf("inet_interfaces", "config_directory", "queue_directory")
        if main["inet_interfaces"] != "loopback-only":
            raise AssertionError("refusing to start a test Postfix that listens beyond loopback")
        if Path(main["queue_directory"]).resolve() != self.queue_dir.resolve():
            raise AssertionError("test Postfix would use a queue that is not its own")
        for line in (self.config_dir / "master.cf").read_text().splitlines():
            parts = line.split()
            if len(parts) > 1 and parts[1] == "inet" and not parts[0].startswith("127.0.0.1:"):
                raise AssertionError(f"master.cf listener not on loopback: {line}")

    def postconf(self, *names: str) -> dict[str, str]:
        out = self._run(["postconf", "-c", str(self.config_dir), "-h", *names]).stdout
        return dict(zip(names, out.splitlines()))

    def postconf_x(self, name: str) -> str:
        """A parameter with $variables expanded."""
        return self._run(["postconf", "-c", str(self.config_dir), "-xh", name]).stdout.strip()

    # -- running

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        # Postfix creates its queue directories under the caller's umask; a test
        # process with umask 077 would leave them unreadable to the postfix user.
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check, env=env,
                              preexec_fn=lambda: os.umask(0o022))

    def start(self) -> None:
        r = self._run([POSTFIX, "-c", str(self.config_dir), "start"], check=False)
        if r.returncode != 0:
            raise PostfixUnavailable(
                f"postfix -c {self.config_dir} start failed ({r.returncode}): "
                f"{(r.stderr or r.stdout).strip()[-800:]}\n{self.log_tail()}")
        self.started = True
        try:
            wait_for(lambda: port_open(self.smtpd_port), 20, "the test Postfix's smtpd",
                     on_timeout=self.log_tail)
        except AssertionError as exc:
            self.stop()
            raise PostfixUnavailable(str(exc)) from None

    def stop(self) -> None:
        if self.started:
            self._run([POSTFIX, "-c", str(self.config_dir), "stop"], check=False)
            pid_file = self.queue_dir / "pid" / "master.pid"
            wait_for(lambda: not pid_file.exists() or not _pid_alive(pid_file), 20,
                     "the test Postfix to stop")
            self.started = False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- observing

    def log(self) -> str:
        try:
            return self.maillog.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "--- test Postfix maillog (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def queue_ids(self, *queues: str) -> list[str]:
        queues = queues or ("incoming", "active", "deferred", "hold", "maildrop")
        ids = []
        for q in queues:
            d = self.queue_dir / q
            if d.is_dir():
                ids += [p.name for p in d.rglob("*") if p.is_file()]
        return ids

    def submit(self, msg: bytes, mail_from: str, rcpt_tos: list[str]) -> str:
        """Hand a message to the instance's smtpd as a staff MUA would; returns
        Postfix's queue id from the 250 reply."""
        with smtplib.SMTP("127.0.0.1", self.smtpd_port, timeout=30) as c:
            c.ehlo("mua.city.example.lg.jp")
            c.mail(mail_from)
            for r in rcpt_tos:
                code, resp = c.rcpt(r)
                assert code == 250, (r, code, resp)
            code, resp = c.data(msg)
            assert code == 250, (code, resp)
        m = re.search(rb"queued as ([0-9A-Za-z]+)", resp)
        return m.group(1).decode() if m else ""

    def wait_status(self, queue_id: str, status: str, timeout: float = 30.0) -> str:
        """Wait for a 'status=...' log line of this queue id; returns the line."""
        pat = re.compile(rf"{re.escape(queue_id)}: .*status={status}\b.*")

        def found() -> str:
            m = pat.search(self.log())
            return m.group(0) if m else ""
        return wait_for(found, timeout, f"{queue_id} status={status}", on_timeout=self.log_tail)


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return True
    except (ValueError, OSError, IndexError):
        return False


# ------------------------------------------------------- mailguard under test


class MailguardProcess:
    """`python -m mailguard -c CONFIG serve` as a subprocess, plus its CLI."""

    def __init__(self, workdir: Path, upstream_port: int, *, port: int | None = None,
                 internal_domains: tuple[str, ...] = ("city.example.lg.jp",),
                 metrics_port: int | None = None, extra: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.upstream_port = upstream_port
        self.metrics_port = metrics_port
        self.config = workdir / "mailguard.toml"
        self.stderr_path = workdir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        domains = ", ".join(f'"{d}"' for d in internal_domains)
        metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
        self.config.write_text(
            "[server]\n"
            f'listen = "127.0.0.1:{self.port}"\n'
            'allowed_clients = ["127.0.0.1/32"]\n'
            'hostname = "mailguard.city.example.lg.jp"\n'
            "[upstream]\n"
            f'url = "smtp://127.0.0.1:{upstream_port}"\n'
            "timeout = 10\n"
            "[organisation]\n"
            f"internal_domains = [{domains}]\n"
            "[store]\n"
            f'path = "{workdir / "store"}"\n'
            "[policy]\n"
            f'dir = "{REPO / "policies"}"\n'
            + metrics + extra,
            encoding="utf-8")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("SUDO_USER", "")
        env["MAILGUARD_ALLOW_ROOT"] = "1"  # the harness runs as root; serve refuses root otherwise
        env["USER"] = env.get("USER") or "tester"
        return env

    def start(self, timeout: float = 30.0) -> None:
        import sys

        log = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailguard", "-c", str(self.config), "serve"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir, env=self.env())
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise MailguardDidNotStart(self.log_tail())
            return port_open(self.port)
        wait_for(up, timeout, "mailguard serve to listen", on_timeout=self.log_tail)

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "--- mailguard serve stderr (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        import sys

        return subprocess.run([sys.executable, "-m", "mailguard", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir, env=self.env())


class MailguardDidNotStart(Exception):
    pass
