"""Other formats of an exported dataset: LLaVA JSON + image folder, and WebDataset shards.

Both are written from the dataset folder's parquet shards (never from the work dir), so they carry
exactly the published rows, in the published order, and can be made later with
`synthvlm export DIR --format ...` as well as by the build (`export.formats` in the recipe).

- `llava-json`: LLaVA-Pretrain's layout (LCS-558K `blip_laion_cc_sbu_558k.json`):
  `<out>/<name>.json`, a list of `{"id", "image", "conversations"}` records, and `<out>/images/`,
  the folder LLaVA's `--image_folder` points at (`image` is relative to it). The human turn is the
  row's `prompt` (LLaVA's brief-caption instruction chosen by seed hash, `workunits.choose_prompt`)
  followed by a newline and `<image>`, as in LCS-558K; the gpt turn is the caption.
- `webdataset`: tar shards `<out>/<name>-NNNNNN.tar` written by the `webdataset` library, one
  sample per row: `<id>.png` (or `.jpg`/`.webp`, the image bytes as published) and `<id>.json`
  (every other column). Tar headers get a fixed mtime, so the same dataset gives the same bytes.
  Every sample's JSON has the same keys with the same types: a missing (null) value of a string
  column, such as `concept` outside Synth^2 rows, is written as `""`. Readers that infer a schema
  from the first few samples (`load_dataset("webdataset", ...)` reads five) would otherwise type
  such a column as null and fail on the first sample that has a string.

Each output folder is assembled under a temporary name and renamed into place at the end; an
existing folder is replaced only when it is this format's earlier output (`synthvlm_data.outdir`),
and that is checked for every format before any is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from synthvlm_data.errors import InputDataError, import_optional
from synthvlm_data.outdir import check_destination, check_not_inside, replace_dir, staging_dir

FORMATS = ("llava-json", "webdataset")
IMAGE_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}  # PIL format -> file / WebDataset extension


def default_out(dataset_dir: Path, fmt: str) -> Path:
    """`<dataset>-llava-json/` or `<dataset>-webdataset/` next to the dataset folder: outside it, so
    `load_dataset(<dataset>)` and `publish` see only the parquet dataset."""
    dataset_dir = Path(dataset_dir)
    return dataset_dir.with_name(f"{dataset_dir.name}-{fmt}")


def dataset_shards(dataset_dir: Path) -> list[Path]:
    from synthvlm_data.dataset_dir import DatasetDir

    return DatasetDir(dataset_dir).require_shards()


def iter_rows(dataset_dir: Path, batch_size: int = 64) -> Iterator[dict]:
    """The published rows in order, a few at a time (image bytes are never all in memory)."""
    import pyarrow.parquet as pq

    for path in dataset_shards(dataset_dir):
        pf = pq.ParquetFile(path)
        if "image" not in pf.schema_arrow.names:
            what = "latents (a latent-mode run)" if "latent" in pf.schema_arrow.names else "no image column"
            raise InputDataError(f"{dataset_dir} holds {what}; LLaVA JSON and WebDataset need images: decode the "
                                 "run first (`synthvlm decode --work-dir ...`) and export a pixel dataset")
        for batch in pf.iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()


def image_ext(data: bytes, where: str) -> str:
    """The file extension of encoded image bytes (from their magic number, not a guess)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise InputDataError(f"image of {where} is not PNG, JPEG or WebP; re-export the dataset")


def _meta(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("image", "latent")}


def string_columns(dataset_dir: Path) -> frozenset[str]:
    """The string-typed columns of the published parquet shards (their nulls become `""`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(dataset_shards(dataset_dir)[0])
    return frozenset(f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type))


def _stable_meta(row: dict, strings: frozenset[str]) -> dict:
    """`_meta` with the nulls of string columns written as "" (same keys and types in every sample)."""
    return {k: ("" if v is None and k in strings else v) for k, v in _meta(row).items()}


def write_llava_json(dataset_dir: Path, out: Path, name: str | None = None) -> dict:
    """`<out>/<name>.json` + `<out>/images/<id>.<ext>`; returns {"rows", "json", "images"}."""
    dataset_dir, out = Path(dataset_dir), Path(out)
    name = name or dataset_dir.name
    staging = staging_dir(out)
    try:
        (staging / "images").mkdir()
        records = []
        for row in iter_rows(dataset_dir):
            data = row["image"]["bytes"]
            file = f"{row['id']}.{image_ext(data, row['id'])}"
            (staging / "images" / file).write_bytes(data)
            records.append({
                "id": row["id"],
                "image": file,
                "conversations": [
                    {"from": "human", "value": f"{row['prompt']}\n<image>"},
                    {"from": "gpt", "value": row["caption"]},
                ],
            })
        (staging / f"{name}.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(staging, out, "llava-json")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"rows": len(records), "json": str(out / f"{name}.json"), "images": str(out / "images")}


def write_webdataset(dataset_dir: Path, out: Path, shard_size: int = 1000, name: str | None = None) -> dict:
    """`<out>/<name>-NNNNNN.tar` shards of at most `shard_size` samples; returns {"rows", "shards"}."""
    wds = import_optional("webdataset", "formats", "WebDataset export")

    if shard_size < 1:
        raise InputDataError(f"webdataset shard size must be >= 1, got {shard_size}")
    dataset_dir, out = Path(dataset_dir), Path(out)
    name = name or dataset_dir.name
    strings = string_columns(dataset_dir)
    staging = staging_dir(out)
    n = 0
    try:
        pattern = str(staging / f"{name}-%06d.tar")
        # mtime fixed: reproducible tars. maxsize is not a limit here: shards are cut by count only.
        with wds.ShardWriter(pattern, maxcount=shard_size, maxsize=float("inf"), verbose=0, mtime=0.0,
                             encoder=False) as sink:
            for row in iter_rows(dataset_dir):
                data = row["image"]["bytes"]
                meta = json.dumps(_stable_meta(row, strings), sort_keys=True, ensure_ascii=False).encode("utf-8")
                sink.write({"__key__": row["id"], image_ext(data, row["id"]): data, "json": meta})
                n += 1
        shards = sorted(p.name for p in staging.glob("*.tar"))
        replace_dir(staging, out, "webdataset")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"rows": n, "shards": [str(out / s) for s in shards]}


def export_formats(dataset_dir: Path, formats, *, shard_size: int = 1000, out: Path | None = None,
                   overwrite: bool = False) -> dict[str, dict]:
    """Write each of `formats` next to the dataset (or into `out` when there is one format).

    Every destination is checked first (`outdir.check_destination`; `overwrite`: this package's
    output of another kind may be replaced too), so a refusal leaves everything as it was."""
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputDataError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if out is not None and len(formats) > 1:
        raise InputDataError("--out names one folder: pass one --format with it")
    targets = {fmt: Path(out) if out is not None else default_out(dataset_dir, fmt) for fmt in formats}
    for fmt, target in targets.items():
        check_not_inside(target, dataset_dir)
        check_destination(target, fmt, overwrite=overwrite)
    done = {}
    for fmt, target in targets.items():
        if fmt == "llava-json":
            done[fmt] = {"out": str(target), **write_llava_json(dataset_dir, target)}
        else:
            done[fmt] = {"out": str(target), **write_webdataset(dataset_dir, target, shard_size)}
    return done
