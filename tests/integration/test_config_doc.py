"""docs/config.md lists every config key with its type, default and an example,
and nothing that config.py does not have (issue 13.11)."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

from mailguard.config import Config, load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
ROW = re.compile(r"^\| `(\w+)\.(\w+)` \| ([a-z ]+) \| `([^`]*)` \| `([^`]*)` \|")
TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", tuple[str, ...]: "list of strings",
         dict[str, tuple[str, ...]]: "table of lists", dict: "table of lists"}


def _code_keys() -> dict[str, tuple[str, object]]:
    out = {}
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        cls = sections[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out[f"{section.name}.{f.name}"] = (TYPES[hints[f.name]], default)
    return out


def _doc_rows() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            rows[f"{m[1]}.{m[2]}"] = (m[3].strip(), m[4], m[5])
    return rows


def _toml(value: str) -> object:
    v = tomllib.loads(f"v = {value}")["v"]
    if isinstance(v, dict):
        return {k: tuple(x) for k, x in v.items()}
    return tuple(v) if isinstance(v, list) else v


def test_every_key_documented_and_no_stale_key() -> None:
    code, doc = _code_keys(), _doc_rows()
    assert sorted(set(code) - set(doc)) == [], "keys missing from docs/config.md"
    assert sorted(set(doc) - set(code)) == [], "docs/config.md lists keys config.py does not have"


def test_types_defaults_and_examples_match_the_code(tmp_path: Path) -> None:
    code, doc = _code_keys(), _doc_rows()
    for key, (typ, default, example) in doc.items():
        want_type, want_default = code[key]
        assert typ == want_type, f"{key}: documented as {typ}, is {want_type}"
        assert _toml(default) == want_default, f"{key}: documented default {default}, is {want_default!r}"
        value = _toml(example)
        assert TYPES.get(tuple[str, ...] if isinstance(value, tuple) else type(value)) == want_type \
            or (want_type == "number" and isinstance(value, int)), f"{key}: example {example} is not a {want_type}"


def test_the_documented_examples_load_together(tmp_path: Path) -> None:
    # Every example value in one config: load_config accepts it (files it names aside).
    skip = {"upstream.auth_file", "upstream.ca_file", "store.group"}  # need real files / a real group
    tables: dict[str, list[str]] = {}
    for key, (_, _, example) in _doc_rows().items():
        if key in skip:
            continue
        section, name = key.split(".")
        if key == "policy.dir":
            example = f'"{Path(__file__).resolve().parents[2] / "policies"}"'
        if key == "store.path":
            example = f'"{tmp_path / "store"}"'
        tables.setdefault(section, []).append(f"{name} = {example}")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in tables.items())
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(text, encoding="utf-8")
    config = load_config(cfg)
    assert config.organisation.list_addresses and config.organisation.timezone == "Asia/Tokyo"
