"""Where things live in each supported Hugging Face vision-language architecture.

One :class:`ArchitectureSpec` per Hugging Face model class, as plain data: dotted module paths
(relative to the model root or to one decoder layer), the config key of the image-token id, the
prompt format used when the processor has no chat template, and the names of the extra
per-token inputs the architecture's ``forward`` needs. Adding a model means adding a spec with
:func:`register_architecture`; nothing else in the library branches on the model type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


class UnsupportedModelError(ValueError):
    """The model class has no registered :class:`ArchitectureSpec`."""


# -- extra per-token inputs -------------------------------------------------------------------
# Each builder gets ``input_ids`` (1, T), the boolean image-token mask (1, T) and the number of
# prompt tokens (the rest of the sequence is the target), and returns a (1, T) tensor.
ExtraInputBuilder = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _mm_token_type_ids(input_ids: torch.Tensor, image_mask: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """Qwen2-VL / Qwen2.5-VL: 1 on image tokens, 0 elsewhere (drives the 3-D rotary positions)."""
    return image_mask.to(torch.int32)


def _prefix_suffix_token_type_ids(
    input_ids: torch.Tensor, image_mask: torch.Tensor, n_prompt: int
) -> torch.Tensor:
    """PaliGemma: 0 on the prefix (image + prompt, attended bidirectionally), 1 on the suffix."""
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, n_prompt:] = 1
    return token_type_ids


EXTRA_INPUT_BUILDERS: dict[str, ExtraInputBuilder] = {
    "mm_token_type_ids": _mm_token_type_ids,
    "token_type_ids": _prefix_suffix_token_type_ids,
}


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the edit sites and the image tokens of one Hugging Face class are.

    - ``name``: the Hugging Face model class name (the registry key).
    - ``decoder_layers``: dotted path from the model root to the ``ModuleList`` of decoder layers.
    - ``mlp_sites``: dotted paths, inside one decoder layer, of the MLP linears that are edited.
    - ``projector_sites``: dotted paths from the root to the projector's ``nn.Linear`` modules.
    - ``image_token_config_key``: attribute of the model config holding the image-token id.
    - ``prompt_format`` / ``text_prompt_format``: prompt layout with / without an image, used when
      the processor has no chat template; ``{prompt}`` is the question, ``{bos}`` the
      tokenizer's BOS token and ``{image}`` is ``image_placeholder`` with ``{image_token}``
      replaced by the image token.
    - ``extra_inputs``: names (keys of ``EXTRA_INPUT_BUILDERS``) of per-token tensors that
      ``forward`` needs besides ``input_ids`` and ``attention_mask``.
    - ``text_only_with_tokenizer``: encode a prompt without an image with the bare tokenizer
      (for processors that refuse text without images).
    - ``text_only_module``: dotted path of the submodule that runs inputs without pixels, for
      classes whose ``forward`` requires ``pixel_values`` (empty: the root runs them).
    - ``vision_module``: dotted path of the module that turns pixel values into image features
      (the vision tower; in Qwen2-VL it holds the projector too), whose outputs an editor that
      writes only in the decoder may reuse across steps (empty: never reused).
    """

    name: str
    decoder_layers: str
    mlp_sites: tuple[str, ...]
    projector_sites: tuple[str, ...]
    image_token_config_key: str = "image_token_id"
    prompt_format: str = "{image}{prompt}"
    text_prompt_format: str = "{prompt}"
    image_placeholder: str = "{image_token}"
    extra_inputs: tuple[str, ...] = ()
    text_only_with_tokenizer: bool = False
    text_only_module: str = ""
    vision_module: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ArchitectureSpec.name is empty")
        if not self.decoder_layers:
            raise ValueError(f"ArchitectureSpec({self.name}).decoder_layers is empty")
        object.__setattr__(self, "mlp_sites", tuple(self.mlp_sites))
        object.__setattr__(self, "projector_sites", tuple(self.projector_sites))
        object.__setattr__(self, "extra_inputs", tuple(self.extra_inputs))
        if not self.mlp_sites:
            raise ValueError(f"ArchitectureSpec({self.name}).mlp_sites is empty")
        unknown = [e for e in self.extra_inputs if e not in EXTRA_INPUT_BUILDERS]
        if unknown:
            raise ValueError(
                f"ArchitectureSpec({self.name}).extra_inputs has unknown names {unknown}; "
                f"known: {sorted(EXTRA_INPUT_BUILDERS)}"
            )
        if "{prompt}" not in self.prompt_format or "{prompt}" not in self.text_prompt_format:
            raise ValueError(f"ArchitectureSpec({self.name}): prompt formats must contain '{{prompt}}'")

    # -- small pure helpers -----------------------------------------------------------------
    def layer_path(self, index: int) -> str:
        """Dotted path from the root to decoder layer ``index``."""
        return f"{self.decoder_layers}.{index}"

    def mlp_site_paths(self, index: int) -> list[str]:
        """Dotted paths from the root to the edited MLP linears of decoder layer ``index``."""
        return [f"{self.layer_path(index)}.{site}" for site in self.mlp_sites]

    def image_token_id(self, config: Any) -> int:
        """The image-token id read from the model config; a clear error when it is unset."""
        value = getattr(config, self.image_token_config_key, None)
        if value is None:
            raise ValueError(
                f"{self.name}: config.{self.image_token_config_key} is not set; the image-token id "
                "is needed to find the image positions (set it to the id of the processor's image "
                "token, e.g. config.image_token_index = tokenizer.convert_tokens_to_ids('<image>'))"
            )
        return int(value)

    def format_prompt(self, prompt: str, image_token: str | None, bos_token: str = "") -> str:
        """The prompt text in the fallback layout; ``image_token=None`` gives the text-only one."""
        if image_token is None:
            layout = self.text_prompt_format
        else:
            image = self.image_placeholder.replace("{image_token}", image_token)
            layout = self.prompt_format.replace("{image}", image)
        return layout.replace("{bos}", bos_token).replace("{prompt}", prompt)


