"""Build one model component at its real size on the meta device: shapes and dtypes, no storage.

Why the meta device: a 13B model costs nothing there (no allocation, no initialisation), yet the
module tree, every parameter shape and the forward's shape logic are the library's own.
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch

from synthvlm_data.rehearsal.catalogue import Component, load_config


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters, a tensor shared by two modules (tied embeddings) counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@contextlib.contextmanager
def _quiet():
    """Library warnings about random initialisation are what a meta build means; keep them off screen."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def build(component: Component, device: str = "meta", dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The component's module on the meta device, from its shipped config (or the library's own).

    Another `device` builds it there with the library's random initialisation (the GPU rehearsal).
    """
    module = _build(component, device)
    return module if dtype is None else module.to(dtype)


def _build(component: Component, device: str) -> torch.nn.Module:
    kind, _, cls_name = component.builder.partition(":")
    with _quiet():
        if kind == "open_clip":
            import open_clip

            return open_clip.create_model(cls_name, pretrained=None, device=device)
        config = load_config(component.config) if component.config else {}
        with torch.device(device):
            if kind == "diffusers":
                import diffusers

                return getattr(diffusers, cls_name).from_config(config)
            import transformers

            cls = getattr(transformers, cls_name)
            if kind == "transformers-vision":  # a vision tower out of a two-tower config (CLIPConfig)
                full = transformers.AutoConfig.for_model(**config)
                return cls(full.vision_config)
            return cls(cls.config_class(**config))


def build_config(component: Component):
    """The transformers config object of a component (for the LLaVA assembly)."""
    import transformers

    config = load_config(component.config)
    kind, _, cls_name = component.builder.partition(":")
    if kind == "transformers-vision":
        return transformers.AutoConfig.for_model(**config).vision_config
    return getattr(transformers, cls_name).config_class(**config)
