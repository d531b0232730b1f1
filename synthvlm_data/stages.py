"""The build's stages: captions -> generate -> score -> select.

Each stage is a pure function of one work unit (a shard of input rows) to one output table; it
knows nothing about processes or machines (the backends in `synthvlm_data.backends` decide who runs
which unit). Models are loaded in `setup`, once per worker. Export (the published folder) lives in
`synthvlm_data.export`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from synthvlm_data.columns import CAPTION_SCHEMA, GENERATE_SCHEMA, LATENT_SCHEMA, SCORE_SCHEMA, decode_image
from synthvlm_data.config import Recipe
from synthvlm_data.errors import ShardError
from synthvlm_data.shards import ShardStore
from synthvlm_data.workdir import CAPTIONS, DECODE, GENERATE, SCORE, SELECT, WorkDir, image_stage
from synthvlm_data.workunits import WorkUnit, choose_prompt, chunk, derive_seed, plan_units, sample_id


@dataclass
class RunContext:
    """What every stage may read: the recipe and the run's work directory."""

    recipe: Recipe
    work: WorkDir

    @property
    def store(self) -> ShardStore:
        return self.work.store

    def caption_units(self) -> list[WorkUnit]:
        return self.work.units(CAPTIONS)


class Stage(abc.ABC):
    """A stage maps each of its work units to one table."""

    name: str = ""

    @abc.abstractmethod
    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        """The stage's work units, fixed before anything runs."""

    def setup(self, ctx: RunContext) -> None:
        """Load models once per worker (called only if some unit still needs to run)."""

    @abc.abstractmethod
    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        """Compute one unit's output table (pure: same unit, same bytes)."""


# --------------------------------------------------------------------------- captions


def prepare_captions(ctx: RunContext) -> list[WorkUnit]:
    """Run the caption pipeline once and write its rows as fixed shards (the build's plan).

    Curation filters and dedup are global over the caption set, so this stage runs in one
    process; it is deterministic, so re-running it rewrites identical bytes.
    """
    from synthvlm_data.captions.pipeline import run_captions

    recipe = ctx.recipe
    result = run_captions(recipe.captions, seed=recipe.seed, profile=recipe.profile, report_dir=ctx.work.caption_report_dir())
    rows, seen, duplicates = [], set(), 0
    for r in result.rows:
        sid = sample_id(r["source"], str(r["source_id"]), r["caption"])
        if sid in seen:  # identical (source, id, caption): keep the first, count the rest
            duplicates += 1
            continue
        seen.add(sid)
        rows.append(
            {
                "id": sid,
                "caption": r["caption"],
                "prompt": choose_prompt(recipe.seed, sid),
                "source": r["source"],
                "source_id": str(r["source_id"]),
                "concept": r.get("concept"),
            }
        )
    if not rows:
        srcs = ", ".join(f"{s.name} ({s.path or s.dataset}): {result.report.get('sources', {}).get(s.name, 0)} rows"
                         for s in recipe.captions.sources)
        drops = "; ".join(f"{st['name']}: " + (", ".join(f"{k} {v}" for k, v in st["reasons"].items())
                                               if st.get("reasons") else f"{st['dropped']} dropped")
                          for st in result.report.get("steps", []) if st.get("dropped"))
        raise ShardError(f"the caption stage kept no captions (read {srcs}; {drops or 'nothing dropped'}): "
                         "check the caption files and the filters in the recipe")
    chunks = chunk(len(rows), recipe.rows_per_shard)
    units = plan_units(CAPTIONS, len(chunks))
    for unit, rng in zip(units, chunks, strict=True):
        part = rows[rng.start : rng.stop]
        table = pa.Table.from_pylist(part, schema=CAPTION_SCHEMA)
        if not ctx.store.is_complete(unit):
            ctx.store.write(unit, table)
    report = dict(result.report)
    report["duplicate_ids_dropped"] = duplicates
    report["captions_out"] = len(rows)
    ctx.work.write_caption_report(report)
    ctx.work.write_manifest(CAPTIONS, units, {"rows": len(rows)})
    return units


# --------------------------------------------------------------------------- generate


