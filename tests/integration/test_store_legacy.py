"""A store written before the sectioned configuration and the namespaced editor state still
opens: the committed fixture ``tests/fixtures/legacy_store`` (built by
``scripts/make_legacy_store.py`` with the code of commit 0ebb6cb: a flat config in ``store.json``,
``reedit.``/``rehearse.`` string keys in its snapshots, the reference prior folded in its initial
snapshot) checks clean, opens, reads as the old code read it, and its next edit is journaled as
the old code journaled it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from store_support import make_images, save_tiny_checkpoint

from editscope.store import EditStore
from editscope.store.check import check_store
from editscope.types import EditRequest, EditResult

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_store"


@pytest.fixture(scope="module")
def old():
    return {"plan": json.loads((FIXTURE / "plan.json").read_text()),
            "expected": json.loads((FIXTURE / "expected.json").read_text()),
            "tensors": load_file(FIXTURE / "expected.safetensors")}


@pytest.fixture()
def world(tmp_path):
    """A copy of the fixture store, the tiny checkpoint it was made on (rebuilt: opening checks
    its fingerprint) and the images."""
    shutil.copytree(FIXTURE / "store", tmp_path / "store")
    return {"store": tmp_path / "store", "base": save_tiny_checkpoint(tmp_path / "base"),
            "images": make_images(tmp_path / "images")}


def logits(editor, images, plan) -> tuple[str, torch.Tensor]:
    """As the old script computed them: the sha256 of the probes' full logits and each probe's
    last position."""
    probes = [(images[i], prompt, target) for i, (prompt, target) in enumerate(plan["edits"])]
    rows = [editor.logits(*probe) for probe in [*probes, (None, *plan["text_probe"])]]
    full = torch.cat([r.reshape(-1) for r in rows]).contiguous()
    return hashlib.sha256(full.numpy().tobytes()).hexdigest(), torch.stack([r[-1] for r in rows])


def answers(store, images, plan) -> list[str]:
    return [store.query(None if i is None else images[i], prompt) for i, prompt in plan["queries"]]


def same_logits(got: tuple[str, torch.Tensor], sha: str, last: torch.Tensor) -> None:
    """Bit-exact on the machine that wrote the fixture (the SHA-256 of every logit); on another
    CPU, whose float kernels may round differently, the last positions within float32 noise."""
    if got[0] != sha:
        torch.testing.assert_close(got[1], last, rtol=1e-4, atol=1e-4)


def rounded(value):
    """``value`` with every float to 4 significant digits (another CPU's last bits differ)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def without_wall_time(result: dict) -> dict:
    return rounded({k: v for k, v in result.items() if k != "wall_time_s"})


def test_the_fixture_is_in_the_old_format() -> None:
    manifest = json.loads((FIXTURE / "store" / "store.json").read_text())
    config = manifest["editor"]["config"]
    assert (config["reedit"], config["rehearse"], config["stop_loss"], config["reference_weight"]) == \
        ("release", 1, 0.1, 2.0)  # flat keys, no sections
    assert not any(isinstance(v, dict) for v in config.values())
    (four,) = (FIXTURE / "store" / "snapshots").glob("four-*.safetensors")
    keys = load_file(four).keys()
    assert any(k.startswith("reedit.") for k in keys) and any(k.startswith("rehearse.") for k in keys)


def test_old_store_checks_clean_opens_and_continues_as_the_old_code_did(world, old) -> None:
    plan, expected, tensors = old["plan"], old["expected"], old["tensors"]
    assert check_store(world["store"]).problems == []
    with EditStore.open(world["store"], world["base"]) as store:
        config = store.editor.config
        assert (config.reedit.rule, config.reedit.memory, config.rehearsal.count, config.stopping.stop_loss,
                config.prior.weight) == ("release", 3, 1, 0.1, 2.0)  # the flat form, migrated
        # the journal reads as written, and its results as EditResult
        results = [r.result for r in store.log()]
        assert results == expected["results"]
        assert [EditResult.from_dict(r).to_dict() for r in results] == expected["results"]
        # the state the old code had after four edits (the snapshot "four")
        same_logits(logits(store.editor, world["images"], plan), expected["logits_sha256"], tensors["logits"])
        assert answers(store, world["images"], plan) == expected["answers"]
        assert store.editor.state_bytes() == expected["state_bytes"]
        # one more edit (a re-edit, with rehearsal) journals what the old code journaled
        nxt = plan["next_edit"]
        record = store.edit(EditRequest(nxt["prompt"], nxt["target"], image=world["images"][nxt["image"]]))
        assert (record.id, record.status) == (expected["next_edit"]["id"], expected["next_edit"]["status"])
        assert without_wall_time(record.result) == without_wall_time(expected["next_edit"]["result"])
        after = (expected["logits_sha256_after_next_edit"], tensors["logits_after_next_edit"])
        same_logits(logits(store.editor, world["images"], plan), *after)
        assert answers(store, world["images"], plan) == expected["answers_after_next_edit"]
        assert store.editor.state_bytes() == expected["state_bytes_after_next_edit"]
    assert check_store(world["store"]).problems == []
    # reopened: the old snapshot plus the new edit replayed by today's code
    with EditStore.open(world["store"], world["base"]) as store:
        same_logits(logits(store.editor, world["images"], plan), *after)