_LLAMA_MLP = ("mlp.up_proj", "mlp.down_proj")
_LLAVA_PROMPT = dict(
    prompt_format="USER: {image}\n{prompt} ASSISTANT:",
    text_prompt_format="USER: {prompt} ASSISTANT:",
)
_QWEN_PROMPT = dict(
    prompt_format="<|im_start|>user\n{image}{prompt}<|im_end|>\n<|im_start|>assistant\n",
    text_prompt_format="<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
    image_placeholder="<|vision_start|>{image_token}<|vision_end|>",
    extra_inputs=("mm_token_type_ids",),
)

BUILTIN_SPECS: tuple[ArchitectureSpec, ...] = (
    ArchitectureSpec(
        name="LlavaForConditionalGeneration",
        vision_module="model.vision_tower",
        decoder_layers="model.language_model.layers",
        mlp_sites=_LLAMA_MLP,
        projector_sites=("model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"),
        **_LLAVA_PROMPT,
    ),
    ArchitectureSpec(
        name="LlavaNextForConditionalGeneration",
        vision_module="model.vision_tower",
        decoder_layers="model.language_model.layers",
        mlp_sites=_LLAMA_MLP,
        projector_sites=("model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"),
        **_LLAVA_PROMPT,
    ),
    ArchitectureSpec(
        name="Qwen2VLForConditionalGeneration",
        vision_module="model.visual",
        decoder_layers="model.language_model.layers",
        mlp_sites=_LLAMA_MLP,
        projector_sites=("model.visual.merger.mlp.0", "model.visual.merger.mlp.2"),
        **_QWEN_PROMPT,
    ),
    ArchitectureSpec(
        name="Qwen2_5_VLForConditionalGeneration",
        vision_module="model.visual",
        decoder_layers="model.language_model.layers",
        mlp_sites=_LLAMA_MLP,
        projector_sites=("model.visual.merger.mlp.0", "model.visual.merger.mlp.2"),
        **_QWEN_PROMPT,
    ),
    ArchitectureSpec(
        # The processor puts ``num_query_tokens`` image tokens (the Q-Former queries) first.
        name="Blip2ForConditionalGeneration",
        vision_module="vision_model",
        decoder_layers="language_model.model.decoder.layers",
        mlp_sites=("fc1", "fc2"),
        projector_sites=("language_projection",),
        image_token_config_key="image_token_index",
        prompt_format="Question: {prompt} Answer:",
        text_prompt_format="Question: {prompt} Answer:",
        image_placeholder="",
        text_only_module="language_model",
    ),
    ArchitectureSpec(
        name="Idefics3ForConditionalGeneration",
        vision_module="model.vision_model",
        decoder_layers="model.text_model.layers",
        mlp_sites=_LLAMA_MLP,
        projector_sites=("model.connector.modality_projection.proj",),
        prompt_format="<|im_start|>User:{image}{prompt}<end_of_utterance>\nAssistant:",
        text_prompt_format="<|im_start|>User:{prompt}<end_of_utterance>\nAssistant:",
    ),
    ArchitectureSpec(
        # The processor adds <bos> after the image tokens and "\n" after the prompt; without an
        # image the bare tokenizer runs (it adds no <bos>: the processor turned that off).
        name="PaliGemmaForConditionalGeneration",
        vision_module="model.vision_tower",
        decoder_layers="model.language_model.layers",
        mlp_sites=_LLAMA_MLP,
        projector_sites=("model.multi_modal_projector.linear",),
        prompt_format="{image}{prompt}",
        text_prompt_format="{bos}{prompt}\n",
        extra_inputs=("token_type_ids",),
        text_only_with_tokenizer=True,
    ),
)

