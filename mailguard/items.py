"""Personal-data items that travel with My Numbers: the words an incident report
names as "what else was sent" (氏名, 住所, 生年月日, ...).

    ITEMS                       (label, words) pairs, the label as a report names it
    near_words(text) -> [str]   the item words found in ``text``, in ITEMS order
    items_of(words) -> [str]    column headers / words -> the report's item labels

Only words are ever kept: column headers and the item words seen near a finding,
never a cell's value (scan.Findings bounds how many and how long).

SECURITY: reads header texts of untrusted documents; plain substring tests, no
regex over the input. DIAGNOSTICS: none.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

ITEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("氏名", ("氏名", "名前", "フリガナ", "ふりがな", "カナ", "name")),
    ("住所", ("住所", "所在地", "居所", "郵便番号", "address")),
    ("生年月日", ("生年月日", "誕生日", "年齢", "birth")),
    ("性別", ("性別", "gender")),
    ("電話番号", ("電話", "携帯", "tel", "phone")),
    ("メールアドレス", ("メールアドレス", "e-mail", "email")),
    ("口座情報", ("口座", "銀行", "支店", "account")),
    ("所得・税額", ("所得", "税額", "収入", "給与", "源泉", "income", "tax")),
    ("社会保障（年金・保険）", ("年金", "保険", "被保険者", "介護", "insurance", "pension")),
    ("世帯・続柄", ("世帯", "続柄", "扶養", "配偶者")),
)

# Window (characters either side) in which an item word counts as "near" a finding.
NEAR = 300


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def near_words(text: str) -> list[str]:
    """Item words found in ``text`` (already cut to a window)."""
    t = _norm(text)
    return [w for _label, words in ITEMS for w in words if w in t]


def items_of(words: Iterable[str]) -> list[str]:
    """The report's item labels for column headers or words, in ITEMS order."""
    texts = [_norm(w) for w in words]
    return [label for label, ws in ITEMS if any(w in t for t in texts for w in ws)]
