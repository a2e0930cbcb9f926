"""Building a :class:`VisionLanguageModel` from a checkpoint directory, the built-in model, or an
already constructed model and processor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from editscope.models.registry import UnsupportedModelError, spec_for
from editscope.models.vlm import VisionLanguageModel

logger = logging.getLogger(__name__)


def _model_class(name: str) -> type:
    import transformers

    model_class = getattr(transformers, name, None)
    if model_class is None:
        raise UnsupportedModelError(f"transformers {transformers.__version__} has no model class {name!r}")
    return model_class


def _checkpoint_dir(source: str | Path) -> Path:
    if str(source) == "builtin":
        from editscope.world import builtin_path  # lazy: the built-in model is optional

        source = builtin_path()
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in model directory {path}")
    return path


def _load_checkpoint(path: Path, dtype: torch.dtype | str | None, device_map: Any) -> nn.Module:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        raise ValueError(f"{path / 'config.json'} names no model class (its 'architectures' list is empty)")
    spec = spec_for(architectures[0])  # UnsupportedModelError lists the supported classes
    model_class = _model_class(spec.name)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    logger.info("loading %s from %s", spec.name, path)
    return model_class.from_pretrained(path, **kwargs)


def load(
    source: str | Path | nn.Module,
    processor: Any = None,
    *,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    device: torch.device | str | None = None,
) -> VisionLanguageModel:
    """Wrap a vision-language model for editing.

    ``source`` is a local checkpoint directory (model class from ``config.architectures``,
    weights and processor via ``from_pretrained``), the string ``"builtin"`` (the model shipped
    with editscope), or an already built model, in which case ``processor`` is required.
    ``dtype``, ``device_map`` and ``device`` apply to the loaded (or given) model. The model is
    put in eval mode. Raises :class:`UnsupportedModelError` for an unregistered class and
    ``FileNotFoundError`` naming the path for a missing directory or ``config.json``.
    """
    if device is not None and device_map is not None:
        raise ValueError("pass either device or device_map, not both")
    if isinstance(source, nn.Module):
        if processor is None:
            raise ValueError("a processor is required when load() is given a built model")
        if device_map is not None:
            raise ValueError("device_map applies only when loading from a directory")
        spec_for(source)
        model = source
        if dtype is not None:
            model = model.to(dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    elif isinstance(source, (str, Path)):
        path = _checkpoint_dir(source)
        model = _load_checkpoint(path, dtype, device_map)
        if processor is None:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(path)
    else:
        raise TypeError(f"source must be a directory, 'builtin' or a model, got {type(source).__name__}")
    if device is not None:
        model = model.to(device)
    model.eval()
    return VisionLanguageModel(model, processor)
