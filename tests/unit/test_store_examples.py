"""Scope examples and scoping rules in the store, on a fake editor that takes examples: the
examples journaled (images by hash, the never examples' answers before the edit), replay and
revert rebuilding requests with them, the audit of scope, the rules file deciding the scope,
conflicts and bad files refused with nothing journaled, and older journals migrated."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from editscope.store import EditStore, StoreError
from editscope.store import journal as jr
from editscope.store.integrity import GENESIS, chain_link, edit_checksum
from editscope.store.rules import ScopeRuleConflict, ScopeRules, load_rules, save_rules, updated
from editscope.types import EditRequest
from scope_fakes import ExampleBackend, ExampleEditor
from store_fakes import make_checkpoint

BACKEND = ExampleBackend()
PROMPT = "What is shown?"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(directory: Path) -> list[tuple]:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        return conn.execute("SELECT * FROM edits ORDER BY id").fetchall()


@pytest.fixture
def store_dir(tmp_path):
    directory = tmp_path / "store"
    EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", snapshot_every=3,
                   backend=BACKEND).close()
    return directory


def open_store(directory: Path, **kwargs) -> EditStore:
    return EditStore.open(directory, backend=BACKEND, **kwargs)


def test_examples_are_journaled_by_hash_with_the_never_answers_before(store_dir, images):
    with open_store(store_dir) as store:
        before = store.query(images[2], "Which colour?")
        record = store.edit(EditRequest(PROMPT, "red thing", image=images[0], also=[images[1]],
                                        never=[(images[2], "Which colour?")]))
        assert record.status == jr.APPLIED
        assert [(e.image_sha256, e.prompt) for e in record.also] == [(sha(images[1]), PROMPT)]
        assert [(e.image_sha256, e.prompt) for e in record.never] == [(sha(images[2]), "Which colour?")]
        assert record.never_before == (before,)
        assert store.images.contains(sha(images[1])) and store.images.contains(sha(images[2]))
        view = record.to_dict()
        assert view["never"][0]["answer_before"] == before and view["scope_rule"] == "none"
        # the positive follows the edit (the fake writes its slot), the negative kept its answer
        assert store.editor.score(images[1], PROMPT, "red thing").token_accuracy == 1.0
        assert store.query(images[2], "Which colour?") == before


def test_replay_on_open_rebuilds_the_requests_with_their_examples(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(EditRequest(PROMPT, "red thing", image=images[0], also=[images[1]], never=[images[2]]))
    ExampleEditor.requests.clear()
    with open_store(store_dir) as store:  # no snapshot covers the edit: it is replayed
        assert len(ExampleEditor.requests) == 1
        replayed = ExampleEditor.requests[0]
        assert [sha(Path(e.image)) for e in replayed.also] == [sha(images[1])]
        assert [(sha(Path(e.image)), e.prompt) for e in replayed.never] == [(sha(images[2]), PROMPT)]
        assert store.editor.score(images[1], PROMPT, "red thing").token_accuracy == 1.0


def test_revert_and_rollback_replay_the_other_edits_with_their_examples(store_dir, images):
    with open_store(store_dir) as store:
        first = store.edit(EditRequest(PROMPT, "red thing", image=images[0], also=[images[1]]))
        second = store.edit(EditRequest("Other?", "blue thing", image=images[2]))
        ExampleEditor.requests.clear()
        store.revert(second.id)  # the initial snapshot plus the replay of the first edit
        assert [len(r.also) for r in ExampleEditor.requests] == [1]
        assert store.editor.score(images[1], PROMPT, "red thing").token_accuracy == 1.0
        store.edit(EditRequest("Third?", "green thing", image=images[1]))
        ExampleEditor.requests.clear()
        store.rollback(to=first.id)
        assert [len(r.also) for r in ExampleEditor.requests] == [1]
        assert store.editor.score(images[1], PROMPT, "red thing").token_accuracy == 1.0


def test_the_audit_reports_a_negative_a_later_edit_broke(store_dir, images):
    with open_store(store_dir) as store:
        first = store.edit(EditRequest(PROMPT, "red thing", image=images[0], also=[images[1]], never=[images[2]]))
        report = store.audit()
        entry = report.entry(first.id)
        assert entry.scope_holds is True and report.scope_broken == []
        assert [(e.kind, e.holds) for e in entry.examples] == [("also", True), ("never", True)]
        store.edit(EditRequest("Unrelated?", "green thing", image=images[1]))  # leaves the negative alone
        assert store.audit(record=False).scope_broken == []
        later = store.edit(EditRequest(PROMPT, "blue thing", image=images[2]))  # directly on the negative
        report = store.audit()
        assert report.scope_broken == [first.id]
        broken = report.entry(first.id).examples[1]
        assert broken.kind == "never" and not broken.holds and broken.before != broken.now
        assert report.entry(later.id).scope_holds is None  # no examples: nothing to check
        payload = store.audits()[-1].payload
        assert payload["scope_broken"] == [first.id]
        assert payload["entries"][0]["scope_holds"] is False


def test_the_audit_reports_a_positive_that_no_longer_follows(store_dir, images):
    with open_store(store_dir) as store:
        first = store.edit(EditRequest(PROMPT, "red thing", image=images[0], also=[images[1]]))
        store.edit(EditRequest(PROMPT, "green thing", image=images[1]))  # the positive now answers otherwise
        report = store.audit(record=False)
        assert report.scope_broken == [first.id]
        assert report.entry(first.id).examples[0].token_accuracy == 0.0


def test_tag_rules_and_the_default_decide_an_unstated_scope(store_dir, images):
    (store_dir / "scope_rules.yaml").write_text("default: broad\ntags:\n  product: instance\n  catalog: instance\n")
    with open_store(store_dir) as store:
        tagged = store.edit(EditRequest(PROMPT, "a", image=images[0]), tags=["product"])
        both = store.edit(EditRequest(PROMPT, "b", image=images[1]), tags=["product", "catalog"])
        untagged = store.edit(EditRequest(PROMPT, "c", image=images[2]), tags=["other"])
        stated = store.edit(EditRequest(PROMPT, "d", image=images[0], scope="auto"), tags=["product"])
        assert (tagged.scope, tagged.scope_rule) == ("instance", "tag product")
        assert (both.scope, both.scope_rule) == ("instance", "tags catalog, product")
        assert (untagged.scope, untagged.scope_rule) == ("broad", "default")
        assert (stated.scope, stated.scope_rule) == ("auto", "stated")
    (store_dir / "scope_rules.yaml").unlink()
    with open_store(store_dir) as store:
        none = store.edit(EditRequest(PROMPT, "e", image=images[1]), tags=["product"])
        assert (none.scope, none.scope_rule) == ("auto", "none")
        # the journal keeps what decided each edit: the rules file going does not change them
        assert [r.scope_rule for r in store.log()][:2] == ["tag product", "tags catalog, product"]


def test_conflicting_tag_rules_are_refused_with_nothing_journaled(store_dir, images):
    (store_dir / "scope_rules.yaml").write_text("tags: {product: instance, safety: broad}\n")
    with open_store(store_dir) as store:
        before = rows(store_dir)
        with pytest.raises(ScopeRuleConflict, match=r"product: instance, safety: broad.*state its scope") as caught:
            store.edit(EditRequest(PROMPT, "a", image=images[0], never=[images[1]]), tags=["safety", "product"])
        assert isinstance(caught.value, ValueError)
        assert rows(store_dir) == before
        assert not store.images.contains(sha(images[0]))
        explicit = store.edit(EditRequest(PROMPT, "a", image=images[0], scope="broad"), tags=["safety", "product"])
        assert (explicit.scope, explicit.scope_rule) == ("broad", "stated")


@pytest.mark.parametrize("text, problem", [
    ("default: [unclosed\n", "not valid YAML"),
    ("default: wide\n", "'default' must be one of auto, instance, broad, got 'wide'"),
    ("tags:\n  product: narrow\n", "tag 'product' has scope 'narrow'"),
    ("tags: [product]\n", "'tags' must be a mapping"),
    ("defaults: auto\n", "unknown key"),
    ("- auto\n", "expected a mapping"),
])
def test_a_bad_rules_file_is_an_error_naming_it(store_dir, images, text, problem):
    path = store_dir / "scope_rules.yaml"
    path.write_text(text)
    with pytest.raises(StoreError, match="scope rules") as caught:
        load_rules(store_dir)
    assert str(path) in str(caught.value) and problem in str(caught.value)
    with open_store(store_dir) as store:
        before = rows(store_dir)
        with pytest.raises(StoreError, match="scope_rules.yaml"):
            store.edit(EditRequest(PROMPT, "a", image=images[0]))
        assert rows(store_dir) == before


def test_rules_update_and_save_round_trip(store_dir):
    rules = updated(ScopeRules(), default="instance", set_tags={"safety": "broad", "product": "instance"})
    save_rules(store_dir, updated(rules, remove_tags=["product"]))
    assert load_rules(store_dir) == ScopeRules("instance", {"safety": "broad"})
    with pytest.raises(StoreError, match="no scope rule for tag 'missing'"):
        updated(rules, remove_tags=["missing"])
    with pytest.raises(StoreError, match="tag 'x' has scope 'wide'"):
        updated(rules, set_tags={"x": "wide"})
    assert updated(rules, clear_default=True).default is None


def test_a_missing_example_image_names_the_example_and_stores_nothing(store_dir, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with open_store(store_dir) as store:
        before = rows(store_dir)
        with pytest.raises(StoreError, match=r"never example 2: image file not found: .*gone\.png"):
            store.edit(EditRequest(PROMPT, "a", image=images[0], never=[images[1], tmp_path / "gone.png"]))
        with pytest.raises(StoreError, match=r"also example 1: cannot read image .*broken\.png"):
            store.edit(EditRequest(PROMPT, "a", image=images[0], also=[broken]))
        assert rows(store_dir) == before
        assert not store.images.contains(sha(images[0])) and not store.images.contains(sha(images[1]))


def test_an_editor_without_examples_refuses_them_before_journaling(tmp_path, images):
    directory = tmp_path / "plain"
    EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", backend=BACKEND,
                   editor="plain").close()
    with open_store(directory) as store:
        with pytest.raises(StoreError, match="does not take scope examples"):
            store.edit(EditRequest(PROMPT, "a", image=images[0], also=[images[1]]))
        assert rows(directory) == []
        assert store.edit(EditRequest(PROMPT, "a", image=images[0])).status == jr.APPLIED


def test_changing_a_rows_scoping_breaks_its_integrity_check(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(EditRequest(PROMPT, "a", image=images[0], never=[images[1]]))
    with sqlite3.connect(store_dir / "journal.sqlite") as conn:
        conn.execute("UPDATE edits SET scoping = replace(scoping, '\"none\"', '\"stated\"')")
    with pytest.raises(StoreError, match="edit 1 fails its integrity check"):
        open_store(store_dir, load_model=False)


def _old_style_journal(directory: Path) -> None:
    """Turn the journal into one an editscope without the scoping column wrote: the column
    dropped, and one edit row chained as that version chained it."""
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        conn.execute("ALTER TABLE edits DROP COLUMN scoping")
        values = ["2026-01-01T00:00:00+00:00", "Old?", "old thing", "auto", None, "[]", "[]", "h"]
        conn.execute("INSERT INTO edits (id, created_at, prompt, target, scope, image_sha256, rephrases, anchors,"
                     " config_hash, updated_at, status) VALUES (1,?,?,?,?,?,?,?,?,?,?)",
                     (*values, values[0], "rejected"))
        chain = chain_link("edits", GENESIS, (1, *values))
        conn.execute("UPDATE edits SET chain = ?, checksum = ? WHERE id = 1",
                     (chain, edit_checksum(chain, ("rejected", values[0], None, None))))


def test_an_older_journal_reads_and_gets_the_scoping_column_when_written(store_dir, images):
    _old_style_journal(store_dir)
    with EditStore.open(store_dir, load_model=False, read_only=True) as reader:
        old = reader.get(1)
        assert old.scope_rule is None and old.also == () and old.never == ()
    with open_store(store_dir) as store:  # opened for writing: migrated
        assert [e.payload for e in store.journal.events("migrate")] == [
            {"added": "scoping (scope rules and examples)"}]
        assert store.get(1).scope_rule is None
        new = store.edit(EditRequest(PROMPT, "a", image=images[0], never=[images[1]]))
        assert new.never and new.scope_rule == "none"
    with open_store(store_dir, load_model=False) as again:
        again.journal.verify()
        assert len(again.journal.events("migrate")) == 1


def test_check_reports_a_bad_rules_file_and_a_missing_example_image(store_dir, images):
    from editscope.store.check import check_store

    with open_store(store_dir) as store:
        record = store.edit(EditRequest(PROMPT, "a", image=images[0], never=[images[1]]))
    assert check_store(store_dir).problems == []
    store_path = store_dir / "images" / record.never[0].image_sha256[:2] / record.never[0].image_sha256
    store_path.unlink()
    (store_dir / "scope_rules.yaml").write_text("default: everywhere\n")
    problems = check_store(store_dir).problems
    assert {p.file for p in problems} >= {"scope_rules.yaml"}
    assert any(record.never[0].image_sha256 in p.what and "edit(s) 1" in p.affects for p in problems)
