"""Synthetic slots for measuring ScopeMemory's routing cost without training a slot per fact.

A synthetic slot has random unit routing keys (so an ordinary input matches none of them: in
``d`` dimensions random unit vectors have cosines of order ``1 / sqrt(d)``, far below the
router's thresholds), the config's floor thresholds and random small write factors of the real
shapes, written straight into the slot table with :meth:`Table.write`; a slot whose shared write
is on and that has an image also gets ``views`` random image keys in the example table, as a real
slot keeps its views' keys there. One slot may instead
carry the keys of a real input, which then routes to it and gets its write: the forward pass
pays for everything a routed input pays for.
"""

from __future__ import annotations

from typing import Any

import torch

from editscope.editors.scopememory.slots import FACT_BYTES


def fill_synthetic(editor: Any, n: int, seed: int = 0,
                   match: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                   scale: float = 0.01) -> int:
    """Append ``n`` synthetic slots to ``editor.memory.slots`` (a :class:`ScopeMemory`).

    ``match``: the keys ``(q, v, has_image)`` of one input (``editor._keys(inputs)``, batch of
    one); the first appended slot takes them, with its shared write on, so that input routes to
    it. Returns the index of that slot (the first appended one)."""
    if n < 1:
        raise ValueError(f"fill_synthetic needs n >= 1, got {n}")
    memory, cfg = editor.memory, editor.config
    table = memory.slots
    generator = torch.Generator().manual_seed(seed)
    first = table.n

    def unit(d: int) -> torch.Tensor:
        x = torch.randn(d, generator=generator)
        return x / x.norm()

    for i in range(n):
        row: dict[str, torch.Tensor] = {}
        for name, (shape, dtype) in table.shapes.items():
            if dtype.is_floating_point and len(shape) == 2:  # a write factor
                row[name] = scale * torch.randn(shape, generator=generator)
        text_dim = table.shapes["text"][0][0]
        has_image = bool(torch.rand((), generator=generator) < 0.9)
        row.update({
            "text": unit(text_dim), "image": unit(text_dim) if has_image else torch.zeros(text_dim),
            "has_image": torch.tensor(has_image), "shared": torch.rand((), generator=generator) < 0.5,
            "active": torch.tensor(True),
            "tau_text": torch.tensor(cfg.text_threshold) + 0.1 * torch.rand((), generator=generator),
            "tau_image": torch.tensor(cfg.subject_threshold) + 0.1 * torch.rand((), generator=generator),
            "fact": torch.randint(0, 256, (FACT_BYTES,), generator=generator, dtype=torch.uint8),
        })
        if i == 0 and match is not None:
            q, v, has = match
            row.update({"text": q[0].cpu(), "image": v[0].cpu(), "has_image": has[0].cpu(),
                        "shared": torch.tensor(True), "tau_text": torch.tensor(cfg.text_threshold),
                        "tau_image": torch.tensor(cfg.subject_threshold)})
        index = table.n
        table.write(index, {k: v.to(memory.device) for k, v in row.items()})
        if bool(row["shared"]) and bool(row["has_image"]):
            also = memory.examples["also"]
            for _ in range(cfg.views):
                also.write(also.n, {"image": unit(text_dim).to(memory.device), "owner": torch.tensor(index)})
    return first
