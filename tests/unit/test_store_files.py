"""The EditStore's files gone bad, on a fake editor: a bad snapshot falls back to an earlier one
plus replay (issue 22, defect 6); the journal file missing, damaged or read-only (defects 5
and 7). Split from test_store_api.py, whose helpers and fixtures it uses."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import torch

from editscope.store import StoreError
from editscope.store import journal as jr
from test_store_api import fingerprint_of, open_store, probe_logits, request, store_dir  # noqa: F401


@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing", "initial missing"])
def test_a_bad_snapshot_falls_back_to_an_earlier_one_plus_replay(store_dir, images, caplog, damage):
    """Issue 22, defect 6: one bad snapshot file made the store unusable, even rollback."""
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        at_one = probe_logits(store, images)
        snap = store.snapshot("one")
        store.edit(request(images, 1))
        latest = probe_logits(store, images)
        initial = store.journal.get_snapshot("initial")
    path = store_dir / "snapshots" / (initial.file if damage == "initial missing" else snap.file)
    if damage == "flipped":
        data = bytearray(path.read_bytes())
        data[-2] ^= 0x55
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.unlink()
    with open_store(store_dir) as store:
        assert torch.equal(probe_logits(store, images), latest)
        bad = "initial" if damage == "initial missing" else "one"
        change = store.rollback(to="one")
        assert torch.equal(probe_logits(store, images), at_one)
        assert change.from_snapshot == ("initial" if bad == "one" else "one")
        change = store.rollback(to="initial")
        assert store.applied_ids() == [] and change.from_snapshot == ("initial (rebuilt)" if bad == "initial" else "initial")
        store.edit(request(images, 0))
        assert torch.equal(probe_logits(store, images), at_one)  # the rebuilt initial state is the initial state
    assert f"snapshot {bad!r} is {'missing' if 'missing' in damage else 'corrupt'}" in caplog.text
    assert "falling back to an earlier snapshot and replay" in caplog.text


# -- the journal file: missing, damaged, read-only (issue 22, defects 5 and 7) ----------------


def _journal_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("journal.sqlite"))


@pytest.mark.parametrize("load_model", [False, True])
def test_a_missing_journal_is_an_error_and_is_not_recreated(store_dir, images, load_model):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
    (store_dir / "journal.sqlite").unlink()
    with pytest.raises(StoreError, match=r"journal .*journal\.sqlite is missing"):
        open_store(store_dir, load_model=load_model)
    assert _journal_files(store_dir) == []


@pytest.mark.parametrize("damage", ["garbage", "empty", "other-database"])
def test_a_damaged_journal_is_an_error_naming_it(store_dir, images, damage):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
    path = store_dir / "journal.sqlite"
    if damage == "garbage":
        path.write_bytes(b"\x00garbage, not SQLite\xff" * 200)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE unrelated (x)")
    content = path.read_bytes()
    for load_model in (False, True):
        with pytest.raises(StoreError, match=r"journal .*journal\.sqlite cannot be read"):
            open_store(store_dir, load_model=load_model)
    assert path.read_bytes() == content  # nothing written into it


def _as_read_only_journal(store_dir: Path, monkeypatch) -> None:
    """The journal file seen as not writable, as ``os.access`` reports it (root can write any
    file, so chmod alone does not make it read-only there)."""
    journal_path = store_dir / "journal.sqlite"
    real_access = jr.os.access

    def access(path, mode, *args, **kwargs):
        if mode == jr.os.W_OK and Path(path) == journal_path:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(jr.os, "access", access)


@pytest.mark.parametrize("how", ["explicit", "not-writable"])
def test_a_read_only_journal_can_be_read_and_refuses_writes(store_dir, images, monkeypatch, how):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        store.edit(request(images, 1))
    before = fingerprint_of(store_dir)
    kwargs = {"read_only": True} if how == "explicit" else {}
    if how == "not-writable":
        _as_read_only_journal(store_dir, monkeypatch)
    with open_store(store_dir, load_model=False, **kwargs) as reader:
        assert reader.journal.read_only
        assert [r.id for r in reader.log()] == [1, 2]
        assert [s.name for s in reader.snapshots()] == ["initial"]
        with pytest.raises(StoreError, match=r"journal .*journal\.sqlite is read-only"):
            reader.journal.add_event("audit", {})
        with pytest.raises(StoreError, match=r"journal .*journal\.sqlite is read-only"):
            reader.journal.set_status([1], jr.REVERTED)
    if how == "explicit":  # a reader with the model: reads, and refuses every write by name
        with open_store(store_dir, read_only=True) as reader:
            assert reader.applied_ids() == [1, 2] and reader.audit(record=False).holding == [1, 2]
            for what, call in [("edit", lambda: reader.edit(request(images, 2))), ("snapshot", lambda: reader.snapshot("s")),
                               ("rollback", lambda: reader.rollback("initial")), ("revert", lambda: reader.revert(1)),
                               ("audit", lambda: reader.audit()), ("export", lambda: reader.export(store_dir / "x"))]:
                with pytest.raises(StoreError, match=f"is open read-only: {what}.* writes to it"):
                    call()
    else:
        with pytest.raises(StoreError, match=r"is read-only \(journal .*journal\.sqlite cannot be written\): this "
                           "command writes to it; log, query and audit --dry-run work on a read-only store"):
            open_store(store_dir, **kwargs)
    assert fingerprint_of(store_dir) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the read-only path is "
                    "covered by test_a_read_only_journal_can_be_read_and_refuses_writes")
def test_a_chmod_read_only_store_can_be_read(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
    before = fingerprint_of(store_dir)
    (store_dir / "journal.sqlite").chmod(0o444)
    store_dir.chmod(0o555)
    try:
        with open_store(store_dir, load_model=False) as reader:
            assert [r.id for r in reader.log()] == [1]
        with pytest.raises(StoreError, match="read-only"):
            open_store(store_dir)
    finally:
        store_dir.chmod(0o755)
        (store_dir / "journal.sqlite").chmod(0o644)
    assert fingerprint_of(store_dir) == before
