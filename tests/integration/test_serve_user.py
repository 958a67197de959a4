"""Running as root leaves nothing behind for the admins to trip over (issue 13.7):
`serve` refuses root unless MAILGUARD_ALLOW_ROOT=1, `store.group` makes the store
group-accessible, and a permission error names the file and the fix.

Real subprocesses; the unprivileged runs use setpriv(1) to drop to nobody, so
these tests need root (the suite and CI run as root) and skip otherwise.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hold_support import NUMBERS, ROOT, Serve, Sink, message_with_numbers, send, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to test root and another user")
GROUP = "users"  # a group every Debian system has
NOBODY = 65534


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAILGUARD_ALLOW_ROOT", "MAILGUARD_CONFIG")}
    env.update(MAILGUARD_OPERATOR="alice", **extra)
    return env


def _as_nobody(cfg: Path, *args: str, groups: str = "") -> subprocess.CompletedProcess[str]:
    drop = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY)]
    drop += ["--groups", groups] if groups else ["--clear-groups"]
    return subprocess.run([*drop, sys.executable, "-m", "mailguard", "-c", str(cfg), *args],
                          cwd="/", env=_env(HOME="/"), capture_output=True, text=True, timeout=60)


@functools.lru_cache(maxsize=1)
def _nobody_cannot_run_mailguard() -> str:
    """Why `nobody` cannot run this checkout's mailguard, or "" if it can: a checkout
    cloned under a 0700 directory (mktemp -d) is out of its reach, and then these
    tests would fail on the file system, not on mailguard."""
    r = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                        sys.executable, "-c", "import mailguard"], cwd="/", env=_env(HOME="/"),
                       capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else f"user nobody cannot run this checkout's Python ({r.stderr.strip()[:120]})"


@pytest.fixture
def site():
    if _nobody_cannot_run_mailguard():
        pytest.skip(_nobody_cannot_run_mailguard())
    # Under /tmp with 0755 so that nobody can reach the config (pytest's tmp is 0700).
    d = Path(tempfile.mkdtemp(prefix="mailguard-user-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_serve_refuses_root_and_names_the_fix(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1)
    r = subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "serve"], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "refusing to run as root" in r.stderr
    assert "mailguard user" in r.stderr and "deploy/systemd" in r.stderr and "MAILGUARD_ALLOW_ROOT=1" in r.stderr
    assert not (tmp_path / "store").exists()  # nothing root-owned was created


def test_a_permission_error_names_the_file_and_the_fix(site: Path) -> None:
    cfg = write_config(site, 1)
    r = subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "held", "list"], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # the store now exists, owned by root, 0700
    r = _as_nobody(cfg, "held", "list")
    assert r.returncode == 1, r.stderr
    assert str(site / "store") in r.stderr and "Permission denied" in r.stderr
    assert "sudo -u mailguard" in r.stderr and "store.group" in r.stderr
    assert "Traceback" not in r.stderr


def test_store_group_lets_admins_in_the_group_read_the_store(site: Path) -> None:
    sink = Sink().start()
    cfg = write_config(site, sink.port)
    cfg.write_text(cfg.read_text().replace("[store]\n", f'[store]\ngroup = "{GROUP}"\n', 1))
    srv = Serve(cfg, site / "serve.log").start()
    try:
        code, text = send(srv.port, ["someone@example.com"], message_with_numbers(NUMBERS[:1]))
        assert code == 250
        hold_id = text.split("held for review as ")[1][:16]
    finally:
        srv.stop()
        sink.stop()
    import grp

    gid = grp.getgrnam(GROUP).gr_gid
    store = site / "store"
    for path in (store, store / "messages"):
        st = path.stat()
        assert st.st_gid == gid and stat.S_IMODE(st.st_mode) == 0o2770, (path, oct(st.st_mode))
    files = [p for p in store.rglob("*") if p.is_file() and p.name != "fingerprint.key"]
    assert files
    for path in files:
        st = path.stat()
        assert st.st_gid == gid and stat.S_IMODE(st.st_mode) & 0o060 == 0o060, (path.name, oct(st.st_mode))
        assert stat.S_IMODE(st.st_mode) & 0o007 == 0, path.name  # never the world
    r = _as_nobody(cfg, "held", "show", hold_id, groups=str(gid))
    assert r.returncode == 0, r.stderr
    assert hold_id in r.stdout
    # Without the group, the same user is refused with the fix named.
    r = _as_nobody(cfg, "held", "list")
    assert r.returncode == 1 and "store.group" in r.stderr


def test_an_unknown_store_group_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1)
    cfg.write_text(cfg.read_text().replace("[store]\n", '[store]\ngroup = "no-such-group-x"\n', 1))
    r = subprocess.run([sys.executable, "-m", "mailguard", "-c", str(cfg), "held", "list"], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "store.group" in r.stderr and "no-such-group-x" in r.stderr
