"""Baseline hyper-parameters per model, keyed by the name of the ScopeEdit preset used with
that model (``tiny`` for the random test models, ``builtin`` for the shipped world model).
Values not named here are the config classes' defaults."""

from __future__ import annotations

from typing import Any

BASELINE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "ft": {"layer": -2, "lr": 5e-3, "steps": 10},
        "lora": {"rank": 8, "alpha": 16.0, "lr": 5e-3, "steps": 10},
        "grace": {"layer": -2, "eps_init": 1.0, "lr": 1.0, "steps": 20},
    },
    # how these were chosen: docs/results/tuning.md, "The baselines' builtin values"
    "builtin": {
        "ft": {"layer": -2, "lr": 3e-3, "steps": 10},
        "lora": {"rank": 8, "alpha": 16.0, "lr": 1e-3, "steps": 10},
        "grace": {"layer": -2, "eps_init": 30.0, "lr": 1.0, "steps": 20},
    },
}


def baseline_values(name: str, preset: str | None) -> dict[str, Any]:
    """The preset's values for baseline ``name`` (empty when the preset names none)."""
    return dict(BASELINE_PRESETS.get(preset or "", {}).get(name, {}))
