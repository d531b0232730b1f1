"""Contamination check: does a dataset contain evaluation captions or images?

Synthetic pretraining captions come from web corpora (and LLMs trained on them), which can hold
evaluation text (COCO captions, VQAv2/GQA questions); a published dataset should show it does not.

- Captions: n-gram overlap on normalised text, as GPT-3 (Brown et al. 2020, appendix C): lower
  case, punctuation dropped, a caption is contaminated if it shares any 13-gram with an evaluation
  text. Evaluation texts shorter than 13 words are matched whole (as one n-gram of their length) if
  they have at least `min_ngram` words (GPT-3's smallest N was 8), so a short COCO caption copied
  into a longer one is found; any text equal to an evaluation text after normalisation is a hit.
  Optionally MinHash LSH (`datasketch`) over word 3-gram shingles catches rewordings above a
  Jaccard threshold.
- Images: perceptual hash (`imagehash.phash`, 64-bit DCT hash) finds candidates within
  `max_distance` bits (Hamming) of an evaluation image, which survives re-encoding and resizing;
  a candidate is a near-duplicate when the two 16x16 RGB thumbnails also agree: the 99th
  percentile of their absolute differences (0-1) is <= `max_pixel_diff`, i.e. no region differs,
  which re-encoding noise never makes and a moved or missing object always does. The second check
  is there because a 64-bit hash of simple images collides: on the miniature world (64 px renders
  of a few flat shapes) 198 of 200k different-scene pairs are within 10 bits. Measured: resized and
  JPEG re-encoded (q 50-85) world renders are within 10 bits and 0.099 thumbnail difference,
  different world scenes at least 0.145 apart; JPEG q90 copies of the `tiny` recipe's noisy images
  within 0.051, different ones at least 0.235.

Evaluation sets are caption sources (`captions.config.CaptionSource`: a local json/jsonl/csv/
parquet/txt file, a LLaVA JSON, a Hub dataset at a pinned revision, the miniature world's pool)
plus an optional local image folder. Offline, a Hub set is a one-line error, as for caption sources.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from synthvlm_data.captions.sources_config import CaptionSource
from synthvlm_data.dataset_dir import CONTAMINATION_FILE
from synthvlm_data.errors import InputDataError, import_optional
from synthvlm_data.schema import StrictModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_NON_WORD = re.compile(r"[^0-9a-z]+")


class EvalSet(CaptionSource):
    """One evaluation set: its captions (a caption source; a list-valued caption column gives one
    text per element, as COCO's five references) and/or its images (`image_column` of the source,
    and every image file under `images`)."""

    offers_tiny_recipe: ClassVar[bool] = False  # decontamination has no recipe to swap
    images: str | None = Field(default=None, description="Local folder of evaluation images (searched recursively).")

    @property
    def images_only(self) -> bool:
        """An image folder alone is a set: no caption file needed."""
        return bool(self.images) and self.type == "file" and not self.path and not self.dataset

    @model_validator(mode="after")
    def _where(self) -> EvalSet:  # overrides CaptionSource's check: `path` is optional with `images`
        return self if self.images_only else CaptionSource._where(self)


class TextDecontamConfig(StrictModel):
    """The caption side of the check (what the caption filter takes)."""

    against: list[EvalSet] = Field(min_length=1, description="The evaluation sets to check against.")
    ngram: int = Field(default=13, ge=1, description="GPT-3's 13-gram overlap.")
    min_ngram: int = Field(default=8, ge=1, description="Evaluation texts shorter than `ngram` words are "
                           "matched whole if they have at least this many words (GPT-3: N >= 8).")
    minhash_threshold: float | None = Field(default=None, gt=0.0, le=1.0, description="Also flag captions "
                                            "whose MinHash Jaccard estimate (word 3-grams) reaches this (datasketch LSH).")
    num_perm: int = Field(default=128, ge=16, description="MinHash permutations.")

    @model_validator(mode="after")
    def _ngram_order(self) -> TextDecontamConfig:
        if self.min_ngram > self.ngram:
            raise ValueError(f"min_ngram ({self.min_ngram}) must not exceed ngram ({self.ngram})")
        names = [s.name for s in self.against]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation set names must be unique, got {names}")
        return self


class DecontamConfig(TextDecontamConfig):
    """Captions and images (`synthvlm decontaminate`)."""

    max_distance: int = Field(default=10, ge=0, le=64, description="pHash Hamming distance of a near-duplicate candidate.")
    max_pixel_diff: float = Field(default=0.12, ge=0.0, le=1.0, description="99th percentile of the absolute "
                                  "differences of the 16x16 RGB thumbnails (0-1) that confirms a candidate.")


def normalize(text: str) -> list[str]:
    """GPT-3's normalisation: NFKC, lower case, anything not a letter or digit is a word break."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()


