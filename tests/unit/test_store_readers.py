"""Readers of a store (issue 22, read-only access): ``EditStore.open(..., read_only=True)`` takes
no writer lock and writes nothing, so it works while a writer holds the store and on a store
that cannot be written; its state is the last committed one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from editscope.store import EditStore, StoreError
from editscope.store import journal as jr
from editscope.types import EditRequest
from store_fakes import FakeBackend, make_checkpoint

BACKEND = FakeBackend()


@pytest.fixture
def store_dir(tmp_path):
    directory = tmp_path / "store"
    EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", snapshot_every=2,
                   backend=BACKEND, editor="scopeedit").close()
    return directory


def request(images, i: int) -> EditRequest:
    return EditRequest(prompt=f"What is shown? ({i})", target=f"thing {i}", image=images[i % 3])


def files_of(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(("journal.sqlite", "lock"))}


def logits(store: EditStore, images) -> torch.Tensor:
    return torch.stack([store.editor.logits(images[i % 3], f"q{i}", "t") for i in range(3)])


def test_a_reader_works_while_the_writer_holds_the_store_and_sees_its_last_commit(store_dir, images):
    with EditStore.open(store_dir, backend=BACKEND) as writer:
        for i in range(3):
            writer.edit(request(images, i))
        writer.journal.add_edit(jr.EditDraft("in flight", "not yet", "auto", None))  # a pending row
        with pytest.raises(StoreError, match="open in another process"):
            EditStore.open(store_dir, backend=BACKEND)  # a second writer is still refused
        with EditStore.open(store_dir, backend=BACKEND, read_only=True) as reader:
            assert reader.read_only and reader.applied_ids() == [1, 2, 3]
            assert torch.equal(logits(reader, images), logits(writer, images))
            assert reader.query(images[0], "q") == writer.query(images[0], "q")
            report = reader.audit(record=False)
            assert report.holding == [1, 2, 3] and report.audit_id is None
            assert [r.status for r in reader.log()] == ["applied"] * 3 + ["pending"]
        writer.rollback(to=2)
        with EditStore.open(store_dir, backend=BACKEND, read_only=True) as reader:
            assert reader.applied_ids() == [1, 2] and torch.equal(logits(reader, images), logits(writer, images))
        assert writer.journal.events("audit") == []  # the dry run journaled nothing


def test_a_reader_writes_nothing_and_refuses_writes_by_name(store_dir, images):
    with EditStore.open(store_dir, backend=BACKEND) as writer:
        writer.edit(request(images, 0))
    before = files_of(store_dir)
    with EditStore.open(store_dir, backend=BACKEND, read_only=True) as reader:
        with pytest.raises(StoreError, match=r"is open read-only: edit writes to it"):
            reader.edit(request(images, 1))
        with pytest.raises(StoreError, match=r"is open read-only: audit \(without --dry-run\) writes to it"):
            reader.audit()
        reader.audit(record=False)
    assert files_of(store_dir) == before
    assert not (store_dir / "images" / hashlib.sha256(images[1].read_bytes()).hexdigest()[:2]).exists()
