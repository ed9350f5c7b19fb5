"""The one atomic writer: whole new content or the old one, never half, and nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import admc.core.atomic as atomic
from admc.core.atomic import staged_directory, staged_file, write_file_atomically


def test_a_file_is_written_whole_and_replaces_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.bin"
    write_file_atomically(target, b"first")
    write_file_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["out.bin"]


def test_a_failed_file_write_leaves_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), staged_file(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_directory_replaces_the_old_one_in_one_rename(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with staged_directory(target) as staging:
        (staging / "a").write_text("1")
    with staged_directory(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".bundle.")
        (staging / "b").write_text("2")
    assert sorted(os.listdir(target)) == ["b"]
    assert os.listdir(tmp_path) == ["bundle"]


def test_a_failed_directory_write_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "a").write_text("new")
        raise RuntimeError("build failed")
    assert (target / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["bundle"]


def test_a_failed_swap_puts_the_old_directory_back(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "a").write_text("old")
    real_replace = os.replace

    def refuse_the_new_one(source, destination):
        if Path(source).name.startswith(".bundle.") and Path(destination) == target:
            raise OSError("disk full")
        return real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", refuse_the_new_one)
    with pytest.raises(OSError, match="disk full"), staged_directory(target) as staging:
        (staging / "a").write_text("new")
    assert (target / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["bundle"]


def test_keep_existing_lets_the_first_writer_win(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    with staged_directory(target, keep_existing=True) as staging:
        (staging / "x").write_text("first")
        with staged_directory(target, keep_existing=True) as other:  # another writer finishes first
            (other / "x").write_text("other")
    assert (target / "x").read_text() == "other"
    assert os.listdir(tmp_path) == ["entry"]
