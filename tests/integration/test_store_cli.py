"""The store's command line on a tiny LLaVA: the whole workflow, one-line errors, and a stream
killed with SIGKILL that loses no acknowledged edit and leaves nothing half-applied."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from editscope.cli.main import app
from editscope.store import EditStore
from editscope.types import EditRequest
from store_support import (
    EDITS,
    probe_logits,
    store_state,
    store_world,
)

ACK = re.compile(r"^applied edit (\d+) \(line (\d+)\)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return store_world(tmp_path_factory.mktemp("store-cli"))


def cli(*args: object, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def stream_lines(start: int, stop: int) -> str:
    """JSONL edits ``start`` to ``stop - 1`` (cycling through EDITS and their images)."""
    lines = []
    for n in range(start, stop):
        prompt, target = EDITS[n % len(EDITS)]
        lines.append(json.dumps({"image": f"images/image{n % len(EDITS)}.png", "prompt": prompt, "target": target, "tags": ["stream"]}))
    return "\n".join(lines) + "\n"


def wait_for_pending(store, edit_id: int, timeout_s: float = 30.0) -> None:
    """Poll the journal (read-only) until ``edit_id`` is journaled as pending."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{store / 'journal.sqlite'}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT status FROM edits WHERE id = ?", (edit_id,)).fetchone()
        if row is not None and row[0] == "pending":
            return
        time.sleep(0.005)
    raise AssertionError(f"edit {edit_id} never became pending")


