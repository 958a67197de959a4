"""Connection limits over real sockets (issue 14, item 4).

server.max_connections: the next client gets 421 4.7.0 and is closed.
upstream.max_connections: at most that many links to the smarthost; a transaction
that cannot get one within upstream.connection_wait gets 451 4.4.5.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import RawClient

from mailguard import metrics

# serve runs on uvloop by default (server.event_loop): the relay's SMTP handling is
# tested on it as well as on asyncio's loop.
pytestmark = pytest.mark.uvloop_too

MESSAGE = b"From: a@city.example.lg.jp\r\nTo: b@example.com\r\nSubject: limits\r\n\r\nhello\r\n.\r\n"


def _sample(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name)


async def _open(port: int) -> tuple[RawClient, int]:
    c = await RawClient.connect(port)
    code, _ = await c.reply()
    return c, code


async def test_over_server_max_connections_is_421_and_closed(start_relay):
    h = await start_relay(server={"max_connections": 2})
    refused_before = _sample("mailguard_connections_refused_total") or 0
    (a, ca), (b, cb) = await _open(h.port), await _open(h.port)
    assert ca == cb == 220
    assert _sample("mailguard_client_connections") == 2
    assert _sample("mailguard_client_connections_limit") == 2
    c = await RawClient.connect(h.port)
    code, lines = await c.reply()
    assert code == 421 and lines[0].startswith("421 4.7.0") and await c.closed()
    assert _sample("mailguard_connections_refused_total") == refused_before + 1
    # A slot that frees is usable again.
    assert (await a.cmd("QUIT"))[0] == 221
    assert await a.closed()
    for _ in range(50):
        if _sample("mailguard_client_connections") == 1:
            break
        await asyncio.sleep(0.05)
    d, cd = await _open(h.port)
    assert cd == 220
    for x in (b, d):
        await x.cmd("QUIT")


async def _mail(c: RawClient, n: int) -> int:
    await c.cmd("EHLO client.test")
    code, _ = await c.cmd(f"MAIL FROM:<s{n}@city.example.lg.jp>", timeout=20)
    return code


async def test_upstream_links_are_capped_and_a_wait_past_the_bound_is_451(start_relay, upstream):
    h = await start_relay(upstream_cfg={"max_connections": 2, "connection_wait": 0.5})
    clients = [(await _open(h.port))[0] for _ in range(3)]
    assert await _mail(clients[0], 0) == 250
    assert await _mail(clients[1], 1) == 250
    # Both links are leased (open transactions): the third waits, then 451 4.4.5.
    code, lines = await clients[2].cmd("EHLO client.test")
    code, lines = await clients[2].cmd("MAIL FROM:<s2@city.example.lg.jp>", timeout=20)
    assert code == 451 and lines[0].startswith("451 4.4.5"), lines
    assert upstream.connections <= 2
    assert _sample("mailguard_upstream_connections_limit") == 2
    assert _sample("mailguard_upstream_connections") == 2
    assert metrics.REGISTRY.get_sample_value("mailguard_upstream_errors_total", {"kind": "busy"}) >= 1

    # The first client finishes: its link goes back to the pool and the third gets it.
    c0 = clients[0]
    assert (await c0.cmd("RCPT TO:<b@example.com>"))[0] == 250
    assert (await c0.cmd("DATA"))[0] == 354
    await c0.send(MESSAGE)
    assert (await c0.reply())[0] == 250
    assert (await clients[2].cmd("MAIL FROM:<s2@city.example.lg.jp>", timeout=20))[0] == 250
    assert upstream.connections <= 2


async def test_a_waiting_transaction_gets_the_link_that_comes_back(start_relay, upstream):
    h = await start_relay(upstream_cfg={"max_connections": 1, "connection_wait": 10})
    a, _ = await _open(h.port)
    b, _ = await _open(h.port)
    assert await _mail(a, 0) == 250
    await b.cmd("EHLO client.test")
    waiting = asyncio.ensure_future(b.cmd("MAIL FROM:<s1@city.example.lg.jp>", timeout=20))
    for _ in range(50):
        if _sample("mailguard_upstream_waiting") == 1:
            break
        await asyncio.sleep(0.05)
    assert _sample("mailguard_upstream_waiting") == 1 and not waiting.done()
    assert (await a.cmd("RSET"))[0] == 250  # a's link goes back to the pool
    assert (await waiting)[0] == 250
    assert upstream.connections == 1
