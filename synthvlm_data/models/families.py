"""Text-to-image generator families: one table of what differs between them.

A recipe's `generate.pipeline` names a family (or `auto`: the model's `model_index.json` says which
diffusers class it is). Everything that depends on the family is read from its row: the diffusers
pipeline class that loads it, the options it takes (a refiner, a T5 prompt length), the offline tiny
builder of that family, and how its pipeline decodes latents (an fp16 VAE upcast to fp32, the
invisible watermark), which a decode of stored latents must repeat to give the pixels the pipeline
would have. Adding a family is one row here (plus, if it needs one, an offline builder in `tiny.py`).

No torch at import: the recipe schema validates against this table.
"""

from __future__ import annotations

from dataclasses import dataclass

TINY_SDXL_BASE = "tiny:sdxl-base"
TINY_SDXL_REFINER = "tiny:sdxl-refiner"
TINY_SD3 = "tiny:sd3"


@dataclass(frozen=True)
class GeneratorFamily:
    name: str
    pipeline_class: str  # the diffusers class `pipeline: <name>` loads with
    class_prefix: str | None  # what a diffusers class name of this family contains (model_index.json)
    tiny: str | None  # the offline builder of this family (`tiny:`)
    refiner: bool = False  # takes an SDXL-style refiner (base to denoising_end, refiner from there)
    max_sequence_length: bool = False  # has a T5 prompt length option
    upcast_fp16_vae: bool = False  # decodes an fp16 VAE that says `force_upcast` in float32
    watermark: bool = False  # adds the invisible watermark when the package for it is installed


FAMILIES: dict[str, GeneratorFamily] = {
    "sdxl": GeneratorFamily("sdxl", "StableDiffusionXLPipeline", "StableDiffusionXL", TINY_SDXL_BASE, refiner=True,
                            upcast_fp16_vae=True, watermark=True),
    "sd3": GeneratorFamily("sd3", "StableDiffusion3Pipeline", "StableDiffusion3", TINY_SD3, max_sequence_length=True),
}
# Any other diffusers text-to-image pipeline: loaded by class from its model_index.json, decoded in
# the VAE's own dtype with no watermark (SD3, Flux and SD 1.x all do).
AUTO = GeneratorFamily("auto", "AutoPipelineForText2Image", None, None, max_sequence_length=True)
PIPELINES = (*FAMILIES, AUTO.name)


def family(name: str) -> GeneratorFamily:
    """The row of `generate.pipeline` (`auto` and unknown names: AUTO)."""
    return FAMILIES.get(name, AUTO)


def family_of_class(class_name: str, default: str = AUTO.name) -> GeneratorFamily:
    """The family a diffusers pipeline class belongs to (`StableDiffusionXLImg2ImgPipeline`: sdxl),
    else the row of `default`."""
    for row in FAMILIES.values():
        if row.class_prefix and row.class_prefix in class_name:
            return row
    return family(default)


def family_of_tiny(model_id: str) -> GeneratorFamily | None:
    """The family of a tiny generator id (None: not a tiny generator)."""
    return next((row for row in FAMILIES.values() if row.tiny == model_id), None)
