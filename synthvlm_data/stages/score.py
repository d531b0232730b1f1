"""Stage 3, score: CLIPScore (raw cosine, `scoring.clipscore`) and SSIM against the resize round
trip (`scoring.ssim`) for every generated image."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from synthvlm_data.columns import decode_image, score_schema
from synthvlm_data.stages.base import RunContext, ShardwiseStage
from synthvlm_data.workdir import CAPTIONS, SCORE, image_stage
from synthvlm_data.workunits import WorkUnit, chunk


class ScoreStage(ShardwiseStage):
    """generate shard i -> score shard i: CLIPScore (raw cosine) and SSIM for every image."""

    name = SCORE

    def setup(self, ctx: RunContext) -> None:
        from synthvlm_data.scoring.clipscore import ClipScorer

        self.clip = ClipScorer(ctx.recipe.score.clip, ctx.recipe.generate.device)
        self.safety = None
        if ctx.recipe.score.safety is not None:
            import torch

            from synthvlm_data.scoring.safety import SafetyScorer

            self.safety = SafetyScorer(ctx.recipe.score.safety, threads=torch.get_num_threads())

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        """Every image of every caption is scored (k images per caption -> k rows).

        Images are decoded max(score.batch_size, score.clip.batch_size) at a time, so a shard of
        1000 captions x 5 images at 1024 px never sits decoded in memory all at once. SSIM stays on
        the CPU even on GPU workers: it is a small share of the stage (PIL resizes dominate), and
        CPU integer window sums give the same bytes on every machine.
        """
        from synthvlm_data.scoring.ssim import ssim_roundtrip

        gen = ctx.store.read(WorkUnit(image_stage(ctx.recipe), unit.index, unit.num_units), ["id", "repeat", "image"])
        caps = ctx.store.read(WorkUnit(CAPTIONS, unit.index, unit.num_units), ["id", "caption"])
        caption_of = dict(zip(caps["id"].to_pylist(), caps["caption"].to_pylist(), strict=True))
        ids = gen["id"].to_pylist()
        blobs = gen["image"].to_pylist()
        step = max(ctx.recipe.score.batch_size, ctx.recipe.score.clip.batch_size)
        clip, ssim = np.zeros(len(ids)), np.zeros(len(ids))
        for part in chunk(len(ids), step):
            images = [decode_image(blobs[j], f"{ids[j]} in {unit.name}") for j in part]
            clip[part.start : part.stop] = self.clip(images, [caption_of[i] for i in ids[part.start : part.stop]])
            ssim[part.start : part.stop] = ssim_roundtrip(images, ctx.recipe.score.ssim)
        cols = {"id": ids, "repeat": gen["repeat"], "clip_score": clip, "ssim": ssim}
        if self.safety is not None:  # on the stored bytes, one image at a time (the detector decodes them)
            nsfw = np.asarray(self.safety(blobs), dtype=np.float64)
            cols.update(nsfw_score=nsfw, safe=nsfw < ctx.recipe.score.safety.threshold)
        return pa.table(cols, schema=score_schema(self.safety is not None))
