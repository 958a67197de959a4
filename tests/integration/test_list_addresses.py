"""Internal distribution lists count as many recipients (issue 13.10): numbers sent
to one list address are held by the shipped policy, not passed as a send to one
colleague. Driven through the real `mailguard check`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hold_support import INTERNAL, NUMBERS, cli, message_with_numbers, write_config

LISTS = f'list_addresses = ["all-staff@{INTERNAL}", "ka-*@{INTERNAL}"]'


def _config(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path, 1)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("[organisation]\n", f"[organisation]\n{LISTS}\n", 1), encoding="utf-8")
    return cfg


def _check(cfg: Path, tmp_path: Path, to: str) -> dict:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message_with_numbers(NUMBERS[:2], to=to))
    r = cli(cfg, "check", str(eml), "--from", f"staff@{INTERNAL}", "--to", to, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("to", [f"all-staff@{INTERNAL}", f"ALL-Staff@{INTERNAL}", f"ka-somu@{INTERNAL}"])
def test_numbers_to_an_internal_list_are_held(tmp_path: Path, to: str) -> None:
    out = _check(_config(tmp_path), tmp_path, to)
    assert (out["action"], out["rule"]) == ("hold", "internal-multi-hold"), out
    assert any("distribution list" in r for r in out["reasons"]), out


def test_one_colleague_still_passes_and_lists_need_the_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    out = _check(cfg, tmp_path, f"suzuki@{INTERNAL}")
    assert (out["action"], out["rule"]) == ("pass", "internal-single-pass")
    # Without list_addresses the same list address is one colleague (the old trap).
    plain = write_config(tmp_path / "plain", 1) if (tmp_path / "plain").mkdir() is None else None
    out = _check(plain, tmp_path, f"all-staff@{INTERNAL}")
    assert (out["action"], out["rule"]) == ("pass", "internal-single-pass")


def test_a_bad_list_address_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("[organisation]\n", '[organisation]\nlist_addresses = ["all-staff"]\n', 1),
                   encoding="utf-8")
    r = cli(cfg, "check", str(cfg), "--from", f"staff@{INTERNAL}", "--to", f"a@{INTERNAL}")
    assert r.returncode == 2 and b"organisation.list_addresses" in r.stderr
