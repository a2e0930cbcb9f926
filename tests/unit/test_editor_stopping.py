"""The ``stopping`` plug-in (``editors/scopeedit/stopping.py``): an edit stops at the first step
whose loss is below ``stop_loss`` (never with ``stop_loss`` 0, never on a non-finite loss), and
the ``taken``-th step's learning rates are scaled by ``eta_growth ** (taken - 1)``. Its section
checks its own values, it is installed only when the section is set, and it keeps no state.
The loop's use of it on a model is in tests/integration/test_editor_behaviour.py."""

from __future__ import annotations

import math

import pytest
import torch

from editscope.config import ScopeEditConfig, load_preset
from editscope.editors.scopeedit.plugin import Hooks, Plugin
from editscope.editors.scopeedit.plugins import install
from editscope.editors.scopeedit.stopping import Stopping, StoppingConfig


def stopping(**values) -> Stopping:
    return Stopping(editor=None, config=StoppingConfig(**values))


@pytest.mark.parametrize("loss, stops", [(0.0, True), (0.4999, True), (0.5, False), (0.75, False), (-1.0, True)])
def test_it_stops_exactly_below_stop_loss(loss, stops) -> None:
    # 0.5 is exact in float32: a loss equal to stop_loss is not absorbed
    assert stopping(stop_loss=0.5).stop(torch.tensor(loss)) is stops


def test_a_loss_that_needs_gradients_is_read_without_them() -> None:
    w = torch.tensor(2.0, requires_grad=True)
    loss = (w - 1.95) ** 2  # 0.0025, part of a graph
    assert stopping(stop_loss=0.01).stop(loss) is True
    assert stopping(stop_loss=0.001).stop(loss) is False
    loss.backward()  # the graph is left usable
    assert w.grad is not None


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_never_counts_as_absorbed(loss) -> None:
    # the step goes on to the loop's finiteness check (the edit is rejected), not to a stop
    assert stopping(stop_loss=1e9).stop(torch.tensor(loss)) is False


def test_without_stop_loss_it_never_stops() -> None:
    plugin = stopping(stop_loss=0.0, eta_growth=2.0)
    assert not any(plugin.stop(torch.tensor(v)) for v in (-5.0, 0.0, 1e-12, 3.0))


@pytest.mark.parametrize("growth", [1.1, 2.0, 0.5])
def test_the_kth_step_grows_by_eta_growth_to_the_k(growth) -> None:
    plugin = stopping(stop_loss=0.1, eta_growth=growth)
    assert plugin.step_scale(1) == 1.0  # the first step writes with the method's rates
    for taken in range(1, 8):
        assert plugin.step_scale(taken) == pytest.approx(growth ** (taken - 1), rel=1e-12)
    assert plugin.step_scale(3) == pytest.approx(growth * growth)


def test_without_growth_every_step_has_scale_one() -> None:
    plugin = stopping(stop_loss=0.1)
    assert [plugin.step_scale(t) for t in range(1, 30)] == [1.0] * 29


class _Half(Plugin):
    name = "half"

    def step_scale(self, taken: int) -> float:
        return 0.5

    def stop(self, loss: torch.Tensor) -> bool:
        return float(loss) > 100.0


def test_through_the_hooks_its_stop_is_or_ed_and_its_scale_multiplied() -> None:
    hooks = Hooks([stopping(stop_loss=0.1, eta_growth=3.0), _Half(None, None)])
    assert hooks.step_scale(1) == 0.5 and hooks.step_scale(3) == pytest.approx(0.5 * 9.0)
    assert hooks.stop(torch.tensor(0.05)) and hooks.stop(torch.tensor(500.0))
    assert not hooks.stop(torch.tensor(1.0))
    assert Hooks([]).step_scale(5) == 1.0 and not Hooks([]).stop(torch.tensor(0.0))


def test_it_is_installed_only_with_its_section_and_takes_a_new_one() -> None:
    assert "stopping" not in install(None, load_preset("tiny")).by_name()
    config = load_preset("tiny").replace(stop_loss=0.2, eta_growth=1.5)
    hooks = install(None, config)
    plugin = hooks.by_name()["stopping"]
    assert isinstance(plugin, Stopping) and plugin.config == StoppingConfig(stop_loss=0.2, eta_growth=1.5)
    assert hooks.stop(torch.tensor(0.15)) and hooks.step_scale(2) == pytest.approx(1.5)
    again = install(None, config.replace(stop_loss=0.1), installed=hooks)
    assert again.by_name()["stopping"] is plugin and plugin.config.stop_loss == 0.1
    assert not again.stop(torch.tensor(0.15))
    assert "stopping" not in install(None, config.replace(stop_loss=0.0, eta_growth=1.0), installed=hooks).by_name()


def test_it_keeps_no_state() -> None:
    plugin = stopping(stop_loss=0.1, eta_growth=2.0)
    assert plugin.state_dict() == {} and plugin.state_bytes() == 0
    plugin.load_state_dict({})
    with pytest.raises(ValueError, match="'stopping' option keeps no state"):
        plugin.load_state_dict({"taken": torch.tensor(3)})


@pytest.mark.parametrize("values, match", [
    ({}, "changes nothing"),
    ({"stop_loss": 0.0, "eta_growth": 1.0}, "changes nothing"),
    ({"stop_loss": -0.1}, r"stopping\.stop_loss must be >= 0"),
    ({"stop_loss": float("nan")}, r"stopping\.stop_loss must be a number"),
    ({"stop_loss": True}, r"stopping\.stop_loss must be a number"),
    ({"stop_loss": "0.1"}, r"stopping\.stop_loss must be a number"),
    ({"stop_loss": 0.1, "eta_growth": 0.0}, r"stopping\.eta_growth must be a positive number"),
    ({"stop_loss": 0.1, "eta_growth": -2.0}, r"stopping\.eta_growth must be a positive number"),
])
def test_its_section_checks_its_values(values, match) -> None:
    with pytest.raises(ValueError, match=match):
        StoppingConfig(**values)


def test_either_value_alone_is_a_valid_section() -> None:
    assert StoppingConfig(stop_loss=0.1).eta_growth == 1.0
    assert StoppingConfig(eta_growth=1.2).stop_loss == 0.0


def test_the_flat_keys_are_the_section() -> None:
    config = ScopeEditConfig().replace(stop_loss=0.3)
    assert config.stopping == StoppingConfig(stop_loss=0.3)
    assert (config.stop_loss, config.eta_growth) == (0.3, 1.0)
    assert ScopeEditConfig.from_dict({"eta_growth": 1.25}).stopping == StoppingConfig(eta_growth=1.25)
    assert ScopeEditConfig.from_dict({"stop_loss": 0.0, "eta_growth": 1.0}).stopping is None
    assert math.isclose(ScopeEditConfig.from_dict({"stopping": {"stop_loss": 0.2}}).stop_loss, 0.2)
