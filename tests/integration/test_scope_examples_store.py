"""Scope examples and scoping rules in a store on the built-in model with ScopeMemory: the
examples journaled and kept by replay, rollback and revert; the audit flagging an edit whose
``never`` example a later edit changed; ``editscope edit --also/--never`` and stream fields;
tag rules deciding the scope, shown by ``editscope log``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from editscope.cli.main import app
from editscope.store import EditStore
from editscope.types import EditRequest
from service_support import copy_store, template_store


def cli(*args: object, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world_files(tmp_path_factory) -> dict:
    """Three test-split records with their edit and rephrase images on disk."""
    from editscope import world as world_module
    from editscope.world.edits import record_images

    root = tmp_path_factory.mktemp("scope-world")
    world = world_module.load_world()
    records = world_module.make_records(world, "test", n=3)
    for record in records:
        for relative, image in record_images(world, record).items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative)
    return {"root": root, "records": records}


@pytest.fixture()
def store_dir(tmp_path, tmp_path_factory) -> Path:
    return copy_store(template_store(tmp_path_factory.getbasetemp()), tmp_path / "store")


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_audit_flags_a_negative_that_a_later_edit_broke(world_files, store_dir):
    root, (first, _, other) = world_files["root"], world_files["records"]
    edit_image, also_image, never_image = root / first["image"], root / first["image_rephrase"], root / other["image"]
    prompt = first["src"]
    with EditStore.open(store_dir) as store:
        before = store.query(never_image, prompt)
        a = store.edit(EditRequest(prompt, first["alt"], image=edit_image, also=[also_image], never=[never_image]))
        assert a.status == "applied", a.error
        assert [e.image_sha256 for e in a.also] == [sha(also_image)]
        assert [(e.image_sha256, e.prompt) for e in a.never] == [(sha(never_image), prompt)]
        assert a.never_before == (before,)
        after_a = {k: v.clone() for k, v in store.editor.state_dict().items()}
        assert store.query(never_image, prompt) == before  # the negative kept its answer
        report = store.audit()
        entry = report.entry(a.id)
        assert [(e.kind, e.holds) for e in entry.examples] == [("also", True), ("never", True)]
        assert entry.scope_holds is True and report.scope_broken == []
        b = store.edit(EditRequest(prompt, "1777", image=never_image, scope="instance"))  # directly on the negative
        assert b.status == "applied", b.error
        assert store.query(never_image, prompt) != before
        report = store.audit()
        assert report.scope_broken == [a.id]
        broken = report.entry(a.id).examples[1]
        assert (broken.kind, broken.holds, broken.before) == ("never", False, before)
        store.rollback(to=a.id)  # the initial snapshot plus the replay of edit A, with its examples
        assert same_state(store.editor.state_dict(), after_a)
        assert store.audit().scope_broken == []
    with EditStore.open(store_dir) as reopened:  # replayed on open
        assert same_state(reopened.editor.state_dict(), after_a)
        assert reopened.audit(record=False).entry(a.id).scope_holds is True


def test_revert_of_the_breaking_edit_restores_the_scope(world_files, store_dir):
    root, (first, _, other) = world_files["root"], world_files["records"]
    never_image, prompt = root / other["image"], first["src"]
    with EditStore.open(store_dir) as store:
        a = store.edit(EditRequest(prompt, first["alt"], image=root / first["image"], never=[never_image]))
        b = store.edit(EditRequest(prompt, "1777", image=never_image, scope="instance"))
        assert (a.status, b.status) == ("applied", "applied"), (a.error, b.error)
        assert store.audit(record=False).scope_broken == [a.id]
        store.revert(b.id)
        assert store.audit(record=False).scope_broken == []
        assert store.get(a.id).never == a.never


def test_cli_edit_with_also_and_never_and_a_stream_with_examples(world_files, store_dir, tmp_path):
    root, (first, second, other) = world_files["root"], world_files["records"]
    prompt = first["src"]
    never_spec = f"{root / other['image']}:{second['src']}"
    result = cli("edit", "--store", store_dir, "--image", root / first["image"], "--prompt", prompt,
                 "--target", first["alt"], "--also", root / first["image_rephrase"], "--never", never_spec,
                 "--tag", "product")
    assert result.exit_code == 0 and "applied edit 1" in result.output, result.output
    missing = cli("edit", "--store", store_dir, "--image", root / first["image"], "--prompt", prompt,
                  "--target", "x", "--never", tmp_path / "gone.png")
    assert missing.exit_code == 1 and "never example 1: image file not found" in missing.output, missing.output
    stream_root = root / "streams"  # the stream's paths are relative to its folder
    stream_root.mkdir(exist_ok=True)
    stream = stream_root / "edits.jsonl"
    stream.write_text(json.dumps({"image": f"../{second['image']}", "prompt": second["src"], "target": second["alt"],
                                  "also": [f"../{second['image_rephrase']}"]}) + "\n")
    result = cli("edit", "--store", store_dir, "--stream", stream)
    assert result.exit_code == 0 and "applied edit 2" in result.output, result.output  # nothing journaled between
    logged = json.loads(cli("log", "--store", store_dir, "--json").stdout)
    assert [r["status"] for r in logged] == ["applied", "applied"]  # the missing example journaled nothing
    one, two = logged
    assert one["also"] == [{"image_sha256": sha(root / first["image_rephrase"]), "prompt": prompt}]
    assert [(n["image_sha256"], n["prompt"]) for n in one["never"]] == [(sha(root / other["image"]), second["src"])]
    assert one["never"][0]["answer_before"]
    assert two["also"] == [{"image_sha256": sha(root / second["image_rephrase"]), "prompt": second["src"]}]
    audit = json.loads(cli("audit", "--store", store_dir, "--json").stdout)
    assert [e["scope_holds"] for e in audit["entries"]] == [True, True] and audit["scope_broken"] == []


def test_tag_rules_decide_the_scope_and_the_log_shows_it(world_files, store_dir):
    root, (first, second, _) = world_files["root"], world_files["records"]
    assert cli("rules", "--store", store_dir, "--tag", "product=instance", "--tag", "safety=broad").exit_code == 0
    result = cli("edit", "--store", store_dir, "--image", root / first["image"], "--prompt", first["src"],
                 "--target", first["alt"], "--tag", "product")
    assert result.exit_code == 0, result.output
    conflict = cli("edit", "--store", store_dir, "--image", root / second["image"], "--prompt", second["src"],
                   "--target", second["alt"], "--tag", "product", "--tag", "safety")
    assert conflict.exit_code == 1
    assert "conflicting scope rules (product: instance, safety: broad)" in conflict.output
    (store_dir / "scope_rules.yaml").write_text("default: [broken\n")
    corrupt = cli("edit", "--store", store_dir, "--image", root / second["image"], "--prompt", second["src"],
                  "--target", second["alt"], "--scope", "auto")
    assert corrupt.exit_code == 1 and "scope_rules.yaml is not valid YAML" in corrupt.output
    lines = cli("log", "--store", store_dir).stdout.splitlines()
    assert len(lines) == 1 and "instance (tag product)" in lines[0]
    audit = cli("audit", "--store", store_dir, "--dry-run")
    assert "scope instance (tag product)" in audit.stdout, audit.output


def test_an_inseparable_negative_is_journaled_rejected_with_the_state_unchanged(world_files, store_dir):
    root, (first, _, _) = world_files["root"], world_files["records"]
    image = root / first["image"]
    with EditStore.open(store_dir) as store:
        before = {k: v.clone() for k, v in store.editor.state_dict().items()}
        record = store.edit(EditRequest(first["src"], first["alt"], image=image, never=[image]))
        assert record.status == "rejected" and "never" in record.error, record.error
        assert same_state(store.editor.state_dict(), before)
        assert store.applied_ids() == []
