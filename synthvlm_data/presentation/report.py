"""The data-quality report: the SynthVLM paper's quality table, for any dataset we build.

SynthVLM compares mean CLIPScore and SSIM of its selected data with real caption datasets
(SynthVLM-100K 0.36 / 0.86 vs COCO-Caption 0.31 / 0.73). This module computes the same table for
a dataset folder from `synthvlm build`:

- **selected**: the exported rows (their stored `clip_score`, `ssim`, `score`);
- **rejected pool**: every scored image that was not exported (other images of a selected
  caption and all images of rejected captions), read from the work dir's score shards when the
  work dir is available;
- **real reference**: real images with human captions, scored *the same way* (the recipe's CLIP
  scorer, text prefix and SSIM round trip). Offline this is 12 sample images shipped with
  scikit-image, scikit-learn and matplotlib, captioned by hand
  (`synthvlm_data/data/reference_captions.jsonl`); at full scale, any `load_dataset`-able
  dataset with an image and a caption column (e.g. a COCO captions set on the Hub).

Outputs: `report.json`, `report.md` (the table), `score_hist.png` (score distributions per
set), `top_bottom_grid.png` (highest-scoring selected samples and lowest-scoring pool samples),
and `cluster_hist.png` when the selection was diversity-balanced.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from synthvlm_data.columns import decode_image
from synthvlm_data.config import Recipe
from synthvlm_data.dataset_dir import QUALITY_DIR, QUALITY_JSON, QUALITY_MD, DatasetDir, find_recipe
from synthvlm_data.errors import InputDataError, one_line
from synthvlm_data.presentation import describe, plots
from synthvlm_data.presentation.templates import QUALITY_REPORT, fmt4, render
from synthvlm_data.shards import take_rows
from synthvlm_data.stages.select import combined_score, summarize
from synthvlm_data.workdir import SCORE, WorkDir, image_stage

REFERENCE_CAPTIONS = "reference_captions.jsonl"
BUILTIN = "builtin"
# SynthVLM paper, data-quality table [secondary summary]: mean CLIPScore (raw cosine) / SSIM.
PAPER_ROWS = (
    ("SynthVLM-100K", 0.36, 0.86),
    ("COCO-Caption", 0.31, 0.73),
    ("BLIP-LCS", 0.32, 0.75),
    ("ShareGPT4V", 0.32, 0.79),
)
REPORT_MD = QUALITY_MD
FILES = (QUALITY_JSON, REPORT_MD, "score_hist.png", "top_bottom_grid.png")


@dataclass
class ScoreSet:
    """One row of the quality table: per-sample scores of one set of image-caption pairs."""

    name: str
    clip: np.ndarray
    ssim: np.ndarray
    score: np.ndarray
    note: str = ""
    items: list[dict] = field(default_factory=list)  # per-sample details kept in report.json

    def row(self) -> dict:
        from synthvlm_data.scoring.clipscore import clipscore_scaled

        return {
            "set": self.name,
            "clip_score": summarize(self.clip),
            "clipscore_scaled": summarize(clipscore_scaled(self.clip)),
            "ssim": summarize(self.ssim),
            "score": summarize(self.score),
            "note": self.note,
        }


# --------------------------------------------------------------------------- the real reference set


def reference_entries() -> list[dict]:
    """The shipped reference list: id, loader, hand-written caption, credit."""
    text = (resources.files("synthvlm_data.data") / REFERENCE_CAPTIONS).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_reference_image(loader: str) -> Image.Image:
    """`skimage:<name>`, `sklearn:<file>` or `matplotlib:<sample file>` -> RGB image (no download)."""
    kind, _, name = loader.partition(":")
    if kind == "skimage":
        import skimage.data

        arr = getattr(skimage.data, name)()
        if isinstance(arr, tuple):  # stereo pairs: the left view
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        return Image.fromarray(arr).convert("RGB")
    if kind == "sklearn":
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name)).convert("RGB")
    if kind == "matplotlib":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data(name) as fh:
            return Image.open(io.BytesIO(fh.read())).convert("RGB")
    raise InputDataError(f"unknown reference image loader '{loader}' (skimage:, sklearn:, matplotlib:)")


def builtin_reference() -> list[dict]:
    """The offline reference set: dicts with id, image (PIL), caption, credit."""
    return [{**e, "image": load_reference_image(e["loader"])} for e in reference_entries()]


def hub_reference(spec: str, split: str = "train", limit: int = 500) -> list[dict]:
    """A real image-caption set from `load_dataset(spec)`: a local folder or a Hub dataset id.

    Streamed: only the first `limit` rows are read (COCO's image split is ~20 GB; 500 pairs are
    enough for the table). The image column is the first `Image` feature; the caption column is
    the first of caption/captions/text/sentences/sentence (a list contributes its first caption).
    """
    import datasets

    def fail(err: Exception) -> InputDataError:
        return InputDataError(f"cannot load the reference dataset '{spec}' (split {split}): {one_line(err)}; "
                              "use --reference builtin offline")

    try:
        ds = datasets.load_dataset(spec, split=split, streaming=True)
        rows = list(ds.take(limit))
    except Exception as err:
        raise fail(err) from None
    features = ds.features or {}
    names = list(features) or (list(rows[0]) if rows else [])
    image_col = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_col is None and rows:  # features unknown until read (some streamed formats)
        image_col = next((k for k, v in rows[0].items() if isinstance(v, Image.Image)), None)
    cap_col = next((c for c in ("caption", "captions", "text", "sentences", "sentence") if c in names), None)
    if image_col is None or cap_col is None:
        raise InputDataError(
            f"reference dataset '{spec}' needs an Image column and a caption column "
            f"(caption/captions/text/sentences); it has {names}"
        )
    out = []
    for i, row in enumerate(rows):
        cap = row[cap_col]
        if isinstance(cap, list):
            cap = cap[0] if cap else ""
        if isinstance(cap, dict):  # e.g. {"raw": ...}
            cap = next(iter(cap.values()), "")
        out.append({"id": str(row.get("id", i)), "image": row[image_col].convert("RGB"), "caption": str(cap), "credit": spec})
    return out


def score_reference(entries: list[dict], recipe: Recipe, scorer=None, device: str | None = None) -> ScoreSet:
    """Score real pairs exactly as the build scores generated ones (CLIP + SSIM round trip)."""
    from synthvlm_data.scoring.ssim import ssim_roundtrip

    if scorer is None:
        scorer = make_scorer(recipe, device)
    images = [e["image"] for e in entries]
    clip = scorer(images, [e["caption"] for e in entries])
    ssim = np.asarray(ssim_roundtrip(images, recipe.score.ssim), dtype=np.float64)
    score = combined_score(clip, ssim, recipe.select)
    items = [
        {"id": e["id"], "caption": e["caption"], "credit": e.get("credit", ""), "clip_score": float(c), "ssim": float(s), "score": float(t)}
        for e, c, s, t in zip(entries, clip, ssim, score, strict=True)
    ]
    return ScoreSet("real reference", clip, ssim, score, items=items)


def make_scorer(recipe: Recipe, device: str | None = None):
    from synthvlm_data.models.preflight import check_available
    from synthvlm_data.scoring.clipscore import ClipScorer

    check_available(recipe.score.clip.model, "score.clip.model")  # one clear line if not
    return ClipScorer(recipe.score.clip, device if device is not None else recipe.generate.device)


# --------------------------------------------------------------------------- finding the run


def find_work_dir(dataset_dir: Path, recipe: Recipe, work_dir: Path | None = None) -> Path | None:
    """The work dir given (it must have a score stage), else the first candidate under `runs/`
    (next to the current directory or the dataset; `WorkDir.candidates`).

    Whether a work dir really made the dataset is checked on the data (`check_pool`), not by the
    fingerprint alone: a recipe read back from a card is re-validated with the current schema,
    whose new defaults can change the fingerprint of an older build.
    """
    if work_dir is not None:
        if not WorkDir(work_dir).stage_dir(SCORE).is_dir():
            raise InputDataError(f"work dir {work_dir} has no score/ stage: is it the work dir of this build?")
        return work_dir
    cands = WorkDir.candidates(recipe, [Path.cwd(), dataset_dir.resolve().parent])
    return cands[0].root if cands else None


def check_pool(pool: pa.Table, selected: pa.Table) -> str | None:
    """None if every exported row is in the work dir's score shards with the same scores, else why not."""
    index = {
        (i, r): (c, s)
        for i, r, c, s in zip(pool["id"].to_pylist(), pool["repeat"].to_pylist(), pool["clip_score"].to_pylist(),
                              pool["ssim"].to_pylist(), strict=True)
    }
    missing = differ = 0
    for i, r, c, s in zip(selected["id"].to_pylist(), selected["repeat"].to_pylist(), selected["clip_score"].to_pylist(),
                          selected["ssim"].to_pylist(), strict=True):
        got = index.get((i, r))
        if got is None:
            missing += 1
        elif abs(got[0] - c) > 1e-9 or abs(got[1] - s) > 1e-9:
            differ += 1
    if missing or differ:
        return f"{missing} of the {selected.num_rows} exported rows are not in its score shards and {differ} have other scores"
    return None


