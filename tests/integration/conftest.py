"""Integration fixtures: a real upstream sink, a real relay, real SMTP clients.

    upstream          Sink: capturing aiosmtpd server on 127.0.0.1:<random>; set
                      .refuse[rcpt] = "550 ...", .mail_reply / .data_reply, .delay
                      (seconds before answering .delay_at), .drop_at ("MAIL", "RCPT",
                      "DATA"), .smtputf8; read .messages (Captured) and .connections
    start_relay       async factory -> RelayHandle(app, port, config, config_path):
                      start_relay(pipeline=..., holder=..., recorder=..., upstream_url=...,
                      policy_dir=..., store_path=..., server={...}, upstream_cfg={...},
                      organisation={...}, services=None). Writes a real mailguard.toml,
                      loads it with load_config (so it is validated), starts mailguard's
                      App on this test's loop on a random port. Stopped at teardown.
                      pipeline=None uses the real Pipeline (policy_dir's policy).
    relay             start_relay() with a pass-everything pipeline, upstream = the sink
    client            an aiosmtplib.SMTP connected to ``relay`` (EHLO done)
    raw               async factory: RawClient(port) for byte-exact hostile input
    write_config      write a mailguard.toml from dicts, return its path

Other suites (policy, hold store) reuse these: e.g.
``h = await start_relay(policy_dir=REPO / "policies", services_hook=...)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP

from mailguard.config import Config, load_config
from mailguard.policy import PASS, Decision
from mailguard.server import App, build_services

REPO = Path(__file__).resolve().parents[2]

# The suite runs as root (so does CI) and `mailguard serve` refuses root unless
# told otherwise; every serve these tests start inherits this. The refusal itself
# is tested with the variable removed (test_serve_user.py).
os.environ.setdefault("MAILGUARD_ALLOW_ROOT", "1")


# ---------------------------------------------------------------- upstream sink


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]


@dataclass
class Sink:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Captured] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # rcpt -> reply line(s)
    mail_reply: str | None = None  # e.g. "451 4.3.0 try later"
    data_reply: str | None = None
    delay: float = 0.0
    delay_at: str = "DATA"
    drop_at: str | None = None
    smtputf8: bool = True
    connections: int = 0
    protocols: list[Any] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # "MAIL", "RCPT", "DATA", "RSET"
    server: Any = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


class _SinkHandler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def _step(self, server: SMTP, stage: str) -> bool:
        s = self.sink
        s.commands.append(stage)
        if s.delay and s.delay_at == stage:
            await asyncio.sleep(s.delay)
        if s.drop_at == stage:
            server.transport.abort()
            return True
        return False

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if await self._step(server, "MAIL"):
            return "421 4.4.2 dropped"
        if self.sink.mail_reply:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if await self._step(server, "RCPT"):
            return "421 4.4.2 dropped"
        if address in self.sink.refuse:
            return self.sink.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server, session, envelope):
        self.sink.commands.append("RSET")
        return "250 2.0.0 OK"

    async def handle_DATA(self, server, session, envelope):
        if await self._step(server, "DATA"):
            return "421 4.4.2 dropped"
        if self.sink.data_reply:
            return self.sink.data_reply
        self.sink.messages.append(
            Captured(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                     list(envelope.mail_options))
        )
        return "250 2.0.0 Ok: queued"


class _SinkSMTP(SMTP):
    def __init__(self, sink: Sink) -> None:
        self.line_length_limit = 10**7  # the sink must not be the one refusing long lines
        super().__init__(_SinkHandler(sink), hostname="sink.test", enable_SMTPUTF8=sink.smtputf8,
                         loop=asyncio.get_running_loop(), data_size_limit=None)
        self._sink = sink

    def connection_made(self, transport):
        if self.transport is None:
            self._sink.connections += 1
            self._sink.protocols.append(self)
        super().connection_made(transport)


async def start_sink(**kw: Any) -> Sink:
    sink = Sink(**kw)
    loop = asyncio.get_running_loop()
    sink.server = await loop.create_server(lambda: _SinkSMTP(sink), "127.0.0.1", 0)
    sink.port = sink.server.sockets[0].getsockname()[1]
    return sink


@pytest.fixture
async def upstream():
    sink = await start_sink()
    yield sink
    sink.server.close()


# ---------------------------------------------------------------- config + relay


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config_file(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    # serve, check and policy check refuse a config without internal domains.
    sections = {"organisation": {"internal_domains": ["city.example.lg.jp"]}, **sections}
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def write_config(tmp_path):
    def write(sections: dict[str, dict[str, Any]], name: str = "mailguard.toml") -> Path:
        return write_config_file(tmp_path / name, sections)
    return write


class PassAll:
    """A pipeline that passes everything (the relay tests are not about policy)."""

    def __init__(self, config: Any = None) -> None:
        self.calls = 0

    async def inspect(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> Decision:
        self.calls += 1
        return Decision(PASS, "test-pass")


@dataclass
class RelayHandle:
    app: App
    port: int
    config: Config
    config_path: Path

    @property
    def relay(self):
        return self.app.relay


@pytest.fixture
async def start_relay(tmp_path, upstream):
    apps: list[App] = []

    async def start(
        *,
        pipeline: Any = "pass",
        holder: Any = None,
        recorder: Any = None,
        upstream_url: str | None = None,
        policy_dir: str | Path | None = None,
        store_path: str | Path | None = None,
        server: dict[str, Any] | None = None,
        upstream_cfg: dict[str, Any] | None = None,
        organisation: dict[str, Any] | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        services_hook: Any = None,
    ) -> RelayHandle:
        if policy_dir is None:
            policy_dir = tmp_path / "policies"
            policy_dir.mkdir(exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "server": {"listen": "127.0.0.1:10025", "hostname": "mailguard.test", **(server or {})},
            "upstream": {"url": upstream_url or upstream.url, "timeout": 5, **(upstream_cfg or {})},
            "store": {"path": str(store_path or tmp_path / "store")},
            "policy": {"dir": str(policy_dir)},
        }
        if organisation:
            sections["organisation"] = organisation
        for k, v in (extra or {}).items():
            sections.setdefault(k, {}).update(v)
        path = write_config_file(tmp_path / f"mailguard-{len(apps)}.toml", sections)
        config = load_config(path)
        if pipeline == "pass":
            services = build_services_with(config, PassAll(config))
        elif pipeline is None:
            services = build_services(config)
        else:
            services = build_services_with(config, pipeline)
        services.holder = holder if holder is not None else services.holder
        services.recorder = recorder if recorder is not None else services.recorder
        if services_hook is not None:
            services = services_hook(config, services) or services
        app = App(config, str(path), services=services)
        port = await app.start(port=0)
        apps.append(app)
        return RelayHandle(app, port, config, path)

    yield start
    for app in apps:
        await app.stop(grace=2)


def build_services_with(config: Config, pipeline: Any):
    from mailguard.server import Services, local_hostname
    from mailguard.upstream import UpstreamPool

    return Services(pipeline=pipeline, pool=UpstreamPool(config.upstream, local_hostname=local_hostname(config)))


@pytest.fixture
async def relay(start_relay) -> RelayHandle:
    return await start_relay()


@pytest.fixture
async def client(relay):
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10, start_tls=False,
                           local_hostname="client.test")
    await smtp.connect()
    await smtp.ehlo()
    yield smtp
    smtp.close()


# ---------------------------------------------------------------- raw client


class RawClient:
    """Byte-exact SMTP client for hostile input: send() what you like, read replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "RawClient":
        reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        return cls(reader, writer)

    async def reply(self, timeout: float = 10) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: (code, [raw line, ...])."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("closed by relay")
            assert line.endswith(b"\r\n"), line
            text = line[:-2].decode("ascii")
            lines.append(text)
            if text[3:4] != "-":
                return int(text[:3]), lines

    async def cmd(self, line: str | bytes, timeout: float = 10) -> tuple[int, list[str]]:
        await self.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return await self.reply(timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed(self, timeout: float = 5) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except (ConnectionError, asyncio.TimeoutError):
            return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw():
    clients: list[RawClient] = []

    async def connect(port: int, host: str = "127.0.0.1") -> RawClient:
        c = await RawClient.connect(port, host)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


def replace_server(config: Config, **kw: Any) -> Config:
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **kw))


def pytest_asyncio_loop_factories(config, item):
    """asyncio's own loop for every async test here; a test marked ``uvloop_too``
    runs on uvloop as well (serve's default, server.event_loop = "auto"), where it
    covers what each loop implements on its own (STARTTLS on a live transport)."""
    factories = {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("uvloop_too") is not None:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories
