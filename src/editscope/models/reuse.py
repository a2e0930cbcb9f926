"""Run a frozen module once per distinct input within a block, and hand back its first output.

An editor that trains a write on the same edit image for many steps recomputes the vision
tower at every step, though nothing in it changes: on the built-in model that is a quarter of an
edit's time. :func:`reusing_outputs` wraps the module's ``forward`` for the duration of a block
so that a call with equal tensors (compared by value with copies taken at the first call, so a
view, a copy or a tensor changed in place since are all handled) and the same other arguments
returns the output of the first call. The result is the
same tensors the module would compute again, so the logits are identical.

It refuses a module with a parameter that requires gradients (its output would carry a graph
that the second backward pass could not reuse) and a module already wrapped.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


def _signature(value: Any, tensors: list[torch.Tensor]) -> Any:
    """A hashable signature of a call argument: a tensor by its shape, dtype and device (the
    tensor itself goes to ``tensors``, to be compared by value), containers by their items,
    anything else by itself (or its ``repr`` when it cannot be hashed)."""
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return ("tensor", tuple(value.shape), value.dtype, value.device)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_signature(v, tensors) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _signature(v, tensors)) for k, v in sorted(value.items())))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


class OutputCache:
    """The calls computed inside a :func:`reusing_outputs` block: per call signature, the
    argument tensors (copies) and the output. ``len()`` is the number of computations."""

    def __init__(self) -> None:
        self.entries: dict[Any, list[tuple[list[torch.Tensor], Any]]] = {}

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.entries.values())

    def lookup(self, signature: Any, tensors: list[torch.Tensor]) -> tuple[bool, Any]:
        for held, output in self.entries.get(signature, []):
            if all(torch.equal(a, b) for a, b in zip(held, tensors)):
                return True, output
        return False, None


@contextmanager
def reusing_outputs(module: nn.Module) -> Iterator[OutputCache]:
    """Within the block, ``module`` computes each distinct call once (see the module doc);
    yields the :class:`OutputCache`."""
    if "forward" in module.__dict__:
        raise RuntimeError(f"{type(module).__name__}.forward is already wrapped; nested reuse is not supported")
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(f"cannot reuse the outputs of {type(module).__name__}: its parameters {trainable[:3]} "
                         "require gradients")
    original = module.forward
    cache = OutputCache()

    def forward(*args: Any, **kwargs: Any) -> Any:
        tensors: list[torch.Tensor] = []
        signature = (_signature(args, tensors), _signature(kwargs, tensors))
        found, output = cache.lookup(signature, tensors)
        if not found:
            output = original(*args, **kwargs)
            held = [t.detach().clone() for t in tensors]  # copies: a caller may change its tensors later
            cache.entries.setdefault(signature, []).append((held, output))
        # callers may set fields of an output object (Qwen2-VL splits its pooler_output): each
        # gets its own shallow copy, and the kept one stays as computed
        return output if isinstance(output, (torch.Tensor, tuple)) else copy.copy(output)

    module.forward = forward
    try:
        yield cache
    finally:
        del module.forward
