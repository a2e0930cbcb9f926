"""reusing_outputs: one computation per distinct call, the same output after, and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from editscope.models.reuse import reusing_outputs


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.linear.requires_grad_(False)
        self.calls = 0

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) * scale


def test_same_tensor_and_arguments_compute_once() -> None:
    module, x, y = Counting(), torch.randn(4, 3), torch.randn(4, 3)
    with reusing_outputs(module) as cache:
        a, b = module(x), module(x)
        module(y)
        module(x, scale=2.0)
    assert module.calls == 3 and len(cache) == 3
    assert a is b and torch.equal(a, module.linear(x))
    module(x)
    assert module.calls == 4  # the block is over: every call computes again


def test_a_tensor_changed_in_place_computes_again() -> None:
    module, x = Counting(), torch.randn(4, 3)
    with reusing_outputs(module):
        before = module(x).clone()
        x.add_(1.0)
        after = module(x)
    assert module.calls == 2 and not torch.equal(before, after)


def test_refusals_leave_the_module_as_it_was() -> None:
    module = Counting()
    module.linear.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="linear.weight"), reusing_outputs(module):
        pass
    module.linear.requires_grad_(False)
    with reusing_outputs(module), pytest.raises(RuntimeError, match="already wrapped"), reusing_outputs(module):
        pass
    assert "forward" not in module.__dict__


def test_a_caller_setting_a_field_of_the_output_does_not_change_the_kept_one() -> None:
    class Fields(nn.Module):
        def forward(self, x: torch.Tensor) -> dict:
            return {"features": x * 2}

    module, x = Fields(), torch.ones(2)
    with reusing_outputs(module):
        module(x)["features"] = None  # as Qwen2-VL replaces its pooler_output
        assert torch.equal(module(x)["features"], x * 2)
