"""``check_store`` (``editscope check``): each problem named with its file and what it affects;
``repair`` rebuilds bad or missing snapshots bit-exactly and removes crash debris (issue 22,
defect 9), never touching journal rows; opening for writing removes debris too."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from editscope.store import EditStore
from editscope.store.check import check_store
from editscope.types import EditRequest
from store_fakes import FakeBackend, make_checkpoint

BACKEND = FakeBackend()


@pytest.fixture
def store_dir(tmp_path, images):
    directory = tmp_path / "store"
    with EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", snapshot_every=2,
                        backend=BACKEND, editor="scopeedit") as store:
        for i in range(5):
            store.edit(EditRequest(prompt=f"What is shown? ({i})", target=f"thing {i}", image=images[i % 3]))
        store.snapshot("five")
    return directory


def snapshot_files(directory: Path) -> dict[str, str]:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        return dict(conn.execute("SELECT name, file FROM snapshots"))


def journal_rows(directory: Path) -> list[tuple]:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        return conn.execute("SELECT * FROM edits ORDER BY id").fetchall()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_clean_store_has_no_problems(store_dir):
    report = check_store(store_dir)
    assert report.problems == [] and report.notes == []
    assert report.checked == {"edits": 5, "snapshots": 4, "images": 3}


@pytest.mark.parametrize("name", ["initial", "auto-1-e2", "five"])
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_repair_rebuilds_a_bad_snapshot_bit_exactly(store_dir, name, damage):
    path = store_dir / "snapshots" / snapshot_files(store_dir)[name]
    good = sha(path)
    path.write_bytes(path.read_bytes()[:100]) if damage == "truncate" else path.unlink()
    rows = journal_rows(store_dir)
    (problem,) = check_store(store_dir).problems
    assert problem.file == f"snapshots/{path.name}" and problem.repaired is None
    assert f"snapshot {name!r}" in problem.what and f"snapshot {name!r}" in problem.affects
    (problem,) = check_store(store_dir, repair=True, backend=BACKEND).problems
    assert problem.repaired.endswith("plus replay (bit-exact: SHA-256 as recorded)")
    assert sha(path) == good and check_store(store_dir).problems == []
    assert journal_rows(store_dir) == rows  # no edit row touched


def make_debris(directory: Path, tmp_path: Path) -> list[Path]:
    with EditStore.open(directory, backend=BACKEND) as store:
        out = tmp_path / "exported"
        store.export(out)
    (out.parent / f".{out.name}.tmp-abc123").mkdir()  # as a killed export leaves it
    (out.parent / f".{out.name}.tmp-abc123" / "editor_state.safetensors").write_bytes(b"partial")
    debris = [directory / ".tmp-manifest", directory / "snapshots" / ".tmp-x1",
              directory / "snapshots" / "auto-9-e9-0123456789ab.safetensors",
              next((directory / "images").iterdir()) / ".tmp-img"]
    for path in debris:
        path.write_bytes(b"left by a killed process")
    return [*debris, out.parent / f".{out.name}.tmp-abc123"]


def test_check_reports_crash_debris_and_repair_removes_it(store_dir, tmp_path):
    debris = make_debris(store_dir, tmp_path)
    problems = check_store(store_dir).problems
    assert sorted(p.file for p in problems) == sorted(
        str(p.relative_to(store_dir)) if p.is_relative_to(store_dir) else str(p) for p in debris)
    assert all(p.what.startswith("crash debris") for p in problems)
    assert all(p.exists() for p in debris)
    report = check_store(store_dir, repair=True, backend=BACKEND)
    assert [p.repaired for p in report.problems] == ["removed"] * len(debris) and not report.unrepaired
    assert not any(p.exists() for p in debris) and (tmp_path / "exported").is_dir()
    assert check_store(store_dir).problems == []


def test_opening_for_writing_removes_crash_debris(store_dir, tmp_path):
    debris = make_debris(store_dir, tmp_path)
    with EditStore.open(store_dir, backend=BACKEND, read_only=True):
        assert all(p.exists() for p in debris)  # a reader removes nothing
    EditStore.open(store_dir, backend=BACKEND).close()
    assert not any(p.exists() for p in debris)
    assert check_store(store_dir).problems == []


def test_a_missing_image_is_reported_with_the_edits_it_affects_and_not_repaired(store_dir, images):
    (store_dir / "images" / sha(images[1])[:2] / sha(images[1])).unlink()
    report = check_store(store_dir, repair=True, backend=BACKEND)
    (problem,) = report.problems
    assert problem.file == f"images/{sha(images[1])[:2]}/{sha(images[1])}" and problem.repaired is None
    assert "is missing" in problem.what and problem.affects.startswith("edit(s) 2, 5: they cannot be replayed")
    assert report.unrepaired == [problem]


def test_a_bad_row_is_reported_and_never_deleted_or_resealed(store_dir):
    with sqlite3.connect(store_dir / "journal.sqlite") as conn:
        conn.execute("UPDATE edits SET target = 'thing X' WHERE id = 3")
    rows = journal_rows(store_dir)
    report = check_store(store_dir, repair=True, backend=BACKEND)
    assert [(p.file, p.what, p.repaired) for p in report.problems] == [
        ("journal.sqlite", "the row of edit 3 fails its integrity check", None)]
    assert "edit 3: its content cannot be trusted" in report.problems[0].affects
    assert journal_rows(store_dir) == rows


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_a_missing_or_unreadable_journal_is_reported_and_not_recreated(store_dir, damage):
    path = store_dir / "journal.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        path.write_bytes(b"not a journal" * 100)
    report = check_store(store_dir, repair=True, backend=BACKEND)
    (problem,) = report.problems
    assert problem.file == "journal.sqlite" and problem.repaired is None
    assert ("is missing" if damage == "delete" else "cannot be read") in problem.what
    assert path.exists() == (damage == "garbage")


def test_edit_rows_deleted_from_the_journals_end_are_reported_by_the_snapshots_that_hold_them(store_dir):
    with sqlite3.connect(store_dir / "journal.sqlite") as conn:
        conn.execute("DELETE FROM edits WHERE id = 5")
    report = check_store(store_dir, repair=True)
    problems = [p for p in report.problems if p.file == "journal.sqlite"]
    assert [p.what for p in problems] == [
        "snapshot 'five' holds edit(s) 5, which the journal has no row for (rows deleted from its end)"]
    assert problems[0].repaired is None and len(journal_rows(store_dir)) == 4
