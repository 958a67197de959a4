"""`policy check` warns about a rule an earlier rule shadows (issue 13.2), and every
policy example in docs/policy.md passes `policy check --strict` beside the shipped policy."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mailguard.cli import EXIT_OK, EXIT_USAGE, main
from mailguard.policy import load_policy
from mailguard.policy_lint import shadowed_rules

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = ("city.example.lg.jp",)
DOC_EXAMPLE = re.compile(r"```toml\n# (?:policies/)?(\d\d-[\w-]+\.toml)[^\n]*\n(.*?)```", re.S)


def doc_examples() -> list[tuple[str, str]]:
    return DOC_EXAMPLE.findall((ROOT / "docs" / "policy.md").read_text(encoding="utf-8"))


def site(tmp_path: Path, files: dict[str, str], shipped: bool = True) -> Path:
    pol = tmp_path / "policies"
    pol.mkdir()
    if shipped:
        shutil.copy(ROOT / "policies" / "10-default.toml", pol / "10-default.toml")
    for name, text in files.items():
        (pol / name).write_text(text, encoding="utf-8")
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(f'[organisation]\ninternal_domains = ["{INTERNAL[0]}"]\n[policy]\ndir = "{pol}"\n',
                   encoding="utf-8")
    return cfg


def test_docs_have_policy_examples() -> None:
    assert len(doc_examples()) >= 3


@pytest.mark.parametrize("name,text", doc_examples(), ids=[n for n, _ in doc_examples()])
def test_every_docs_policy_example_passes_strict_check(tmp_path: Path, capsys, name: str, text: str) -> None:
    cfg = site(tmp_path, {name: text})
    assert main(["-c", str(cfg), "policy", "check", "--strict"]) == EXIT_OK, capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err


def test_the_docs_hr_rule_as_50_local_is_shadowed_by_external_hold(tmp_path: Path, capsys) -> None:
    (text,) = [t for n, t in doc_examples() if n == "05-hr.toml"]
    cfg = site(tmp_path, {"50-local.toml": text})
    assert main(["-c", str(cfg), "policy", "check"]) == EXIT_OK  # a warning keeps the exit code
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "warning" in ln]
    assert "'hr-to-pension-office'" in line and "50-local.toml:" in line
    assert "'external-hold'" in line and "10-default.toml:" in line
    assert main(["-c", str(cfg), "policy", "check", "--strict"]) == EXIT_USAGE


RULE = '[[rule]]\nname = "{name}"\naction = "hold"\n{conds}\n'


@pytest.mark.parametrize("earlier,later,shadowed", [
    ("persons_min = 1\nany_external = true", "persons_min = 5\nexternal_domains_min = 2", True),
    ("persons_min = 1\nany_external = true", 'persons_min = 1\nrecipient_domain = ["nenkin.example.go.jp"]', True),
    ("persons_min = 1\nany_external = true", 'persons_min = 1\nrecipient_domain = ["ka.city.example.lg.jp"]', False),
    ("persons_min = 1\nany_external = true", "persons_min = 1\nall_internal = true", False),
    ("persons_min = 1\nis_reply = true", "persons_min = 2\nis_reply_all = true", True),
    ('persons_min = 1\nconfidence = "high"', "persons_min = 1", False),
    ("persons_min = 1", 'persons_min = 1\nconfidence = "high"', True),
    ("recipients_max = 3", "recipients_max = 2\npersons_min = 1", True),
    ("recipients_max = 3", "persons_min = 1", False),
    ('sender_domain = ["city.example.lg.jp"]', 'sender_domain = ["jinji.city.example.lg.jp"]', True),
    ('sender_domain = ["jinji.city.example.lg.jp"]', 'sender_domain = ["city.example.lg.jp"]', False),
    ('attachment_name = ["*.xlsx"]', 'attachment_name = ["meibo*.xlsx"]', True),
    ('unscannable_except = ["image*"]', 'unscannable_except = ["image*", "encrypted*"]', True),
    ('unscannable_except = ["image*", "encrypted*"]', 'unscannable_except = ["image*"]', False),
], ids=range(14))
def test_shadowing_is_claimed_only_when_proven(tmp_path: Path, earlier: str, later: str, shadowed: bool) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "10.toml").write_text(RULE.format(name="first", conds=earlier) + RULE.format(name="second", conds=later)
                                 + '[default]\naction = "pass"\n', encoding="utf-8")
    found = shadowed_rules(load_policy(pol), INTERNAL)
    assert [(s.rule.name, s.by.name) for s in found] == ([("second", "first")] if shadowed else [])


def test_shipped_policy_has_no_shadowed_rule() -> None:
    assert shadowed_rules(load_policy(ROOT / "policies"), INTERNAL) == []
