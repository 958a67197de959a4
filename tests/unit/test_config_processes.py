"""server.processes (issue 15): a count, or "auto" for one per core; anything else named.
server.event_loop: "auto", "uvloop" or "asyncio"."""

from __future__ import annotations

import os

import pytest

from mailguard.config import MAX_PROCESSES, load_config
from mailguard.errors import ConfigError


def _load(tmp_path, value: str, key: str = "processes"):
    (tmp_path / "policies").mkdir(exist_ok=True)
    p = tmp_path / "m.toml"
    p.write_text(f'[server]\n{key} = {value}\n[organisation]\ninternal_domains = ["a.example.jp"]\n'
                 f'[policy]\ndir = "{tmp_path / "policies"}"\n', encoding="utf-8")
    return load_config(p)


def test_default_is_one_process(tmp_path) -> None:
    assert _load(tmp_path, "1").server.processes == 1
    from mailguard.config import ServerConfig
    assert ServerConfig().processes == 1


@pytest.mark.parametrize("value, want", [("2", 2), ('"auto"', max(1, min(MAX_PROCESSES, os.cpu_count() or 1))),
                                         (str(MAX_PROCESSES), MAX_PROCESSES)])
def test_valid_counts(tmp_path, value: str, want: int) -> None:
    assert _load(tmp_path, value).server.processes == want


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_PROCESSES + 1), '"many"', "true", "1.5"])
def test_invalid_counts_name_the_key(tmp_path, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, value)
    assert "server.processes" in str(e.value) and "auto" in str(e.value)


@pytest.mark.parametrize("value", ["auto", "uvloop", "asyncio"])
def test_event_loop_choices(tmp_path, value: str) -> None:
    assert _load(tmp_path, f'"{value}"', "event_loop").server.event_loop == value


@pytest.mark.parametrize("value", ['"tokio"', '""', "1", "true"])
def test_event_loop_invalid_names_the_key_and_choices(tmp_path, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, value, "event_loop")
    assert "server.event_loop" in str(e.value) and "'asyncio'" in str(e.value)


def test_loop_factory_follows_the_choice() -> None:
    import asyncio

    import uvloop

    from mailguard.server import loop_factory
    assert loop_factory("asyncio") is None
    for choice in ("auto", "uvloop"):
        factory = loop_factory(choice)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
        finally:
            loop.close()
