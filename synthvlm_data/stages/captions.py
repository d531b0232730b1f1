"""Stage 1, captions, in two parts: `curate` maps the per-caption steps over fixed units of the
sources on every rank; `captions` reduces them on the main process into the caption shards.

    curate   (units of `captions.chunk_size` source rows; every rank/worker maps its share, resumable per unit):
             validation -> filters in order (rules, perplexity, CLIP/BLIP vs the original image)
             -> dedup embeddings; one shard per unit with its survivors and its step counts
    captions (main process, units in order): exact + near dedup -> judge -> limit, then synthesis and
             the balance/diversity report -> fixed shards of (id, caption, prompt, source, source_id, concept)

The reduce keeps its dedup indices and the kept rows in files (`captions/spill.py`, in a scratch
folder of the work dir removed when the shards are written), and writes the caption shards as it
reads the kept rows back: its memory does not grow with the caption count.

Both are deterministic and their units are fixed before anything runs, so the caption shards have
the same bytes whatever the number of ranks, and a killed build resumes without redoing a finished
unit. The judge decides in the reduce (it sees only captions that survived dedup, and `max_captions`
is global); its answers are kept in `captions/judge.jsonl` as they come, so a kill while judging
does not ask again. A large judge runs behind a serving engine, which gives it its parallelism.

With `captions.limit` (units of about `limit` rows then), `curate` first maps only the units that could hold `limit` captions; if the
reduce needs more, the main process maps the following units itself (written as shards too).
"""

from __future__ import annotations

import json
import shutil
import time
import weakref
from pathlib import Path

import pyarrow as pa

from synthvlm_data.columns import CAPTION_SCHEMA
from synthvlm_data.errors import ShardError
from synthvlm_data.shards import atomic_write_bytes
from synthvlm_data.models.devices import pinned_threads, resolve_device, torch_threads
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.workdir import CAPTIONS, CURATE
from synthvlm_data.workunits import WorkUnit, choose_prompt, chunk, plan_units, sample_id



def _plan(ctx: RunContext) -> dict:
    return json.loads((ctx.work.curate_plan_file()).read_text())


def curate_units(ctx: RunContext) -> list[WorkUnit]:
    """Every unit of the caption sources (the plan is written by `CurateStage.prepare`)."""
    return plan_units(CURATE, _plan(ctx)["units"])


