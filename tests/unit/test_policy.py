"""Facts + Policy -> Decision, pure: the shipped table row by row, and every condition.

Facts are built directly here (no scanner); tests/unit/test_policy_messages.py runs
the same table over real messages through the real Pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from mailguard.facts import Facts
from mailguard.policy import BLOCK, HOLD, PASS, decide, load_policy
from mailguard.scan import Attachment, Unscannable

SHIPPED = load_policy(Path(__file__).resolve().parents[2] / "policies")
ME = "tanaka@city.example.lg.jp"
COLLEAGUE = "kacho@city.example.lg.jp"


@dataclass(frozen=True)
class _F:
    masked: str
    confidence: str
    fingerprint: str
    location: str = "attachment:名簿.csv"


def found(n: int, confidence: str = "high") -> dict:
    findings = tuple(_F(f"********{i:04d}", confidence, f"fp{i}") for i in range(n))
    persons = n if confidence in ("medium", "high") else 0
    return {
        "findings": findings,
        "persons_by_confidence": {
            "low": n, "medium": persons, "high": n if confidence == "high" else 0,
        },
    }


def ext(n: int, org: str = "example2") -> tuple[str, ...]:
    return tuple(f"user{i}@city.{org}.lg.jp" for i in range(n))


def make(rcpts=(COLLEAGUE,), visible=None, persons=0, confidence="high", internal=("city.example.lg.jp",),
         **kw) -> Facts:
    rcpts = tuple(rcpts)
    visible = tuple(rcpts if visible is None else visible)
    is_int = lambda a: a.endswith("@" + internal[0]) or a.endswith("." + internal[0])  # noqa: E731
    external = tuple(a for a in rcpts if not is_int(a))
    domains = tuple(sorted({a.split("@")[1] for a in external}))
    return Facts(
        sender=ME, sender_domain="city.example.lg.jp", recipients=rcpts,
        external_recipients=external, external_domains=domains,
        external_orgs=tuple(sorted({".".join(d.split(".")[-3:]) for d in domains})),
        recipient_domains=tuple(sorted({a.split("@")[1] for a in rcpts})),
        visible=visible, visible_external=tuple(a for a in visible if not is_int(a)),
        **found(persons, confidence), **kw,
    )


ENCRYPTED = (Unscannable("attachment:名簿.zip", "encrypted zip"),)

# (case id, facts, action, rule) - one or more cases per row of DESIGN §6
TABLE = [
    ("reply-all to other cities", make(ext(3), persons=3, is_reply=True, is_reply_all=True),
     BLOCK, "reply-all-external"),
    ("reply-all, one external among internals",
     make((COLLEAGUE, "asker@city.example2.lg.jp"), persons=1, is_reply=True, is_reply_all=True),
     BLOCK, "reply-all-external"),
    ("101 persons to external", make(ext(1), persons=101), BLOCK, "serious-external"),
    ("100 persons to external is not serious", make(ext(1), persons=100), HOLD, "external-hold"),
    ("one external recipient", make(ext(1), persons=1), HOLD, "external-hold"),
    ("plain reply to the external asker", make(ext(1), persons=1, is_reply=True), HOLD, "external-hold"),
    ("bcc-only external", make((COLLEAGUE, "x@other.example"), visible=(COLLEAGUE,), persons=2),
     HOLD, "external-hold"),
    ("internal multi", make((COLLEAGUE, "bucho@city.example.lg.jp"), persons=1), HOLD, "internal-multi-hold"),
    ("internal subdomain multi", make((COLLEAGUE, "a@kyoiku.city.example.lg.jp"), persons=150),
     HOLD, "internal-multi-hold"),
    ("one internal recipient", make((COLLEAGUE,), persons=5), PASS, "internal-single-pass"),
    ("internal reply-all is not blocked",
     make((COLLEAGUE, "bucho@city.example.lg.jp"), persons=1, is_reply=True, is_reply_all=True),
     HOLD, "internal-multi-hold"),
    ("unscannable to external", make(ext(1), unscannable=ENCRYPTED), HOLD, "unscannable-external-hold"),
    ("unscannable to internal", make((COLLEAGUE,), unscannable=ENCRYPTED), PASS, "default"),
    ("30 visible external", make(ext(30)), HOLD, "many-visible-external-hold"),
    ("10 visible external", make(ext(10)), HOLD, "many-visible-external-hold"),
    ("9 visible external", make(ext(9)), PASS, "default"),
    ("30 external as bcc", make(ext(30), visible=(ME,)), PASS, "default"),
    ("clean mail outside", make(ext(2)), PASS, "default"),
    ("low confidence only to external", make(ext(1), persons=3, confidence="low"), PASS, "default"),
    ("medium confidence to external", make(ext(1), persons=1, confidence="medium"), HOLD, "external-hold"),
]


@pytest.mark.parametrize("facts, action, rule", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_shipped_policy_table(facts: Facts, action: str, rule: str) -> None:
    d = decide(facts, SHIPPED)
    assert (d.action, d.rule) == (action, rule)
    assert d.persons == facts.persons


def test_reasons_and_notice_carry_masked_numbers_only() -> None:
    f = make(ext(3), persons=7, is_reply=True, is_reply_all=True)
    d = decide(f, SHIPPED)
    text = " ".join(d.reasons) + d.notice
    assert "7 My Number(s)" in text
    assert "********0000" in text and "(+2)" in text  # at most five listed
    assert "reply-all" in text and "3 external recipient(s)" in text
    assert not re.search(r"\d{5,}", text.replace("********", ""))
    assert d.notice.startswith("個人番号") and "\n\nYour message" in d.notice


def test_reason_scrubs_a_number_hidden_in_an_attachment_name() -> None:
    name = "attachment:" + "1234" * 3 + ".zip"  # a file named after a number
    f = make(ext(1), unscannable=(Unscannable(name, "encrypted zip"),))
    d = decide(f, SHIPPED)
    assert "1234" * 3 not in " ".join(d.reasons)
    assert "********1234.zip" in " ".join(d.reasons)


def _policy(tmp_path: Path, rule: str, default: str = "pass"):
    (tmp_path / "10.toml").write_text(
        f'[[rule]]\nname = "r"\naction = "block"\n{rule}\n[default]\naction = "{default}"\n',
        encoding="utf-8",
    )
    return load_policy(tmp_path)


ATT = (Attachment("名簿.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                  "attachment:名簿.xlsx", 2000),)

# (condition lines, facts that match, facts that do not)
CONDITION_CASES = {
    "persons_min": ("persons_min = 2", make(persons=2), make(persons=1)),
    "persons_max": ("persons_max = 1", make(persons=1), make(persons=2)),
    "confidence high": ('persons_min = 1\nconfidence = "high"', make(persons=1), make(persons=1, confidence="medium")),
    "confidence low": ('persons_min = 1\nconfidence = "low"', make(persons=1, confidence="low"), make()),
    "unscannable": ("unscannable = true", make(unscannable=ENCRYPTED), make()),
    "unscannable false": ("unscannable = false", make(), make(unscannable=ENCRYPTED)),
    "recipients_min": ("recipients_min = 3", make(ext(3)), make(ext(2))),
    "recipients_max": ("recipients_max = 2", make(ext(2)), make(ext(3))),
    "any_external": ("any_external = true", make(ext(1)), make()),
    "any_external false": ("any_external = false", make(), make(ext(1))),
    "all_internal": ("all_internal = true", make(), make((COLLEAGUE, *ext(1)))),
    "external_recipients_min": ("external_recipients_min = 2", make((COLLEAGUE, *ext(2))), make((COLLEAGUE, *ext(1)))),
    "external_domains_min": ("external_domains_min = 2", make(ext(1) + ext(1, "example3")), make(ext(5))),
    "external_orgs_min": ("external_orgs_min = 2", make(ext(1) + ext(1, "example3")),
                          make(("a@city.example2.lg.jp", "b@kyoiku.example2.lg.jp"))),
    "external_orgs_max": ("external_orgs_max = 1", make(ext(3)), make(ext(1) + ext(1, "example3"))),
    "visible_min": ("visible_min = 2", make((COLLEAGUE, ME)), make((COLLEAGUE,))),
    "visible_external_min": ("visible_external_min = 2", make(ext(2)), make(ext(2), visible=(ME,))),
    "visible_external_max": ("visible_external_max = 0", make(ext(2), visible=(ME,)), make(ext(2))),
    "is_reply": ("is_reply = true", make(is_reply=True), make()),
    "is_reply_all": ("is_reply_all = true", make(is_reply=True, is_reply_all=True), make(is_reply=True)),
    "sender": ('sender = ["Tanaka@City.Example.LG.JP"]', make(), replace(make(), sender="sato@city.example.lg.jp")),
    "sender_domain": ('sender_domain = ["example.lg.jp"]', make(),
                      replace(make(), sender_domain="example.jp")),
    "recipient_domain": ('recipient_domain = ["example2.lg.jp"]', make(ext(1)), make(ext(1, "example3"))),
    "attachments_min": ("attachments_min = 1", make(attachments=ATT), make()),
    "attachment_type": ('attachment_type = ["application/vnd.openxmlformats-*"]', make(attachments=ATT), make()),
    "attachment_name": ('attachment_name = ["*.XLSX"]', make(attachments=ATT), make()),
}


@pytest.mark.parametrize("case", sorted(CONDITION_CASES))
def test_each_condition_matches_and_does_not(case: str, tmp_path: Path) -> None:
    lines, yes, no = CONDITION_CASES[case]
    policy = _policy(tmp_path, lines)
    assert decide(yes, policy).rule == "r"
    assert decide(no, policy).rule == "default"


def test_first_match_wins_and_default_applies(tmp_path: Path) -> None:
    (tmp_path / "10.toml").write_text(
        '[[rule]]\nname = "a"\npersons_min = 1\naction = "hold"\n'
        '[[rule]]\nname = "b"\npersons_min = 2\naction = "block"\n'
        '[default]\naction = "hold"\nnotice.en = "held by default"\napprovals = 2\n',
        encoding="utf-8",
    )
    policy = load_policy(tmp_path)
    assert decide(make(persons=5), policy).rule == "a"
    d = decide(make(), policy)
    assert (d.action, d.rule, d.notice, d.approvals) == (HOLD, "default", "held by default", 2)


def test_decide_is_pure() -> None:
    f = make(ext(3), persons=3, is_reply=True, is_reply_all=True)
    assert decide(f, SHIPPED) == decide(f, SHIPPED)


def shipped_with_doc_example(tmp_path: Path, title: str):
    """The shipped policy plus the ```toml block of docs/policy.md whose first line is `# TITLE`."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "policy.md").read_text(encoding="utf-8")
    snippet = re.search(rf"```toml\n# {re.escape(title)}\n(.*?)```", doc, re.S).group(1)
    shutil.copy(root / "policies" / "10-default.toml", tmp_path / "10-default.toml")
    (tmp_path / Path(title).name).write_text(snippet, encoding="utf-8")
    return load_policy(tmp_path)