# --------------------------------------------------------------------------- reading the sets


def dataset_files(dataset_dir: Path) -> list[Path]:
    return DatasetDir(dataset_dir).require_shards()


def load_selected(dataset_dir: Path) -> pa.Table:
    """The exported rows without their images, plus the file and row where each one lives."""
    cols = ["id", "repeat", "caption", "clip_score", "ssim", "score"]
    parts = []
    for fi, f in enumerate(dataset_files(dataset_dir)):
        schema = pq.read_schema(f)
        missing = [c for c in cols if c not in schema.names]
        if missing:
            raise InputDataError(f"{f} lacks the columns {missing}: not a synthvlm dataset shard")
        t = pq.read_table(f, columns=cols)
        t = t.append_column("_file", pa.array([fi] * t.num_rows, pa.int32()))
        parts.append(t.append_column("_row", pa.array(np.arange(t.num_rows), pa.int64())))
    return pa.concat_tables(parts)


def rejected_pool(pool: pa.Table, selected: pa.Table, recipe: Recipe) -> pa.Table:
    chosen = set(zip(selected["id"].to_pylist(), selected["repeat"].to_pylist(), strict=True))
    keys = zip(pool["id"].to_pylist(), pool["repeat"].to_pylist(), strict=True)
    mask = pa.array([k not in chosen for k in keys])
    rej = pool.filter(mask)
    score = combined_score(rej["clip_score"].to_numpy(), rej["ssim"].to_numpy(), recipe.select)
    return rej.append_column("score", pa.array(score, pa.float64()))