def _grams(words: list[str], n: int) -> Iterator[str]:
    for i in range(len(words) - n + 1):
        yield " ".join(words[i : i + n])


def _shingles(words: list[str], k: int = 3) -> set[bytes]:
    return {g.encode() for g in _grams(words, min(k, len(words)))} if words else set()


THUMB = 16


def image_hash(image) -> tuple[int, np.ndarray]:
    """The 64-bit perceptual hash of a PIL image (as an int) and its 16x16 RGB thumbnail (uint8)."""
    from PIL import Image

    imagehash = import_optional("imagehash", "decontam", "the image contamination check")
    rgb = image.convert("RGB")
    thumb = np.asarray(rgb.resize((THUMB, THUMB), Image.BOX), dtype=np.uint8)
    return int(str(imagehash.phash(rgb)), 16), thumb


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputDataError(f"evaluation image folder {folder} does not exist; fix `images`")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass
class EvalIndex:
    """Every evaluation set's n-grams, short texts, MinHashes and image hashes."""

    cfg: DecontamConfig
    sets: list[dict] = field(default_factory=list)  # {"name", "captions", "images"} sizes
    exact: dict[str, str] = field(default_factory=dict)  # normalised text -> set
    grams: dict[str, str] = field(default_factory=dict)  # ngram-gram -> set
    short: dict[int, dict[str, str]] = field(default_factory=dict)  # length -> whole text -> set
    lsh: object = None
    lsh_set: dict[str, str] = field(default_factory=dict)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    thumbs: np.ndarray = field(default_factory=lambda: np.zeros((0, THUMB * THUMB * 3), dtype=np.uint8))
    hash_sets: list[str] = field(default_factory=list)

    def caption_hit(self, caption: str) -> str | None:
        """The first evaluation set this caption overlaps, or None."""
        words = normalize(caption)
        text = " ".join(words)
        if text in self.exact:
            return self.exact[text]
        for g in _grams(words, self.cfg.ngram):
            if g in self.grams:
                return self.grams[g]
        for n, texts in self.short.items():
            for g in _grams(words, n):
                if g in texts:
                    return texts[g]
        if self.lsh is not None and words:
            found = self.lsh.query(self._minhash(words))
            if found:
                return self.lsh_set[min(found)]
        return None

    def image_hits(self, images: list[tuple[int, np.ndarray]]) -> list[tuple[str, int, float] | None]:
        """(set, pHash distance, thumbnail difference) of the closest confirmed evaluation image, per
        `image_hash` of a dataset image; None when there is none."""
        out: list[tuple[str, int, float] | None] = [None] * len(images)
        if not len(self.hashes) or not images:
            return out
        hashes = np.asarray([h for h, _ in images], dtype=np.uint64)
        for start in range(0, len(hashes), 1024):  # (1024 x eval) distance blocks
            dist = np.bitwise_count(hashes[start : start + 1024, None] ^ self.hashes[None, :])
            for i, j_all in enumerate(dist <= self.cfg.max_distance):
                cand = np.flatnonzero(j_all)
                if not cand.size:
                    continue
                mine = images[start + i][1].reshape(-1).astype(np.int16)
                diff = np.percentile(np.abs(self.thumbs[cand].astype(np.int16) - mine), 99, axis=1) / 255.0
                best = int(np.argmin(diff))
                if diff[best] <= self.cfg.max_pixel_diff:
                    j = int(cand[best])
                    out[start + i] = (self.hash_sets[j], int(dist[i, j]), round(float(diff[best]), 5))
        return out

    def _minhash(self, words: list[str]):
        datasketch = import_optional("datasketch", "decontam", "MinHash contamination check")
        m = datasketch.MinHash(num_perm=self.cfg.num_perm, seed=1)
        m.update_batch(sorted(_shingles(words)))
        return m


