"""The one atomic-write helper (``editscope.atomic``), used by the store (manifest, images,
snapshots, rules) and by saving an editor (``editscope.state_io``)."""

from __future__ import annotations

import os
from pathlib import Path

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from editscope import atomic
from editscope.atomic import write_atomically


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
    from editscope import state_io
    from editscope.store import atomic as store_atomic
    from editscope.store import check, images, layout, rules, snapshots

    for module in (store_atomic, check, images, layout, rules, snapshots, state_io):
        assert module.write_atomically is write_atomically, module.__name__


class _Editor:
    """What ``save_editor`` reads of an editor."""

    def __init__(self, value: float) -> None:
        self.vlm = type("VLM", (), {"model": torch.nn.Identity()})()
        self.value = value

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"b": torch.full((2, 3), self.value), "a": torch.arange(4)}

    def config_dict(self) -> dict:
        return {"editor": "fake", "config": {"value": self.value}}


def test_a_saved_editor_is_written_as_before(tmp_path: Path) -> None:
    from editscope.state_io import CONFIG_FILE, STATE_FILE, read_editor_config, save_editor

    save_editor(_Editor(1.5), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, STATE_FILE])
    reference = tmp_path / "reference.safetensors"
    save_file(_Editor(1.5).state_dict(), str(reference), metadata={"editor": "fake"})
    assert (tmp_path / STATE_FILE).read_bytes() == reference.read_bytes()  # the same bytes as save_file
    assert read_editor_config(tmp_path) == {"editor": "fake", "config": {"value": 1.5}, "model_class": "Identity"}
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["config"] == {"value": 1.5}


@pytest.mark.parametrize("failing", [1, 2])  # the state file's rename fails, or the config's
def test_a_failed_save_leaves_the_saved_editor_and_no_temporary(tmp_path: Path, monkeypatch, failing: int) -> None:
    from editscope.state_io import CONFIG_FILE, STATE_FILE, save_editor

    save_editor(_Editor(1.0), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls, real_replace = [], os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == failing:
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        save_editor(_Editor(2.0), tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted([CONFIG_FILE, STATE_FILE])  # no temporary file left
    assert after[CONFIG_FILE] == before[CONFIG_FILE]  # written after the state (the two are not replaced as one)
    if failing == 1:
        assert after[STATE_FILE] == before[STATE_FILE]
    else:
        assert float(load_file(str(tmp_path / STATE_FILE))["b"][0, 0]) == 2.0