def _dataset_images(path: Path, rows: Sequence[int]) -> dict[int, Image.Image]:
    """Decode the images of some rows of an exported parquet file (only their row groups are read)."""
    return {r: decode_image(v["bytes"], f"row {r} of {path}") for r, v in take_rows(path, "image", rows).items()}


# --------------------------------------------------------------------------- the report


def table_rows(report: dict) -> list[dict]:
    """The quality table's cells, formatted once for report.md, the dataset card and the console:
    set, n (or why a set is empty), CLIPScore mean/median (raw cosine), CLIP-S mean, SSIM
    mean/median, score mean."""
    rows = []
    for row in report["table"]:
        n = row["clip_score"].get("count", 0)
        rows.append({
            "set": row["set"], "n": str(n) if n else (row["note"] or "0"),
            "clip_mean": fmt4(row["clip_score"]), "clip_median": fmt4(row["clip_score"], "median"),
            "clips_mean": fmt4(row["clipscore_scaled"]), "ssim_mean": fmt4(row["ssim"]),
            "ssim_median": fmt4(row["ssim"], "median"), "score_mean": fmt4(row["score"]),
        })
    return rows


def render_markdown(report: dict) -> str:
    """report.md: the table, the paper's figures, notes, the plots and the reference items."""
    return render(QUALITY_REPORT, rows=table_rows(report), **report)


