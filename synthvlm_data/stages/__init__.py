"""The build's stages, in data-flow order: one module per stage, each a `Stage` (`base`).

    curate -> captions -> generate -> [decode] -> score -> select -> export
    \___captions.py___/  generate.py  decode.py   score.py  select.py  export.py

`decode` runs for latent-mode recipes only (Synth^2 stores latents; images are decoded for
scoring). `export` is not a stage of units: it assembles the published folder from the selection.
"""

from __future__ import annotations

from synthvlm_data.config import Recipe
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.stages.captions import CaptionsStage, CurateStage
from synthvlm_data.stages.decode import DecodeStage
from synthvlm_data.stages.generate import GenerateStage
from synthvlm_data.stages.score import ScoreStage
from synthvlm_data.stages.select import SelectStage
from synthvlm_data.workdir import CAPTIONS, CURATE, DECODE, GENERATE, SCORE, SELECT


def stages_for(recipe: Recipe) -> tuple[type[Stage], ...]:
    """The stages a recipe runs, in order (latent runs decode before scoring)."""
    if recipe.generate.output == "latents":
        return (CurateStage, CaptionsStage, GenerateStage, DecodeStage, ScoreStage, SelectStage)
    return (CurateStage, CaptionsStage, GenerateStage, ScoreStage, SelectStage)


__all__ = ["CAPTIONS", "CURATE", "DECODE", "GENERATE", "SCORE", "SELECT", "CaptionsStage", "CurateStage", "DecodeStage", "GenerateStage",
           "RunContext", "ScoreStage", "SelectStage", "Stage", "stages_for"]
