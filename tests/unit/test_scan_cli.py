"""`mailguard scan`: JSON lines and table output, exit codes, numbers masked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import docs_fixtures as fx  # noqa: E402

from mailguard.cli import main  # noqa: E402
from mailguard.detect import mask  # noqa: E402

N1, N2 = fx.my_number(31), fx.my_number(32)


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "policies").mkdir()  # the built-in config needs its policy directory
    eml = tmp_path / "mail.eml"
    eml.write_bytes(fx.make_message(subject="名簿送付", body=f"個人番号 {N1}",
                                    attachments=[("a.zip", fx.mark_zip_encrypted(
                                        fx.make_zip({"x.csv": b"1"}), "zipcrypto"))]))
    xlsx = tmp_path / "名簿.xlsx"
    xlsx.write_bytes(fx.make_xlsx([["氏名", "個人番号"], ["山田", int(N2)]]))
    return eml, xlsx, tmp_path / "missing.eml"


def test_json_lines_per_file_and_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eml, xlsx, _ = _files(tmp_path)
    assert main(["scan", str(eml), str(xlsx), "--json"]) == 0
    out = capsys.readouterr().out
    clear = N1 in out or N2 in out
    assert not clear
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["path"] for d in lines] == [str(eml), str(xlsx)]
    assert lines[0]["persons"] == 1
    assert lines[0]["findings"] == [{"masked": mask(N1), "confidence": "high", "location": "body"}]
    assert lines[0]["unscannable"] == [{"location": "attachment:a.zip/x.csv",
                                        "reason": "encrypted zip entry (ZipCrypto)"}]
    assert lines[1]["findings"] == [{"masked": mask(N2), "confidence": "high",
                                     "location": "file:名簿.xlsx/Sheet1!B2"}]


def test_table_output_and_unreadable_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eml, _, missing = _files(tmp_path)
    assert main(["scan", str(eml), str(missing)]) == 1
    captured = capsys.readouterr()
    clear = N1 in captured.out
    assert not clear
    assert f"{eml}: 1 person(s)" in captured.out
    assert mask(N1) in captured.out and "UNSCANNABLE" in captured.out
    assert "missing.eml" in captured.err


def test_capped_findings_say_how_many_they_stand_for(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policies").mkdir()
    (tmp_path / "mailguard.toml").write_text("[limits]\nmax_findings = 3\n", encoding="utf-8")
    monkeypatch.setenv("MAILGUARD_CONFIG", str(tmp_path / "mailguard.toml"))
    nums = [fx.my_number(100 + i) for i in range(8)]
    csv = tmp_path / "list.csv"
    csv.write_text("氏名,個人番号\n" + "".join(f"住民{i},{n}\n" for i, n in enumerate(nums)), encoding="utf-8")
    assert main(["scan", str(csv), "--json"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["persons"] == 8 and line["findings_total"] == 8 and len(line["findings"]) == 3
    assert main(["scan", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "8 person(s), 8 finding(s) (first 3 of 8 shown" in out
    assert not any(n in out for n in nums)