def write_quality_report(
    dataset_dir: str | Path,
    work_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    recipe: Recipe | None = None,
    reference: str = BUILTIN,
    reference_split: str = "train",
    reference_limit: int = 500,
    grid_size: int = 6,
    device: str | None = None,
    scorer=None,
) -> dict:
    """Compute the quality table of a built dataset and write the report files.

    Args:
        dataset_dir: a folder written by `synthvlm build` (data/*.parquet + README.md).
        work_dir: the build's work dir, for the rejected pool; found automatically under
            `runs/` when omitted, and the rejected row is left empty when there is none.
        out_dir: where to write; default `<dataset_dir>/plots/` (the dataset card links there).
        recipe: the build's recipe; read from the dataset/work dir when omitted.
        reference: "builtin" (12 real images, offline) or a `load_dataset` path/Hub id.
        scorer: an already loaded `ClipScorer` for the recipe (saves a model load).

    Returns the report dict (also written as report.json).
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise InputDataError(f"{dataset_dir} is not a folder: pass a dataset folder written by `synthvlm build`")
    dataset_files(dataset_dir)  # fail early, before loading any model
    out = Path(out_dir) if out_dir is not None else dataset_dir / QUALITY_DIR
    check_report_destination(dataset_dir, out)
    recipe = recipe or find_recipe(dataset_dir, Path(work_dir) if work_dir else None)
    notes = []

    sel_t = load_selected(dataset_dir)
    selected = ScoreSet("selected", sel_t["clip_score"].to_numpy(), sel_t["ssim"].to_numpy(), sel_t["score"].to_numpy())
    rej_t, wd, pool = None, None, None
    if work_dir is not None:
        wd = find_work_dir(dataset_dir, recipe, Path(work_dir))
        pool = WorkDir(wd).scored_pool()
        problem = check_pool(pool, sel_t)
        if problem:
            raise InputDataError(f"work dir {wd} did not score this dataset ({problem}); pass the work dir of the build that made {dataset_dir}")
    else:
        for cand in WorkDir.candidates(recipe, [Path.cwd(), dataset_dir.resolve().parent]):
            cand_pool = cand.scored_pool()
            problem = check_pool(cand_pool, sel_t)
            if problem is None:
                wd, pool = cand.root, cand_pool
                break
            notes.append(f"ignored {cand.root}: {problem}")
    if wd is not None:
        rej_t = rejected_pool(pool, sel_t, recipe)
        rejected = ScoreSet("rejected pool", rej_t["clip_score"].to_numpy(), rej_t["ssim"].to_numpy(), rej_t["score"].to_numpy())
    else:
        keep_richer_report(out)
        rejected = ScoreSet("rejected pool", np.zeros(0), np.zeros(0), np.zeros(0), note="n/a (no work dir)")
        notes.append("rejected pool: no work dir found; pass --work-dir with the build's work directory")

    if reference == BUILTIN and recipe.profile == "world":
        from synthvlm_data.world.measure import reference_entries as world_reference

        entries = world_reference()
    else:
        entries = builtin_reference() if reference == BUILTIN else hub_reference(reference, reference_split, reference_limit)
    ref = score_reference(entries, recipe, scorer=scorer, device=device)
    sets = [selected, rejected, ref]

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    title = f"{dataset_dir.name} ({recipe.name}, profile {recipe.profile})"
    files["score_hist.png"] = plots.plot_score_hist(sets, out / "score_hist.png", title)
    if "image" in pq.read_schema(dataset_files(dataset_dir)[0]).names:
        top, bottom = _grid_items(dataset_dir, wd, sel_t, rej_t, grid_size, image_stage(recipe))
        files["top_bottom_grid.png"] = plots.plot_top_bottom(top, bottom, out / "top_bottom_grid.png", title)
    else:
        notes.append("no top/bottom grid: the dataset stores latents, not images (decode them with `synthvlm decode`)")

    world = None
    if recipe.profile == "world":
        if wd is None:
            notes.append("world measurements (curation, selection by the verifier) need the build's work dir")
        else:
            world = world_measurements(recipe, WorkDir(wd), pool)
            files["selection_rules.png"] = plots.plot_selection_rules(world["selection"], out / "selection_rules.png", title)

    diversity = DatasetDir(dataset_dir).stats().get("diversity")
    if diversity:
        files["cluster_hist.png"] = plots.plot_selection_clusters(diversity, out / "cluster_hist.png")

    report = {
        "dataset": dataset_dir.name,
        "recipe": recipe.name,
        "profile": recipe.profile,
        "work_dir": str(wd) if wd is not None else None,
        "scorer": describe.scorer(recipe),
        "weights": describe.weights(recipe),
        "reference": reference,
        "table": [s.row() for s in sets],
        "paper": [{"set": n, "clip_score_mean": c, "ssim_mean": s} for n, c, s in PAPER_ROWS],
        "reference_items": ref.items,
        "diversity": diversity,
        "world": world,
        "notes": notes,
        "files": sorted([*files, QUALITY_JSON, REPORT_MD]),
    }
    (out / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    (out / QUALITY_JSON).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    _record_report_files(dataset_dir, out, report["files"])
    return report


def _inside(out: Path, dataset_dir: Path) -> bool:
    return out.resolve().is_relative_to(dataset_dir.resolve())


def check_report_destination(dataset_dir: Path, out: Path) -> None:
    """The report writes into `out` (files by name, nothing deleted): inside the dataset folder, the
    folder must be this package's dataset; elsewhere, `out` must be new, empty or an earlier report.
    Either way it must hold no file the package did not write (`synthvlm_data.outdir`)."""
    from synthvlm_data.outdir import check_destination

    if _inside(out, dataset_dir):
        check_destination(dataset_dir, "dataset", flag="DATASET folder (or pass --out)", overwrite_flag=None,
                          replaces=False)
    else:
        check_destination(out, "report", overwrite_flag=None, replaces=False)


def _record_report_files(dataset_dir: Path, out: Path, files: list[str]) -> None:
    """The report's files join the marker of the folder that holds them (the dataset's when inside it),
    so a later re-export or report knows them as this package's."""
    from synthvlm_data.outdir import add_files

    if _inside(out, dataset_dir):
        prefix = out.resolve().relative_to(dataset_dir.resolve()).as_posix()
        add_files(dataset_dir, [f"{prefix}/{f}" if prefix != "." else f for f in files], "dataset")
    else:
        add_files(out, files, "report")