def build_index(cfg: DecontamConfig, *, images: bool = True) -> EvalIndex:
    """Read every evaluation set once (streamed) into an index; `images=False` skips the image hashes
    (the caption filter runs before any image exists)."""
    from PIL import Image

    from synthvlm_data.captions.filters.base import open_image
    from synthvlm_data.captions.sources import iter_source

    index = EvalIndex(cfg)
    if cfg.minhash_threshold is not None:
        datasketch = import_optional("datasketch", "decontam", "MinHash contamination check")
        index.lsh = datasketch.MinHashLSH(threshold=cfg.minhash_threshold, num_perm=cfg.num_perm)
    hashes: list[tuple[int, np.ndarray]] = []
    for s in cfg.against:
        n_text = n_img = 0
        if not s.images_only:
            for rec in iter_source(s):
                for text in _texts(rec["caption"]):
                    n_text += 1
                    _add_text(index, s.name, text, f"{s.name}:{n_text}")
                if images and rec.get("image") is not None:
                    im = open_image(rec["image"])
                    if im is not None:
                        hashes.append(image_hash(im))
                        index.hash_sets.append(s.name)
                        n_img += 1
        if images and s.images:
            for path in _image_files(Path(s.images).expanduser()):
                try:
                    with Image.open(path) as im:
                        hashes.append(image_hash(im))
                except OSError as err:
                    raise InputDataError(f"evaluation image {path} cannot be read ({err}); remove or fix it") from None
                index.hash_sets.append(s.name)
                n_img += 1
        if n_text == 0 and n_img == 0:
            raise InputDataError(f"evaluation set '{s.name}' has no captions and no images; check its path, "
                                 "caption_column and images")
        index.sets.append({"name": s.name, "captions": n_text, "images": n_img})
    index.hashes = np.asarray([h for h, _ in hashes], dtype=np.uint64)
    if hashes:
        index.thumbs = np.stack([t.reshape(-1) for _, t in hashes])
    return index


def _add_text(index: EvalIndex, name: str, text: str, key: str) -> None:
    cfg = index.cfg
    words = normalize(text)
    if not words:
        return
    index.exact.setdefault(" ".join(words), name)
    if len(words) >= cfg.ngram:
        for g in _grams(words, cfg.ngram):
            index.grams.setdefault(g, name)
    elif len(words) >= cfg.min_ngram:
        index.short.setdefault(len(words), {}).setdefault(" ".join(words), name)
    if index.lsh is not None:
        index.lsh.insert(key, index._minhash(words), check_duplication=False)
        index.lsh_set[key] = name



# --------------------------------------------------------------------------- a built dataset

REPORT_FILE = CONTAMINATION_FILE  # the check's file in the dataset folder (`dataset_dir`)
MAX_EXAMPLES = 5


def check_dataset(dataset_dir: Path, cfg: DecontamConfig, *, remove: bool = False) -> dict:
    """Check every row of a dataset folder (its captions and, in a pixel dataset, its images)
    against `cfg.against`; with `remove`, rewrite the folder without the contaminated rows.
    Writes `<dataset>/decontamination.json` (only that file; the card shows it once re-rendered, see
    `presentation.cards.refresh_if_dataset`, which the command runs); returns the report."""
    import pyarrow.parquet as pq
    from PIL import Image

    from synthvlm_data.stages.formats import dataset_shards

    from synthvlm_data.outdir import check_destination

    dataset_dir = Path(dataset_dir)
    shards = dataset_shards(dataset_dir)
    # `remove` replaces the folder: only a dataset this package wrote, holding no file it did not
    # write, checked before any work. A check alone adds its report to any dataset folder.
    if remove:
        check_destination(dataset_dir, "dataset", flag="DATASET folder", overwrite_flag=None)
    else:
        check_report_file(dataset_dir)
    index = build_index(cfg)
    caption_hits: dict[str, int] = {s["name"]: 0 for s in index.sets}
    image_hits: dict[str, int] = {s["name"]: 0 for s in index.sets}
    hits: dict[str, dict] = {}  # id -> {"caption": set, "image": [set, distance]}
    n_rows, images_checked = 0, 0
    for shard in shards:
        pf = pq.ParquetFile(shard)
        cols = [c for c in ("id", "caption", "image") if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=256, columns=cols):
            rows = batch.to_pylist()
            n_rows += len(rows)
            for row in rows:
                found = index.caption_hit(row["caption"])
                if found is not None:
                    caption_hits[found] += 1
                    hits.setdefault(row["id"], {"caption_text": row["caption"]})["caption"] = found
            if "image" in cols and len(index.hashes):
                hashes = []
                for row in rows:
                    with Image.open(io.BytesIO(row["image"]["bytes"])) as im:
                        hashes.append(image_hash(im))
                images_checked += len(rows)
                for row, hit in zip(rows, index.image_hits(hashes), strict=True):
                    if hit is not None:
                        image_hits[hit[0]] += 1
                        hits.setdefault(row["id"], {"caption_text": row["caption"]})["image"] = list(hit)
    report = {
        "dataset": dataset_dir.name,
        "sets": index.sets,
        "method": {"captions": f"{cfg.ngram}-gram overlap of normalised text (whole text for {cfg.min_ngram}-"
                               f"{cfg.ngram - 1} words)" + (f", MinHash LSH >= {cfg.minhash_threshold}" if cfg.minhash_threshold else ""),
                   "images": f"pHash 64-bit within {cfg.max_distance} bits, confirmed by 16x16 RGB thumbnails "
                             f"(99th percentile difference <= {cfg.max_pixel_diff})"},
        "config": cfg.model_dump(mode="json"),
        "rows_checked": n_rows,
        "images_checked": images_checked,
        "caption_hits": caption_hits,
        "image_hits": image_hits,
        "contaminated": len(hits),
        "removed": 0,
        "hit_ids": sorted(hits),
        "examples": [{"id": k, **v} for k, v in sorted(hits.items())[:MAX_EXAMPLES]],
    }
    if remove and hits:
        _rewrite_without(dataset_dir, shards, set(hits), report)
    else:
        _write_report(dataset_dir, report)
    return report


