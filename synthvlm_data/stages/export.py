"""Export (after select): the selected pairs as a Hub-ready folder that `load_dataset(folder)` reads.

`<out>/data/train-NNNNN-of-NNNNN.parquet` (an `Image` feature, PNG/JPEG bytes embedded) plus a
README.md dataset card whose YAML carries `configs:` and `dataset_info:`. The folder is assembled
under a temporary name next to `<out>` and renamed into place at the end, so an interrupted or
failed export never leaves a partial dataset behind; it replaces only this package's own output
(`synthvlm_data.outdir`). A re-export whose rows are the same bytes keeps the quality report and
contamination check that later commands added to the old folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import yaml

from synthvlm_data.columns import dataset_features, latent_from_bytes
from synthvlm_data.dataset_dir import LATER_FILES, QUALITY_DIR, STATS_FILE, DatasetDir
from synthvlm_data.outdir import remove_owned, replace_dir, restore_interrupted, stale_siblings, staging_dir
from synthvlm_data.shards import ShardStore, sha256_file
from synthvlm_data.stages.base import RunContext
from synthvlm_data.workdir import GENERATE, SELECT
from synthvlm_data.workunits import WorkUnit


def shard_name(i: int, n: int) -> str:
    return f"train-{i:05d}-of-{n:05d}.parquet"


READ_ROWS = 64  # generate-shard rows read at a time (images stream; a shard never sits in memory)


def _iter_selected_rows(ctx: RunContext, selection: dict):
    """Selected rows in generation order (caption shard, position), streaming image bytes: the
    generate shards are read `READ_ROWS` rows at a time."""
    store: ShardStore = ctx.store
    units = ctx.caption_units()
    for cu in units:
        caps = {r["id"]: r for r in store.read(cu).to_pylist()}
        for batch in store.iter_batches(WorkUnit(GENERATE, cu.index, cu.num_units), None, READ_ROWS):
            for row in batch.to_pylist():
                sel = selection.get((row["id"], row["repeat"]))
                if sel is None:
                    continue
                cap = caps[row["id"]]
                if "latent" in row:  # latent-mode run
                    pixels = {"latent": latent_from_bytes(row["latent"], row["latent_shape"]).numpy()}
                else:
                    pixels = {"image": {"bytes": row["image"], "path": None}}
                yield {
                    "id": row["id"],
                    **pixels,
                    "caption": cap["caption"],
                    "prompt": cap["prompt"],
                    "clip_score": sel["clip_score"],
                    "ssim": sel["ssim"],
                    "score": sel["score"],
                    "seed": row["seed"],
                    "repeat": row["repeat"],
                    "source": cap["source"],
                    "source_id": cap["source_id"],
                    "generator": row["generator"],
                    "concept": cap["concept"],
                    **({"nsfw_score": sel["nsfw_score"], "safe": sel["safe"]} if "safe" in sel else {}),
                }


class ShardWriter:
    """One published parquet file, written with the bytes `datasets.Dataset.to_parquet` gives for
    all its rows at once, without holding their images: image bytes are spilled to a temporary
    file as rows arrive and read back one writer batch (row group) at a time.

    `Dataset.to_parquet` picks its row-group size from the whole table's estimated size and
    records the table's `nbytes`; both are computed here from the same table with 1-byte
    placeholder images plus the real image lengths (binary buffers are exactly sized).
    `tests/test_export_streaming.py` checks the bytes and `nbytes` against `to_parquet`.
    Latent-mode rows (small arrays, not images) are kept in memory and written by `to_parquet`.
    """

    def __init__(self, path: Path, features: datasets.Features):
        self.path, self.features = Path(path), features
        self.rows: list[dict] = []
        self.spans: list[tuple[int, int]] = []  # (offset, length) of each row's image in the spill
        self.spill_path = self.path.with_name(f".{self.path.name}.images")
        self.spill = None
        self.max_rows_held = 0  # most rows' image bytes in memory at once while writing (tests)

    def add(self, row: dict) -> None:
        image = row.get("image")
        if image is not None:
            if self.spill is None:
                self.spill = self.spill_path.open("w+b")
            data = image["bytes"]
            self.spans.append((self.spill.tell(), len(data)))
            self.spill.write(data)
            row = {**row, "image": None}
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def _columns(self, rows: list[dict], images: list[dict] | None) -> dict:
        cols = {k: [r.get(k) for r in rows] for k in self.features}
        if images is not None:
            cols["image"] = images
        return cols

    def close(self) -> int:
        """Write the file; returns the table's nbytes (what the dataset card records)."""
        from datasets import config as ds_config
        from datasets.arrow_writer import (
            get_parquet_column_options,
            get_writer_batch_size_from_data_size,
            get_writer_batch_size_from_features,
        )

        try:
            if self.spill is None:  # latent rows (or no rows): in memory, as `to_parquet` writes them
                ds = datasets.Dataset.from_dict(self._columns(self.rows, None), features=self.features)
                self.max_rows_held = len(self.rows)
                with _no_datasets_progress():
                    ds.to_parquet(str(self.path))
                return ds.data.nbytes
            n = len(self.rows)
            extra = sum(length for _, length in self.spans) - n
            placeholder = [{"bytes": b"\0", "path": None}] * n
            skeleton = datasets.Dataset.from_dict(self._columns(self.rows, placeholder), features=self.features)
            nbytes = skeleton.data.nbytes + extra
            batch_size = get_writer_batch_size_from_features(self.features) or get_writer_batch_size_from_data_size(
                n, skeleton._estimate_nbytes() + extra)
            del skeleton
            schema = self.features.arrow_schema
            cdc = ds_config.DEFAULT_CDC_OPTIONS  # `to_parquet`'s default (use_content_defined_chunking=True)
            with self.path.open("wb") as fh:
                writer = pq.ParquetWriter(fh, schema=schema, use_content_defined_chunking=cdc, write_page_index=True,
                                          **get_parquet_column_options(self.features, schema))
                for start in range(0, n, batch_size):
                    stop = min(n, start + batch_size)
                    images = []
                    for offset, length in self.spans[start:stop]:
                        self.spill.seek(offset)
                        images.append({"bytes": self.spill.read(length), "path": None})
                    self.max_rows_held = max(self.max_rows_held, len(images))
                    batch = datasets.Dataset.from_dict(self._columns(self.rows[start:stop], images), features=self.features)
                    writer.write_table(batch.data.table)
                    del batch, images
                writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})
                writer.close()
            return nbytes
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and delete the image spill (after `close`, or when the export fails mid-shard)."""
        if self.spill is not None:
            self.spill.close()
            self.spill = None
            self.spill_path.unlink(missing_ok=True)


def export_dataset(ctx: RunContext, out_dir: Path, stats: dict) -> Path:
    """Write the published folder for a completed run; returns its path.

    Rows stream from the generate shards into one `ShardWriter` per published shard, so memory
    holds one read batch and one writer batch of images, whatever the shard sizes."""
    from synthvlm_data.presentation.cards import dataset_card_data, write_dataset_card

    recipe = ctx.recipe
    selection_table = ctx.store.read(WorkUnit(SELECT, 0, 1))
    selection = {(r["id"], r["repeat"]): r for r in selection_table.to_pylist()}
    n_rows = len(selection)
    has_concept = any(
        v is not None for cu in ctx.caption_units() for v in ctx.store.read(cu, ["concept"])["concept"].to_pylist()
    )
    latent_shape = None
    if recipe.generate.output == "latents":
        first = ctx.store.read(WorkUnit(GENERATE, 0, len(ctx.caption_units())), ["latent_shape"])
        latent_shape = tuple(first["latent_shape"][0].as_py())
    features = dataset_features(has_concept, latent_shape, with_safety=recipe.score.safety is not None)
    per_shard = recipe.export.rows_per_shard
    n_shards = max(1, math.ceil(n_rows / per_shard))

    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    (staging / "data").mkdir()
    shard = None
    try:
        num_bytes, written = 0, 0
        shard = ShardWriter(staging / "data" / shard_name(0, n_shards), features)
        for row in _iter_selected_rows(ctx, selection):
            shard.add(row)
            if len(shard) == per_shard:
                num_bytes += shard.close()
                written += 1
                shard = ShardWriter(staging / "data" / shard_name(written, n_shards), features)
        if len(shard) or written == 0:
            num_bytes += shard.close()
        _copy_caption_plot(ctx.work.caption_plot(), staging / QUALITY_DIR)
        card_data = dataset_card_data(
            recipe=recipe, features=features, num_rows=n_rows, num_bytes=num_bytes, num_shards=n_shards
        )
        write_dataset_card(
            staging,
            card_data,
            recipe=recipe,
            recipe_yaml=yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False).strip(),
            num_rows=n_rows,
            num_shards=n_shards,
            columns=list(features),
            stats=stats,
            score_rows=[("selected", stats["selected_scores"]), ("rejected pool", stats["rejected_scores"])],
        )
        (staging / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True, default=str))
        keep_later_files(out_dir, staging, recipe)
        replace_dir(staging, out_dir, "dataset")
    except BaseException:
        if shard is not None:
            shard.abort()  # its spill file handle, before the folder goes
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _copy_caption_plot(src: Path | None, plots_dir: Path) -> None:
    """The caption stage's cluster histogram (curated vs synthetic, Synth^2) goes into the
    dataset's plots/ so the card shows it; it is written only when the recipe asks for it."""
    if src is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, plots_dir / src.name)


