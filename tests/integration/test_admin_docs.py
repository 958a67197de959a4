"""The admin docs (install, postfix, troubleshooting, inspection) do not drift from
the code and the deploy files: every `mailguard ...` command in them parses with
the real CLI parser, every deploy/postfix line is in docs/postfix.md, every reply
in replies.py is explained, every metric is listed, every deploy file exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mailguard import metrics, replies
from mailguard.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "docs" / n for n in ("install.md", "postfix.md", "troubleshooting.md", "inspection.md")]


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
    (after `sudo -u mailguard`, before a pipe, a redirection or a comment)."""
    found = []
    for doc in DOCS:
        for block in code_blocks(doc):
            for line in block.splitlines():
                if "mailguard" not in line or line.lstrip().startswith("#"):
                    continue
                line = line.split(" #", 1)[0].split(" | ", 1)[0].split(" > ", 1)[0].strip()
                words = shlex.split(line)
                if words[:3] == ["sudo", "-u", "mailguard"]:
                    words = words[3:]
                if len(words) > 1 and re.fullmatch(r"(\S*/)?mailguard", words[0]):
                    found.append((doc.name, shlex.join(words[1:])))
    return found


COMMANDS = mailguard_commands()


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