_REGISTRY: dict[str, ArchitectureSpec] = {spec.name: spec for spec in BUILTIN_SPECS}


def _class_name(model_class_or_name: Any) -> str:
    if isinstance(model_class_or_name, str):
        return model_class_or_name
    if isinstance(model_class_or_name, type):
        return model_class_or_name.__name__
    raise TypeError(
        "expected a model class or its name, got "
        f"{type(model_class_or_name).__name__}: {model_class_or_name!r}"
    )


def register_architecture(model_class_or_name: type | str, spec: ArchitectureSpec, *, overwrite: bool = False) -> None:
    """Register ``spec`` for a Hugging Face model class (or class name).

    ``spec.name`` must equal the class name. Re-registering a name raises unless
    ``overwrite=True``.
    """
    name = _class_name(model_class_or_name)
    if not isinstance(spec, ArchitectureSpec):
        raise TypeError(f"spec must be an ArchitectureSpec, got {type(spec).__name__}")
    if spec.name != name:
        raise ValueError(f"spec.name is {spec.name!r} but it is registered for {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"{name} is already registered; pass overwrite=True to replace its spec")
    _REGISTRY[name] = spec


def unregister_architecture(model_class_or_name: type | str) -> None:
    """Remove a registered spec (mainly for tests)."""
    _REGISTRY.pop(_class_name(model_class_or_name), None)


def supported_architectures() -> tuple[str, ...]:
    """Sorted names of the registered Hugging Face classes."""
    return tuple(sorted(_REGISTRY))


def spec_for(model: Any) -> ArchitectureSpec:
    """The spec of a model instance, model class or class name.

    For a class or instance, the class and then its base classes are looked up in order, so a
    subclass of a supported class uses its parent's spec. Raises :class:`UnsupportedModelError`
    listing the supported class names.
    """
    if isinstance(model, str):
        names = [model]
    else:
        cls = model if isinstance(model, type) else type(model)
        names = [klass.__name__ for klass in cls.__mro__]
    for name in names:
        if name in _REGISTRY:
            return _REGISTRY[name]
    raise UnsupportedModelError(
        f"unsupported model class {names[0]!r}; supported: {', '.join(supported_architectures())}. "
        "Add one with editscope.models.register_architecture(cls, ArchitectureSpec(...))."
    )
