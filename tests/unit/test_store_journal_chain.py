"""The journal's integrity chain (issue 22, defect 4): a row changed outside editscope (one byte
of its target, its status, a snapshot's lineage, a deleted row) is a StoreError naming the row
on open, replay, revert and audit; a journal written before the chain gets it on its first
open for writing."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from editscope.store import EditStore, StoreError
from editscope.store import journal as jr
from editscope.store.journal import EditDraft, SQLiteJournal
from editscope.types import EditRequest
from store_fakes import FakeBackend, make_checkpoint

BACKEND = FakeBackend()


@pytest.fixture
def store_dir(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(image)
    directory = tmp_path / "store"
    with EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", snapshot_every=100,
                        backend=BACKEND, editor="scopeedit") as store:
        for i in range(3):
            store.edit(EditRequest(prompt=f"What is shown? ({i})", target=f"thing {i}", image=image),
                       tags=("t",))
    return directory


def sql(directory: Path, statement: str, *values) -> None:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        conn.execute(statement, values)


def flip_a_byte_of_the_target(directory: Path, edit_id: int) -> None:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        (target,) = conn.execute("SELECT target FROM edits WHERE id = ?", (edit_id,)).fetchone()
        raw = bytearray(target.encode())
        raw[0] ^= 0x01
        conn.execute("UPDATE edits SET target = ? WHERE id = ?", (raw.decode(), edit_id))


def open_store(directory: Path, **kwargs) -> EditStore:
    return EditStore.open(directory, backend=BACKEND, **kwargs)


@pytest.mark.parametrize("load_model", [False, True])
def test_a_changed_target_fails_the_open_naming_the_row(store_dir, load_model):
    flip_a_byte_of_the_target(store_dir, 2)
    with pytest.raises(StoreError, match=r"journal .*journal\.sqlite: the row of edit 2 fails its integrity check"):
        open_store(store_dir, load_model=load_model)


def test_a_changed_row_fails_replay_revert_and_audit_in_an_open_store(store_dir):
    with open_store(store_dir) as store:
        flip_a_byte_of_the_target(store_dir, 2)
        for call in (lambda: store.revert(3), lambda: store.audit(), lambda: store.rollback("initial"),
                     lambda: store.get(2)):
            with pytest.raises(StoreError, match="the row of edit 2 fails its integrity check"):
                call()
        assert store.journal.bad_rows() == ["edit 2"]


@pytest.mark.parametrize("change", ["status", "tag", "delete", "snapshot lineage", "event payload"])
def test_every_kind_of_change_is_named(store_dir, change):
    with open_store(store_dir) as store:
        store.audit()
    expected = {
        "status": ("UPDATE edits SET status = 'reverted' WHERE id = 1", "edit 1"),
        "tag": ("UPDATE edit_tags SET tag = 'u' WHERE edit_id = 3", "edit 3"),
        "delete": ("DELETE FROM edits WHERE id = 2", "edit 3"),
        "snapshot lineage": ("UPDATE snapshots SET lineage = '[1]' WHERE name = 'initial'", "snapshot 'initial' (row 1)"),
        "event payload": ("UPDATE events SET payload = '{}' WHERE kind = 'audit'", "event 2"),
    }[change]
    if change == "delete":
        sql(store_dir, "DELETE FROM edit_tags WHERE edit_id = 2")
    sql(store_dir, expected[0])
    with pytest.raises(StoreError, match=re.escape(f"the row of {expected[1]} fails its integrity check")):
        open_store(store_dir, load_model=False)


def test_a_changed_status_is_not_sealed_by_a_later_status_change(tmp_path):
    journal = SQLiteJournal(tmp_path / "journal.sqlite", create=True)
    edit_id = journal.add_edit(EditDraft("p", "t", "auto", None))
    sql(tmp_path, "UPDATE edits SET status = 'applied' WHERE id = ?", edit_id)
    with pytest.raises(StoreError, match=f"the row of edit {edit_id} fails"):
        journal.set_status([edit_id], jr.REVERTED)
    journal.close()


def test_a_journal_without_the_chain_gets_it_on_its_first_open_for_writing(store_dir):
    with sqlite3.connect(store_dir / "journal.sqlite") as conn:
        for table in ("edits", "snapshots", "events"):
            conn.execute(f"UPDATE {table} SET chain = NULL")
        conn.execute("ALTER TABLE edits DROP COLUMN checksum")
        for table in ("edits", "snapshots", "events"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN chain")
    with open_store(store_dir, load_model=False, read_only=True) as reader:
        assert not reader.journal.chained  # read unchecked, never written
        assert [r.id for r in reader.log()] == [1, 2, 3]
    with open_store(store_dir) as store:
        assert store.journal.chained and store.journal.bad_rows() == []
        migrate = store.journal.events("migrate")
        assert len(migrate) == 1 and migrate[0].payload["rows"] == {"edits": 3, "snapshots": 1, "events": 1}
    flip_a_byte_of_the_target(store_dir, 1)
    with pytest.raises(StoreError, match="the row of edit 1 fails"):
        open_store(store_dir, load_model=False)


def test_the_chain_covers_what_was_written(store_dir):
    with sqlite3.connect(store_dir / "journal.sqlite") as conn:
        chains = [r[0] for r in conn.execute("SELECT chain FROM edits ORDER BY id")]
        checksums = [r[0] for r in conn.execute("SELECT checksum FROM edits ORDER BY id")]
    assert len(set(chains)) == 3 and all(len(c) == 64 for c in chains + checksums)
    with open_store(store_dir, load_model=False) as store:
        assert store.journal.bad_rows() == []
        assert json.dumps([r.target for r in store.log()]) == '["thing 0", "thing 1", "thing 2"]'
