from __future__ import annotations

import pytest

from editscope.config import ScopeEditConfig, load_preset, preset_names


def test_reference_presets_hold_the_published_values() -> None:
    llava = load_preset("llava-1.5-7b")
    assert (llava.rank_local, llava.rank_shared, llava.alpha, llava.top_k) == (448, 64, 1024, 7)
    assert (llava.eta, llava.n_last_layers, llava.projector_eta, llava.shared_layers) == (0.1, 12, 0.001, 6)
    assert llava.scaling == 2.0 and not llava.code_norm
    blip = load_preset("blip2-opt-2.7b")
    assert (blip.rank_local, blip.rank_shared, blip.alpha, blip.eta, blip.eta_shared) == (104, 24, 256, 0.05, 0.5)
    assert blip.code_norm
    assert {"llava-1.5-7b", "blip2-opt-2.7b", "tiny"} <= set(preset_names())


def test_unknown_keys_are_rejected(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rank_local: 8\nrank_shard: 2\n")
    with pytest.raises(ValueError, match="rank_shard"):
        ScopeEditConfig.from_file(path)


@pytest.mark.parametrize(
    "change", [{"rank_local": 0}, {"eta": -1.0}, {"basis": "pca"}, {"steps_per_edit": 1.5}, {"top_k": True}]
)
def test_invalid_values_are_clear_errors(change: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(change))):
        ScopeEditConfig.from_dict(change)


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="llava-1.5-7b"):
        load_preset("no-such-preset")


def test_fingerprint_follows_the_values() -> None:
    assert ScopeEditConfig().fingerprint() == ScopeEditConfig().fingerprint()
    assert ScopeEditConfig().fingerprint() != ScopeEditConfig().replace(eta=0.2).fingerprint()
