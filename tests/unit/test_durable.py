"""The durable write: O_EXCL temp, 0600, complete content, no leftovers on failure."""

from __future__ import annotations

import fcntl
import os
import stat

import pytest

from mailguard.durable import write_file, write_locked


def test_file_is_private_and_complete(tmp_path):
    (tmp_path / "tmp").mkdir()
    final = tmp_path / "out.msg"
    parts = (b"head\n", b"x" * 1_000_000, b"tail\n")
    write_file(final, parts, tmp=tmp_path / "tmp" / "out.tmp")
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert final.read_bytes() == b"".join(parts)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_bytes_are_taken_as_one_chunk(tmp_path):
    final = tmp_path / "out"
    write_file(final, b"exact bytes\r\n", tmp=tmp_path / "out.tmp")
    assert final.read_bytes() == b"exact bytes\r\n"


def test_o_excl_refuses_an_existing_temporary_file_and_leaves_it(tmp_path):
    tmp = tmp_path / "busy.tmp"
    tmp.write_bytes(b"another writer's")
    with pytest.raises(FileExistsError):
        write_file(tmp_path / "out", b"mine", tmp=tmp)
    assert tmp.read_bytes() == b"another writer's"  # not ours to remove
    assert not (tmp_path / "out").exists()


def test_no_temporary_file_is_left_on_failure(tmp_path):
    def chunks():
        yield b"half of it"
        raise RuntimeError("the producer died")

    tmp = tmp_path / "out.tmp"
    with pytest.raises(RuntimeError):
        write_file(tmp_path / "out", chunks(), tmp=tmp)
    assert list(tmp_path.iterdir()) == []


def test_failed_move_leaves_no_temporary_file(tmp_path):
    # The final directory does not exist: rename fails after the write.
    tmp = tmp_path / "out.tmp"
    with pytest.raises(FileNotFoundError):
        write_file(tmp_path / "missing" / "out", b"data", tmp=tmp)
    assert list(tmp_path.iterdir()) == []


def test_replace_true_replaces_and_false_refuses(tmp_path):
    final = tmp_path / "out"
    final.write_bytes(b"old")
    write_file(final, b"new", tmp=tmp_path / "a.tmp")
    assert final.read_bytes() == b"new"
    with pytest.raises(FileExistsError):
        write_file(final, b"newer", tmp=tmp_path / "b.tmp", replace=False)
    assert final.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_locked_keeps_the_lock_under_the_final_name(tmp_path):
    final = tmp_path / "out"
    fd = write_locked(final, b"data", tmp=tmp_path / "out.tmp")
    try:
        other = os.open(final, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)
    other = os.open(final, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once closed
    finally:
        os.close(other)
