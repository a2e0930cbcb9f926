"""State written before the options had namespaces still opens: the committed fixture
(``tests/fixtures/legacy_scopeedit_state``, written by the code of commit 0ebb6cb with its flat
configuration and its string-packed re-edit memory and rehearsal queue) loads, holds the same
memory, and the next edit from it is the one the old code made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import noise_image as image

from editscope.config import ScopeEditConfig
from editscope.editors.recursive import ScopeEdit
from editscope.editors.scopeedit import legacy
from editscope.state_io import CONFIG_FILE, STATE_FILE
from editscope.types import EditRequest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_scopeedit_state"
PROMPT = "what color is the object in the image ?"


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float tolerance: bit for bit only on the kind of CPU the fixture was written on
    (on a CPU with other vector units the same code differs by up to 5e-6 in the writes and 2e-5
    in the logits, measured)."""
    return torch.allclose(a.cpu(), b, atol=1e-4, rtol=1e-4)


@pytest.fixture()
def saved() -> tuple[ScopeEditConfig, dict, dict]:
    info = json.loads((FIXTURE / "state" / CONFIG_FILE).read_text())
    config = ScopeEditConfig.from_dict(info["config"])  # the flat form
    return config, json.loads((FIXTURE / "expected.json").read_text()), load_file(FIXTURE / "state" / STATE_FILE)


def test_the_fixture_is_in_the_old_format(saved) -> None:
    config, _, state = saved
    assert legacy.is_legacy(state)
    assert any(k.startswith("reedit.") for k in state) and any(k.startswith("rehearse.") for k in state)
    assert config.reedit.rule == "replace" and config.rehearsal.write == "topup" and config.stopping.stop_loss == 0.1


def test_old_state_loads_with_its_memory_and_continues_as_the_old_code_did(vlm, saved) -> None:
    config, expected, _ = saved
    editor = ScopeEdit(vlm, config)
    editor.load(FIXTURE / "state")  # the flat config in editor_config.json matches the sections
    facts, queue = editor.options["reedit"].facts, editor.options["rehearsal"].queue
    assert [[k, [[p, b, list(v.shape)] for p, b, v in f.entries()]] for k, f in facts.items()] == expected["facts"]
    assert [[k, scope] for k, (_, scope) in queue.items()] == expected["queue"]
    assert editor.state_bytes() == expected["state_bytes"]
    assert editor.edits_applied == expected["edits_applied"]
    result = editor.edit(EditRequest(prompt=PROMPT, target="pink tree", image=image(1)))
    assert (result.steps, result.rehearsed, list(result.active_groups)) == tuple(
        expected["next_edit"][k] for k in ("steps", "rehearsed", "active_groups"))
    for name in ("loss_before", "loss_after"):
        assert same(torch.tensor(getattr(result, name)), torch.tensor(expected["next_edit"][name])), name
    after = load_file(FIXTURE / "expected_after_next_edit.safetensors")
    for path, site in editor.sites.items():
        for name in ("B_local", "B_shared", "P_local", "P_shared"):
            assert same(getattr(site, name).detach(), after[f"{path}.{name}"]), (path, name)
    assert same(vlm.logits(image(1), PROMPT, "pink tree"), after["logits"])


def test_old_state_saved_again_is_namespaced_and_round_trips(vlm, saved) -> None:
    config, _, state = saved
    editor = ScopeEdit(vlm, config)
    editor.load_state_dict(state)
    again = editor.state_dict()
    assert not legacy.is_legacy(again)
    assert {k.split("/")[0] for k in again if "/" in k} == {"reedit", "rehearsal"}
    migrated = legacy.migrate(state, editor.sites)
    assert set(migrated) == set(again)
    assert all(torch.equal(migrated[k], again[k].to(migrated[k].device)) for k in again if not k.endswith("/index"))
    editor.remove()
    fresh = ScopeEdit(vlm, config)
    fresh.load_state_dict(again)
    assert fresh.state_dict().keys() == again.keys()
    assert all(torch.equal(fresh.state_dict()[k], again[k]) for k in again)


def test_a_broken_old_rehearsal_entry_is_refused(vlm, saved) -> None:
    config, _, state = saved
    del state[next(k for k in state if k.startswith("rehearse.") and k.endswith(".target_ids"))]
    editor = ScopeEdit(vlm, config)
    before = editor.state_dict()
    with pytest.raises(ValueError, match=r"rehearsal entry 0 \(.*\) is incomplete"):
        editor.load_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in editor.state_dict().items())


def test_old_state_of_an_unknown_site_is_refused(vlm, saved) -> None:
    config, _, state = saved
    name = next(k for k in state if k.startswith("reedit."))
    state[name.replace(".model.", ".nowhere.", 1)] = state.pop(name)
    with pytest.raises(ValueError, match="not a re-edit memory entry"):
        ScopeEdit(vlm, config).load_state_dict(state)
