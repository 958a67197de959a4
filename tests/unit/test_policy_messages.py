"""The DESIGN §6 table over real messages, through the real Pipeline and `mailguard check`.

Every message is built here with the stdlib email package (CSV, xlsx via openpyxl,
an encrypted zip written by hand); the real scanner and detector find the numbers
and the shipped policy decides. Numbers are generated with valid check digits and
never appear in ids or assertion text.
"""

from __future__ import annotations

import pytest

from policy_cases import CASES, ME, OTHER_CITIES, THREE, config, pipeline  # noqa: F401 (fixtures)

from mailguard.pipeline import Pipeline


@pytest.mark.parametrize("rcpts, data, action, rule", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_policy_over_real_messages(pipeline: Pipeline, rcpts, data, action, rule) -> None:
    d = pipeline.inspect_sync(ME, list(rcpts), data)
    assert (d.action, d.rule) == (action, rule), d.reasons
    joined = " ".join(d.reasons) + d.notice
    assert not any(n in joined for n in THREE)


async def test_async_path_decides_the_same(pipeline: Pipeline) -> None:
    for _id, rcpts, data, action, rule in CASES[:3] + CASES[10:11]:
        d = await pipeline.inspect(ME, list(rcpts), data)
        assert (d.action, d.rule) == (action, rule), _id


def test_motivating_case_reasons_are_masked(pipeline: Pipeline) -> None:
    d = pipeline.inspect_sync(ME, OTHER_CITIES, CASES[0][2])
    assert d.persons == 3
    text = "\n".join(d.reasons)
    for n in THREE:
        assert n not in text
        assert "********" + n[-4:] in text
    assert "3 external recipient(s) in 3 organisation(s)" in text
    assert [f.masked for f in d.findings]  # the hold store gets the findings


