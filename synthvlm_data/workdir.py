"""A build's work directory: the one owner of the run layout.

    <root>/run.json            recipe name + fingerprint of what the shards depend on
    <root>/recipe.yaml         the recipe that made them (validated again when read back)
    <root>/.lock               one build (or decode) at a time
    <root>/timings.json        wall time per stage of the last build (not reproducible: kept apart)
    <root>/<stage>/            <stage>-NNNNN-of-NNNNN.parquet (+ .sha256) and manifest.json
    <root>/curate/             + plan.json (how many units the sources hold, how many were mapped)
    <root>/captions/           + report.json (what the caption stage kept and dropped, why),
                                 captions_timings.json, caption_clusters.png, judge.jsonl (the
                                 judge's verdicts, reused on resume), llm_responses.jsonl (an
                                 endpoint's recorded answers, `models.endpoint`)
    <root>/select/             + stats.json (selection statistics), config.json (the rule applied)

Shards are read and written only through the `ShardStore` (atomic, checksummed); everything else
about the layout (which stage holds the images, where a report lives, whether a work dir belongs to
a recipe) is asked of a `WorkDir`, never rebuilt from path strings.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import yaml

from synthvlm_data.errors import InputDataError, ShardError, SynthVLMError, WorkDirLockedError
from synthvlm_data.shards import ShardStore, atomic_write_bytes
from synthvlm_data.workunits import WorkUnit, plan_units

CURATE, CAPTIONS, GENERATE, DECODE, SCORE, SELECT = "curate", "captions", "generate", "decode", "score", "select"
RUNS = Path("runs")

RUN_FILE = "run.json"
RECIPE_FILE = "recipe.yaml"
LOCK_FILE = ".lock"
SCRATCH_MARKER = ".synthvlm-scratch"  # in each scratch folder a stage makes (`WorkDir.scratch_dir`)
TIMINGS_FILE = "timings.json"
CAPTION_REPORT = "report.json"  # in captions/
CURATE_PLAN = "plan.json"  # in curate/
JUDGE_CACHE = "judge.jsonl"  # in captions/
SELECTION_STATS = "stats.json"  # in select/
SELECTION_RULE = "config.json"  # in select/
_SHARD_NAME = re.compile(r"^(?P<stage>[a-z]+)-(?P<index>\d{5})-of-(?P<num>\d{5})\.parquet$")


def image_stage(recipe) -> str:
    """The stage whose shards hold a run's images (pixel runs: generate; latent runs: decode)."""
    return DECODE if recipe.generate.output == "latents" else GENERATE


