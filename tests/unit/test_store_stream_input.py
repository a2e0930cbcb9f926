"""The JSONL stream reader of ``editscope edit --stream``: fields checked by type, errors that
name the line and the field (also for bytes that are not UTF-8 and for lone surrogates), and
the edits before a bad line handed to the store (a fake one here: no model)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from editscope.cli.store_commands import CommandError, _run_stream
from editscope.cli.stream_input import stream_requests as _stream_requests
from editscope.store import StoreError
from editscope.types import Score

GOOD = {"prompt": "what is this ?", "target": "a cat"}


class FakeStore:
    """Records what ``_run_stream`` asks it to edit."""

    def __init__(self) -> None:
        self.edits: list[tuple] = []
        # every edit holds: its one target token is the top-1 prediction
        self.editor = SimpleNamespace(score=lambda image, prompt, target: Score((1,), (-0.01,), (1,)),
                                      answer=lambda image, prompt, max_new_tokens: self.answered)
        self.images = None
        self.answered = ""

    def edit(self, request, tags=(), rephrases=(), require_absorbed=False):
        if request.target == "STORE ERROR":
            raise StoreError(f"image file not found: {request.prompt}")
        self.edits.append((request, tuple(tags), tuple(rephrases)))
        # a query of the edit's input answers the target, and more after one whose prompt says so
        self.answered = request.target + ("35 Kreshami" if request.prompt == "runs on ?" else "")
        return SimpleNamespace(
            status="applied", id=len(self.edits), prompt=request.prompt, target=request.target, error=None,
            image_sha256=None, result={"loss_before": 3.0, "loss_after": 0.01, "steps": 5},
        )


def parse(*items) -> list[tuple]:
    lines = [item if isinstance(item, str) else json.dumps(item) for item in items]
    return list(_stream_requests([line + "\n" for line in lines], Path("/base")))


def error_of(*items) -> str:
    with pytest.raises(CommandError) as caught:
        parse(*items)
    return str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tags", "demo", "field 'tags' must be an array of strings, got a string"),
        ("tags", ["ok", 3], "field 'tags[1]' must be a string, got a number"),
        ("tags", {"a": 1}, "field 'tags' must be an array of strings, got an object"),
        ("rephrases", "Where from?", "field 'rephrases' must be an array of strings, got a string"),
        ("rephrases", [None], "field 'rephrases[0]' must be a string, got null"),
        ("rephrases", ["  "], "field 'rephrases[0]' is empty"),
        ("prompt", 5, "field 'prompt' must be a string, got a number"),
        ("prompt", ["what ?"], "field 'prompt' must be a string, got an array"),
        ("target", None, "field 'target' must be a string, got null"),
        ("target", True, "field 'target' must be a string, got a boolean"),
        ("image", 7, "field 'image' must be a string, got a number"),
        ("image", ["a.png"], "field 'image' must be a string, got an array"),
        ("image", "", "field 'image' is empty"),
        ("scope", "wide", "field 'scope' must be one of auto, instance, broad, got 'wide'"),
        ("scope", 1, "field 'scope' must be a string, got a number"),
    ],
)
def test_fields_are_checked_by_type_with_line_and_field(field, value, message):
    error = error_of(GOOD, {**GOOD, field: value})
    assert error.startswith("stream line 2: "), error
    assert message in error, error


def test_missing_prompt_or_target_is_named():
    assert error_of({"target": "x"}) == "stream line 1: field 'prompt' is missing"
    assert error_of({"prompt": "x"}) == "stream line 1: field 'target' is missing"


def test_valid_lines_parse_and_image_may_be_absent_or_null():
    parsed = parse(
        {**GOOD, "tags": ["a", "b"], "rephrases": ["what is it ?"], "scope": "broad", "image": "x/i.png"},
        "",
        {**GOOD, "image": None},
    )
    (n1, r1, t1, p1), (n2, r2, t2, p2) = parsed
    assert (n1, r1.scope, r1.image, t1, p1) == (1, "broad", Path("/base/x/i.png"), ["a", "b"], ["what is it ?"])
    assert (n2, r2.scope, r2.image, t2, p2) == (3, None, None, [], [])  # not stated: the store's rules decide


def test_command_line_options_are_per_line_defaults():
    lines = [json.dumps(GOOD), json.dumps({**GOOD, "scope": "broad", "tags": ["x", "b"], "rephrases": ["own ?"]})]
    parsed = list(_stream_requests(lines, Path("."), scope="instance", tags=["b"], rephrases=["default ?"]))
    assert [(r.scope, t, p) for _, r, t, p in parsed] == [
        ("instance", ["b"], ["default ?"]),
        ("broad", ["b", "x"], ["own ?"]),  # the line's scope and rephrases win; tags are a union
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "what \\ud800 ?", "target": "x"}', "field 'prompt' contains a lone surrogate (U+D800)"),
        ('{"prompt": "what ?", "target": "\\udfff"}', "field 'target' contains a lone surrogate (U+DFFF)"),
        ('{"prompt": "what ?", "target": "x", "tags": ["ok", "\\udc80"]}', "field 'tags[1]' contains a lone surrogate"),
        ('{"prompt": "what ?", "target": "x", "image": "\\ud83d.png"}', "field 'image' contains a lone surrogate"),
    ],
)
def test_lone_surrogates_name_line_and_field(line, message):
    error = error_of(GOOD, line)
    assert error.startswith("stream line 2: ") and message in error, error


def run_file(tmp_path, content: bytes):
    path = tmp_path / "edits.jsonl"
    path.write_bytes(content)
    store = FakeStore()
    with pytest.raises(CommandError) as caught:
        _run_stream(store, str(path))
    return store, str(caught.value)


def test_invalid_utf8_in_a_field_names_line_and_field_and_keeps_earlier_edits(tmp_path, capsys):
    good = json.dumps(GOOD).encode()
    store, error = run_file(tmp_path, good + b"\n" + good + b'\n{"prompt": "what is \xff ?", "target": "x"}\n' + good + b"\n")
    assert error == "stream line 3: field 'prompt' is not valid UTF-8 (invalid byte 0xff)"
    assert len(store.edits) == 2  # the lines before the bad one were applied, the one after was not
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("applied")] == [
        "applied edit 1 (line 1): 'what is this ?' -> 'a cat': holds (target loss 3.00 -> 0.01 after 5 steps)",
        "applied edit 2 (line 2): 'what is this ?' -> 'a cat': holds (target loss 3.00 -> 0.01 after 5 steps)",
    ]


def test_invalid_utf8_outside_a_string_names_the_line(tmp_path):
    good = json.dumps(GOOD).encode()
    store, error = run_file(tmp_path, good + b'\n{"prompt": "a", \xc3"target": "x"}\n')
    assert error.startswith("stream line 2: not valid UTF-8 (invalid byte 0xc3"), error
    assert len(store.edits) == 1


def test_invalid_utf8_on_stdin_names_the_line(monkeypatch):
    import io
    import sys

    good = json.dumps(GOOD).encode()
    stdin = io.TextIOWrapper(io.BytesIO(good + b'\n{"prompt": "a", "target": "\xe9t\xe9"}\n'), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    store = FakeStore()
    with pytest.raises(CommandError, match=r"^stream line 2: field 'target' is not valid UTF-8 \(invalid byte 0xe9\)$"):
        _run_stream(store, "-")
    assert len(store.edits) == 1


def test_keep_going_reports_each_bad_line_with_its_number_and_goes_on(tmp_path, capsys):
    """Issue 22, defect 8: there was no way to go on past a bad line."""
    good = json.dumps(GOOD).encode()
    path = tmp_path / "edits.jsonl"
    path.write_bytes(b"\n".join([
        good, json.dumps({**GOOD, "tags": "demo"}).encode(), good, b'{"prompt": "what is \xff ?", "target": "x"}',
        json.dumps({"prompt": "missing.png", "target": "STORE ERROR"}).encode(), good, b"[1]"]) + b"\n")
    store = FakeStore()
    assert _run_stream(store, str(path), keep_going=True) == 1
    assert len(store.edits) == 3
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if not line.startswith("applied")] == [
        "failed line 2: field 'tags' must be an array of strings, got a string (\"demo\")",
        "failed line 4: field 'prompt' is not valid UTF-8 (invalid byte 0xff)",
        "failed line 5: image file not found: missing.png",
        "failed line 7: expected a JSON object, got an array",
        "done: 3 applied, 0 rejected, 4 line(s) failed",
    ]
    assert [line.split(":")[0] for line in out if line.startswith("applied")] == [
        "applied edit 1 (line 1)", "applied edit 2 (line 3)", "applied edit 3 (line 6)"]


def test_a_stream_exit_code_says_whether_every_line_was_applied(tmp_path):
    path = tmp_path / "edits.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    assert _run_stream(FakeStore(), str(path)) == 0
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"prompt": "x", "target": "STORE ERROR"}) + "\n")
    with pytest.raises(CommandError, match="^stream line 2: image file not found: x$"):
        _run_stream(FakeStore(), str(path))  # without --keep-going the first bad line stops the stream


def test_an_edit_whose_answer_runs_on_past_the_target_is_not_acknowledged_as_plainly_holding(tmp_path, capsys):
    path = tmp_path / "edits.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"prompt": "runs on ?", "target": "1835"}) + "\n")
    assert _run_stream(FakeStore(), str(path)) == 0
    acks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("applied")]
    assert acks[0].endswith("holds (target loss 3.00 -> 0.01 after 5 steps)")
    assert acks[1] == ("applied edit 2 (line 2): 'runs on ?' -> '1835': holds (target loss 3.00 -> 0.01 after 5 "
                       "steps), but the answer runs on past the target: '183535 Kreshami' (every target token is "
                       "top-1; the editor did not learn where the answer ends)")


def test_query_with_an_undecodable_prompt_is_an_error_naming_the_option(tmp_path):
    """``--prompt $'\\xff'`` arrives as a lone surrogate: refused before any store or model is
    opened, naming the option (it was the tokenizer's TypeError)."""
    from typer.testing import CliRunner

    from editscope.cli.main import app

    result = CliRunner().invoke(app, ["query", "--store", str(tmp_path / "none"), "--prompt", "\udcff"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: --prompt '\\udcff' is not valid Unicode (surrogates not allowed: "
                                     "U+DCFF); the model cannot read it")