def world_measurements(recipe: Recipe, work: WorkDir, pool: pa.Table) -> dict:
    """Curation per corruption kind and verifier alignment per selection rule (`world.measure`)."""
    from synthvlm_data.world.measure import curation, pool_index, selection

    captions = work.caption_table(["id", "caption", "source", "source_id"])
    index = pool_index(recipe)  # the pool is rendered once for both tables
    return {"curation": curation(recipe, captions, index),
            "selection": selection(recipe, work, pool, image_stage(recipe), captions, index)}


def keep_richer_report(out: Path) -> None:
    """A report made without the work dir lacks the rejected pool (and the world measurements):
    it never replaces one that has them. Raises before anything is written."""
    old = out / QUALITY_JSON
    if not old.is_file():
        return
    try:
        previous = json.loads(old.read_text(encoding="utf-8"))
        rejected = next(r for r in previous["table"] if r["set"] == "rejected pool")
        had = rejected["clip_score"].get("count", 0)
    except (ValueError, KeyError, StopIteration, TypeError, AttributeError):
        return  # not a report this package wrote: nothing richer to keep
    if had:
        where = previous.get("work_dir") or "the build's work dir"
        raise InputDataError(
            f"{old} already has a report with the rejected pool ({had} images, from {where}), and no work dir "
            f"was found now: pass --work-dir {where}, or --out another folder; nothing was changed")


def report_into_dataset(dataset_dir: str | Path, work_dir: str | Path | None = None, out_dir: str | Path | None = None,
                        **kwargs) -> tuple[dict, Path]:
    """`write_quality_report` into `out_dir` (default `<dataset>/plots`). Returns (report, report dir).
    The dataset card shows it once re-rendered (`presentation.cards.refresh_dataset_card`, which the
    `report` command runs): this module writes only the report."""
    dataset_dir = Path(dataset_dir)
    report = write_quality_report(dataset_dir, work_dir, out_dir, **kwargs)
    return report, Path(out_dir) if out_dir is not None else dataset_dir / QUALITY_DIR


def _grid_items(
    dataset_dir: Path, wd: Path | None, sel_t: pa.Table, rej_t: pa.Table | None, n: int, image_stage: str
) -> tuple[list[dict], list[dict]]:
    """Top-n selected rows by score and bottom-n of the rejected pool (or of the selection when
    there is no work dir), with their images."""
    def pick(t: pa.Table, lowest: bool) -> list[dict]:
        score = t["score"].to_numpy()
        ids = np.asarray(t["id"].to_pylist(), dtype=str)
        order = np.lexsort((ids, score if lowest else -score))[:n]
        return [{k: t[k][int(i)].as_py() for k in t.column_names} for i in order]

    files = dataset_files(dataset_dir)
    top = pick(sel_t, lowest=False)
    for f_idx in {r["_file"] for r in top}:
        rows = [r for r in top if r["_file"] == f_idx]
        imgs = _dataset_images(files[f_idx], [r["_row"] for r in rows])
        for r in rows:
            r["image"] = imgs[r["_row"]]
    if rej_t is None or rej_t.num_rows == 0:
        bottom = pick(sel_t, lowest=True)
        for r in bottom:
            r["image"] = _dataset_images(files[r["_file"]], [r["_row"]])[r["_row"]]
        return top, bottom
    bottom = pick(rej_t, lowest=True)
    work = WorkDir(wd)
    captions = work.captions_by_id()
    for unit in {r["_unit"] for r in bottom}:
        rows = [r for r in bottom if r["_unit"] == unit]
        imgs = work.images(image_stage, unit, [r["_row"] for r in rows])
        for r in rows:
            r["image"] = imgs[r["_row"]]
            r["caption"] = captions.get(r["id"], "")
    return top, bottom


__all__ = ["FILES", "builtin_reference", "check_report_destination", "find_recipe", "find_work_dir", "report_into_dataset", "score_reference",
           "table_rows", "write_quality_report"]
