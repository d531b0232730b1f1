"""Image safety verdicts at the score stage: every generated image gets `nsfw_score` (the highest
detector score among the recipe's unsafe classes, 0 when none is found) and `safe`
(`nsfw_score < threshold`); selection drops unsafe images by default (`select.drop_unsafe`).

The default classes are nudenet's exposed-nudity ones; faces, feet, armpits, bellies and covered
parts are not unsafe. NudeNet's own examples use 0.5 as the detection threshold (scores below 0.2
are never reported).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from synthvlm_data.models.safety import NUDENET_CLASSES
from synthvlm_data.schema import StrictModel

UNSAFE_DEFAULT = ["FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                  "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"]


class SafetyConfig(StrictModel):
    """`score.safety`: off when null (the papers have no image safety check)."""

    detector: Literal["nudenet"] = "nudenet"
    threshold: float = Field(default=0.5, gt=0.0, le=1.0, description="An image is unsafe when a detection "
                             "of an unsafe class scores at least this.")
    classes: list[str] = Field(default=UNSAFE_DEFAULT, min_length=1, description="The detector's classes that "
                               "make an image unsafe.")

    @field_validator("classes")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in NUDENET_CLASSES]
        if unknown:
            raise ValueError(f"unknown nudenet class {unknown[0]!r}; known: {', '.join(NUDENET_CLASSES)}")
        return v


class SafetyScorer:
    """One detector per worker; scores encoded image bytes (PNG/JPEG/WebP, as the stage stores them)."""

    def __init__(self, cfg: SafetyConfig, threads: int = 1):
        from synthvlm_data.models.safety import load_nudenet

        self.cfg = cfg
        self.classes = frozenset(cfg.classes)
        self.detector = load_nudenet(threads)

    def __call__(self, blobs: list[bytes]) -> list[float]:
        out = []
        for data in blobs:
            found = [d["score"] for d in self.detector.detect(data) if d["class"] in self.classes]
            out.append(float(max(found, default=0.0)))
        return out
