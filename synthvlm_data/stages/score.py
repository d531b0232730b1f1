"""Stage 3, score: CLIPScore (raw cosine, `scoring.clipscore`) and SSIM against the resize round
trip (`scoring.ssim`) for every generated image."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from synthvlm_data.columns import decode_image, score_schema
from synthvlm_data.stages.base import RunContext, ShardwiseStage
from synthvlm_data.workdir import CAPTIONS, SCORE, image_stage
from synthvlm_data.workunits import WorkUnit


class ScoreStage(ShardwiseStage):
    """generate shard i -> score shard i: CLIPScore (raw cosine) and SSIM for every image."""

    name = SCORE

    def setup(self, ctx: RunContext) -> None:
        from synthvlm_data.scoring.clipscore import ClipScorer

        self.clip = ClipScorer(ctx.recipe.score.clip, ctx.recipe.generate.device)
        self.safety = None
        if ctx.recipe.score.safety is not None:
            from synthvlm_data.scoring.safety import SafetyScorer

            self.safety = SafetyScorer(ctx.recipe.score.safety, threads=ctx.cpu_threads)

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        """Every image of every caption is scored (k images per caption -> k rows).

        The generate shard is streamed max(score.batch_size, score.clip.batch_size) rows at a time
        (`ShardStore.iter_batches`): a shard of 1000 captions x 5 images at 1024 px is never in
        memory whole, encoded or decoded. SSIM stays on the CPU even on GPU workers: it is a small
        share of the stage (PIL resizes dominate), and CPU integer window sums give the same bytes
        on every machine.
        """
        from synthvlm_data.scoring.ssim import ssim_roundtrip

        caps = ctx.store.read(WorkUnit(CAPTIONS, unit.index, unit.num_units), ["id", "caption"])
        caption_of = dict(zip(caps["id"].to_pylist(), caps["caption"].to_pylist(), strict=True))
        step = max(ctx.recipe.score.batch_size, ctx.recipe.score.clip.batch_size)
        gen = WorkUnit(image_stage(ctx.recipe), unit.index, unit.num_units)
        ids: list[str] = []
        repeats: list[pa.Array] = []  # chunks of the int32 column
        clip: list[np.ndarray] = []
        ssim: list[np.ndarray] = []
        nsfw: list[np.ndarray] = []
        for batch in ctx.store.iter_batches(gen, ["id", "repeat", "image"], step):
            part = batch["id"].to_pylist()
            blobs = batch["image"].to_pylist()
            images = [decode_image(b, f"{i} in {unit.name}") for i, b in zip(part, blobs, strict=True)]
            clip.append(np.asarray(self.clip(images, [caption_of[i] for i in part]), dtype=np.float64))
            ssim.append(np.asarray(ssim_roundtrip(images, ctx.recipe.score.ssim), dtype=np.float64))
            if self.safety is not None:  # on the stored bytes, one image at a time (the detector decodes them)
                nsfw.append(np.asarray(self.safety(blobs), dtype=np.float64))
            ids += part
            repeats += batch["repeat"].chunks
            del batch, blobs, images  # before the next batch is read: one batch of images alive, not two
        cols = {
            "id": pa.array(ids, pa.string()),
            "repeat": pa.chunked_array(repeats, pa.int32()),
            "clip_score": np.concatenate(clip) if clip else np.zeros(0),
            "ssim": np.concatenate(ssim) if ssim else np.zeros(0),
        }
        if self.safety is not None:
            scores = np.concatenate(nsfw) if nsfw else np.zeros(0)
            cols.update(nsfw_score=scores, safe=scores < ctx.recipe.score.safety.threshold)
        return pa.table(cols, schema=score_schema(self.safety is not None))
