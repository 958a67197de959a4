"""The README and the admin docs do not drift from the code and the deploy files:
every `mailguard ...` command in them parses with the real CLI parser (synopsis
lines included, with their placeholders filled in), every inline `mailguard ...`
names a real command and real options, every config key they name exists, the
example config loads, every deploy/postfix line is in docs/postfix.md, every
reply in replies.py is explained, every metric is listed, every deploy file exists."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from mailguard import metrics, replies
from mailguard.cli import build_parser
from mailguard.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md"] + [
    REPO / "docs" / n
    for n in ("install.md", "postfix.md", "troubleshooting.md", "inspection.md", "operations.md", "policy.md",
              "multinode.md")
]

# Synopsis placeholders (`held show ID`, `--since DATE`) and sample values that parse.
PLACEHOLDERS = {"ID": "kqzxmwtrbfjdpsva", "TEXT": "x", "DAYS": "30", "DATE": "2025-04-01",
                "FILE": "mailguard.toml", "ADDR": "a@city.example.lg.jp", "MESSAGE": "m.eml",
                "STATE": "held", "URL": "postgresql://mailguard@db.example:5432/mailguard"}


def expand_synopsis(line: str) -> str:
    """`held show ID [--json | --raw]` -> `held show kqzx... --json`: optional groups
    taken (first alternative), `a|b` choices and `...` repeats reduced to one."""
    prev = None
    while prev != line:
        prev = line
        line = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split(" | ")[0], line)
    line = line.replace("...", "")
    line = re.sub(r"(?<![\w/-])([\w+-]+)(?:\|[\w+-]+)+", r"\1", line)
    return " ".join(PLACEHOLDERS.get(w, w) for w in line.split(" "))


def code_blocks(path: Path) -> list[str]:
    """The shell (```sh) and plain (```) fenced blocks of a Markdown file."""
    blocks, current, lang = [], None, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang in ("sh", ""):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def mailguard_commands() -> list[tuple[str, str]]:
    """(doc, arguments) of every `mailguard ...` line in the docs' shell blocks
    (after a `$ ` prompt and `sudo [-u USER]`, with `\\` continuations joined,
    each side of `&&`, before a pipe, a redirection or a comment)."""
    found = []
    for doc in DOCS:
        for block in code_blocks(doc):
            for line in block.replace("\\\n", " ").splitlines():
                if "mailguard" not in line or line.lstrip().startswith("#"):
                    continue
                line = line.split(" #", 1)[0]
                if "[" in line:
                    line = expand_synopsis(line)
                line = line.split(" | ", 1)[0].split(" > ", 1)[0].strip()
                for part in re.split(r" && | ; ", line):
                    words = shlex.split(part)
                    if words[:1] == ["$"]:
                        words = words[1:]
                    if words[:3] == ["sudo", "-u", "mailguard"]:
                        words = words[3:]
                    elif words[:1] == ["sudo"]:
                        words = words[1:]
                    if len(words) > 1 and re.fullmatch(r"(\S*/)?mailguard", words[0]):
                        found.append((doc.name, shlex.join(words[1:])))
    return found


def inline_commands() -> list[tuple[str, str]]:
    """(doc, arguments) of every inline code span `mailguard SUBCOMMAND ...` in prose."""
    found = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for span in re.findall(r"`((?:[\w./-]*/)?mailguard [^`]+)`", text):
            args = " ".join(span.split()[1:])
            # `mailguard ...` stands for any command; `mailguard status: failed: relay`
            # is the program's own output, not a command line.
            if not args.startswith("...") and not args.split()[0].endswith(":"):
                found.append((doc.name, args))
    return found


COMMANDS = mailguard_commands()
INLINE = inline_commands()


def test_the_docs_show_the_commands_admins_need() -> None:
    used = {c.split()[2] if c.startswith("-c") else c.split()[0] for _, c in COMMANDS}
    assert {"status", "held", "audit", "policy"} <= used, used
    joined = " ".join(c for _, c in COMMANDS)
    for needed in ("held list", "held release", "audit verify", "audit export", "status --json"):
        assert needed in joined, needed


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_every_documented_command_parses(doc: str, command: str) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(command))
    except SystemExit as exc:
        pytest.fail(f"{doc}: `mailguard {command}` does not parse (exit {exc.code})")
    assert callable(args.func)


def test_postfix_doc_carries_every_deploy_line() -> None:
    doc = (REPO / "docs" / "postfix.md").read_text(encoding="utf-8")
    for cf in sorted((REPO / "deploy" / "postfix").glob("*.cf")):
        for line in cf.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                assert line.rstrip() in doc, f"{cf.name}: {line!r} missing from docs/postfix.md"


def test_troubleshooting_explains_every_reply() -> None:
    doc = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    for name, r in replies.REPLIES.items():
        if r.code in (221, 250) and name != "held" and name != "queued":
            continue
        assert f"{r.code} {r.status}" in doc, f"reply {name} ({r.code} {r.status}) not explained"
    assert "550 5.7.1 Message blocked by mailguard policy" in doc
    assert replies.blocked("x", []).startswith("550")


def test_install_lists_every_metric() -> None:
    doc = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    names = {m.name for m in metrics.REGISTRY.collect()}
    names |= {"mailguard_held_messages", "mailguard_held_oldest_age_seconds"}
    for name in names:
        shown = name + "_total" if f"`{name}_total" in doc else name
        assert f"`{shown}" in doc, f"metric {name} not documented in docs/install.md"


def test_documented_deploy_files_exist() -> None:
    for doc in DOCS:
        for rel in re.findall(r"(deploy/[\w./-]+[\w])", doc.read_text(encoding="utf-8")):
            assert (REPO / rel).exists(), f"{doc.name} names {rel}, which does not exist"


def _subparser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """Walk `held release ...` down the parser tree: (deepest parser, the rest)."""
    parser, i = build_parser(), 0
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        while i < len(words) and words[i].startswith("-"):
            i += 2 if words[i] in ("-c", "--config") else 1
        if not subs or i >= len(words):
            return parser, words[i:]
        assert words[i] in subs[0].choices, f"no command {words[i]!r} (have {sorted(subs[0].choices)})"
        parser, i = subs[0].choices[words[i]], i + 1


def test_readme_operations_and_policy_docs_are_covered() -> None:
    docs = {d for d, _ in COMMANDS} | {d for d, _ in INLINE}
    assert {"README.md", "operations.md", "policy.md"} <= docs, docs
    joined = " ".join(c for _, c in COMMANDS)
    for needed in ("held show", "held reject", "held expire", "held purge", "scan", "check", "policy check"):
        assert needed in joined, needed


@pytest.mark.parametrize("doc,span", INLINE, ids=[f"{d}:{c}" for d, c in INLINE])
def test_every_inline_command_names_real_commands_and_options(doc: str, span: str) -> None:
    words = shlex.split(expand_synopsis(span)) if "[" in span else span.split()
    parser, rest = _subparser(words)
    for w in rest:
        if w.startswith("-"):
            opt = w.split("=", 1)[0]
            assert opt in parser._option_string_actions, f"{doc}: `mailguard {span}`: no option {opt}"


CONFIG_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "source"}


def _config_keys() -> dict[str, set[str]]:
    from typing import get_type_hints

    hints = get_type_hints(Config)
    return {name: {f.name for f in dataclasses.fields(hints[name])} for name in CONFIG_SECTIONS}


def test_every_config_key_in_the_docs_exists() -> None:
    keys = _config_keys()
    sections = "|".join(keys)
    named = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        named += [(doc.name, s, k) for s, k in re.findall(rf"`({sections})\.(\w+)`", text)]
        named += [(doc.name, s, k) for s, k in re.findall(rf"`\[({sections})\] (\w+)`", text)]
    assert len(named) > 10, named
    for doc, section, key in named:
        assert key in keys[section], f"{doc}: `{section}.{key}` is not a config key ({sorted(keys[section])})"


def _toml_blocks(path: Path) -> list[str]:
    blocks, current = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            if current is None and line.strip() == "```toml":
                current = []
            elif current is not None:
                blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _load_with_repo_policies(text: str, tmp_path: Path):
    # The example names /etc/mailguard/policies; point it at the shipped ones.
    text = text.replace('"/etc/mailguard/policies"', f'"{REPO / "policies"}"')
    p = tmp_path / "mailguard.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(p)


def test_example_config_loads_and_matches_install_doc(tmp_path: Path) -> None:
    example = (REPO / "deploy" / "mailguard.toml.example").read_text(encoding="utf-8")
    cfg = _load_with_repo_policies(example, tmp_path)
    assert cfg.store.path == "/var/lib/mailguard"
    assert cfg.upstream.scheme == "smtp+starttls" and cfg.organisation.internal_domains
    install = [b for b in _toml_blocks(REPO / "docs" / "install.md") if "[server]" in b]
    assert len(install) == 1
    assert _load_with_repo_policies(install[0], tmp_path) == dataclasses.replace(cfg, source=cfg.source)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "deploy/mailguard.toml.example" in readme


def test_readme_first_two_commands_are_the_makefile_targets() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = code_blocks(REPO / "README.md")[0].splitlines()
    assert [line.split()[:2] for line in first[:2]] == [["make", "run"], ["make", "test"]]
    assert readme.index("make run") < readme.index("## ")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    run = re.search(r"^run:\n((?:\t.*\n)+)", makefile, re.M)
    test = re.search(r"^test:\n((?:\t.*\n)+)", makefile, re.M)
    assert run and "mailguard serve" in run.group(1) and "scripts/setup" in run.group(1)
    assert test and "pytest" in test.group(1) and "scripts/setup test" in test.group(1)
    assert (REPO / "scripts" / "setup").exists()