def check_report_file(folder: Path) -> None:
    """The check writes `decontamination.json` into the folder: never over a file of that name that
    is not an earlier report of this check."""
    import json

    path = Path(folder) / REPORT_FILE
    if not path.exists():
        return
    try:
        ours = {"rows_checked", "hit_ids", "sets"} <= set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise InputDataError(f"{path} exists and is not a report of `synthvlm decontaminate`: move it away first")


def _write_report(folder: Path, report: dict) -> None:
    import json

    from synthvlm_data.outdir import add_files, owner_kind

    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if owner_kind(folder) == "dataset":
        add_files(folder, [REPORT_FILE], "dataset")


def _rewrite_without(folder: Path, shards: list[Path], drop: set[str], report: dict) -> None:
    """Copy the folder without the rows in `drop` (shard names kept; the card's row count updated),
    then swap it in: an interrupted removal leaves the dataset as it was."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from synthvlm_data.dataset_dir import DatasetDir
    from synthvlm_data.outdir import replace_dir, staging_dir
    from synthvlm_data.presentation.cards import set_row_count

    staging = staging_dir(folder)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns("*.parquet"), dirs_exist_ok=True)
    try:
        kept = num_bytes = 0
        for shard in shards:
            table = pq.read_table(shard)
            table = table.filter(pc.invert(pc.is_in(table["id"], value_set=pa.array(sorted(drop), pa.string()))))
            kept += table.num_rows
            num_bytes += table.nbytes  # what the export records (the Arrow size of the rows)
            pq.write_table(table, staging / shard.relative_to(folder))
        report["removed"] = report["rows_checked"] - kept
        set_row_count(DatasetDir(staging).card, kept, num_bytes)
        _write_report(staging, report)
        replace_dir(staging, folder, "dataset")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def config_from_cli(against: list[str], *, config: Path | None = None, caption_column: str = "caption",
                    image_column: str | None = None, split: str = "test", **overrides) -> DecontamConfig:
    """The check's config from `synthvlm decontaminate` flags: each `--against` is a caption file, an
    image folder or a Hub dataset `OWNER/NAME@REVISION`; `--config` a YAML file of the same schema."""
    from synthvlm_data.schema import load_yaml, read_text, validate

    data: dict = {}
    if config is not None:
        if not Path(config).is_file():
            raise InputDataError(f"decontamination config {config} does not exist")
        data = load_yaml(read_text(Path(config), "decontamination config", InputDataError), str(config),
                         "decontamination config", InputDataError) or {}
        if not isinstance(data, dict):
            raise InputDataError(f"decontamination config {config}: the top level must be a mapping with `against:`")
    sets = list(data.get("against") or [])
    names = {s.get("name") for s in sets if isinstance(s, dict)}
    for spec in against:
        path = Path(spec).expanduser()
        base = path.name or spec
        entry: dict
        if path.is_dir():
            entry = {"images": str(path)}
        elif path.is_file():
            entry = {"path": str(path), "caption_column": caption_column, "image_column": image_column}
        elif "/" in spec and not spec.startswith((".", "/", "~")) and path.suffix == "" or "@" in spec:
            repo, _, rev = spec.partition("@")
            if not rev:
                raise InputDataError(f"--against {spec}: pin the Hub dataset's revision as {spec}@<commit sha>")
            entry = {"type": "hub", "dataset": repo, "revision": rev, "split": split, "caption_column": caption_column,
                     "image_column": image_column}
            base = repo.rsplit("/", 1)[-1]
        else:
            raise InputDataError(f"--against {spec}: no such file or folder (nor a Hub id OWNER/NAME@REVISION)")
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        sets.append({"name": name, **entry})
    if not sets:
        raise InputDataError("nothing to check against: pass --against (a caption file, an image folder or "
                             "OWNER/NAME@REVISION) or --config")
    data = {**data, "against": sets, **{k: v for k, v in overrides.items() if v is not None}}
    where = str(config) if config is not None else "(command line)"
    return validate(DecontamConfig, data, where, "decontamination config", InputDataError)


__all__ = ["DecontamConfig", "EvalIndex", "EvalSet", "TextDecontamConfig", "build_index", "check_dataset", "config_from_cli", "image_hash",
           "normalize"]
