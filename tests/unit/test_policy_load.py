"""Policy files -> Policy, and broken policy files -> PolicyError naming file and line.

Each broken case is a directory under tests/data/policies/; the offending line
carries the marker ``<- error`` so the expected line lives beside the mistake.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailguard.errors import PolicyError
from mailguard.policy import BLOCK, HOLD, PASS, load_policy

DATA = Path(__file__).resolve().parents[1] / "data" / "policies"
SHIPPED = Path(__file__).resolve().parents[2] / "policies"

# case directory -> words the reason must contain
BROKEN = {
    "unknown_top_key": "unknown key 'colour'",
    "unknown_table": "unknown table [rules]",
    "unknown_condition": "unknown condition 'persns_min'",
    "unknown_action": "unknown action 'drop'",
    "wrong_type_bool": "any_external must be true or false",
    "wrong_type_int": "persons_min must be a non-negative integer",
    "wrong_type_action": "action must be a string",
    "unreachable_after_catch_all": "'never' is unreachable",
    "unreachable_across_files": "'never' is unreachable",
    "shadowed_same_conditions": "'second' is unreachable",
    "duplicate_name": "already used",
    "double_default": "[default] already given",
    "invalid_toml": "not valid TOML",
    "notice_unknown_language": "unknown key 'fr' in notice",
    "bad_confidence": "confidence must be one of",
    "never_matches": "can never match",
    "missing_action": "has no 'action'",
    "detector_unknown_key": "unknown key 'positive' in [detector]",
    "detector_wrong_type": "negative must be a list",
    "multiline_string_decoy": "any_external must be true or false",
    "rule_not_array": "array of tables",
    "sender_domain_not_list": "sender_domain must be a non-empty list",
    "default_bad_action": "unknown action 'allow'",
    "not_utf8": "not UTF-8",
    "inline_rule_unknown_condition": "unknown condition 'persons_mn'",
}


def _marked(case: Path) -> tuple[Path, int]:
    """The file and 1-based line that carry the '<- error' marker."""
    for f in sorted(case.glob("*.toml")):
        for n, line in enumerate(f.read_bytes().splitlines(), start=1):
            if b"<- error" in line:
                return f, n
    raise AssertionError(f"{case}: no '<- error' marker")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_policy_names_file_and_line(case: str) -> None:
    expected_file, expected_line = _marked(DATA / case)
    with pytest.raises(PolicyError) as info:
        load_policy(DATA / case)
    err = info.value
    assert Path(err.path) == expected_file
    assert err.line == expected_line, str(err)
    assert BROKEN[case] in err.reason
    assert str(err).startswith(f"{expected_file}:{expected_line}: ")


def test_every_broken_case_is_in_the_table() -> None:
    on_disk = {p.name for p in DATA.iterdir() if p.is_dir()} - {"empty_dir", "no_default"}
    assert on_disk == set(BROKEN)


def test_no_default_names_the_directory() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(DATA / "no_default")
    assert info.value.line is None
    assert Path(info.value.path) == DATA / "no_default"
    assert "[default]" in info.value.reason


def test_directory_without_policy_files_is_refused() -> None:
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy(DATA / "empty_dir")


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope")


def test_shipped_default_policy_is_the_design_table() -> None:
    policy = load_policy(SHIPPED)
    table = [(r.name, r.action, r.conditions) for r in policy.rules]
    assert table == [
        ("reply-all-external", BLOCK, {"persons_min": 1, "is_reply_all": True, "any_external": True}),
        ("serious-external", BLOCK, {"persons_min": 101, "any_external": True}),
        ("external-hold", HOLD, {"persons_min": 1, "any_external": True}),
        ("internal-multi-hold", HOLD, {"persons_min": 1, "recipients_min": 2, "all_internal": True}),
        ("internal-single-pass", PASS, {"persons_min": 1, "recipients_max": 1, "all_internal": True}),
        ("unscannable-external-hold", HOLD, {"persons_max": 0, "unscannable": True, "any_external": True}),
        ("many-visible-external-hold", HOLD, {"persons_max": 0, "visible_external_min": 10}),
    ]
    assert policy.default_action == PASS
    # every block/hold tells the sender why, Japanese first, English second
    for rule in policy.rules:
        if rule.action != PASS:
            ja, en = rule.notice.split("\n\n")
            assert any("\u3040" <= c <= "\u30ff" for c in ja) and en.isascii()


def test_files_read_in_name_order_and_detector_lists_merge(tmp_path: Path) -> None:
    (tmp_path / "20-later.toml").write_text(
        '[[rule]]\nname = "later"\npersons_min = 1\naction = "hold"\n'
        '[detector]\nnegative = ["受付番号", "整理番号"]\n',
        encoding="utf-8",
    )
    (tmp_path / "10-first.toml").write_text(
        '[[rule]]\nname = "first"\npersons_min = 5\napprovals = 2\naction = "block"\n'
        'notice = { en = "Not sent." }\n'
        '[default]\naction = "hold"\n[detector]\nkeywords = ["住民票コード"]\nnegative = ["受付番号"]\n',
        encoding="utf-8",
    )
    (tmp_path / "README.txt").write_text("not a policy file", encoding="utf-8")
    policy = load_policy(tmp_path)
    assert [r.name for r in policy.rules] == ["first", "later"]
    assert policy.rules[0].approvals == 2 and policy.rules[0].notice == "Not sent."
    assert policy.default_action == HOLD
    assert policy.keywords == ("住民票コード",)
    assert policy.negative == ("受付番号", "整理番号")
    assert [Path(f).name for f in policy.files] == ["10-first.toml", "20-later.toml"]


def test_error_in_second_file_names_that_file(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "10-default.toml", tmp_path / "10-default.toml")
    (tmp_path / "50-local.toml").write_text(
        '# local additions\n\n[[rule]]\nname = "typo"\nrecipient_domian = ["x.example"]\naction = "hold"\n',
        encoding="utf-8",
    )
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert Path(info.value.path).name == "50-local.toml"
    assert info.value.line == 5


def test_bom_crlf_and_inline_rules_load(tmp_path: Path) -> None:
    (tmp_path / "10.toml").write_bytes(
        b'\xef\xbb\xbfrule = [\r\n  { name = "a", persons_min = 1, action = "hold" },\r\n]\r\n'
        b'[default]\r\naction = "pass"\r\n'
    )
    policy = load_policy(tmp_path)
    assert [(r.name, r.action, r.conditions) for r in policy.rules] == [("a", HOLD, {"persons_min": 1})]
