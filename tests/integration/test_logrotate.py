"""deploy/logrotate/mailguard, run by the real logrotate, does not break the audit
chain: `mailguard audit verify` follows it across the rotated files, and still
catches an edit, a missing middle file, or records out of order."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailguard.audit import AuditLog

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "logrotate" / "mailguard"
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"

pytestmark = pytest.mark.skipif(not Path(LOGROTATE).exists(),
                                reason="logrotate is not installed (Debian: apt-get install logrotate)")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    return d


def rotate(store: Path, tmp_path: Path) -> None:
    """Run logrotate with the shipped file, pointed at this store and this user."""
    user = pwd.getpwuid(os.getuid()).pw_name
    text = SHIPPED.read_text()
    assert "/var/lib/mailguard/audit.jsonl {" in text and "su mailguard mailguard" in text
    text = (text.replace("/var/lib/mailguard/audit.jsonl", str(store / "audit.jsonl"))
                .replace("su mailguard mailguard", f"su {user} {user}"))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(text)
    r = subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def verify(store: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(f'[store]\npath = "{store}"\n[policy]\ndir = "{REPO / "policies"}"\n')
    return subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "audit", "verify"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def append(store: Path, n: int, start: int) -> None:
    log = AuditLog(store)
    for i in range(start, start + n):
        log.append("pass", id=f"msg{chr(97 + i)}", rule="default", persons=0)


def test_the_chain_continues_across_rotated_files(store: Path, tmp_path: Path) -> None:
    append(store, 3, 0)
    rotate(store, tmp_path)
    assert not (store / "audit.jsonl").exists()  # nocreate: mailguard makes the next one
    append(store, 2, 3)
    rotate(store, tmp_path)
    append(store, 1, 5)
    assert sorted(p.name for p in store.iterdir() if p.name.startswith("audit")) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2.gz"]
    assert oct((store / "audit.jsonl").stat().st_mode & 0o777) == "0o600"

    r = verify(store, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 records in 3 files, chain intact" in r.stdout
    recs = list(AuditLog(store).records())
    assert [x["seq"] for x in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[3]["prev"] == recs[2]["hash"]  # the new file chains from the rotated one


def test_verify_still_catches_tampering_after_rotation(store: Path, tmp_path: Path) -> None:
    append(store, 3, 0)
    rotate(store, tmp_path)
    append(store, 3, 3)
    rotate(store, tmp_path)
    append(store, 2, 6)

    # An edited record in a rotated file is named with its file and line.
    one = store / "audit.jsonl.1"
    original = one.read_bytes()
    lines = original.splitlines(keepends=True)
    rec = json.loads(lines[1])
    rec["rule"] = "edited"
    lines[1] = (json.dumps(rec, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode()
    one.write_bytes(b"".join(lines))
    r = verify(store, tmp_path)
    assert r.returncode == 1 and "audit.jsonl.1:2:" in r.stderr and "edited" in r.stderr
    one.write_bytes(original)

    # Rotated files out of order (renamed) break the chain.
    two = store / "audit.jsonl.2.gz"
    old = gzip.decompress(two.read_bytes())
    two.unlink()
    (store / "audit.jsonl.2").write_bytes(original)
    (store / "audit.jsonl.1").write_bytes(old)
    assert verify(store, tmp_path).returncode == 1
    (store / "audit.jsonl.2").unlink()
    (store / "audit.jsonl.1").write_bytes(original)
    two.write_bytes(gzip.compress(old))
    assert verify(store, tmp_path).returncode == 0

    # A missing middle file is detected...
    one.rename(store / "aside")
    r = verify(store, tmp_path)
    assert r.returncode == 1 and "deleted or reordered" in r.stderr
    (store / "aside").rename(one)

    # ...while the oldest file expiring (logrotate's rotate count) is reported,
    # and the rest of the chain is still checked.
    two.unlink()
    r = verify(store, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "checked from record 4" in r.stdout
