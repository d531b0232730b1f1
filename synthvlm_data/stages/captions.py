"""Stage 1, captions: sources -> validation -> filters -> dedup -> judge -> limit, then synthesis
(`synthvlm_data.captions`), as fixed shards of (id, caption, prompt, source, source_id, concept).

The stage is global: curation filters and dedup decide over the whole caption set, so `prepare`
runs the caption pipeline once, on the main process, and writes every shard; its shards are the
plan of every later stage (one unit per caption shard). It is deterministic, so a re-run rewrites
identical bytes, and a build whose caption shards are complete skips it.
"""

from __future__ import annotations

import pyarrow as pa

from synthvlm_data.columns import CAPTION_SCHEMA
from synthvlm_data.errors import ShardError
from synthvlm_data.models.devices import resolve_device
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.workdir import CAPTIONS
from synthvlm_data.workunits import WorkUnit, choose_prompt, chunk, plan_units, sample_id


class CaptionsStage(Stage):
    """The caption pipeline's rows, with stable ids and seeded instructions, in fixed shards."""

    name = CAPTIONS

    def __init__(self):
        self._tables: list[pa.Table] | None = None

    def device(self, ctx: RunContext) -> str:
        return resolve_device(ctx.recipe.captions.device)

    def prepare(self, ctx: RunContext) -> None:
        """Run the caption pipeline and write every shard and the caption report (unless complete)."""
        if ctx.work.is_complete(CAPTIONS):
            return
        for unit, table in zip(self._units(len(self.tables(ctx))), self.tables(ctx), strict=True):
            if not ctx.store.is_complete(unit):
                ctx.store.write(unit, table)

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return self._units(len(chunk(ctx.work.caption_report()["captions_out"], ctx.recipe.rows_per_shard)))

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        """One caption shard (shards are normally all written by `prepare`)."""
        return self.tables(ctx)[unit.index]

    def manifest_extra(self, ctx: RunContext) -> dict:
        return {"rows": ctx.work.caption_report()["captions_out"]}

    @staticmethod
    def _units(n: int) -> list[WorkUnit]:
        return plan_units(CAPTIONS, n)

    def tables(self, ctx: RunContext) -> list[pa.Table]:
        """The caption shards' tables, computed once per process (the caption report is written then)."""
        if self._tables is None:
            self._tables = self._compute(ctx)
        return self._tables

    @staticmethod
    def _compute(ctx: RunContext) -> list[pa.Table]:
        from synthvlm_data.captions.pipeline import run_captions

        recipe = ctx.recipe
        result = run_captions(recipe.captions, seed=recipe.seed, profile=recipe.profile,
                              report_dir=ctx.work.caption_report_dir())
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
        report = dict(result.report)
        report["duplicate_ids_dropped"] = duplicates
        report["captions_out"] = len(rows)
        ctx.work.write_caption_report(report)
        return [pa.Table.from_pylist(rows[c.start : c.stop], schema=CAPTION_SCHEMA)
                for c in chunk(len(rows), recipe.rows_per_shard)]