def test_workflow(world, tmp_path, monkeypatch):
    store, images = tmp_path / "store", world["images"]
    result = cli("init", "--store", store, "--model", world["base"], "--editor", "scopeedit", "--preset", world["preset"], "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((store / "store.json").read_text())["device"] == "cpu"
    result = cli("edit", "--store", store, "--image", images[0], "--prompt", EDITS[0][0], "--target", EDITS[0][1], "--tag", "colour")
    assert result.exit_code == 0 and "applied edit 1" in result.output, result.output
    monkeypatch.chdir(world["root"])  # relative image paths in a stdin stream are relative to the cwd
    result = cli("edit", "--store", store, "--stream", "-", input=stream_lines(1, 3))
    assert result.exit_code == 0, result.output
    assert [int(m.group(1)) for m in map(ACK.match, result.stdout.splitlines()) if m] == [2, 3]
    assert cli("snapshot", "--store", store, "--name", "three").exit_code == 0
    logged = json.loads(cli("log", "--store", store, "--tag", "stream", "--json").stdout)
    assert [r["id"] for r in logged] == [2, 3] and all(r["status"] == "applied" for r in logged)
    result = cli("query", "--store", store, "--image", images[0], "--prompt", EDITS[0][0], "--max-new-tokens", "2")
    assert result.exit_code == 0 and result.output.strip()
    assert cli("rollback", "--store", store, "--to", "2").exit_code == 0
    assert cli("revert", "1", "--store", store).exit_code == 0
    audit = json.loads(cli("audit", "--store", store, "--json").stdout)
    assert audit["state"] == [2]
    assert "rolled_back" in cli("log", "--store", store, "--status", "rolled_back").output
    result = cli("export", "--store", store, "--out", tmp_path / "adapter")
    assert result.exit_code == 0 and (tmp_path / "adapter" / "manifest.json").is_file()
    assert cli("rollback", "--store", store, "--to", "three").exit_code == 0
    lines = cli("log", "--store", store).stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["applied", "applied", "applied"]


def test_errors_are_one_line_and_change_nothing(world, tmp_path):
    store = tmp_path / "store"
    assert cli("init", "--store", store, "--model", world["base"], "--editor", "scopeedit", "--preset", world["preset"]).exit_code == 0
    before = store_state(store)
    cases = [
        (("revert", "9", "--store", store), "error: no edit with id 9"),
        (("rollback", "--store", store, "--to", "nightly"), "error: no snapshot named 'nightly'"),
        (("edit", "--store", store, "--image", tmp_path / "no.png", "--prompt", "what is this ?", "--target", "x"), "error: image file not found"),
        (("edit", "--store", store, "--prompt", "what is this ?", "--target", "  "), "error: EditRequest.target is empty"),
        (("log", "--store", store, "--status", "done"), "error: unknown status 'done'"),
        (("init", "--store", store, "--model", world["base"]), "error: cannot create a store"),
        (("query", "--store", tmp_path / "nowhere", "--prompt", "hi"), "is not an editscope store"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, result.output)
    assert store_state(store) == before


def test_sigkill_mid_stream_keeps_every_acknowledged_edit(world, tmp_path):
    store = tmp_path / "store"
    EditStore.init(store, world["base"], str(world["preset"]), snapshot_every=2, editor="scopeedit").close()
    stream = world["root"] / "kill-stream.jsonl"
    stream.write_text(stream_lines(0, 8))
    # one intra-op thread, as tests/conftest.py sets for this process: replay here then
    # matches the subprocess's arithmetic bit for bit
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "editscope.cli.main", "edit", "--store", str(store), "--stream", str(stream)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    acknowledged = []
    try:
        for line in process.stdout:
            match = ACK.match(line)
            if match:
                acknowledged.append(int(match.group(1)))
            if len(acknowledged) == 3:
                wait_for_pending(store, 4)  # kill while edit 4 is being applied
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        acknowledged += [int(m.group(1)) for m in map(ACK.match, process.stdout.read().splitlines()) if m]
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert acknowledged == [1, 2, 3]

    with EditStore.open(store) as reopened:
        records = reopened.log()
        applied = [r.id for r in records if r.status == "applied"]
        assert set(acknowledged) <= set(applied)
        assert applied == list(range(1, len(applied) + 1))  # a prefix of the stream
        assert all(r.status in ("applied", "rejected") for r in records)  # nothing left pending
        assert reopened.get(4).status == "rejected" and reopened.get(4).error.startswith("abandoned")
        assert applied == [1, 2, 3]
        state = probe_logits(reopened.editor, world["images"])
    # nothing partial: the state is exactly that of a store given the applied edits only
    with EditStore.init(tmp_path / "fresh", world["base"], str(world["preset"]), editor="scopeedit") as fresh:
        for n in range(len(applied)):
            prompt, target = EDITS[n % len(EDITS)]
            fresh.edit(EditRequest(prompt, target, image=world["images"][n % len(EDITS)]))
        assert torch.equal(probe_logits(fresh.editor, world["images"]), state)


def test_init_defaults_to_scopememory_and_takes_a_reference_file(world, tmp_path):
    refused = cli("init", "--store", tmp_path / "refused", "--model", world["base"])
    assert refused.exit_code == 1 and "--reference FILE" in refused.output, refused.output
    assert not (tmp_path / "refused").exists()
    reference = tmp_path / "reference.json"
    images = world["images"]
    reference.write_text(json.dumps([
        {"prompt": "what is on the table ?", "answer": "a cup", "image": str(images[1])},
        {"prompt": "what is the capital of france ?", "answer": "paris"},
    ]))
    store = tmp_path / "store"
    result = cli("init", "--store", store, "--model", world["base"], "--reference", reference)
    assert result.exit_code == 0, result.output
    editor = json.loads((store / "store.json").read_text())["editor"]
    assert editor["name"] == "scopememory" and editor["reference"] == str(reference)
    result = cli("edit", "--store", store, "--image", images[0], "--prompt", EDITS[0][0], "--target", EDITS[0][1])
    assert result.exit_code == 0 and "applied edit 1" in result.output, result.output
    result = cli("export", "--store", store, "--out", tmp_path / "deployed", "--merged")
    assert result.exit_code == 0 and "exported routed checkpoint with 1 edit(s)" in result.output, result.output
    assert (tmp_path / "deployed" / "slots.safetensors").is_file()


def test_stream_takes_scope_tag_and_rephrase_as_per_line_defaults(world, tmp_path):
    store = tmp_path / "store"
    assert cli("init", "--store", store, "--model", world["base"], "--editor", "scopeedit", "--preset", world["preset"]).exit_code == 0
    stream = world["root"] / "defaults-stream.jsonl"
    own = {"scope": "broad", "tags": ["own", "b"], "rephrases": ["what is it ?"]}
    stream.write_text(
        json.dumps({"image": "images/image0.png", "prompt": EDITS[0][0], "target": EDITS[0][1]}) + "\n"
        + json.dumps({"image": "images/image1.png", "prompt": EDITS[1][0], "target": EDITS[1][1], **own}) + "\n"
    )
    result = cli("edit", "--store", store, "--stream", stream, "--scope", "instance", "--tag", "b", "--rephrase", "x y")
    assert result.exit_code == 0, result.output
    logged = json.loads(cli("log", "--store", store, "--json").stdout)
    assert [(r["scope"], sorted(r["tags"]), list(r["rephrases"])) for r in logged] == [
        ("instance", ["b"], ["x y"]),
        ("broad", ["b", "own"], ["what is it ?"]),  # the line's scope and rephrases win; tags: union
    ]
    help_text = " ".join(CliRunner().invoke(app, ["edit", "--help"], terminal_width=400).output.replace("│", " ").split())
    assert "With --stream, --scope, --tag and --rephrase are defaults for every line" in help_text, help_text
    bad = cli("edit", "--store", store, "--stream", stream, "--scope", "wide")
    assert bad.exit_code == 1 and "error: --scope must be one of auto, instance, broad, got 'wide'" in bad.output


def test_bad_stream_line_is_one_error_naming_line_and_field_and_keeps_earlier_edits(world, tmp_path):
    store = tmp_path / "store"
    assert cli("init", "--store", store, "--model", world["base"], "--editor", "scopeedit", "--preset", world["preset"]).exit_code == 0
    good = stream_lines(0, 2).encode()
    cases = [
        (b'{"prompt": "what is \xff ?", "target": "x"}\n', "error: stream line 3: field 'prompt' is not valid UTF-8 (invalid byte 0xff)"),
        (b'{"prompt": "what ?", "target": "\\ud800"}\n', "error: stream line 3: field 'target' contains a lone surrogate (U+D800)"),
        (b'{"prompt": "what ?", "target": "x", "tags": "demo"}\n', "error: stream line 3: field 'tags' must be an array of strings, got a string"),
    ]
    for n, (line, message) in enumerate(cases):
        stream = world["root"] / f"bad-stream-{n}.jsonl"
        stream.write_bytes(good + line + stream_lines(2, 3).encode())
        before = len(json.loads(cli("log", "--store", store, "--json").stdout))
        result = cli("edit", "--store", store, "--stream", stream)
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(message), result.output
        assert [int(m.group(2)) for m in map(ACK.match, result.stdout.splitlines()) if m] == [1, 2]
        logged = json.loads(cli("log", "--store", store, "--json").stdout)
        assert len(logged) == before + 2 and all(r["status"] == "applied" for r in logged)  # line 4 not read


def test_ack_says_whether_the_edit_holds(world, tmp_path):
    """The acknowledgement runs the audit's own-probe check: an edit that took says "holds", one
    that did not (a single tiny step) says "did not take" with its target loss, and so does the
    audit afterwards."""
    store, images = tmp_path / "store", world["images"]
    weak = tmp_path / "one-step.yaml"
    weak.write_text(world["preset"].read_text().replace("steps_per_edit: 5", "steps_per_edit: 1").replace("eta: 1.0", "eta: 1.0e-6"))
    assert cli("init", "--store", store, "--model", world["base"], "--editor", "scopeedit", "--preset", weak, "--device", "cpu").exit_code == 0
    result = cli("edit", "--store", store, "--image", images[0], "--prompt", EDITS[0][0], "--target", EDITS[0][1])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    assert re.match(r"^applied edit 1: .*: did not take \(target loss \d+\.\d\d after 1 step; the model's answer is not the target", line), line
    assert "editscope audit" in line
    assert json.loads(cli("audit", "--store", store, "--json").stdout)["failing"] == [1]

    strong = tmp_path / "strong"
    assert cli("init", "--store", strong, "--model", world["base"], "--editor", "scopeedit", "--preset", world["preset"], "--device", "cpu").exit_code == 0
    result = cli("edit", "--store", strong, "--stream", "-", input=json.dumps({"image": str(images[0]), "prompt": EDITS[0][0], "target": EDITS[0][1]}) + "\n")
    assert result.exit_code == 0, result.output
    acks = [line for line in result.stdout.splitlines() if ACK.match(line)]
    assert len(acks) == 1 and re.search(r": holds \(target loss \d+\.\d\d -> \d+\.\d\d after \d+ steps?\)"
                                          r"(, but the answer runs on past the target: '.+' \(.*\))?$", acks[0]), acks
    assert json.loads(cli("audit", "--store", strong, "--json").stdout)["failing"] == []