@contextlib.contextmanager
def _no_datasets_progress():
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()




def _same_data(a: Path, b: Path) -> bool:
    """Whether two dataset folders hold the same parquet files, byte for byte (sizes compared first)."""
    files_a, files_b = DatasetDir(a).shards(), DatasetDir(b).shards()
    if [p.name for p in files_a] != [p.name for p in files_b]:
        return False
    if any(p.stat().st_size != q.stat().st_size for p, q in zip(files_a, files_b, strict=True)):
        return False
    return all(sha256_file(p) == sha256_file(q) for p, q in zip(files_a, files_b, strict=True))


def keep_later_files(old: Path, staging: Path, recipe) -> bool:
    """Carry what `synthvlm report` and `synthvlm decontaminate` added to the old folder (plots/,
    decontamination.json, the card's sections) into the new one, when the new rows are the same
    bytes (the report describes them exactly). Returns whether the old folder had a report that
    could not be kept (other rows: `build` regenerates it after the swap)."""
    from synthvlm_data.outdir import owner_kind

    old_report = DatasetDir(old).quality_file
    later = [name for name in LATER_FILES if (old / name).is_file()]
    if not (old_report.is_file() or later) or owner_kind(old) != "dataset":
        return False
    if not _same_data(old, staging):
        return old_report.is_file()
    from synthvlm_data.presentation.cards import refresh_dataset_card

    if old_report.is_file():
        for src in sorted(old_report.parent.iterdir()):
            dst = staging / QUALITY_DIR / src.name
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(exist_ok=True)
                shutil.copy2(src, dst)
    for name in later:
        shutil.copy2(old / name, staging / name)
    refresh_dataset_card(staging, recipe)
    return False


def sweep_stale_exports(out_dir: Path) -> list[Path]:
    """Delete the stale staging and replaced folders next to `out_dir` (`stale_export_dirs`). A
    staging folder is all this package's; a replaced one loses only the files the package wrote
    (its marker says which), so a file a user put there is never deleted."""
    removed = []
    restore_interrupted(out_dir)  # killed between its two renames: the previous folder goes back first
    for path in stale_export_dirs(out_dir):
        if ".partial-" in path.name:
            shutil.rmtree(path, ignore_errors=True)
        else:
            remove_owned(path)
        removed.append(path)
    return removed


def stale_export_dirs(out_dir: Path) -> list[Path]:
    """Staging (`.<name>.partial-<pid>-*`) and replaced (`.<name>.old-<pid>-*`) folders next to
    `out_dir` whose process is gone: what a kill during export leaves behind."""
    return sorted(stale_siblings(out_dir))
