"""The options beyond the paper plug into the editor loop through hooks: a configuration with
every option off installs none, the loop calls each hook in order, M-ORE is ScopeEdit without
its shared section, and each option's state lives under its own namespace."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.editors.scopeedit import core
from editscope.editors.scopeedit.core import MORE, ScopeEdit
from editscope.editors.scopeedit.plugin import Hooks, Plugin
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"
REQUEST = EditRequest(prompt=PROMPT, target="green fish", image=image(0))


def test_the_core_module_reads_no_option() -> None:
    assert core.ScopeEdit.__mro__  # the module imports alone
    source = Path(core.__file__).read_text()
    # the loop reads no option's section: every option is reached through the hooks
    assert not re.search(r"config\.(stopping|reedit|rehearsal|prior|history|site_rank)\b", source)
    assert len(source.splitlines()) < 400


def test_the_package_imports_the_editors_not_their_compatibility_module() -> None:
    # editscope.editors.recursive is kept for outside users only
    src = Path(core.__file__).resolve().parents[3]
    users = [str(p.relative_to(src)) for p in src.rglob("*.py")
             if re.search(r"editscope\.editors\.recursive\b|from editscope\.editors import recursive\b", p.read_text())
             and p.name != "recursive.py"]
    assert users == []


def test_installed_options_follow_the_configuration(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    assert editor.options == {} and not any("/" in k for k in editor.state_dict())
    editor.config = load_preset("tiny").replace(reedit="release", stop_loss=0.05, rehearse=1)
    assert list(editor.options) == ["stopping", "reedit", "rehearsal"]


def test_a_new_configuration_keeps_an_installed_options_state(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny").replace(reedit="release"))
    editor.edit(REQUEST)
    reedit = editor.options["reedit"]
    facts = dict(reedit.facts)
    editor.config = editor.config.replace(eta=1.0, reedit_memory=5)
    assert editor.options["reedit"] is reedit and reedit.facts == facts and reedit.config.memory == 5
    editor.config = editor.config.replace(reedit="protect")
    assert "reedit" not in editor.options


class Recorder(Plugin):
    name = "recorder"

    def __init__(self, editor, calls: list) -> None:
        super().__init__(editor, None)
        self.calls = calls

    def before_edit(self, job):
        self.calls.append("before_edit")

    def begin_write(self, job, tx):
        self.calls.append("begin_write")

    def stop(self, loss):
        self.calls.append("stop")
        return False

    def step_scale(self, taken):
        self.calls.append(f"step_scale {taken}")
        return 1.0

    def on_fold(self, job, path, branch, code):
        if self.calls[-1] != f"on_fold {branch}":
            self.calls.append(f"on_fold {branch}")

    def after_steps(self, job, tx):
        self.calls.append("after_steps")

    def commit(self, job):
        self.calls.append("commit")

    def after_edit(self, job):
        self.calls.append("after_edit")
        return 7


def test_the_loop_calls_every_hook_in_order(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny").replace(steps_per_edit=2))
    calls: list[str] = []
    editor.hooks = Hooks([Recorder(editor, calls)])
    result = editor.edit(dataclasses.replace(REQUEST, scope="broad"))
    assert result.rehearsed == 7 and result.steps == 2
    step = lambda k: ["stop", f"step_scale {k}", "on_fold local", "on_fold shared"]  # noqa: E731
    assert calls == ["before_edit", "begin_write", *step(1), *step(2), "after_steps", "commit", "after_edit"]


class Halt(Plugin):
    name = "halt"

    def stop(self, loss):
        return True


def test_a_stopping_hook_ends_the_write_before_any_step(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    editor.hooks = Hooks([Halt(editor, None)])
    result = editor.edit(REQUEST)
    assert result.steps == 0 and result.active_groups == ()
    assert all(not s.B_local.any() for s in editor.sites.values())


@pytest.mark.parametrize("changes", [{}, {"reedit": "replace", "stop_loss": 1e-4, "eta_growth": 1.2}])
def test_more_is_scopeedit_without_its_shared_section(vlm, changes) -> None:
    config = load_preset("tiny").replace(**changes)
    more = MORE(vlm, config)
    a = more.edit(REQUEST)
    states = {p: (s.B_local.clone(), s.P_local.clone()) for p, s in more.sites.items()}
    more.remove()
    single = config.replace(shared=None, method=dataclasses.replace(config.method, rank_local=config.rank))
    alone = ScopeEdit(vlm, single)
    b = alone.edit(REQUEST)
    assert (a.loss_before, a.loss_after, a.steps, a.gates) == (b.loss_before, b.loss_after, b.steps, b.gates) and not b.gates
    for path, site in alone.sites.items():
        assert site.rank_shared == 0
        assert torch.equal(site.B_local, states[path][0]) and torch.equal(site.P_local, states[path][1]), path


def test_an_options_state_needs_that_option(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny").replace(reedit="release"))
    editor.edit(REQUEST)
    state = editor.state_dict()
    assert {k.split("/")[0] for k in state if "/" in k} == {"reedit"}
    editor.remove()
    plain = ScopeEdit(vlm, load_preset("tiny"))
    with pytest.raises(ValueError, match=r"\['reedit'\], options this editor's configuration does not use"):
        plain.load_state_dict(state)
    plain.remove()
    broken = dict(state)
    del broken["reedit/index"]
    again = ScopeEdit(vlm, load_preset("tiny").replace(reedit="release"))
    with pytest.raises(ValueError, match="no readable index"):
        again.load_state_dict(broken)
    assert again.options["reedit"].facts == {} and again.edits_applied == 0