class WorkDir:
    """One build's work directory (see the module docstring for its layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.store = ShardStore(self.root)

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"

    # ----------------------------------------------------------------------- where

    @classmethod
    def default(cls, recipe) -> WorkDir:
        """`runs/<name>-<fingerprint>`: a changed recipe never resumes another recipe's shards."""
        return cls(RUNS / f"{recipe.name}-{recipe.shards_fingerprint()[:8]}")

    @classmethod
    def candidates(cls, recipe, bases: Sequence[Path]) -> list[WorkDir]:
        """Work dirs under `<base>/runs/` that may hold a build of `recipe`: the default one, then
        `runs/<name>`, then any `runs/<name>-*`, those whose run.json names this recipe first."""
        names = [cls.default(recipe).root.name, recipe.name]
        found: list[Path] = []
        for base in dict.fromkeys(bases):
            runs = Path(base) / RUNS
            for cand in [runs / n for n in names] + sorted(runs.glob(f"{glob.escape(recipe.name)}-*")):
                if (cand / SCORE).is_dir() and cand not in found:
                    found.append(cand)
        return sorted((cls(p) for p in found), key=lambda w: not w.matches(recipe))  # stable

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    # ----------------------------------------------------------------------- identity, lock

    def fingerprint(self) -> str | None:
        try:
            return json.loads((self.root / RUN_FILE).read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None

    def matches(self, recipe) -> bool:
        """Whether run.json names this recipe (its full or its shards fingerprint)."""
        return self.fingerprint() in {recipe.fingerprint(), recipe.shards_fingerprint()}

    def init(self, recipe) -> None:
        """Claim the work dir for `recipe` (recipe.yaml + run.json), or check it already belongs to it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fp = recipe.shards_fingerprint()
        if (self.root / RUN_FILE).is_file():
            found = self.fingerprint()
            if found != fp:
                raise SynthVLMError(
                    f"work dir {self.root} holds a run of a different recipe (fingerprint {found} "
                    f"vs {fp}); pass another --work-dir or delete it to start over"
                )
            return
        atomic_write_bytes(self.root / RECIPE_FILE,
                           yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False).encode())
        atomic_write_bytes(self.root / RUN_FILE, json.dumps({"recipe": recipe.name, "fingerprint": fp}, indent=2).encode())

    def has_recipe(self) -> bool:
        return (self.root / RECIPE_FILE).is_file()

    def recipe_text(self) -> str:
        return (self.root / RECIPE_FILE).read_text(encoding="utf-8")

    def recipe(self):
        """The recipe that made this work dir (validated with the current schema)."""
        from synthvlm_data.config import recipe_from_dict

        if not self.has_recipe():
            raise SynthVLMError(f"{self.root} is not a build's work dir (no {RECIPE_FILE}); pass the --work-dir of a build")
        return recipe_from_dict(yaml.safe_load(self.recipe_text()), str(self.root / RECIPE_FILE))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One build per work dir at a time (the lock dies with the process, even on SIGKILL)."""
        with (self.root / LOCK_FILE).open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkDirLockedError(
                    f"another build is running on {self.root}; wait for it to finish or use another --work-dir"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def sweep_temporaries(self) -> list[Path]:
        """Delete temporary shard files and scratch folders of killed writers (never read as data;
        this frees the disk). A folder goes only if it is a stage's scratch folder carrying the
        `SCRATCH_MARKER` that `scratch_dir` writes: a `.tmp-*` folder of anyone else stays. Call it
        under the lock, so no writer of this work dir is alive."""
        import shutil

        removed = [p for p in self.root.rglob(".tmp-*") if p.is_file() and not p.is_symlink()]
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for path in self.root.glob("*/.tmp-*"):
            if path.is_dir() and not path.is_symlink() and (path / SCRATCH_MARKER).is_file():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def scratch_dir(self, stage: str, name: str, *, unique: bool = False) -> Path:
        """An empty folder for a stage's temporary files (`<stage>/.tmp-<name>`, or with `unique` a new
        `<stage>/.tmp-<name>-<random>` per call, one per process), carrying `SCRATCH_MARKER`: the
        caption reduce keeps its dedup indices and kept rows there. The stage removes it when done;
        `sweep_temporaries` removes what a killed run left."""
        import shutil
        import tempfile

        parent = self.stage_dir(stage)
        parent.mkdir(parents=True, exist_ok=True)
        if unique:
            path = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent))
        else:
            path = parent / f".tmp-{name}"
            if path.is_dir() and not path.is_symlink() and (path / SCRATCH_MARKER).is_file():
                shutil.rmtree(path)  # this stage's scratch folder, left by a killed run
            if path.exists() or path.is_symlink():  # not a scratch folder of ours: never removed
                raise ShardError(f"{path} is in the way of the {stage} stage's scratch folder and was not made by "
                                 "a build: move it out of the work dir and run again")
            path.mkdir()
        (path / SCRATCH_MARKER).write_text("scratch folder of a synthvlm build: removed when its stage ends\n")
        return path

    # ----------------------------------------------------------------------- stages

    def manifest(self, stage: str) -> dict | None:
        path = self.stage_dir(stage) / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def units(self, stage: str) -> list[WorkUnit]:
        """The stage's work units, as its manifest records them."""
        manifest = self.manifest(stage)
        if manifest is None:
            raise ShardError(f"{self.stage_dir(stage) / 'manifest.json'} is missing: run the {stage} stage first")
        # a stage that ran a prefix of its units (curate under a caption limit) records the total as
        # `units`: its shards are named "-of-<total>"
        return plan_units(stage, manifest.get("units", manifest["num_shards"]))[: manifest["num_shards"]]

    def write_manifest(self, stage: str, units: list[WorkUnit], extra: dict | None = None) -> Path:
        return self.store.write_manifest(stage, units, extra)

    def is_complete(self, stage: str) -> bool:
        """Every unit of the stage's manifest has a checksum-verified shard."""
        try:
            units = self.units(stage)
        except ShardError:
            return False
        return all(self.store.is_complete(u) for u in units)

    def shard_units(self, stage: str) -> list[WorkUnit]:
        """The units whose shards are listed in the stage's manifest, or, without one, whose shard
        files are on disk (a work dir copied in part)."""
        if self.manifest(stage) is not None:
            return self.units(stage)
        found = (_SHARD_NAME.match(p.name) for p in sorted(self.stage_dir(stage).glob("*.parquet")))
        return [WorkUnit(stage, int(m["index"]), int(m["num"])) for m in found if m and m["stage"] == stage]

    def caption_count(self) -> int | None:
        """Captions the caption stage kept (from its manifest), if it ran here."""
        manifest = self.manifest(CAPTIONS)
        return int(manifest["rows"]) if manifest and "rows" in manifest else None

    # ----------------------------------------------------------------------- reports and statistics

    def caption_report_dir(self) -> Path:
        return self.stage_dir(CAPTIONS)

    def curate_plan_file(self) -> Path:
        return self.stage_dir(CURATE) / CURATE_PLAN

    def judge_cache_file(self) -> Path:
        return self.stage_dir(CAPTIONS) / JUDGE_CACHE

    def write_caption_report(self, report: dict) -> None:
        atomic_write_bytes(self.stage_dir(CAPTIONS) / CAPTION_REPORT, json.dumps(report, indent=2, default=str).encode())

    def caption_report(self) -> dict:
        return json.loads((self.stage_dir(CAPTIONS) / CAPTION_REPORT).read_text())

    def caption_plot(self) -> Path | None:
        """The caption stage's curated-vs-synthetic cluster histogram, when the recipe asked for it."""
        from synthvlm_data.captions.pipeline import CLUSTERS_PNG

        path = self.stage_dir(CAPTIONS) / CLUSTERS_PNG
        return path if path.is_file() else None

    def write_selection_stats(self, stats: dict) -> None:
        atomic_write_bytes(self.stage_dir(SELECT) / SELECTION_STATS, json.dumps(stats, indent=2).encode())

    def selection_stats(self) -> dict:
        return json.loads((self.stage_dir(SELECT) / SELECTION_STATS).read_text())

    def keep_selection_for(self, rule: dict) -> None:
        """Selection is cheap: drop its shards whenever the selection rule changed since they were written."""
        marker = self.stage_dir(SELECT) / SELECTION_RULE
        current = json.dumps(rule, sort_keys=True)
        if marker.is_file() and marker.read_text() == current:
            return
        for path in self.stage_dir(SELECT).glob("*.parquet*"):
            path.unlink()
        atomic_write_bytes(marker, current.encode())

    def write_timings(self, timings: dict[str, float]) -> None:
        atomic_write_bytes(self.root / TIMINGS_FILE, json.dumps(timings, indent=2).encode())

    # ----------------------------------------------------------------------- reading for reports

    def scored_pool(self) -> pa.Table:
        """Every scored image of the run (id, repeat, clip_score, ssim), with the index of the score
        shard (`_unit`) and the row in it (`_row`) that hold it."""
        units = self.shard_units(SCORE)
        if not units:
            raise InputDataError(f"{self.stage_dir(SCORE)} has no shards: the score stage has not run there")
        parts = []
        for unit in units:
            if not self.store.path(unit).is_file():
                raise InputDataError(f"{self.store.path(unit)} is listed in the score manifest but missing: "
                                     f"the work dir {self.root} is incomplete")
            t = self.store.read(unit, ["id", "repeat", "clip_score", "ssim"])
            t = t.append_column("_unit", pa.array([unit.index] * t.num_rows, pa.int64()))
            parts.append(t.append_column("_row", pa.array(range(t.num_rows), pa.int64())))
        return pa.concat_tables(parts)

    def images(self, stage: str, index: int, rows: Sequence[int]) -> dict[int, object]:
        """PIL images of some rows of shard `index` of `stage` (only their row groups are read)."""
        from synthvlm_data.columns import decode_image

        unit = next((u for u in self.shard_units(stage) if u.index == index), None)
        if unit is None:
            raise InputDataError(f"{self.stage_dir(stage)} has no shard {index}: the work dir {self.root} is incomplete")
        values = self.store.take(unit, "image", rows)
        return {r: decode_image(data, f"row {r} of {unit.name}") for r, data in values.items()}

    def caption_table(self, columns: Sequence[str]) -> pa.Table:
        """Some columns of every caption shard, in shard order (an empty table before the stage ran)."""
        if self.manifest(CAPTIONS) is None:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        return pa.concat_tables([self.store.read(unit, list(columns)) for unit in self.units(CAPTIONS)])

    def captions_by_id(self) -> dict[str, str]:
        if self.manifest(CAPTIONS) is None:
            return {}
        out: dict[str, str] = {}
        for unit in self.units(CAPTIONS):
            t = self.store.read(unit, ["id", "caption"])
            out.update(zip(t["id"].to_pylist(), t["caption"].to_pylist(), strict=True))
        return out
