"""The full-scale models a recipe or training config may name, part by part, with published sizes.

A published size is a number and the unit it was published in (`2.6 B` has unit 0.1 B): the count
built here must round to it, so `unit / 2` is the tolerance; a unit of 1 means the exact count was
published. Sources are named next to each number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

M, B = 1_000_000, 1_000_000_000


@dataclass(frozen=True)
class Published:
    value: float
    unit: float  # the precision the number was published with; 1 = exact count
    source: str

    def matches(self, count: int) -> bool:
        return abs(count - self.value) <= self.unit / 2

    def describe(self) -> str:
        if self.unit == 1:
            return f"{int(self.value):,} (exact)"
        scale, name = (B, "B") if self.value >= B else (M, "M")
        digits = max(0, len(f"{self.unit / scale:g}".partition(".")[2]))
        return f"{self.value / scale:.{digits}f} {name} (+-{self.unit / 2 / scale:g} {name})"


@dataclass(frozen=True)
class Component:
    """One `nn.Module` of a model: how to build it and what it should count."""

    name: str
    builder: str  # "diffusers:<class>", "transformers:<class>", "transformers-vision:<class>", "open_clip:<arch>"
    config: str | None  # a file in configs/ (None: the library's own config, open_clip)
    published: Published


@dataclass(frozen=True)
class Model:
    label: str
    components: tuple[Component, ...]
    note: str = ""


def load_config(name: str) -> dict[str, Any]:
    """A shipped architecture config, without its `_source` line."""
    data = json.loads((resources.files(__package__) / "configs" / name).read_text(encoding="utf-8"))
    data.pop("_source", None)
    return data


def config_source(name: str) -> str:
    return json.loads((resources.files(__package__) / "configs" / name).read_text(encoding="utf-8"))["_source"]


_SDXL_REPORT = "SDXL report (Podell et al. 2023): 2.6 B UNet, 817 M text encoders; the Hub's safetensors"
_CLIP_L_TEXT = Component("text_encoder (CLIP ViT-L/14 text)", "transformers:CLIPTextModel", "sdxl-base-1.0.text_encoder.json",
                         Published(123 * M, M, "OpenAI CLIP ViT-L/14 text tower: 123 M (" + _SDXL_REPORT + ")"))
_BIGG_TEXT = Component("text_encoder_2 (OpenCLIP bigG/14 text)", "transformers:CLIPTextModelWithProjection",
                       "sdxl-base-1.0.text_encoder_2.json",
                       Published(695 * M, M, "OpenCLIP ViT-bigG/14 text tower: 817 M - 123 M (" + _SDXL_REPORT + ")"))
_SDXL_VAE = Component("vae", "diffusers:AutoencoderKL", "sdxl-base-1.0.vae.json",
                      Published(83.65 * M, 0.01 * M, "SDXL VAE: 83.65 M (167.3 MB in fp16 on the Hub)"))

MODELS: dict[tuple[str, str | None], Model] = {
    ("stabilityai/stable-diffusion-xl-base-1.0", None): Model("SDXL base 1.0", (
        Component("unet", "diffusers:UNet2DConditionModel", "sdxl-base-1.0.unet.json",
                  Published(2_567_463_684, 1, "SDXL base UNet: 2,567,463,684 (diffusers count of the Hub's unet)")),
        _SDXL_VAE, _CLIP_L_TEXT, _BIGG_TEXT)),
    ("stabilityai/stable-diffusion-xl-refiner-1.0", None): Model("SDXL refiner 1.0", (
        Component("unet", "diffusers:UNet2DConditionModel", "sdxl-refiner-1.0.unet.json",
                  Published(2.3 * B, 0.1 * B, "SDXL refiner UNet: 2.3 B (4.5 GB fp16 unet on the Hub)")),),
        note="shares the base's vae and text_encoder_2 (models.diffusion.load_generator)"),
    ("stabilityai/stable-diffusion-3-medium-diffusers", None): Model("SD3 medium", (
        Component("transformer (MMDiT)", "diffusers:SD3Transformer2DModel", "sd3-medium.transformer.json",
                  Published(2.0 * B, 0.1 * B, "SD3 medium: a 2 B MMDiT (Stability AI model card)")),
        Component("vae", "diffusers:AutoencoderKL", "sd3-medium.vae.json",
                  Published(84 * M, M, "SD3 16-channel VAE: 84 M")),
        Component("text_encoder (CLIP ViT-L/14 text)", "transformers:CLIPTextModelWithProjection",
                  "sd3-medium.text_encoder.json", Published(124 * M, M, "CLIP ViT-L/14 text + 768x768 projection")),
        Component("text_encoder_2 (OpenCLIP bigG/14 text)", "transformers:CLIPTextModelWithProjection",
                  "sd3-medium.text_encoder_2.json", _BIGG_TEXT.published),
        Component("text_encoder_3 (T5 v1.1 XXL encoder)", "transformers:T5EncoderModel", "sd3-medium.text_encoder_3.json",
                  Published(4.76 * B, 0.01 * B, "T5 v1.1 XXL encoder: 4.76 B (google/t5-v1_1-xxl)")))),
    ("ViT-B-32", "openai"): Model("CLIP ViT-B/32 (open_clip, openai)", (
        Component("CLIP", "open_clip:ViT-B-32", None,
                  Published(151.28 * M, 0.01 * M, "open_clip model profile: ViT-B-32 151.28 M")),)),
    ("Salesforce/blip-itm-base-coco", None): Model("BLIP ITM base (COCO)", (
        Component("BlipForImageTextRetrieval", "transformers:BlipForImageTextRetrieval", "blip-itm-base-coco.json",
                  Published(224 * M, M, "BLIP base ITM: 224 M (Hub model page)")),)),
    ("meta-llama/Meta-Llama-3-70B-Instruct", None): Model("Llama 3 70B Instruct (judge / synthesis LLM)", (
        Component("LlamaForCausalLM", "transformers:LlamaForCausalLM", "meta-llama-3-70b-instruct.json",
                  Published(70_553_706_496, 1, "Llama 3 70B: 70,553,706,496 (Hub safetensors index)")),),
        note="served by an OpenAI-compatible endpoint (vLLM, tensor parallel); built here for its size only"),
    ("lmsys/vicuna-7b-v1.5", None): Model("Vicuna-7B v1.5", (
        Component("LlamaForCausalLM", "transformers:LlamaForCausalLM", "vicuna-7b-v1.5.json",
                  Published(6_738_415_616, 1, "Llama 2 7B: 6,738,415,616 (Hub safetensors index)")),)),
    ("lmsys/vicuna-13b-v1.5", None): Model("Vicuna-13B v1.5", (
        Component("LlamaForCausalLM", "transformers:LlamaForCausalLM", "vicuna-13b-v1.5.json",
                  Published(13_015_864_320, 1, "Llama 2 13B: 13,015,864,320 (Hub safetensors index)")),)),
    ("openai/clip-vit-large-patch14-336", None): Model("CLIP ViT-L/14-336 vision tower", (
        Component("CLIPVisionModel", "transformers-vision:CLIPVisionModel", "clip-vit-large-patch14-336.json",
                  Published(304 * M, M, "CLIP ViT-L/14 image tower: 304 M (LLaVA-1.5; OpenAI CLIP)")),)),
}


def lookup(model_id: str, revision: str | None) -> Model | None:
    """The catalogue entry of a model reference (open_clip archs by tag, Hub ids by id)."""
    return MODELS.get((model_id, revision)) or MODELS.get((model_id, None))
