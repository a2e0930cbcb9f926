"""Snapshot files: exact round trip, integrity checks, names."""

from __future__ import annotations

import pytest
import torch

from editscope.store.snapshots import SnapshotCorrupt, SnapshotError, SnapshotFiles, check_snapshot_name


@pytest.fixture
def state():
    generator = torch.Generator().manual_seed(0)
    return {
        "layers.1.B_local": torch.randn(6, 4, generator=generator),
        "layers.1.P_local": torch.randn(4, 4, generator=generator, dtype=torch.float64),
        "projector.B_local": torch.randn(3, 2, generator=generator).to(torch.bfloat16),
        "count": torch.tensor(7),
    }


def test_round_trip_is_exact(tmp_path, state):
    files = SnapshotFiles(tmp_path)
    name, digest = files.write("before-cats", state, [1, 2, 5])
    loaded = files.read("before-cats", name, digest)
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype
        assert torch.equal(loaded[key], tensor)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_every_write_gets_a_new_file(tmp_path, state):
    files = SnapshotFiles(tmp_path)
    first, _ = files.write("s", state, [])
    second, _ = files.write("s", state, [])
    assert first != second


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_snapshot_is_a_clear_error(tmp_path, state, damage):
    files = SnapshotFiles(tmp_path)
    name, digest = files.write("nightly", state, [3])
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    with pytest.raises(SnapshotCorrupt, match="snapshot 'nightly'") as info:
        files.read("nightly", name, digest)
    assert name in str(info.value)


def test_an_unparseable_file_with_matching_hash_is_corrupt(tmp_path):
    import hashlib

    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(SnapshotCorrupt, match="cannot parse"):
        SnapshotFiles(tmp_path).read("bad", "bad.safetensors", hashlib.sha256(b"\xff" * 16).hexdigest())


@pytest.mark.parametrize("name", ["", "12", "3abc", "has space", "a/b", "x" * 129])
def test_invalid_names_are_refused(name):
    with pytest.raises(SnapshotError, match="invalid snapshot name"):
        check_snapshot_name(name)


def test_valid_names():
    for name in ("initial", "before-cats", "v1.2", "_tmp"):
        assert check_snapshot_name(name) == name
