"""The sectioned ScopeEditConfig: one section for the method, one for the shared branch and one
per option beyond the paper (None: as in the paper); each section checks its own values; the
flat form of earlier versions (stores, saved editors, results files) still loads; the
configuration reference is generated from the fields' help text."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from editscope.config import SECTIONS, MethodConfig, ScopeEditConfig, SharedConfig, config_reference, load_preset
from editscope.editors.registry import make_config, reference_size
from editscope.editors.scopeedit.prior import PriorConfig
from editscope.editors.scopeedit.reedit import ReeditConfig
from editscope.editors.scopeedit.rehearsal import RehearsalConfig
from editscope.editors.scopeedit.stopping import StoppingConfig

ROOT = Path(__file__).resolve().parents[2]
# presets/builtin.yaml as the flat form had it (before the sections), and its fingerprint then
BUILTIN_FLAT = """
rank_local: 192
rank_shared: 64
alpha: 512
top_k: 3
eta: 0.1
lambda_local: 2000.0
n_last_layers: 4
include_projector: false
projector_eta: 0.0001
tau: 0.2
beta: 10
eta_shared: 0.1
lambda_shared: 1.0
shared_layers: 2
steps_per_edit: 30
stop_loss: 0.1
eta_growth: 1.1
reedit: replace
code_norm: false
reference_weight: 100000.0
reference_size: 256
rehearse: 1
rehearse_write: topup
rehearse_steps: 5
"""
BUILTIN_FINGERPRINT = "cb141f53bbfdf732"


def every_section_on() -> ScopeEditConfig:
    return ScopeEditConfig(
        method=MethodConfig(rank_local=8), shared=SharedConfig(rank_shared=4),
        stopping=StoppingConfig(stop_loss=0.2, eta_growth=1.5), reedit=ReeditConfig(rule="replace", memory=9),
        rehearsal=RehearsalConfig(count=2, loss=0.5, write="topup", steps=3), prior=PriorConfig(weight=7.0, size=3),
    )


def test_the_paper_is_every_option_off() -> None:
    config = ScopeEditConfig()
    assert config.shared == SharedConfig() and config.method == MethodConfig()
    assert all(getattr(config, name) is None for name in SECTIONS if name not in ("method", "shared"))
    assert (config.rank, config.scaling) == (512, 2.0)
    more = config.replace(shared=None)
    assert (more.rank, more.scaling) == (448, 1024 / 448)


def test_the_old_flat_builtin_preset_is_the_sectioned_one() -> None:
    flat = ScopeEditConfig.from_dict(yaml.safe_load(BUILTIN_FLAT))
    shipped = load_preset("builtin")
    assert flat == shipped
    assert shipped.fingerprint() == BUILTIN_FINGERPRINT  # the flat form's fingerprint, unchanged
    assert shipped.stopping == StoppingConfig(stop_loss=0.1, eta_growth=1.1)
    assert shipped.reedit == ReeditConfig(rule="replace")
    assert shipped.rehearsal == RehearsalConfig(count=1, write="topup", steps=5)
    assert shipped.prior == PriorConfig(weight=100000.0, size=256)
    assert not hasattr(shipped, "history") and "site_rank" not in shipped.to_dict()  # removed options
    assert shipped.to_flat() == {**ScopeEditConfig().to_flat(), **yaml.safe_load(BUILTIN_FLAT)}


def test_results_written_by_the_flat_version_still_load() -> None:
    results = json.loads((ROOT / "docs/results/world-test-1000/merged/results.json").read_text())
    for name in ("scopeedit", "more"):
        saved = results["editors"][name]["config"]["config"]
        assert "rank_shared" in saved and "method" not in saved  # the flat form
        config = make_config(name, saved)
        assert config.to_flat() == saved
        assert reference_size(config) == 256
    assert make_config("scopeedit", results["editors"]["scopeedit"]["config"]["config"]) == load_preset("builtin")
    assert make_config("more", results["editors"]["more"]["config"]["config"]).method.rank_local == 128


def test_every_section_round_trips_through_plain_data_and_the_flat_form() -> None:
    config = every_section_on()
    assert ScopeEditConfig.from_dict(config.to_dict()) == config
    assert ScopeEditConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ScopeEditConfig.from_flat(config.to_flat()) == config
    assert ScopeEditConfig.normalise(config.to_flat()) == config.to_dict()
    off = ScopeEditConfig(shared=None)
    assert ScopeEditConfig.from_flat(off.to_flat()) == off and off.to_flat()["rank_shared"] == 0


def test_flat_keys_change_sections_and_read_back() -> None:
    config = load_preset("tiny").replace(stop_loss=0.3, reedit="release", rehearse=1, rehearse_steps=2)
    assert config.stopping == StoppingConfig(stop_loss=0.3)
    assert config.reedit == ReeditConfig(rule="release") and config.rehearsal == RehearsalConfig(steps=2)
    assert (config.stop_loss, config.reedit_memory, config.rehearse_write, config.rank_local) == (0.3, 4096, "replace", 12)
    assert config.replace(rehearse=0).rehearsal is None  # the flat "off" value takes the section out
    assert config.replace(rehearse=0, stop_loss=0.0).stopping is None
    with pytest.raises(ValueError, match="rehearsal needs"):
        config.replace(stop_loss=0.0)  # rehearsal needs a stopping loss
    # sections as data, and the bench's merge of sections with flat overrides
    grown = config.replace(stopping={"stop_loss": 0.3, "eta_growth": 2.0})
    assert grown.stopping == StoppingConfig(stop_loss=0.3, eta_growth=2.0) and grown.rehearsal == config.rehearsal
    merged = ScopeEditConfig.from_dict({**load_preset("builtin").to_dict(), "rank_local": 128, "alpha": 384})
    assert (merged.method.rank_local, merged.method.alpha, merged.prior.weight) == (128, 384, 100000.0)
    with pytest.raises(AttributeError):
        config.no_such_key


@pytest.mark.parametrize("build, match", [
    (lambda: StoppingConfig(), "changes nothing"),
    (lambda: StoppingConfig(stop_loss=-1.0), "stopping.stop_loss"),
    (lambda: ReeditConfig(rule="protect"), "reedit.rule"),
    (lambda: ReeditConfig(memory=-1), "reedit.memory"),
    (lambda: RehearsalConfig(count=0), "rehearsal.count"),
    (lambda: RehearsalConfig(write="append"), "rehearsal.write"),
    (lambda: PriorConfig(weight=0.0), "prior.weight"),
    (lambda: PriorConfig(size=0), "prior.size"),
    (lambda: SharedConfig(rank_shared=0), "shared.rank_shared"),
    (lambda: MethodConfig(basis="pca"), "method.basis"),
    (lambda: ScopeEditConfig(rehearsal=RehearsalConfig()), "rehearsal needs"),
    (lambda: ScopeEditConfig(reedit=ReeditConfig(), rehearsal=RehearsalConfig()), "rehearsal needs"),
    (lambda: ScopeEditConfig(reedit=ReeditConfig(), stopping=StoppingConfig(eta_growth=2.0),
                             rehearsal=RehearsalConfig()), "rehearsal needs"),
    (lambda: ScopeEditConfig(method=MethodConfig(rank_local=4, basis="nested")), "nested basis"),
    (lambda: ScopeEditConfig(stopping={"stop_loss": 0.1}), "StoppingConfig"),
])
def test_each_section_checks_its_own_values_and_requirements(build, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_a_rehearsal_with_its_requirements_is_accepted() -> None:
    config = ScopeEditConfig(reedit=ReeditConfig(), stopping=StoppingConfig(stop_loss=0.1), rehearsal=RehearsalConfig())
    assert config.rehearse == 1


def test_flat_errors_name_the_flat_key() -> None:
    with pytest.raises(ValueError, match=r"rehearsal\.write .*\(flat key rehearse_write\)"):
        load_preset("builtin").replace(rehearse_write="append")
    with pytest.raises(ValueError, match=r"prior\.size .*\(flat key reference_size\)"):
        load_preset("tiny").replace(reference_size=0)  # checked though the prior is off


def test_unknown_keys_are_rejected_with_the_section_named(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  rank_local: 8\nstopping:\n  stop_los: 0.1\n")
    with pytest.raises(ValueError, match=r"ScopeEditConfig.stopping key\(s\) \['stop_los'\]"):
        ScopeEditConfig.from_file(path)
    path.write_text("methods:\n  rank_local: 8\n")
    with pytest.raises(ValueError, match="methods"):
        ScopeEditConfig.from_file(path)


def test_presets_use_the_sections_and_hold_no_tuning_history() -> None:
    root = resources.files("editscope") / "presets"
    for entry in root.iterdir():
        if not entry.name.endswith(".yaml"):
            continue
        text = entry.read_text()
        assert set(yaml.safe_load(text)) <= set(SECTIONS), entry.name
        assert "round" not in text.lower(), entry.name  # tuning history lives in docs/results/tuning.md


REMOVED_AT_THE_PAPER = {"history_fold": "step", "history_weight": 1.0, "history_codes": "mean",
                        "history_sites": "active", "site_rank": "fixed"}


def test_removed_options_load_at_the_paper_value_and_are_written_back_in_the_flat_form() -> None:
    builtin = load_preset("builtin")
    assert ScopeEditConfig.from_dict({**builtin.to_flat(), **REMOVED_AT_THE_PAPER}) == builtin
    assert ScopeEditConfig.from_flat({**builtin.to_flat(), **REMOVED_AT_THE_PAPER}) == builtin
    assert builtin.replace(history_fold="step", site_rank="fixed") == builtin
    # the sectioned form written before the removal had the two sections, off
    assert ScopeEditConfig.from_dict({**builtin.to_dict(), "history": None, "site_rank": None}) == builtin
    assert {k: builtin.to_flat()[k] for k in REMOVED_AT_THE_PAPER} == REMOVED_AT_THE_PAPER
    assert "history" not in builtin.to_dict() and "site_rank" not in config_reference()


@pytest.mark.parametrize("data, option", [
    ({"history_fold": "edit"}, "history_fold"),
    ({"history_weight": 20.0}, "history_fold"),
    ({"history_codes": "target"}, "history_fold"),
    ({"history_sites": "all"}, "history_fold"),
    ({"history": {"weight": 4.0}}, "history_fold"),
    ({"history": {}}, "history_fold"),
    ({"site_rank": "fill"}, "site_rank"),
    ({"site_rank": {}}, "site_rank"),
])
def test_removed_options_at_any_other_value_are_an_error_naming_them(data, option) -> None:
    match = rf"{option} was removed in issue 20 .*docs/results/tuning\.md"
    with pytest.raises(ValueError, match=match):
        ScopeEditConfig.from_dict(data)
    with pytest.raises(ValueError, match=match):
        ScopeEditConfig.from_dict({**load_preset("builtin").to_dict(), **data})
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if flat:
        with pytest.raises(ValueError, match=match):
            ScopeEditConfig.from_flat(flat)
        with pytest.raises(ValueError, match=match):
            ScopeEditConfig().replace(**flat)


def test_the_configuration_reference_is_generated_from_every_field() -> None:
    reference = config_reference()
    for name, cls in SECTIONS.items():
        assert f"### `{name}`" in reference
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
            assert f"| `{f.name}` | `{f.default!r}` | {f.metadata['help']} |" in reference


def test_the_shipped_reference_document_is_up_to_date() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text().endswith(config_reference())