class CurateStage(Stage):
    """The per-caption steps of the caption stage over fixed units of the sources (`Curator`)."""

    name = CURATE

    def __init__(self, models=None):
        self._curator = None
        self._reader = None
        self._models = models  # a ModelCache to share (the reduce's, when it maps units itself)
        self._scratch = None

    def device(self, ctx: RunContext) -> str:
        return resolve_device(ctx.recipe.captions.device)

    def prepare(self, ctx: RunContext) -> None:
        """Count the units (reads the sources once) and decide how many to map on the ranks."""
        path = ctx.work.curate_plan_file()
        if path.is_file() or ctx.work.is_complete(CAPTIONS):
            return
        from synthvlm_data.captions.pipeline import count_units, unit_size

        cfg = ctx.recipe.captions
        n, size = count_units(cfg), unit_size(cfg)
        # with a limit: the units that would hold `limit` captions if all passed (the reduce maps more if needed)
        first = n if cfg.limit is None else min(n, max(1, -(-cfg.limit // size)))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps({"units": n, "mapped": first, "unit_rows": size}) + "\n").encode())

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        if not (ctx.work.curate_plan_file()).is_file():  # captions complete before the stage existed
            return []
        return curate_units(ctx)[: _plan(ctx)["mapped"]]

    def setup(self, ctx: RunContext) -> None:
        self._curator = self._reader = None  # loaded with the first unit (in the stage's thread setting)
        self._scratch = None

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        return self.curate(ctx, unit).to_table()

    def curate(self, ctx: RunContext, unit: WorkUnit):
        from synthvlm_data.captions.pipeline import Curator, UnitReader
        from synthvlm_data.models.text import ModelCache

        cfg = ctx.recipe.captions
        with torch_threads(cfg.num_threads):
            if self._curator is None:
                # the ids read so far are indexed on disk, in a folder of this process's own
                # (removed with the reader; a killed run's is swept by the next build)
                self._scratch = ctx.work.scratch_dir(CURATE, "reader", unique=True)
                self._cleanup = weakref.finalize(self, shutil.rmtree, self._scratch, True)  # at exit, too
                self._curator = Curator(cfg, self._models or ModelCache())
                self._reader = UnitReader(cfg, self._scratch)
            return self._curator.curate(self._reader.unit(unit.index))

    def close(self) -> None:
        """Remove the reader's index (the reduce calls it; a rank's goes when its process ends)."""
        if self._reader is not None:
            self._reader.close()
        if self._scratch is not None:
            self._cleanup()
        self._curator = self._reader = self._scratch = None

    def manifest_extra(self, ctx: RunContext) -> dict:
        return _plan(ctx) if (ctx.work.curate_plan_file()).is_file() else {}


class CaptionsStage(Stage):
    """The caption pipeline's rows, with stable ids and seeded instructions, in fixed shards."""

    name = CAPTIONS

    def device(self, ctx: RunContext) -> str:
        return resolve_device(ctx.recipe.captions.device)

    def prepare(self, ctx: RunContext) -> None:
        """Reduce the curated units and write every shard and the caption report (unless complete)."""
        if ctx.work.is_complete(CAPTIONS):
            return
        scratch = ctx.work.scratch_dir(CAPTIONS, "reduce")
        try:
            self._write(ctx, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return self._units(len(chunk(ctx.work.caption_report()["captions_out"], ctx.recipe.rows_per_shard)))

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        """One caption shard: `prepare` writes them all, so a shard missing now was lost since."""
        raise ShardError(f"caption shard {ctx.store.path(unit)} is missing or corrupt: run the build again "
                         "(the caption stage writes every shard at once)")

    def manifest_extra(self, ctx: RunContext) -> dict:
        return {"rows": ctx.work.caption_report()["captions_out"]}

    @staticmethod
    def _units(n: int) -> list[WorkUnit]:
        return plan_units(CAPTIONS, n)

    @classmethod
    def _reduce(cls, ctx: RunContext, scratch: Path):
        """The curated units, in order, through the global steps (mapping any unit still missing here)."""
        from synthvlm_data.models.text import ModelCache

        ctx.work.caption_report_dir().mkdir(parents=True, exist_ok=True)
        models = ModelCache()  # one load of each model for the units mapped here and the global steps
        try:
            return cls._reduce_with(ctx, models, scratch)
        finally:
            models.close()  # an endpoint's thread pool lives as long as the stage

    @staticmethod
    def _reduce_with(ctx: RunContext, models, scratch: Path):
        from synthvlm_data.captions.pipeline import Reducer, UnitResult

        recipe, cfg = ctx.recipe, ctx.recipe.captions
        report_dir = ctx.work.caption_report_dir()
        curate = CurateStage(models)
        curate.setup(ctx)
        timings: dict[str, float] = {}
        t_all = time.perf_counter()

        def timed(name: str, t0: float) -> None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        # the thread setting the backends give the map (pinned_threads), so a unit mapped here gives the same bytes
        with pinned_threads(curate.device(ctx), ctx.cpu_threads), torch_threads(cfg.num_threads):
            reducer = Reducer(cfg, seed=recipe.seed, profile=recipe.profile, models=models, timed=timed,
                              judge_cache=ctx.work.judge_cache_file(), report_dir=report_dir, spill_dir=scratch)
            used = []
            try:
                for unit in curate_units(ctx):
                    if ctx.store.is_complete(unit):
                        result = UnitResult.from_table(ctx.store.read(unit))
                    else:  # past the units mapped on the ranks (a limit not reached yet): map it here
                        table = curate.curate(ctx, unit).to_table()
                        ctx.store.write(unit, table)
                        result = UnitResult.from_table(table)  # as if read back: the same report either way
                    used.append(unit)
                    if reducer.add(result):
                        break
            finally:
                curate.close()
            plan = _plan(ctx)
            if len(used) > plan["mapped"]:  # the units mapped here belong to the curate stage from now on
                plan["mapped"] = len(used)
                atomic_write_bytes(ctx.work.curate_plan_file(), (json.dumps(plan) + "\n").encode())
                ctx.work.write_manifest(CURATE, curate_units(ctx)[: len(used)], plan)
            # one report: the stage completes the reducer's and writes it (WorkDir.write_caption_report)
            return reducer.finish(report_dir, timings, t_all, write_report=False)  # timings: the reduce's

    @classmethod
    def _write(cls, ctx: RunContext, scratch: Path) -> None:
        """Reduce, then write the caption shards from the kept rows as they are read back, then the
        caption report. A row repeating an earlier row's (source, id, caption) is dropped
        (`repeated_rows`, known before the first shard is named)."""
        recipe = ctx.recipe
        result = cls._reduce(ctx, scratch)
        repeated = repeated_rows(result.rows, result.synthetic)
        n_out = len(result.rows) - len(repeated)
        if not n_out:
            srcs = ", ".join(f"{s.name} ({s.path or s.dataset}): {result.report.get('sources', {}).get(s.name, 0)} rows"
                             for s in recipe.captions.sources)
            drops = "; ".join(f"{st['name']}: " + (", ".join(f"{k} {v}" for k, v in st["reasons"].items())
                                                   if st.get("reasons") else f"{st['dropped']} dropped")
                              for st in result.report.get("steps", []) if st.get("dropped"))
            raise ShardError(f"the caption stage kept no captions (read {srcs}; {drops or 'nothing dropped'}): "
                             "check the caption files and the filters in the recipe")
        units = iter(cls._units(len(chunk(n_out, recipe.rows_per_shard))))
        rows: list[dict] = []
        for pos, r in enumerate(result.rows):
            if pos in repeated:
                continue
            sid = sample_id(r["source"], str(r["source_id"]), r["caption"])
            rows.append({"id": sid, "caption": r["caption"], "prompt": choose_prompt(recipe.seed, sid),
                         "source": r["source"], "source_id": str(r["source_id"]), "concept": r.get("concept")})
            if len(rows) == recipe.rows_per_shard:
                _write_shard(ctx, next(units), rows)
                rows = []
        if rows:
            _write_shard(ctx, next(units), rows)
        report = dict(result.report)
        report["duplicate_ids_dropped"] = len(repeated)
        report["captions_out"] = n_out
        ctx.work.write_caption_report(report)


def repeated_rows(rows, synthetic: list[dict]) -> set[int]:
    """Positions in `rows` (curated rows, then the `synthetic` ones) of the rows whose (source, id,
    caption) an earlier row has. Curated rows never repeat each other (validation keeps one row per
    (source, id)), so only synthetic rows are candidates, and the curated rows are read only when
    there are synthetic ones."""
    n_cur = len(rows) - len(synthetic)
    repeated: set[int] = set()
    first: dict[str, int] = {}  # synthetic sample id -> the position of its first row
    for k, r in enumerate(synthetic):
        sid = sample_id(r["source"], str(r["source_id"]), r["caption"])
        if sid in first:
            repeated.add(n_cur + k)
        else:
            first[sid] = n_cur + k
    if first:
        for pos, r in enumerate(rows):
            if pos >= n_cur:
                break
            sid = sample_id(r["source"], str(r["source_id"]), r["caption"])
            if sid in first:
                repeated.add(first.pop(sid))  # the curated row came first
    return repeated


def _write_shard(ctx: RunContext, unit: WorkUnit, rows: list[dict]) -> None:
    if not ctx.store.is_complete(unit):
        ctx.store.write(unit, pa.Table.from_pylist(rows, schema=CAPTION_SCHEMA))