class GenerateStage(Stage):
    """caption shard i -> generate shard i: k images (or latents) per caption, each with its own seed.

    Generation batches are fixed here (consecutive `batch_size` jobs of the shard), never by
    a backend: batch composition changes float results.
    """

    name = GENERATE

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return plan_units(GENERATE, len(ctx.caption_units()))

    def setup(self, ctx: RunContext) -> None:
        from synthvlm_data.generate import ImageGenerator

        self.generator = ImageGenerator(ctx.recipe.generate)

    @staticmethod
    def batches(ctx: RunContext, unit: WorkUnit) -> list[list[tuple[str, str, int, int]]]:
        """The unit's fixed generation batches of (id, caption, repeat, seed)."""
        cfg = ctx.recipe.generate
        caps = ctx.store.read(WorkUnit(CAPTIONS, unit.index, unit.num_units), ["id", "caption"]).to_pylist()
        jobs = [
            (c["id"], c["caption"], r, derive_seed(ctx.recipe.seed, c["id"], r))
            for c in caps
            for r in range(cfg.images_per_caption)
        ]
        return [jobs[b.start : b.stop] for b in chunk(len(jobs), cfg.batch_size)]

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        from synthvlm_data.columns import encode_image, latent_to_bytes

        cfg = ctx.recipe.generate
        latent_mode = cfg.output == "latents"
        rows = []
        for part in self.batches(ctx, unit):
            prompts, seeds = [j[1] for j in part], [j[3] for j in part]
            outputs = self.generator.latents(prompts, seeds) if latent_mode else self.generator(prompts, seeds)
            for (sid, _, rep, seed), out in zip(part, outputs, strict=True):
                row = {"id": sid, "repeat": rep, "seed": seed, "generator": self.generator.name}
                if latent_mode:
                    row["latent"], row["latent_shape"] = latent_to_bytes(out), list(out.shape)
                else:
                    row["image"] = encode_image(out, cfg.image_format, cfg.image_quality)
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=LATENT_SCHEMA if latent_mode else GENERATE_SCHEMA)


class DecodeStage(Stage):
    """generate shard i (latents) -> decode shard i (images, the pixel-mode generate schema).

    Uses only the generator's VAE, in the generation batches (same composition as the
    pipeline's own decode in pixel mode). Latent runs decode before scoring: CLIPScore and
    SSIM are defined on pixels. The exported dataset still carries the latents.
    """

    name = DECODE

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        if ctx.recipe.generate.output != "latents":
            raise ShardError("decode applies to latent-mode runs (generate.output: latents); this run stores images")
        return plan_units(DECODE, len(ctx.caption_units()))

    def setup(self, ctx: RunContext) -> None:
        from synthvlm_data.generate import LatentDecoder

        self.decoder = LatentDecoder(ctx.recipe.generate)

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        import torch

        from synthvlm_data.columns import encode_image, latent_from_bytes

        cfg = ctx.recipe.generate
        gen = ctx.store.read(WorkUnit(GENERATE, unit.index, unit.num_units)).to_pylist()
        rows = []
        for part in chunk(len(gen), cfg.batch_size):
            batch = gen[part.start : part.stop]
            latents = torch.stack([latent_from_bytes(r["latent"], r["latent_shape"]) for r in batch])
            for r, img in zip(batch, self.decoder(latents), strict=True):
                rows.append({
                    "id": r["id"], "repeat": r["repeat"], "seed": r["seed"],
                    "image": encode_image(img, cfg.image_format, cfg.image_quality), "generator": r["generator"],
                })
        return pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA)


# --------------------------------------------------------------------------- score


class ScoreStage(Stage):
    """generate shard i -> score shard i: CLIPScore (raw cosine) and SSIM for every image."""

    name = SCORE

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return plan_units(SCORE, len(ctx.caption_units()))

    def setup(self, ctx: RunContext) -> None:
        from synthvlm_data.scoring.clipscore import ClipScorer

        self.clip = ClipScorer(ctx.recipe.score.clip, ctx.recipe.generate.device)

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
        return pa.table({"id": ids, "repeat": gen["repeat"], "clip_score": clip, "ssim": ssim}, schema=SCORE_SCHEMA)


# --------------------------------------------------------------------------- select


class SelectStage(Stage):
    """All score shards -> one selection table (a global reduce over small columns)."""

    name = SELECT

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return plan_units(SELECT, 1)

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        from synthvlm_data.select import select_best

        n = len(ctx.caption_units())
        scores = pa.concat_tables(ctx.store.read(WorkUnit(SCORE, i, n)) for i in range(n))
        clusters, k = None, None
        if ctx.recipe.select.diversity is not None:  # Synth^2 balance: k-means over caption embeddings
            from synthvlm_data.clustering import cluster_captions

            caps = pa.concat_tables(ctx.store.read(u, ["id", "caption"]) for u in ctx.caption_units())
            clusters, k = cluster_captions(caps["id"].to_pylist(), caps["caption"].to_pylist(), ctx.recipe.select.diversity)
        table, stats = select_best(scores, ctx.recipe.select, clusters=clusters, k=k)
        ctx.work.write_selection_stats(stats)
        return table


STAGES: tuple[type[Stage], ...] = (GenerateStage, ScoreStage, SelectStage)


def stages_for(recipe: Recipe) -> tuple[type[Stage], ...]:
    """The stages a recipe runs after captions (latent runs decode before scoring)."""
    if recipe.generate.output == "latents":
        return (GenerateStage, DecodeStage, ScoreStage, SelectStage)
    return STAGES
