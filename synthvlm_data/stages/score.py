"""Stage 3, score: CLIPScore (raw cosine, `scoring.clipscore`) and SSIM against the resize round
trip (`scoring.ssim`) for every generated image."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import torch

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
        memory whole, encoded or decoded. The CPU work of a batch (PNG/JPEG decode, CLIP
        preprocessing, SSIM) is split over `--cpu-threads` worker threads and runs for the next
        batch while CLIP encodes this one (on a GPU, off its critical path); each image is
        processed alone, so the scores are the same bytes whatever the thread count. SSIM stays on
        the CPU even on GPU workers: CPU integer window sums give the same bytes on every machine.
        """
        caps = ctx.store.read(WorkUnit(CAPTIONS, unit.index, unit.num_units), ["id", "caption"])
        caption_of = dict(zip(caps["id"].to_pylist(), caps["caption"].to_pylist(), strict=True))
        step = max(ctx.recipe.score.batch_size, ctx.recipe.score.clip.batch_size)
        gen = WorkUnit(image_stage(ctx.recipe), unit.index, unit.num_units)
        ids: list[str] = []
        repeats: list[pa.Array] = []  # chunks of the int32 column
        clip: list[np.ndarray] = []
        ssim: list[np.ndarray] = []
        nsfw: list[np.ndarray] = []
        workers = max(1, int(ctx.cpu_threads))
        with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as ahead:
            batches = ctx.store.iter_batches(gen, ["id", "repeat", "image"], step)
            pending = ahead.submit(self._prepare, ctx, unit, next(batches, None), pool, workers)
            while True:
                prepared = pending.result()
                if prepared is None:
                    break
                part, repeat, blobs, pixels, ssim_part = prepared
                pending = ahead.submit(self._prepare, ctx, unit, next(batches, None), pool, workers)
                clip.append(np.asarray(self.clip.score_pixels(pixels, [caption_of[i] for i in part]), dtype=np.float64))
                ssim.append(ssim_part)
                if self.safety is not None:  # on the stored bytes, one image at a time (the detector decodes them)
                    nsfw.append(np.asarray(self.safety(blobs), dtype=np.float64))
                ids += part
                repeats += repeat
                del prepared, blobs, pixels  # the next batch is being prepared: at most two batches alive
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

    def _prepare(self, ctx: RunContext, unit: WorkUnit, batch, pool, workers: int):
        """(ids, repeat chunks, image bytes, CLIP pixels, SSIM) of one batch; its images decoded,
        preprocessed and SSIM-scored in `workers` contiguous slices on `pool` (None at the end)."""
        from synthvlm_data.models.devices import torch_threads
        from synthvlm_data.scoring.ssim import ssim_roundtrip

        if batch is None:
            return None
        part = batch["id"].to_pylist()
        blobs = batch["image"].to_pylist()
        size = max(1, -(-len(part) // workers))
        slices = [range(i, min(i + size, len(part))) for i in range(0, len(part), size)]

        def work(rows: range):
            with torch_threads(1):  # one torch thread per worker: `workers` threads in all, not workers x cores
                images = [decode_image(blobs[r], f"{part[r]} in {unit.name}") for r in rows]
                return self.clip.pixels(images), np.asarray(ssim_roundtrip(images, ctx.recipe.score.ssim),
                                                            dtype=np.float64)

        done = list(pool.map(work, slices)) if len(slices) > 1 else [work(s) for s in slices]
        pixels = torch.cat([d[0] for d in done]) if done else torch.zeros(0)
        ssim = np.concatenate([d[1] for d in done]) if done else np.zeros(0)
        return part, batch["repeat"].chunks, blobs, pixels, ssim
