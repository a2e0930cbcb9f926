"""Fault injection (issue 22): for each file kind of a store (journal, snapshot, image,
store.json) and each fault (truncate, flip a byte, delete, make read-only), the expected
outcome: a clear error naming the file, or recovery by ``check --repair``; never an
acknowledged edit lost. Processes killed during ``snapshot`` and ``export`` leave a store that
``check`` reports clean after the next open.

The store is the fake one of the unit tests (``store_fakes``: no model files), so that the
whole matrix runs in seconds; the tiny-LLaVA CLI tests cover the same paths through the real
editor (``test_store_cli_journal.py``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from editscope.store import EditStore, StoreError
from editscope.store.check import check_store
from editscope.types import EditRequest

UNIT = Path(__file__).resolve().parents[1] / "unit"
sys.path.insert(0, str(UNIT))
from store_fakes import FakeBackend, make_checkpoint  # noqa: E402

BACKEND = FakeBackend()
KINDS = ("journal", "snapshot", "image", "store.json")
FAULTS = ("truncate", "flip", "delete", "read-only")
EDITS = 5  # snapshots: initial, auto after edits 2 and 4; edit 5 is replayed on open


@pytest.fixture
def store(tmp_path):
    images = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        images.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (4, 4), colour).save(images[-1])
    directory = tmp_path / "store"
    with EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", snapshot_every=2,
                        backend=BACKEND, editor="scopeedit") as opened:
        for i in range(EDITS):
            assert opened.edit(EditRequest(prompt=f"What is shown? ({i})", target=f"thing {i}",
                                           image=images[i % 3])).status == "applied"
        state, holding = _state(opened), opened.audit(record=False).holding
    return {"dir": directory, "images": images, "state": state, "holding": holding}


def _state(store: EditStore) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in store.editor.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def target_file(store: dict, kind: str) -> Path:
    directory = store["dir"]
    if kind == "journal":
        return directory / "journal.sqlite"
    if kind == "store.json":
        return directory / "store.json"
    if kind == "snapshot":  # the latest automatic snapshot: the one opening starts from
        return max((directory / "snapshots").glob("auto-2-e4-*.safetensors"))
    sha = hashlib.sha256(store["images"][1].read_bytes()).hexdigest()  # edits 2 and 5
    return directory / "images" / sha[:2] / sha


def inject(path: Path, fault: str) -> None:
    data = path.read_bytes()
    if fault == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif fault == "flip":
        # A byte that matters: inside a row's target in the journal, else in the middle.
        at = data.find(b"thing 3") + 2 if path.name == "journal.sqlite" else len(data) // 2
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
    elif fault == "delete":
        path.unlink()
    else:
        path.chmod(0o444)
        path.parent.chmod(0o555)


def assert_no_acknowledged_edit_lost(store: dict) -> None:
    with EditStore.open(store["dir"], backend=BACKEND) as reopened:
        assert reopened.applied_ids() == list(range(1, EDITS + 1))
        assert _same(_state(reopened), store["state"])
        assert reopened.audit(record=False).holding == store["holding"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", KINDS)
def test_fault(store, kind, fault, monkeypatch):
    path = target_file(store, kind)
    if fault == "read-only" and os.geteuid() == 0:
        # chmod does not stop root from writing: report the file and its folder as not writable,
        # as a non-root user would find them (the chmod below still happens)
        real_access, closed = os.access, {path, path.parent}
        monkeypatch.setattr(os, "access", lambda target, mode, *a, **k: False if mode & os.W_OK and
                            Path(target) in closed else real_access(target, mode, *a, **k))
    good = path.read_bytes()
    inject(path, fault)
    try:
        EXPECTED[(kind, fault)](store, path, good)
    finally:
        path.parent.chmod(0o755)
        if path.exists():
            path.chmod(0o644)


def journal_is_named(store: dict, path: Path, good: bytes, message: str) -> None:
    """A journal fault: every open is an error naming the file (the journal is the record of
    what was acknowledged: nothing can rebuild it, and nothing is created in its place)."""
    for load_model in (False, True):
        with pytest.raises(StoreError, match=message):
            EditStore.open(store["dir"], backend=BACKEND, load_model=load_model)
    report = check_store(store["dir"], repair=True, backend=BACKEND)
    assert [p.file for p in report.unrepaired] == ["journal.sqlite"], report.problems
    assert path.exists() == (message != "is missing")
    path.write_bytes(good)  # restored from a backup, every acknowledged edit is there
    assert_no_acknowledged_edit_lost(store)


def snapshot_is_rebuilt(store: dict, path: Path, good: bytes) -> None:
    """A snapshot fault: opening falls back to an earlier snapshot plus replay (same state);
    check names the file and --repair rewrites it bit-exactly."""
    with EditStore.open(store["dir"], backend=BACKEND) as reopened:
        assert _same(_state(reopened), store["state"])
    (problem,) = check_store(store["dir"]).problems
    assert problem.file == f"snapshots/{path.name}" and "snapshot 'auto-2-e4'" in problem.what
    (problem,) = check_store(store["dir"], repair=True, backend=BACKEND).problems
    assert problem.repaired is not None and path.read_bytes() == good
    assert check_store(store["dir"]).problems == []
    assert_no_acknowledged_edit_lost(store)


def image_is_named(store: dict, path: Path, good: bytes) -> None:
    """An image fault: replaying an edit that uses it is an error naming the image file (the
    image cannot be made again); check names it with the edits it affects; with the original
    image put back, nothing is lost."""
    message = f"cannot replay edit 5: image {path.name} (is missing|in the image store is damaged).*{path}"
    with pytest.raises(StoreError, match=message):
        EditStore.open(store["dir"], backend=BACKEND)  # edit 5 is replayed on open
    report = check_store(store["dir"], repair=True, backend=BACKEND)
    (problem,) = report.unrepaired
    assert problem.file == str(path.relative_to(store["dir"])) and problem.affects.startswith("edit(s) 2, 5:")
    path.write_bytes(good)
    assert check_store(store["dir"]).problems == []
    assert_no_acknowledged_edit_lost(store)


def manifest_is_restored(store: dict, path: Path, good: bytes) -> None:
    """A store.json fault: every open is an error naming the file; --repair writes it back from
    the copy the journal keeps."""
    for load_model in (False, True):
        with pytest.raises(StoreError, match=f"{path}|no store.json"):
            EditStore.open(store["dir"], backend=BACKEND, load_model=load_model)
    (problem,) = check_store(store["dir"], repair=True, backend=BACKEND).problems
    assert problem.file == "store.json" and problem.repaired == "written back from the copy the journal keeps"
    assert path.read_bytes() == good and check_store(store["dir"]).problems == []
    assert_no_acknowledged_edit_lost(store)


def read_only_works(store: dict, path: Path, good: bytes) -> None:
    """A read-only file (as a non-root user sees it): readers work, writers say why not."""
    with EditStore.open(store["dir"], backend=BACKEND, read_only=True) as reader:
        assert reader.applied_ids() == list(range(1, EDITS + 1)) and _same(_state(reader), store["state"])
    if path.name == "journal.sqlite":
        with pytest.raises(StoreError, match="is read-only"):
            EditStore.open(store["dir"], backend=BACKEND)
    assert path.read_bytes() == good


EXPECTED = {
    ("journal", "truncate"): lambda s, p, g: journal_is_named(s, p, g, "cannot be read"),
    ("journal", "flip"): lambda s, p, g: journal_is_named(s, p, g, "the row of edit 4 fails its integrity check"),
    ("journal", "delete"): lambda s, p, g: journal_is_named(s, p, g, "is missing"),
    **{("snapshot", f): snapshot_is_rebuilt for f in ("truncate", "flip", "delete")},
    **{("image", f): image_is_named for f in ("truncate", "flip", "delete")},
    **{("store.json", f): manifest_is_restored for f in ("truncate", "flip", "delete")},
    **{(k, "read-only"): read_only_works for k in KINDS},
}

# -- processes killed part-way ------------------------------------------------------------------

KILLED = """
import sys, time
sys.path.insert(0, {unit!r})
from store_fakes import FakeBackend
from editscope import atomic  # the write_atomically the store uses
from editscope.store import EditStore, export, journal
store = EditStore.open({directory!r}, backend=FakeBackend())
def hang(*args, **kwargs):
    print("ready", flush=True)
    time.sleep(600)
{patch}
{call}
"""
KILLS = {
    "snapshot, before its file is renamed": ("atomic.os.replace = hang", "store.snapshot('killed')"),
    "snapshot, before the journal records it": ("journal.SQLiteJournal.add_snapshot = hang", "store.snapshot('killed')"),
    "export, before the folder is moved": ("export.os.replace = hang", "store.export({out!r})"),
}


@pytest.mark.parametrize("when", list(KILLS))
def test_a_process_killed_part_way_leaves_a_store_that_is_clean_after_the_next_open(store, tmp_path, when):
    patch, call = KILLS[when]
    code = KILLED.format(unit=str(UNIT), directory=str(store["dir"]), patch=patch,
                         call=call.format(out=str(tmp_path / "exported")))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    problems = check_store(store["dir"]).problems
    assert problems and all(p.what.startswith("crash debris") for p in problems), problems
    EditStore.open(store["dir"], backend=BACKEND).close()
    assert check_store(store["dir"]).problems == []
    assert not list(tmp_path.glob(".exported.tmp-*")) and not (tmp_path / "exported").exists()
    assert_no_acknowledged_edit_lost(store)
    time.sleep(0)  # nothing left running: the killed process has been waited for
