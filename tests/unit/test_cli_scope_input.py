"""The command line's scope inputs without a model: ``--also``/``--never IMG[:PROMPT]``, the
stream's ``"also"``/``"never"`` fields and an unstated scope, ``editscope rules`` (show, set,
refuse a bad file) and ``editscope log`` naming the rule that decided each edit's scope."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editscope.cli.errors import CommandError
from editscope.cli.main import app
from editscope.cli.stream_input import example_option, stream_lines
from editscope.store import EditStore
from editscope.types import EditRequest
from scope_fakes import ExampleBackend
from store_fakes import make_checkpoint


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_example_option_splits_image_and_prompt(tmp_path, images):
    assert example_option(str(images[0]), "--also") == (images[0], None)
    assert example_option(f"{images[0]}:What colour: really?", "--also") == (images[0], "What colour: really?")
    odd = tmp_path / "a:b.png"
    odd.write_bytes(images[1].read_bytes())
    assert example_option(str(odd), "--never") == (odd, None)  # an existing path with ':' is a path
    assert example_option(f"{odd}:Which?", "--never") == (odd, "Which?")
    assert example_option("missing.png:Which?", "--never") == (Path("missing.png"), "Which?")
    for bad, problem in [("", "needs an image path"), (":Which?", "image path before ':' is empty"),
                         (f"{images[0]}: ", "prompt after ':' is empty")]:
        with pytest.raises(CommandError, match=problem):
            example_option(bad, "--also")


def test_stream_lines_take_examples_relative_to_the_stream(tmp_path):
    line = json.dumps({"prompt": "p?", "target": "t", "image": "a.png",
                       "also": ["b.png", {"image": "/abs/c.png", "prompt": "q?"}], "never": [{"image": "d.png"}]})
    (parsed,) = stream_lines([line], tmp_path)
    assert parsed.error is None
    request = parsed.request
    assert request.scope is None  # not stated: the store's rules decide
    assert [(e.image, e.prompt) for e in request.also] == [(tmp_path / "b.png", "p?"), (Path("/abs/c.png"), "q?")]
    assert [(e.image, e.prompt) for e in request.never] == [(tmp_path / "d.png", "p?")]
    (defaulted,) = stream_lines([line], tmp_path, scope="broad")
    assert defaulted.request.scope == "broad"


@pytest.mark.parametrize("field, message", [
    ({"also": "b.png"}, "field 'also' must be an array"),
    ({"never": [3]}, "field 'never[0]' must be an image path or an object"),
    ({"never": [{"prompt": "q?"}]}, "field 'never[0].image' is missing"),
    ({"also": [{"image": "b.png", "prompt": ""}]}, "field 'also[0].prompt' is empty"),
    ({"also": [{"image": "b.png", "size": 2}]}, "field 'also[0]' has unknown key(s) ['size']"),
])
def test_bad_example_fields_name_the_line_and_field(tmp_path, field, message):
    line = json.dumps({"prompt": "p?", "target": "t", **field})
    (parsed,) = stream_lines(["", line], tmp_path)
    assert parsed.number == 2 and parsed.error is not None and message in parsed.error


@pytest.fixture
def store_dir(tmp_path, images):
    directory = tmp_path / "store"
    with EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", backend=ExampleBackend()) as store:
        (directory / "scope_rules.yaml").write_text("default: broad\ntags: {product: instance}\n")
        store.edit(EditRequest("p?", "t", image=images[0], never=[images[1]]), tags=["product"])
        store.edit(EditRequest("q?", "u", image=images[1]))
        store.edit(EditRequest("r?", "v", image=images[2], scope="auto"), tags=["product"])
        (directory / "scope_rules.yaml").unlink()
    return directory


def test_log_shows_the_rule_that_decided_each_scope(store_dir):
    result = cli("log", "--store", store_dir)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "instance (tag product)" in lines[0] and "also=0 never=1" in lines[0]
    assert "broad    (default)" in lines[1] and "never=" not in lines[1]
    assert "auto     (stated)" in lines[2]
    assert [line.split()[1] for line in lines] == ["applied"] * 3
    logged = json.loads(cli("log", "--store", store_dir, "--json").stdout)
    assert [r["scope_rule"] for r in logged] == ["tag product", "default", "stated"]
    assert logged[0]["never"][0]["answer_before"] == "slot=0"


def test_rules_command_shows_sets_and_checks_the_rules(store_dir):
    shown = cli("rules", "--store", store_dir)
    assert shown.exit_code == 0 and "default: auto (no default set)" in shown.stdout and "(no tag rules)" in shown.stdout
    changed = cli("rules", "--store", store_dir, "--set-default", "instance", "--tag", "safety=broad", "--tag", "product=instance")
    assert changed.exit_code == 0, changed.output
    assert "tag safety: broad" in changed.stdout and "default: instance" in changed.stdout
    assert json.loads(cli("rules", "--store", store_dir, "--json").stdout) == {
        "default": "instance", "tags": {"product": "instance", "safety": "broad"}}
    removed = cli("rules", "--store", store_dir, "--remove-tag", "product", "--clear-default", "--json")
    assert json.loads(removed.stdout) == {"tags": {"safety": "broad"}}
    for args, problem in [(("--tag", "safety"), "--tag takes TAG=SCOPE"),
                          (("--tag", "safety=wide"), "tag 'safety' has scope 'wide'"),
                          (("--set-default", "wide"), "'default' must be one of"),
                          (("--remove-tag", "gone"), "no scope rule for tag 'gone'")]:
        result = cli("rules", "--store", store_dir, *args)
        assert result.exit_code == 1 and problem in result.output, result.output
    assert json.loads(cli("rules", "--store", store_dir, "--json").stdout) == {"tags": {"safety": "broad"}}


def test_rules_command_names_a_corrupt_file(store_dir, tmp_path):
    path = store_dir / "scope_rules.yaml"
    path.write_text("tags: {product: instance\n")
    result = cli("rules", "--store", store_dir)
    assert result.exit_code == 1
    assert f"error: scope rules {path} is not valid YAML" in result.output
    result = cli("rules", "--store", tmp_path / "nowhere")
    assert result.exit_code == 1 and "is not an editscope store" in result.output
