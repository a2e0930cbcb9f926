"""Property-based tests (hypothesis) of the JSONL stream reader and of the store's request
validation: arbitrary JSON values in every field, and arbitrary bytes, give either a valid
edit or a clear error naming the line and the field: never a traceback, and never a changed
store. On the fake editor (no model), few examples, no deadline."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from editscope.cli.errors import CommandError
from editscope.cli.stream_input import STREAM_KEYS, stream_lines, stream_requests
from editscope.store import EditStore, StoreError
from editscope.types import SCOPES, EditRequest
from store_fakes import FakeBackend, make_checkpoint

BACKEND = FakeBackend()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text with every code point, lone surrogates included (as JSON "\ud800" escapes give them).
TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)
# Values near the valid ones are drawn often, so that valid edits are drawn too.
FIELD = st.one_of(JSON, TEXT, st.sampled_from([*SCOPES, "a cat", "what is this ?"]), st.lists(TEXT, max_size=3))
KEYS = st.sampled_from([*sorted(STREAM_KEYS), "prompt", "target", "colour"])
LINE = st.dictionaries(KEYS, FIELD, max_size=7)


def _error_names_a_field_of(error: str, item: object) -> bool:
    if not isinstance(item, dict):
        return error.startswith("expected a JSON object, got ")
    if error.startswith("unknown key(s) "):
        return bool(set(item) - STREAM_KEYS)
    if error.startswith("field 'prompt' is missing") or error.startswith("field 'target' is missing"):
        return error.split("'")[1] not in item
    if error.startswith("field '"):
        named = error.split("'")[1].split("[")[0]
        return any(named in (key, repr(key)[1:-1]) for key in item)  # a key is named as repr() shows it
    return False


@SETTINGS
@given(item=st.one_of(LINE, JSON))
@example(item={"prompt": "0", "target": "0"})  # no scope stated
@example(item={"prompt": "0", "target": "0", "scope": "image"})
@example(item={"\ud800": None})  # a key that is not valid Unicode
def test_any_json_line_is_a_valid_edit_or_an_error_naming_its_field(item):
    text = json.dumps(item)
    (line,) = list(stream_lines([text.encode("utf-8", "surrogatepass")], Path("/base")))
    assert line.number == 1
    if line.error is not None:
        assert line.request is None and _error_names_a_field_of(line.error, item), (item, line.error)
        with pytest.raises(CommandError, match=r"^stream line 1: "):
            list(stream_requests([text], Path("/base")))
        return
    assert isinstance(item, dict) and line.request.prompt == item["prompt"] and line.request.target == item["target"]
    assert line.request.scope == (item.get("scope") or None)  # no scope stated: the store's rules decide
    assert all(isinstance(t, str) and t.strip() for t in [*line.tags, *line.rephrases])
    for value in (line.request.prompt, line.request.target, *line.tags, *line.rephrases):
        value.encode("utf-8")  # only valid Unicode gets through


@SETTINGS
@given(raw=st.lists(st.binary(max_size=30), max_size=4))
def test_any_bytes_are_read_line_by_line_without_a_traceback(raw):
    lines = list(stream_lines(raw, Path("/base")))
    def blank(chunk: bytes, number: int) -> bool:
        if number == 1 and chunk.startswith(b"\xef\xbb\xbf"):  # a byte-order mark
            chunk = chunk[3:]
        return not chunk.decode("utf-8", "surrogateescape").strip()

    assert [line.number for line in lines] == [n for n, chunk in enumerate(raw, start=1) if not blank(chunk, n)]
    assert all((line.error is None) != (line.request is None) for line in lines)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("properties")
    with EditStore.init(root / "store", make_checkpoint(root / "base", seed=1), "tiny", snapshot_every=1000,
                        backend=BACKEND, editor="scopeedit") as opened:
        yield opened


def _rows(directory: Path) -> list[tuple]:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in ("edits", "edit_tags", "events")]


@SETTINGS
@given(item=LINE)
@example(item={"prompt": "0", "target": "0", "also": ["0"]})  # examples the fake editor refuses
def test_a_stream_line_gives_an_edit_or_a_clear_error_and_never_a_changed_store(store, item):
    (line,) = list(stream_lines([json.dumps(item).encode("utf-8", "surrogatepass")], store.directory))
    if line.error is not None:
        return
    before = _rows(store.directory)
    try:
        record = store.edit(line.request, tags=line.tags, rephrases=line.rephrases)
    except StoreError as error:  # an image that is not there, or examples this editor refuses: named, nothing written
        examples = bool(line.request.also or line.request.never)
        assert "image" in str(error) or (examples and "scope examples" in str(error)), error
        assert _rows(store.directory) == before
        return
    assert record.status in ("applied", "rejected") and record.prompt == line.request.prompt


@SETTINGS
@given(prompt=FIELD, target=FIELD, scope=FIELD, tags=st.lists(FIELD, max_size=3), rephrases=st.lists(FIELD, max_size=2))
def test_store_requests_are_validated_field_by_field(store, prompt, target, scope, tags, rephrases):
    try:
        request = EditRequest(prompt=prompt, target=target, scope=scope)
    except (TypeError, ValueError) as error:
        assert str(error).startswith(("EditRequest.prompt", "EditRequest.target", "EditRequest.scope")), error
        return
    before = _rows(store.directory)
    try:
        record = store.edit(request, tags=tags, rephrases=rephrases)
    except StoreError as error:
        assert str(error).startswith(("the edit's prompt", "the edit's target", "the edit's tag",
                                      "the edit's rephrase")), error
        assert _rows(store.directory) == before
        return
    assert record.status in ("applied", "rejected")
    assert record.tags == tuple(sorted(set(tags))) and record.rephrases == tuple(rephrases)
