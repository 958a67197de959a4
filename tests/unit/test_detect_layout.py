"""Numbers as a person reads them (issue 11, the text half): format characters,
the separators people type, quoted and folded lines, box forms, kanji numerals,
negative labels, and masking of every spelling the detector accepts. Each
positive has a negative beside it. Numbers come from tests/mynumbers.py and are
never printed (assertions compare masks or booleans)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mynumbers import mask, my_numbers  # noqa: E402

from mailguard.detect import Span, detect  # noqa: E402

N1, N2, N3 = my_numbers(3, seed=1101)


def g(n: str, sep: str = " ") -> str:
    return n[:4] + sep + n[4:8] + sep + n[8:]


def found(text: str, **kw) -> list[tuple[str, str]]:
    """(masked, confidence) of each finding; never the number."""
    return [(f.masked, f.confidence) for f in detect([Span(text, "body")], **kw).findings]


def invalid(n: str) -> str:
    return n[:11] + str((int(n[11]) + 1) % 10)


# ------------------------------------------------------------ negative labels


@pytest.mark.parametrize("label", ["送り状番号：", "伝票番号 ", "請求書番号: ", "注文番号 ", "追跡番号：",
                                   "受付番号 ", "管理番号：", "お問い合わせ番号 ", "問合せ番号：", "予約番号 ",
                                   "会員番号 ", "顧客番号 ", "口座番号 ", "証券番号 ", "整理番号："])
@pytest.mark.parametrize("sep", ["-", " ", ""])
def test_negative_label_before_a_number_makes_it_low(label, sep):
    assert found(f"{label}{g(N1, sep)} をご確認ください") == [(mask(N1), "low")]


def test_without_label_grouped_stays_medium_and_keyword_nearer_wins():
    assert found(f"お知らせ {g(N1, '-')} をご確認ください") == [(mask(N1), "medium")]
    # the keyword is nearer than the label: it names the number
    assert found(f"送り状番号 ABC-1 / 個人番号 {g(N1, '-')}") == [(mask(N1), "high")]


def test_policy_negative_words_reach_the_rule(tmp_path):
    from mailguard.policy import load_policy

    (tmp_path / "10.toml").write_text(
        '[default]\naction = "pass"\n[detector]\nnegative = ["配達票番号"]\n', encoding="utf-8")
    policy = load_policy(tmp_path)
    text = f"配達票番号 {g(N1, '-')}"
    assert found(text) == [(mask(N1), "medium")]
    assert found(text, extra_negative=policy.negative) == [(mask(N1), "low")]
