"""The one atomic-write helper used by the store (manifest, images, snapshots)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from editscope.store import atomic
from editscope.store.atomic import write_atomically


def test_writes_text_and_bytes_and_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomically(target, "héllo\n")
    assert target.read_text() == "héllo\n"
    write_atomically(target, b"\x00\x01bytes")
    assert target.read_bytes() == b"\x00\x01bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "file"
    target.write_text("old")

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_atomically(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_data_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1]
    )
    write_atomically(tmp_path / "file", b"x")
    assert calls == ["fsync", "replace"]


def test_the_store_modules_share_the_helper() -> None:
    from editscope.store import export, images, snapshots

    assert export.write_atomically is write_atomically
    assert images.write_atomically is write_atomically
    assert snapshots.write_atomically is write_atomically