def test_documented_local_override_for_reply_all_with_one_external(tmp_path: Path) -> None:
    """docs/policy.md's 05-local.toml example: Cc'ing one colleague on an answer is held, not blocked."""
    policy = shipped_with_doc_example(tmp_path, "05-local.toml")
    asker_and_boss = make(("asker@city.example2.lg.jp", COLLEAGUE), persons=2, is_reply=True, is_reply_all=True)
    assert decide(asker_and_boss, SHIPPED).rule == "reply-all-external"
    assert decide(asker_and_boss, policy).rule == "reply-all-one-external-hold"
    other_cities = make(ext(2) + ext(1, "example3"), persons=2, is_reply=True, is_reply_all=True)
    assert decide(other_cities, policy).rule == "reply-all-external"  # the motivating case still blocks


def test_documented_image_override_holds_other_unscannable_content(tmp_path: Path) -> None:
    """docs/policy.md's 05-images.toml: images alone to outside pass, an encrypted zip is still held."""
    policy = shipped_with_doc_example(tmp_path, "policies/05-images.toml")
    logo = (Unscannable("attachment:logo.png", "image (image/png); text in images is not read (no OCR)"),)
    assert decide(make(ext(1), unscannable=logo), SHIPPED).action == HOLD  # the shipped default holds images
    assert decide(make(ext(1), unscannable=logo), policy).rule == "external-images-only"
    d = decide(make(ext(1), unscannable=logo + ENCRYPTED), policy)
    assert d.rule == "external-unscannable-not-image" and d.action == HOLD
    assert any("名簿.zip" in r for r in d.reasons) and not any("logo.png" in r for r in d.reasons)
    assert decide(make(ext(10), unscannable=logo), policy).action == HOLD  # 10 visible externals: still held
    assert decide(make(ext(1), persons=1, unscannable=logo), policy).rule == "external-hold"
