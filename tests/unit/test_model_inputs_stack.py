"""ModelInputs.stack and stacked: batching encodings of the same tokens."""

from __future__ import annotations

import pytest
import torch

from editscope.types import ModelInputs, stacked


def encoding(ids: list[int], pixels: float, target: int = 2) -> ModelInputs:
    input_ids = torch.tensor([ids])
    n = len(ids)
    return ModelInputs(tensors={"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                                "pixel_values": torch.full((1, 3, 4, 4), pixels)},
                       target_ids=input_ids[0, n - target:], target_positions=torch.arange(n - target - 1, n - 1),
                       image_positions=torch.tensor([0]))


def test_stack_concatenates_every_tensor_and_keeps_the_positions() -> None:
    a, b = encoding([5, 6, 7, 8], 0.0), encoding([5, 6, 7, 8], 1.0)
    batch = ModelInputs.stack([a, b])
    assert batch.input_ids.shape == (2, 4) and batch.tensors["pixel_values"].shape == (2, 3, 4, 4)
    assert torch.equal(batch.tensors["pixel_values"][1], b.tensors["pixel_values"][0])
    assert torch.equal(batch.target_positions, a.target_positions) and torch.equal(batch.target_ids, a.target_ids)


def test_stack_refuses_other_tokens() -> None:
    with pytest.raises(ValueError, match="same token ids"):
        ModelInputs.stack([encoding([5, 6, 7, 8], 0.0), encoding([5, 6, 7, 9], 0.0)])
    with pytest.raises(ValueError, match="same token ids"):
        ModelInputs.stack([])


def test_stacked_groups_by_tokens_in_first_seen_order() -> None:
    items = [encoding([5, 6, 7, 8], 0.0), encoding([1, 2, 3], 1.0), encoding([5, 6, 7, 8], 2.0)]
    batches = stacked(items)
    assert [b.input_ids.shape[0] for b in batches] == [2, 1]
    assert batches[1] is items[1]
    assert batches[0].tensors["pixel_values"][:, 0, 0, 0].tolist() == [0.0, 2.0]
