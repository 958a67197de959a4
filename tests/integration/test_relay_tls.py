"""Upstream TLS (smtps://, smtp+starttls://) with verification on, and AUTH from a file.

Every test runs on asyncio's loop and on uvloop (serve's default, server.event_loop):
STARTTLS upgrades a live transport, which each loop implements on its own."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, AuthResult

trustme = pytest.importorskip("trustme")

MSG = b"Subject: tls\r\n\r\nover tls\r\n"


class Capture:
    def __init__(self):
        self.messages, self.logins = [], []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content,
                              server.transport.get_extra_info("ssl_object") is not None))
        return "250 2.0.0 Ok"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (b"relay", b"s3cret:with:colons")
        return AuthResult(success=ok)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def server_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


async def start_tls_sink(mode: str, ctx: ssl.SSLContext, auth: bool = False):
    cap = Capture()
    loop = asyncio.get_running_loop()
    kw = dict(hostname="tls-sink.test", loop=loop)
    if mode == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)
    if auth:
        kw.update(authenticator=cap.authenticate, auth_required=True)

    def factory():
        return SMTP(cap, **kw)
    srv = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx if mode == "smtps" else None)
    return cap, srv, srv.sockets[0].getsockname()[1]


async def send(port: int) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as c:
        await c.sendmail("s@x.test", ["a@example.com"], MSG)


pytestmark = pytest.mark.uvloop_too


@pytest.mark.parametrize("scheme,mode", [("smtps", "smtps"), ("smtp+starttls", "starttls")])
async def test_tls_upstream_verified_with_ca_file(start_relay, tmp_path, ca, server_ctx, scheme, mode):
    cap, srv, port = await start_tls_sink(mode, server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        h = await start_relay(upstream_url=f"{scheme}://127.0.0.1:{port}", upstream_cfg={"ca_file": str(ca_file)})
        await send(h.port)
        assert [(m[0], m[1], m[2], m[3]) for m in cap.messages] == [("s@x.test", ["a@example.com"], MSG, True)]
    finally:
        srv.close()


@pytest.mark.parametrize("scheme,mode", [("smtps", "smtps"), ("smtp+starttls", "starttls")])
async def test_untrusted_certificate_is_refused_by_default(start_relay, server_ctx, scheme, mode):
    cap, srv, port = await start_tls_sink(mode, server_ctx)
    try:
        h = await start_relay(upstream_url=f"{scheme}://127.0.0.1:{port}")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
            await send(h.port)
        assert e.value.code == 451 and e.value.message.startswith("4.4.1")
        assert not cap.messages
    finally:
        srv.close()


async def test_verify_tls_false_accepts_untrusted(start_relay, server_ctx):
    cap, srv, port = await start_tls_sink("smtps", server_ctx)
    try:
        h = await start_relay(upstream_url=f"smtps://127.0.0.1:{port}", upstream_cfg={"verify_tls": False})
        await send(h.port)
        assert len(cap.messages) == 1
    finally:
        srv.close()


async def test_starttls_required_never_silently_plain(start_relay, upstream):
    # The plain sink does not offer STARTTLS: smtp+starttls must not fall back to plain.
    h = await start_relay(upstream_url=f"smtp+starttls://127.0.0.1:{upstream.port}")
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
        await send(h.port)
    assert e.value.code == 451 and not upstream.messages


@pytest.mark.parametrize("password,delivered", [("s3cret:with:colons", True), ("wrong", False)])
async def test_auth_credentials_from_auth_file(start_relay, tmp_path, ca, server_ctx, password, delivered):
    cap, srv, port = await start_tls_sink("starttls", server_ctx, auth=True)
    ca_file, creds = tmp_path / "ca.pem", tmp_path / "creds"
    ca.cert_pem.write_to_path(str(ca_file))
    creds.write_text(f"relay:{password}\n")
    creds.chmod(0o600)
    try:
        h = await start_relay(upstream_url=f"smtp+starttls://127.0.0.1:{port}",
                              upstream_cfg={"ca_file": str(ca_file), "auth_file": str(creds), "timeout": 1})
        if delivered:
            await send(h.port)
            assert len(cap.messages) == 1
        else:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
                await send(h.port)
            assert e.value.code == 451 and not cap.messages
        assert cap.logins[0] == (b"relay", password.encode())
    finally:
        srv.close()
