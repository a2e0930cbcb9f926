"""The store's command line when the journal file is missing or damaged (issue 22, defects 5
and 7): every command is a one-line error naming the journal, exit code 1, and no journal is
created in place of a missing one."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from editscope.cli.main import app
from store_support import EDITS, store_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return store_world(tmp_path_factory.mktemp("store-cli-journal"))


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "Traceback" not in result.output, result.output
    return errors[0]


def other_files(directory) -> dict[str, str]:
    """Every file but the SQLite files and the lock, by content hash (the journal is not opened:
    opening a missing one with sqlite3 would create it)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(("journal.sqlite", "lock"))
    }


def commands(store, images):
    return [
        ("log", "--store", store),
        ("log", "--store", store, "--tag", "demo"),
        ("edit", "--store", store, "--image", images[0], "--prompt", EDITS[0][0], "--target", EDITS[0][1]),
        ("query", "--store", store, "--prompt", EDITS[0][0], "--max-new-tokens", "1"),
        ("snapshot", "--store", store, "--name", "one"),
        ("rollback", "--store", store, "--to", "initial"),
        ("revert", "1", "--store", store),
        ("audit", "--store", store),
    ]


@pytest.fixture
def store(world, tmp_path):
    store = tmp_path / "store"
    result = cli("init", "--store", store, "--model", world["base"], "--editor", "scopeedit", "--preset", world["preset"])
    assert result.exit_code == 0, result.output
    image, (prompt, target) = world["images"][0], EDITS[0]
    result = cli("edit", "--store", store, "--image", image, "--prompt", prompt, "--target", target, "--tag", "demo")
    assert result.exit_code == 0, result.output
    return store


def test_every_command_on_a_store_without_its_journal_is_an_error_and_creates_none(world, store):
    (store / "journal.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (store / f"journal.sqlite{suffix}").unlink(missing_ok=True)
    before = other_files(store)
    for args in commands(store, world["images"]):
        assert "journal.sqlite is missing" in one_error(cli(*args)), args
        assert not any(p.name.startswith("journal.sqlite") for p in store.iterdir()), args
    assert other_files(store) == before


def test_every_command_on_a_garbage_journal_is_an_error_naming_it(world, store):
    path = store / "journal.sqlite"
    path.write_bytes(b"\x00this is not SQLite\xff" * 256)
    before = other_files(store)
    for args in commands(store, world["images"]):
        message = one_error(cli(*args))
        assert f"journal {path} cannot be read" in message, (args, message)
    assert path.read_bytes() == b"\x00this is not SQLite\xff" * 256
    assert other_files(store) == before


def test_a_byte_flipped_in_a_rows_target_is_an_error_naming_the_row(world, store):
    """Issue 22, defect 4: before the chain, ``revert`` replayed the changed target silently."""
    import sqlite3

    path = store / "journal.sqlite"
    with sqlite3.connect(path) as conn:
        (target,) = conn.execute("SELECT target FROM edits WHERE id = 1").fetchone()
        conn.execute("UPDATE edits SET target = ? WHERE id = 1", (chr(ord(target[0]) ^ 1) + target[1:],))
    for args in (("revert", "1", "--store", store), ("log", "--store", store), ("audit", "--store", store)):
        message = one_error(cli(*args))
        assert f"journal {path}: the row of edit 1 fails its integrity check" in message, (args, message)


def readers(store, images):
    return [
        ("log", "--store", store),
        ("query", "--store", store, "--image", images[0], "--prompt", EDITS[0][0], "--max-new-tokens", "1"),
        ("audit", "--store", store, "--dry-run"),
    ]


def test_readers_work_while_another_process_holds_the_writer_lock(world, store):
    import fcntl

    with open(store / "lock", "a+") as held:  # as a writer in another process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = other_files(store)
        for args in readers(store, world["images"]):
            result = cli(*args)
            assert result.exit_code == 0 and "Traceback" not in result.output, (args, result.output)
        assert "dry run, not journaled" in cli(*readers(store, world["images"])[2]).output
        assert "is open in another process" in one_error(cli("snapshot", "--store", store, "--name", "s"))
        assert other_files(store) == before


def test_readers_work_on_a_read_only_store_and_writers_say_it_is_read_only(world, store, monkeypatch):
    from pathlib import Path

    from editscope.store import journal as jr

    journal_path, real_access = store / "journal.sqlite", jr.os.access
    monkeypatch.setattr(jr.os, "access", lambda path, mode, *a, **k: False if mode == jr.os.W_OK and Path(path)
                        in (journal_path, store) else real_access(path, mode, *a, **k))
    before = other_files(store)
    for args in readers(store, world["images"]):
        result = cli(*args)
        assert result.exit_code == 0 and "Traceback" not in result.output, (args, result.output)
    for args in [c for c in commands(store, world["images"]) if c[0] not in ("log", "query")]:
        message = one_error(cli(*args))
        assert f"store {store} is read-only (journal {journal_path} cannot be written): this command writes" in message, args
    assert other_files(store) == before


def test_check_reports_a_truncated_snapshot_and_repair_rebuilds_it(world, store):
    result = cli("snapshot", "--store", store, "--name", "one")
    assert result.exit_code == 0, result.output
    (path,) = [p for p in (store / "snapshots").iterdir() if p.name.startswith("one-")]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    result = cli("check", "--store", store)
    assert result.exit_code == 1, result.output
    assert f"problem: snapshots/{path.name}: snapshot 'one' is corrupt" in result.output
    assert "affects: snapshot 'one' (1 edits): opening and rollback use an earlier snapshot" in result.output
    result = cli("check", "--store", store, "--repair")
    assert result.exit_code == 0 and "repaired: rebuilt from initial plus replay (bit-exact" in result.output, result.output
    assert path.read_bytes() == good
    result = cli("check", "--store", store)
    assert result.exit_code == 0 and "no problems" in result.output, result.output


def test_an_over_long_prompt_in_a_stream_is_reported_with_its_line_and_the_stream_goes_on(world, store, tmp_path):
    """Issue 22, defect 8: it was journaled as rejected but never reported, and the lines after it
    were not applied."""
    import json

    image = str(world["images"][1])
    lines = [{"image": image, "prompt": EDITS[1][0], "target": EDITS[1][1]},
             {"image": image, "prompt": "what color " * 4000, "target": "red"},
             {"image": str(world["images"][2]), "prompt": EDITS[2][0], "target": EDITS[2][1]}]
    path = tmp_path / "edits.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli("edit", "--store", store, "--stream", path)
    assert result.exit_code == 2, result.output
    out = result.stdout.splitlines()
    assert out[0].startswith("applied edit 2 (line 1)") and out[2].startswith("applied edit 4 (line 3)"), out
    assert out[1].startswith("rejected edit 3 (line 2): ValueError: prompt (") and "exceeds the model's text context" in out[1]
    assert out[3] == "done: 2 applied, 1 rejected"
