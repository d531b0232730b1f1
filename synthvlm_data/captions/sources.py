"""Caption sources, all streamed: nothing reads a whole input into memory.

Every reader yields raw records `{"source", "source_id", "caption", "concept", "image"}`, where
`caption` is whatever the input held (validation and counting happen in the pipeline) and `image`
is a reference to the caption's original image (a path, or a `datasets` {"bytes", "path"} dict) or
None. Malformed input (unparsable line, missing column) raises `InputDataError` naming the file,
the line/row and what to do.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

from synthvlm_data.captions.config import CaptionSource
from synthvlm_data.data import resolve_path
from synthvlm_data.errors import InputDataError, tiny_recipe_hint

_WS = re.compile(r"[ \t\n\r]*")
_CHUNK_CHARS = 1 << 20
_MAX_ELEMENT_CHARS = 64 << 20
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")


def iter_json_array(path: Path) -> Iterator[tuple[int, int, object]]:
    """Yield (index, line, element) of a top-level JSON array, reading 1 MB at a time."""
    dec = json.JSONDecoder()
    with path.open(encoding="utf-8") as f:
        buf, pos, eof, lines_before = "", 0, False, 0

        def fill() -> None:
            nonlocal buf, pos, eof, lines_before
            more = f.read(_CHUNK_CHARS)
            eof = not more
            lines_before += buf.count("\n", 0, pos)
            buf, pos = buf[pos:] + more, 0

        def skip_ws() -> str:
            nonlocal pos
            while True:
                pos = _WS.match(buf, pos).end()
                if pos < len(buf) or eof:
                    return buf[pos] if pos < len(buf) else ""
                fill()

        def line_at(p: int) -> int:
            return lines_before + buf.count("\n", 0, p) + 1

        def fail(what: str, p: int):
            raise InputDataError(f"{path}:{line_at(p)}: {what}; fix the file (it must be a JSON array of objects)")

        fill()
        if skip_ws() != "[":
            fail("expected a JSON array '['", pos)
        pos += 1
        index = 0
        if skip_ws() == "]":
            return
        while True:
            while True:
                try:
                    obj, end = dec.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as err:
                    if eof or len(buf) - pos > _MAX_ELEMENT_CHARS:
                        fail(f"element {index} is not valid JSON ({err.msg})", err.pos)
                    fill()
            yield index, line_at(pos), obj
            pos, index = end, index + 1
            ch = skip_ws()
            if ch == ",":
                pos += 1
                skip_ws()
            elif ch == "]":
                return
            else:
                fail(f"expected ',' or ']' after element {index - 1}, found {ch!r}" if ch
                     else "the file ends before the closing ']'", pos)


def _tiny_alternative(src: CaptionSource, suffix: str = "") -> str:
    """", or use `--recipe tiny`" for a recipe's caption source; nothing for sets read outside a
    recipe (decontamination's evaluation sets), where no recipe can be swapped."""
    return f", or use {tiny_recipe_hint()}{suffix}" if src.offers_tiny_recipe else ""


def _record(src: CaptionSource, rec: object, where: str, row_no: int, image_root: Path | None) -> dict:
    if not isinstance(rec, dict):
        raise InputDataError(f"{where}: expected a JSON object per row, got {type(rec).__name__}; fix the file")
    if src.caption_column not in rec:
        raise InputDataError(
            f"caption source '{src.name}': {where} has no column '{src.caption_column}' "
            f"(columns: {', '.join(map(str, list(rec)[:12]))}); set caption_column in the recipe"
        )
    sid = rec.get(src.id_column) if src.id_column else None
    image = None
    if src.image_column:
        image = rec.get(src.image_column)
        if isinstance(image, str) and image_root is not None:
            image = str(image_root / image)
    return {"source": src.name, "source_id": str(row_no if sid is None else sid),
            "caption": rec[src.caption_column], "concept": None, "image": image}


def source_file(src: CaptionSource) -> Path:
    """The local file of a file/llava source; with `dataset`, fetched from that Hub dataset repo
    (the local cache first; never waiting on an unreachable Hub)."""
    if not src.dataset:
        path = resolve_path(src.path or "")
        if not path.is_file():
            raise InputDataError(f"caption source '{src.name}': file {path} does not exist; fix `path` in the recipe")
        return path
    from huggingface_hub import hf_hub_download

    from synthvlm_data.models.refs import hub_offline, hub_reachable

    where = f"'{src.path}' of Hub dataset {src.dataset}@{src.revision}"
    try:
        return Path(hf_hub_download(src.dataset, src.path, repo_type="dataset", revision=src.revision,
                                    local_files_only=True))
    except Exception:
        pass
    if hub_offline() or not hub_reachable():
        raise InputDataError(
            f"caption source '{src.name}': {where} is not in the local cache and the Hub is not reachable "
            "(or HF_HUB_OFFLINE is set); download it and set `path` to the local file" + _tiny_alternative(src)
        )
    try:
        return Path(hf_hub_download(src.dataset, src.path, repo_type="dataset", revision=src.revision))
    except Exception as err:
        raise InputDataError(f"caption source '{src.name}': cannot download {where} ({type(err).__name__}); "
                             "check dataset, path and revision") from None


def _iter_file(src: CaptionSource) -> Iterator[dict]:
    path = source_file(src)
    image_root = Path(src.image_root).expanduser() if src.image_root else path.parent
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputDataError(
                        f"caption source '{src.name}': {path}:{lineno} is not valid JSON ({err.msg}); "
                        "fix or remove the line"
                    ) from None
                yield _record(src, rec, f"{path}:{lineno}", lineno, image_root)
    elif suffix == ".json":
        for index, lineno, rec in iter_json_array(path):
            yield _record(src, rec, f"{path}:{lineno} (element {index})", index + 1, image_root)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or src.caption_column not in reader.fieldnames:
                raise InputDataError(
                    f"caption source '{src.name}': {path} has no column '{src.caption_column}' in its "
                    f"header ({', '.join(reader.fieldnames or [])}); set caption_column in the recipe"
                )
            for i, rec in enumerate(reader, 1):
                yield _record(src, rec, f"{path}:{reader.line_num}", i, image_root)
    elif suffix == ".parquet":
        yield from _iter_parquet(src, path, image_root)
    elif suffix == ".txt":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield {"source": src.name, "source_id": str(lineno), "caption": line.rstrip("\n"),
                           "concept": None, "image": None}
    else:
        raise InputDataError(
            f"caption source '{src.name}': {path} has an unsupported suffix; use one of {', '.join(SUFFIXES)}"
        )


def _iter_parquet(src: CaptionSource, path: Path, image_root: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:
        raise InputDataError(f"caption source '{src.name}': {path} is not a readable parquet file ({err})") from None
    names = pf.schema_arrow.names
    if src.caption_column not in names:
        raise InputDataError(
            f"caption source '{src.name}': {path} has no column '{src.caption_column}' "
            f"({', '.join(names[:12])}); set caption_column in the recipe"
        )
    cols = [c for c in (src.id_column, src.caption_column, src.image_column) if c and c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=cols):
        for rec in batch.to_pylist():
            row += 1
            yield _record(src, rec, f"{path} row {row}", row, image_root)


def _iter_llava(src: CaptionSource) -> Iterator[dict]:
    """LLaVA-Pretrain JSON: [{id, image, conversations: [{from: human}, {from: gpt, value}]}]."""
    path = source_file(src)
    image_root = Path(src.image_root).expanduser() if src.image_root else path.parent
    image_col = src.image_column or "image"
    for index, lineno, rec in iter_json_array(path):
        where = f"{path}:{lineno} (element {index})"
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
            raise InputDataError(
                f"caption source '{src.name}': {where} is not a LLaVA record (needs `conversations`); "
                "use type: file for other JSON layouts"
            )
        caption = next((t.get("value") for t in rec["conversations"]
                        if isinstance(t, dict) and t.get("from") == "gpt"), None)
        image = rec.get(image_col)
        sid = rec.get(src.id_column or "id")
        yield {"source": src.name, "source_id": str(index + 1 if sid is None else sid), "caption": caption,
               "concept": None, "image": str(image_root / image) if isinstance(image, str) else None}


def _iter_hub(src: CaptionSource) -> Iterator[dict]:
    """A `datasets` dataset (Hub id at a pinned revision, or a local dataset folder), streamed."""
    from synthvlm_data.models.refs import hub_offline, hub_reachable

    where = f"{src.dataset}" + (f"@{src.revision}" if src.revision else "")
    if not Path(src.dataset).expanduser().exists() and (hub_offline() or not hub_reachable()):
        # streaming reads the Hub's files directly, so there is nothing cached to fall back to
        raise InputDataError(
            f"caption source '{src.name}': dataset {where} is on the Hugging Face Hub, which is not "
            "reachable here (or HF_HUB_OFFLINE is set); use a local file or folder" + _tiny_alternative(src)
        )
    try:
        import datasets

        ds = datasets.load_dataset(src.dataset, src.subset, split=src.split, revision=src.revision, streaming=True)
        feats = ds.features or {}
        if src.image_column and isinstance(feats.get(src.image_column), datasets.Image):
            ds = ds.cast_column(src.image_column, datasets.Image(decode=False))
    except Exception as err:
        raise InputDataError(
            f"caption source '{src.name}': cannot open dataset {where} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''}); check the id, revision and split, "
            "use a local file" + _tiny_alternative(src, " offline")
        ) from None
    for i, rec in enumerate(ds, 1):
        yield _record(src, rec, f"dataset {where} row {i}", i, None)


def _iter_world(src: CaptionSource) -> Iterator[dict]:
    """The miniature world's pool: each caption with its original render as PNG bytes."""
    from synthvlm_data.world.pool import pool_rows

    w = src.world_pool
    for row in pool_rows(w.n_clean, w.n_per_corruption, seed=w.seed):
        yield {"source": src.name, "source_id": row["id"], "caption": row["caption"], "concept": None,
               "image": row["image"]}


def iter_source(src: CaptionSource) -> Iterator[dict]:
    """Records of one source, at most `src.limit` of them, in file order."""
    it = {"file": _iter_file, "llava": _iter_llava, "hub": _iter_hub, "world": _iter_world}[src.type](src)
    try:
        for i, rec in enumerate(it):
            if src.limit is not None and i >= src.limit:
                return
            yield rec
    except UnicodeDecodeError as err:
        raise InputDataError(
            f"caption source '{src.name}': {src.path or src.dataset} is not UTF-8 text ({err.reason}, byte "
            f"{err.object[err.start:err.start + 1]!r}); re-save the file as UTF-8"
        ) from None
