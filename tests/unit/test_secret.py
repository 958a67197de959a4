"""The fingerprint key: created once, 0600, race-safe, never replaced silently."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from mailguard.errors import StoreError
from mailguard.secret import KEY_BYTES, KEY_FILE, load_or_create_key


def test_first_use_creates_a_0600_key_and_later_calls_return_it(tmp_path):
    store = tmp_path / "store"
    key = load_or_create_key(store)
    assert len(key) == KEY_BYTES
    st = os.stat(store / KEY_FILE)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    assert load_or_create_key(store) == key
    assert load_or_create_key(str(store)) == key
    # No temporary files left behind.
    assert sorted(p.name for p in store.iterdir()) == [KEY_FILE]


def test_two_stores_get_different_random_keys(tmp_path):
    assert load_or_create_key(tmp_path / "a") != load_or_create_key(tmp_path / "b")


def test_key_is_created_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600


def _worker(store: str, start, out) -> None:
    start.wait()
    out.put(load_or_create_key(store).hex())


def test_processes_starting_at_once_all_get_the_same_key(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        store = str(tmp_path / f"s{round_}")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(store, start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        start.set()
        keys = {out.get(timeout=30) for _ in procs}
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert len(keys) == 1
        assert bytes.fromhex(keys.pop()) == (tmp_path / f"s{round_}" / KEY_FILE).read_bytes()


@pytest.mark.parametrize("size", [0, 16, 31, 33, 4096], ids=lambda n: f"{n}bytes")
def test_a_damaged_key_is_refused_not_replaced(tmp_path, size):
    path = tmp_path / KEY_FILE
    path.write_bytes(b"\x01" * size)
    path.chmod(0o600)
    with pytest.raises(StoreError, match="damaged"):
        load_or_create_key(tmp_path)
    assert path.read_bytes() == b"\x01" * size


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_key_others_can_read_is_refused(tmp_path, mode):
    path = tmp_path / KEY_FILE
    path.write_bytes(os.urandom(KEY_BYTES))
    path.chmod(mode)
    with pytest.raises(StoreError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_a_symlinked_key_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(os.urandom(KEY_BYTES))
    target.chmod(0o600)
    store = tmp_path / "store"
    store.mkdir()
    (store / KEY_FILE).symlink_to(target)
    with pytest.raises(StoreError, match="symlink"):
        load_or_create_key(store)


def test_a_dangling_symlink_is_not_followed_to_create_a_file(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / KEY_FILE).symlink_to(tmp_path / "planted")
    with pytest.raises(StoreError):
        load_or_create_key(store)
    assert not (tmp_path / "planted").exists()


def test_a_directory_in_place_of_the_key_is_refused(tmp_path):
    (tmp_path / KEY_FILE).mkdir(mode=0o700)
    with pytest.raises(StoreError):
        load_or_create_key(tmp_path)


def test_an_unusable_store_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        load_or_create_key(blocker / "store")
