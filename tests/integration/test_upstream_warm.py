"""Warm upstream links (issue 15): a burst gets spare links dialled ahead of it,
a lone sender never opens one, max_connections still bounds them, a burst's links
are reused rather than closed and dialled again, the surplus beyond pool_size is
closed after IDLE_TRIM and the rest once unused for IDLE_MAX_AGE."""

from __future__ import annotations

import asyncio

from mailguard import upstream as up
from mailguard.config import load_config
from mailguard.upstream import WARM_SPARES, UpstreamPool


def _pool(write_config, tmp_path, sink, **cfg) -> UpstreamPool:
    config = load_config(write_config({
        "upstream": {"url": sink.url, "timeout": 5, **cfg},
        "store": {"path": str(tmp_path / "store")},
        "policy": {"dir": str(tmp_path)},
    }))
    return UpstreamPool(config.upstream, local_hostname="mailguard.test")


async def _settle(cond, timeout: float = 3.0) -> bool:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_lone_sender_opens_no_spare(write_config, tmp_path, upstream):
    pool = _pool(write_config, tmp_path, upstream)
    try:
        for _ in range(5):
            await pool.release(await pool.acquire())
        await asyncio.sleep(0.1)
        assert upstream.connections == 1 and pool.open == 1
    finally:
        await pool.close()


async def test_a_burst_gets_spares_ready_and_uses_them(write_config, tmp_path, upstream):
    pool = _pool(write_config, tmp_path, upstream, pool_size=4)
    try:
        a = await pool.acquire()
        b = await pool.acquire()  # a is in use: demand grows, spares are dialled
        assert await _settle(lambda: len(pool._idle) == WARM_SPARES)
        assert upstream.connections == 2 + WARM_SPARES
        c = await pool.acquire()  # a spare, ready: nothing dialled now
        assert c.reused and upstream.connections == 2 + WARM_SPARES
        for link in (a, b, c):
            await pool.release(link)
    finally:
        await pool.close()
    assert pool.open == 0


async def test_spares_stay_within_max_connections(write_config, tmp_path, upstream):
    pool = _pool(write_config, tmp_path, upstream, max_connections=2)
    try:
        a = await pool.acquire()
        b = await pool.acquire()
        await asyncio.sleep(0.2)
        assert upstream.connections == 2 and pool.open == 2
        await pool.release(a)
        await pool.release(b)
    finally:
        await pool.close()


async def test_idle_links_are_closed_after_the_idle_timeout(write_config, tmp_path, upstream, monkeypatch):
    monkeypatch.setattr(up, "IDLE_MAX_AGE", 0.2)
    pool = _pool(write_config, tmp_path, upstream)
    try:
        link = await pool.acquire()
        await pool.release(link)
        assert pool.open == 1
        assert await _settle(lambda: pool.open == 0 and not link.alive)
    finally:
        await pool.close()


async def _burst(pool: UpstreamPool, n: int) -> None:
    links = await asyncio.gather(*(pool.acquire() for _ in range(n)))
    await asyncio.gather(*(pool.release(link) for link in links))


async def test_a_burst_reuses_its_links_then_trims_to_pool_size(write_config, tmp_path, upstream, monkeypatch):
    monkeypatch.setattr(up, "IDLE_TRIM", 0.3)
    pool = _pool(write_config, tmp_path, upstream, pool_size=2, max_connections=20)
    try:
        await _burst(pool, 8)
        assert await _settle(lambda: not pool._spares)
        dialled = upstream.connections
        assert dialled >= 8 and pool.open == dialled  # every link came back idle, none closed
        await _burst(pool, 8)  # the next burst finds them: nothing dialled
        assert upstream.connections == dialled
        assert await _settle(lambda: pool.open == 2 and len(pool._idle) == 2)  # trimmed, not emptied
        await asyncio.sleep(0.5)
        assert pool.open == 2  # the pool_size kept for IDLE_MAX_AGE
        link = await pool.acquire()
        assert link.reused and upstream.connections == dialled
        await pool.release(link)
    finally:
        await pool.close()
    assert pool.open == 0


async def test_pool_size_zero_reuses_nothing(write_config, tmp_path, upstream):
    pool = _pool(write_config, tmp_path, upstream, pool_size=0)
    try:
        for _ in range(3):
            link = await pool.acquire()
            await pool.release(link)
            assert not link.alive and pool.open == 0
        assert upstream.connections == 3
    finally:
        await pool.close()
