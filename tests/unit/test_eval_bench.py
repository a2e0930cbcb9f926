"""The bench job's argument handling and editor configs (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from editscope.config import load_preset
from editscope.evaluation.bench import BenchSpec, editor_configs, parse_checkpoints, parse_list


def _spec(tmp_path: Path, **kw) -> BenchSpec:
    values = dict(model="x", data="world:test", out=tmp_path, preset="tiny")
    values.update(kw)
    return BenchSpec(**values)


def test_parse_lists() -> None:
    assert parse_checkpoints("1, 10,100") == (1, 10, 100)
    assert parse_list("scopeedit,lora", "--editors") == ("scopeedit", "lora")
    for bad in ("", "1,x", "0,5", "-1"):
        with pytest.raises(ValueError):
            parse_checkpoints(bad)


def test_spec_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown editor"):
        _spec(tmp_path, editors=("scopeedit", "rome"))
    with pytest.raises(ValueError, match="twice"):
        _spec(tmp_path, editors=("lora", "lora"))
    with pytest.raises(ValueError, match="--edits"):
        _spec(tmp_path, edits=0)
    with pytest.raises(ValueError, match="--facts"):
        _spec(tmp_path, facts=0)


def test_editor_configs_follow_the_preset_and_overrides(tmp_path: Path) -> None:
    preset = load_preset("tiny")
    override = tmp_path / "editors.yaml"
    override.write_text("lora:\n  lr: 0.5\nscopeedit:\n  top_k: 1\n")
    configs = editor_configs(_spec(tmp_path, editors=("scopeedit", "more", "lora", "grace", "none"),
                                   editor_config=str(override)))
    assert configs["scopeedit"].top_k == 1 and configs["more"] == preset
    assert configs["lora"].lr == 0.5
    assert configs["lora"].n_last_layers == preset.n_last_layers  # the sites ScopeEdit uses
    assert configs["lora"].include_projector == preset.include_projector
    override.write_text("lora:\n  learning_rate: 0.5\n")
    with pytest.raises(ValueError, match="unknown LoRAConfig key"):
        editor_configs(_spec(tmp_path, editors=("lora",), editor_config=str(override)))
    override.write_text("scopeedit:\n  etaa: 0.5\n")
    with pytest.raises(ValueError, match="unknown ScopeEditConfig key"):
        editor_configs(_spec(tmp_path, editors=("scopeedit",), editor_config=str(override)))
    override.write_text("- lora\n")
    with pytest.raises(ValueError, match="mapping"):
        editor_configs(_spec(tmp_path, editors=("lora",), editor_config=str(override)))


def test_editor_variants_are_named_kind_at_tag(tmp_path: Path) -> None:
    override = tmp_path / "editors.yaml"
    override.write_text("scopeedit@release:\n  reedit: release\nlora@fast:\n  lr: 0.5\n")
    configs = editor_configs(_spec(tmp_path, editors=("scopeedit", "scopeedit@release", "lora@fast"),
                                   editor_config=str(override)))
    assert configs["scopeedit"].reedit is None and configs["scopeedit@release"].reedit.rule == "release"
    assert configs["lora@fast"].lr == 0.5
    with pytest.raises(ValueError, match="unknown editor"):
        _spec(tmp_path, editors=("rome@fast",))
    with pytest.raises(ValueError, match="tag"):
        _spec(tmp_path, editors=("scopeedit@",))
