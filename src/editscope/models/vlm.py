"""A Hugging Face vision-language model with its processor, behind one small reading interface.

:class:`VisionLanguageModel` turns ``(image, prompt, target)`` into :class:`ModelInputs` (the
prompt with the processor's image expansion, then the target tokenized on its own), runs the
model, scores targets teacher-forced, generates answers, and lists the edit sites. Everything
architecture-specific comes from the :class:`ArchitectureSpec`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from editscope.images import load_image
from editscope.models.registry import EXTRA_INPUT_BUILDERS, ArchitectureSpec, spec_for
from editscope.models.reuse import reusing_outputs
from editscope.types import ImageInput, ModelInputs, Score

logger = logging.getLogger(__name__)

# Per-token tensors a processor or tokenizer may return for the prompt alone: they are rebuilt
# for the whole sequence (the spec's ``extra_inputs``) or dropped. ``labels`` (PaliGemma's
# processor returns them) are never passed: losses are computed by the caller.
_PER_TOKEN_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "labels")


class VisionLanguageModel:
    """A wrapped model: ``model`` (a Hugging Face ``*ForConditionalGeneration``), ``processor``
    (its processor) and ``spec`` (looked up from the model class when omitted)."""

    def __init__(self, model: nn.Module, processor: Any, spec: ArchitectureSpec | None = None) -> None:
        self.model = model
        self.processor = processor
        self.spec = spec if spec is not None else spec_for(model)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_token_id = self.spec.image_token_id(model.config)

    def __repr__(self) -> str:
        return f"VisionLanguageModel({self.spec.name}, device={self.device})"

    # -- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where inputs must go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def text_context_length(self) -> int:
        """The decoder's context length (``max_position_embeddings`` of the text config)."""
        return int(self.model.config.get_text_config().max_position_embeddings)

    # -- encoding ---------------------------------------------------------------------------
    def prompt_text(self, prompt: str, with_image: bool) -> str:
        """The prompt laid out by the processor's chat template, or the spec's fallback format."""
        if getattr(self.processor, "chat_template", None):
            content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
            content.append({"type": "text", "text": prompt})
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id) if with_image else None
        return self.spec.format_prompt(prompt, image_token, self.tokenizer.bos_token or "")

    def encode_target(self, target: str) -> torch.Tensor:
        """Token ids (n,) of ``" " + target.strip()`` without special tokens."""
        if not isinstance(target, str):
            raise TypeError(f"target must be a str, got {type(target).__name__}")
        if not target.strip():
            raise ValueError("target is empty or whitespace")
        ids = self.tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def _encode_prompt(self, image: ImageInput | None, prompt: str) -> dict[str, torch.Tensor]:
        """Processor outputs for the prompt alone (batch of one, on the CPU)."""
        if image is None:
            text = self.prompt_text(prompt, with_image=False)
            if self.spec.text_only_with_tokenizer:
                encoded = self.tokenizer(text, return_tensors="pt")
            else:
                encoded = self.processor(text=text, return_tensors="pt")
        else:
            pil_image = load_image(image)
            text = self.prompt_text(prompt, with_image=True)
            encoded = self.processor(images=[pil_image], text=text, return_tensors="pt")
        return {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}

    def encode(self, image: ImageInput | None, prompt: str, target: str | None = None,
               end: bool = False) -> ModelInputs:
        """Encode one example (batch of one) on the model's input device.

        The prompt (with the image, when given) goes through the processor; the target is
        tokenized separately as ``" " + target.strip()`` and appended, followed by
        :attr:`end_id` when ``end`` is true (so that an editor can teach the answer to stop).
        ``target=None`` encodes the prompt alone (for generation). Raises ``ValueError`` for an
        empty target, an unreadable image, or a sequence longer than :attr:`text_context_length`.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        target_ids = self.encode_target(target) if target is not None else torch.zeros(0, dtype=torch.long)
        if end and target is not None:
            if self.end_id is None:
                raise ValueError(f"{self.spec.name}: the model has no end-of-sequence token to end the target with")
            target_ids = torch.cat([target_ids, torch.tensor([self.end_id], dtype=torch.long)])
        encoded = self._encode_prompt(image, prompt)
        prompt_ids = encoded["input_ids"].to(torch.long)
        n_prompt, n_target = prompt_ids.shape[1], target_ids.numel()
        if n_prompt == 0:
            raise ValueError("the prompt encodes to no tokens: nothing would predict the target")
        if n_prompt + n_target > self.text_context_length:
            raise ValueError(
                f"prompt ({n_prompt} tokens) + target ({n_target} tokens) = {n_prompt + n_target} tokens "
                f"exceeds the model's text context of {self.text_context_length} tokens"
            )
        input_ids = torch.cat([prompt_ids, target_ids[None, :]], dim=1)
        image_mask = input_ids == self.image_token_id
        if image is None and bool(image_mask.any()):
            raise ValueError("the prompt contains the image token but no image was given")

        tensors = {k: v for k, v in encoded.items() if k not in _PER_TOKEN_OUTPUTS}
        tensors = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        tensors["input_ids"] = input_ids
        tensors["attention_mask"] = torch.ones_like(input_ids)
        for name in self.spec.extra_inputs:
            tensors[name] = EXTRA_INPUT_BUILDERS[name](input_ids, image_mask, n_prompt)

        return ModelInputs(
            tensors=tensors,
            target_ids=target_ids,
            target_positions=torch.arange(n_prompt - 1, n_prompt - 1 + n_target, dtype=torch.long),
            image_positions=image_mask[0].nonzero().flatten(),
        ).to(self.device)

    # -- running ----------------------------------------------------------------------------
    def _runner(self, inputs: ModelInputs) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """The module that runs ``inputs`` and its keyword arguments: the root, or the spec's
        text-only module (with ids and mask only) when there are no pixels and the architecture
        needs it (BLIP-2)."""
        if "pixel_values" in inputs.tensors or not self.spec.text_only_module:
            return self.model, inputs.tensors
        tensors = {k: v for k, v in inputs.tensors.items() if k in ("input_ids", "attention_mask")}
        return self.model.get_submodule(self.spec.text_only_module), tensors

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        """Logits (1, T, V) in the model's dtype, with autograd enabled (editors backpropagate)."""
        runner, tensors = self._runner(inputs)
        return runner(**tensors, use_cache=False).logits

    def reusing_image_features(self) -> AbstractContextManager[Any]:
        """A block within which the vision module (the spec's ``vision_module``) runs once per
        distinct pixel tensor and hands its first output back after (see
        :mod:`editscope.models.reuse`): for an editor that trains decoder writes on the same
        images for many steps. Logits are unchanged. The module must be frozen; a spec without
        a ``vision_module`` gives a block that reuses nothing (it yields ``None``)."""
        if not self.spec.vision_module:
            return nullcontext()
        return reusing_outputs(self.model.get_submodule(self.spec.vision_module))

    def generate(self, inputs: ModelInputs, max_new_tokens: int = 16) -> torch.Tensor:
        """Greedy ``generate`` on prompt-only ``inputs``: ids (1, T + new), prompt first."""
        runner, tensors = self._runner(inputs)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = min(self._eos_ids(), default=0)
        with torch.no_grad():
            return runner.generate(
                **tensors, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id
            )

    def logits(self, image: ImageInput | None, prompt: str, target: str) -> torch.Tensor:
        """Float32 logits (T, V) of the whole teacher-forced sequence, without gradients."""
        inputs = self.encode(image, prompt, target)
        with torch.no_grad():
            return self.forward(inputs)[0].float()

    def score(self, image: ImageInput | None, prompt: str, target: str) -> Score:
        """Teacher-forced log-probabilities and top-1 predictions of the target tokens."""
        inputs = self.encode(image, prompt, target)
        with torch.no_grad():
            logits = self.forward(inputs)[0, inputs.target_positions].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, inputs.target_ids[:, None])[:, 0]
        return Score(
            target_ids=tuple(inputs.target_ids.tolist()),
            logprobs=tuple(logprobs.tolist()),
            predicted_ids=tuple(logits.argmax(dim=-1).tolist()),
        )

    @property
    def end_id(self) -> int | None:
        """The token that ends an answer: the generation config's first end-of-sequence id
        (a chat model's end of turn), else the tokenizer's; ``None`` where there is neither."""
        generation_config = getattr(self.model, "generation_config", None)
        eos = generation_config.eos_token_id if generation_config is not None else None
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return None if eos is None else int(eos)

    def _eos_ids(self) -> set[int]:
        """End-of-sequence ids: the generation config's, else the tokenizer's."""
        generation_config = getattr(self.model, "generation_config", None)
        eos = generation_config.eos_token_id if generation_config is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return set()
        return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}

    def answer(self, image: ImageInput | None, prompt: str, max_new_tokens: int = 16) -> str:
        """Greedy answer: the decoded new tokens up to the first EOS, stripped."""
        inputs = self.encode(image, prompt, None)
        new_ids = self.generate(inputs, max_new_tokens)[0, inputs.length :].tolist()
        eos_ids = self._eos_ids()
        end = next((i for i, token in enumerate(new_ids) if token in eos_ids), len(new_ids))
        return self.tokenizer.decode(new_ids[:end], skip_special_tokens=True).strip()

    # -- edit sites -------------------------------------------------------------------------
    def _linear(self, path: str) -> nn.Linear:
        try:
            module = self.model.get_submodule(path)
        except AttributeError as error:
            raise ValueError(f"{self.spec.name}: edit site {path!r} does not exist in the model") from error
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"{self.spec.name}: edit site {path!r} is a {type(module).__name__}, not an nn.Linear"
            )
        return module

    def decoder_layers(self) -> nn.ModuleList:
        try:
            layers = self.model.get_submodule(self.spec.decoder_layers)
        except AttributeError as error:
            raise ValueError(
                f"{self.spec.name}: decoder layers {self.spec.decoder_layers!r} not found in the model"
            ) from error
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"{self.spec.name}: {self.spec.decoder_layers!r} is a {type(layers).__name__}, not a ModuleList"
            )
        return layers

    def site_paths(self, n_last_layers: int, include_projector: bool = True) -> dict[str, list[str]]:
        """Edit-site groups: ``"layer.{i}"`` for each of the last ``n_last_layers`` decoder
        layers (their MLP linears) and ``"projector"`` (the projector's linears), each mapped to
        dotted paths from the model root of ``nn.Linear`` modules."""
        n_layers = len(self.decoder_layers())
        if not 0 <= n_last_layers <= n_layers:
            raise ValueError(f"n_last_layers must be in [0, {n_layers}] for {self.spec.name}, got {n_last_layers}")
        groups: dict[str, list[str]] = {}
        for index in range(n_layers - n_last_layers, n_layers):
            groups[f"layer.{index}"] = self.spec.mlp_site_paths(index)
        if include_projector and self.spec.projector_sites:
            groups["projector"] = list(self.spec.projector_sites)
        for paths in groups.values():
            for path in paths:
                self._linear(path)
        return groups
