"""Pieces shared by the baseline editors: config validation, swapping a wrapper module in for
a linear layer, choosing a decoder layer, and the optimiser loop (the target loss is
``editscope.editors.base.target_loss``, importable from here too; an edit is all-or-nothing
through ``editscope.editors.transaction.transactional_edit``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from editscope.editors.base import EditRejected, target_loss, trainable  # target_loss: importable from here too
from editscope.types import ModelInputs

C = TypeVar("C")


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build a config dataclass from plain data; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys are {sorted(known)}")
    return cls(**dict(data))


def check_positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        ok = ok and (value >= 0 if allow_zero else value > 0)
        if not ok:
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{type(obj).__name__}.{name} must be a number {bound}, got {value!r}")


def decoder_layer_group(vlm: Any, layer: int) -> tuple[str, list[str]]:
    """The edit-site group (``"layer.{i}"`` and its MLP linear paths) of decoder layer
    ``layer`` (negative counts from the end)."""
    n_layers = len(vlm.decoder_layers())
    index = layer if layer >= 0 else n_layers + layer
    if not 0 <= index < n_layers:
        raise ValueError(f"layer {layer} is outside the model's {n_layers} decoder layers")
    groups = vlm.site_paths(n_layers - index, include_projector=False)
    name = f"layer.{index}"
    return name, groups[name]


def output_linear(vlm: Any, paths: list[str]) -> str:
    """The MLP's output projection among ``paths`` (the linear that writes back to the residual
    stream: its output width is the decoder's hidden size)."""
    hidden = vlm.model.get_input_embeddings().weight.shape[1]
    for path in reversed(paths):
        if vlm.model.get_submodule(path).out_features == hidden:
            return path
    raise ValueError(f"none of {paths} writes the hidden size {hidden}")


def swap_in(model: nn.Module, path: str, wrapper: nn.Module) -> None:
    model.set_submodule(path, wrapper)


def wrap_layer_output(vlm: Any, layer: int, make_wrapper: Callable[[nn.Linear], nn.Module]) -> tuple[str, str, nn.Module]:
    """Freeze the model and swap a wrapper around the MLP output linear of decoder ``layer``;
    returns (group, path, wrapper). Used by the one-layer baselines (FT-L, GRACE)."""
    vlm.model.requires_grad_(False)
    vlm.model.eval()
    group, paths = decoder_layer_group(vlm, layer)
    path = output_linear(vlm, paths)
    wrapper = make_wrapper(vlm.model.get_submodule(path))
    swap_in(vlm.model, path, wrapper)
    return group, path, wrapper




def optimise(vlm: Any, inputs: ModelInputs, params: list[nn.Parameter], lr: float, steps: int,
             stop_loss: float, after_step: Callable[[], None] | None = None) -> tuple[float, int]:
    """Adam on the target loss of ``inputs`` over ``params`` (a fresh optimiser per edit).

    Stops early once the loss is below ``stop_loss``. Returns the loss before the first step
    and the number of steps taken. Raises ``EditRejected`` on a non-finite loss.
    """
    optimiser = torch.optim.Adam(params, lr=lr)
    loss_before = float("nan")
    taken = 0
    with trainable(params):
        for step in range(steps):
            loss = target_loss(vlm, inputs)
            value = loss.item()
            if step == 0:
                loss_before = value
            if value != value or value in (float("inf"), float("-inf")):
                raise EditRejected(f"non-finite loss at step {step + 1}")
            if value < stop_loss:
                break
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step()
            taken += 1
    return loss_before, taken
