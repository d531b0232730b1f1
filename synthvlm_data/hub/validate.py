"""Local checks of a folder before anything is sent to the Hub: the repo id and branch, a dataset
folder (card with `configs:` and `dataset_info:` matching the parquet shards, no loading script), a
model folder (complete safetensors, config.json, a parsed model card), the card's local links, the
files that are uploaded (a model repo never receives pickles or trainer/tracker state) and no token
inside them.
"""

from __future__ import annotations

import fnmatch
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from synthvlm_data.hub import HubError

SCAN_LIMIT_BYTES = 16 * 1024 * 1024  # files small enough to scan for a leaked token (cards, JSON, configs)


@dataclass(frozen=True)
class UploadFile:
    path: str  # POSIX path relative to the folder (= path in the repo)
    size: int


def check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubError(f"invalid repo id '{repo_id}': expected OWNER/NAME, e.g. your-username/synthvlm-100k")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"invalid repo id '{repo_id}': OWNER and NAME may use letters, digits, '-', '_' and '.', may not start "
            "or end with '-' or '.', may not contain '--' or '..', and NAME is at most 96 characters"
        ) from None


_BRANCH = re.compile(r"^(?!.*\.\.)(?!.*//)[A-Za-z0-9_][A-Za-z0-9._/-]*(?<![./])$")


def check_revision(revision: str | None) -> None:
    if revision is None:
        return
    if not _BRANCH.fullmatch(revision) or revision.endswith(".lock") or revision.startswith("refs/"):
        raise HubError(
            f"invalid --revision '{revision}': give a branch name (letters, digits, '.', '_', '-', '/'), "
            "e.g. v1 or tiny-test"
        )


# Never sent to a model repo. Pickles can run code when loaded (`from_pretrained` falls back to
# pytorch_model.bin when a repo has no safetensors), and trainer/tracker folders are run state
# (optimizer, RNG, scheduler, event logs): a training output dir holds both next to the model.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
RUN_STATE_DIRS = ("checkpoints", "checkpoint-*", "logs", "runs")


def _candidate_files(folder: Path) -> list[Path]:
    """Regular files of the folder, except hidden ones (locks, caches) and `__pycache__`."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not any(part.startswith(".") or part == "__pycache__" for part in rel.parts) and path.is_file():
            out.append(path)
    return out


def stays_local(rel: str, repo_type: str) -> bool:
    """True for a model-repo file that is a pickle or lives under a trainer/tracker folder."""
    if repo_type != "model":
        return False
    parts = PurePosixPath(rel).parts
    in_run_dir = any(fnmatch.fnmatchcase(part, pat) for part in parts[:-1] for pat in RUN_STATE_DIRS)
    return in_run_dir or rel.lower().endswith(PICKLE_SUFFIXES)


def list_upload_files(folder: Path, repo_type: str = "dataset") -> list[UploadFile]:
    """The files to upload: all candidates, minus what `stays_local` keeps back for a model repo."""
    files = []
    for path in _candidate_files(folder):
        rel = path.relative_to(folder).as_posix()
        if not stays_local(rel, repo_type):
            files.append(UploadFile(rel, path.stat().st_size))
    return files


def local_only_summary(folder: Path, repo_type: str) -> list[str]:
    """What `stays_local` kept back, one entry per top-level folder or file (for the warning)."""
    counts: dict[str, int] = {}
    for path in _candidate_files(folder):
        rel = path.relative_to(folder).as_posix()
        if stays_local(rel, repo_type):
            top = rel.split("/", 1)[0] + ("/" if "/" in rel else "")
            counts[top] = counts.get(top, 0) + 1
    return [f"{top} ({n} files)" if top.endswith("/") else top for top, n in counts.items()]


def _local_links(card_text: str) -> list[str]:
    """Relative link / image targets in a card body (what must exist next to it)."""
    targets = []
    for target in re.findall(r"\]\(([^)\s]+)\)", card_text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            continue
        targets.append(target.split("#", 1)[0])
    return [t for t in targets if t]


def _check_links(folder: Path, card_text: str, repo_type: str = "dataset") -> None:
    for target in _local_links(card_text):
        if not (folder / target).is_file():
            raise HubError(f"{folder}/README.md links '{target}', which is not in the folder: add it or fix the card")
        if stays_local(target, repo_type):
            raise HubError(f"{folder}/README.md links '{target}', which is never uploaded to a model repo "
                           "(pickle or trainer/tracker state): link a top-level copy instead")


def unlinked_images(folder: Path) -> list[str]:
    """PNGs outside `data/` that the card does not show (e.g. plots added after the card was written)."""
    readme = folder / "README.md"
    linked = set(_local_links(readme.read_text(encoding="utf-8"))) if readme.is_file() else set()
    out = []
    for path in sorted(folder.rglob("*.png")):
        rel = path.relative_to(folder)
        if rel.parts[0] != "data" and not any(p.startswith(".") for p in rel.parts) and rel.as_posix() not in linked:
            out.append(rel.as_posix())
    return out


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def validate_dataset_folder(folder: Path) -> list[str]:
    """Check a dataset folder is what `load_dataset` and the Hub expect; returns its data-file patterns.

    README.md with YAML `configs:` (each pattern matching complete parquet shards), `dataset_info:`
    features equal to the shards' columns and split sizes equal to the shards' row counts, and
    no loading script (`datasets` >= 4 refuses them).
    """
    import pyarrow.parquet as pq

    readme = folder / "README.md"
    if not readme.is_file():
        raise HubError(f"{folder} is not a dataset folder: README.md (the dataset card) is missing; run `synthvlm build` first")
    try:
        card = DatasetCard.load(readme)
    except Exception as err:  # yaml / card parse errors of many types
        raise HubError(f"{readme} does not parse as a dataset card ({type(err).__name__}: {err})") from None
    configs = card.data.to_dict().get("configs") or []
    if not configs:
        raise HubError(f"{readme} has no `configs:` in its YAML header, so load_dataset cannot find the data files")
    scripts = sorted(p.name for p in folder.glob("*.py"))
    if scripts:
        raise HubError(f"{folder} holds {', '.join(scripts)}: dataset scripts are not supported by datasets >= 4; remove them")

    patterns: list[str] = []
    rows_by_config: dict[str, dict[str, int]] = {}
    columns: dict[str, set[str]] = {}
    for cfg in configs:
        name = cfg.get("config_name", "default")
        for entry in _as_list(cfg.get("data_files")):
            split, paths = (entry.get("split", "train"), entry.get("path")) if isinstance(entry, dict) else ("train", entry)
            for pattern in _as_list(paths):
                matches = sorted(p for p in folder.glob(pattern) if p.is_file())
                if not matches:
                    raise HubError(f"{readme} config '{name}' lists '{pattern}' but no file matches it: the shards are missing")
                patterns.append(pattern)
                for shard in matches:
                    if shard.suffix != ".parquet":
                        continue
                    try:
                        meta = pq.read_metadata(shard)
                    except Exception:
                        raise HubError(f"{shard} is not a complete parquet file: re-run the build to rewrite it") from None
                    split_rows = rows_by_config.setdefault(name, {})
                    split_rows[split] = split_rows.get(split, 0) + meta.num_rows
                    columns.setdefault(name, set()).update(meta.schema.to_arrow_schema().names)

    infos = card.data.to_dict().get("dataset_info")
    for info in _as_list(infos):
        name = info.get("config_name", "default")
        if name not in rows_by_config:
            continue
        for split in info.get("splits") or []:
            expected, found = split.get("num_examples"), rows_by_config[name].get(split.get("name"))
            if expected is not None and found is not None and expected != found:
                raise HubError(
                    f"{readme} says split '{split.get('name')}' has {expected} rows but the shards hold {found}: "
                    "the card and the data are out of sync; re-export the dataset"
                )
        declared = {f["name"] for f in info.get("features") or [] if isinstance(f, dict) and "name" in f}
        if declared and declared != columns.get(name, declared):
            raise HubError(
                f"{readme} declares features {sorted(declared)} but the shards have columns {sorted(columns[name])}; "
                "re-export the dataset"
            )
    _check_links(folder, card.text)
    return patterns


def validate_model_folder(folder: Path) -> None:
    """A publishable checkpoint: safetensors weights (every shard of an index), config.json, a parsed card."""
    config = folder / "config.json"
    if not config.is_file():
        raise HubError(f"{folder} is not a model folder: config.json is missing (save the model with save_pretrained)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise HubError(f"{config} is not valid JSON ({err})") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise HubError(f"{folder} has no *.safetensors weights: save the model with save_pretrained(safe_serialization=True)")
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            raise HubError(f"{index} is not a valid safetensors index") from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise HubError(f"{index} names weight shards that are missing: {', '.join(missing[:3])}")
    for path in weights:
        check_safetensors_header(path)
    readme = folder / "README.md"
    if not readme.is_file():
        raise HubError(f"{folder} has no README.md model card: write one (the training run does) before publishing")
    try:
        card = ModelCard.load(readme)
    except Exception as err:
        raise HubError(f"{readme} does not parse as a model card ({type(err).__name__}: {err})") from None
    if not card.data.to_dict():
        raise HubError(f"{readme} has no YAML metadata header (license, base_model, ...): render it with ModelCardData")
    _check_links(folder, card.text, "model")


def check_safetensors_header(path: Path) -> None:
    """The 8-byte length + JSON header of a safetensors file: catches truncated or foreign files cheaply."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if ends and 8 + n + max(ends) > size:
            raise ValueError("tensor data truncated")
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise HubError(f"{path} is not a complete safetensors file ({err}): save the model again") from None


def check_token_not_in_files(folder: Path, files: list[UploadFile], token: str | None) -> None:
    if not token:
        return
    needle = token.encode()
    for f in files:
        if f.size <= SCAN_LIMIT_BYTES and needle in (folder / f.path).read_bytes():
            raise HubError(
                f"refusing to publish: {f.path} contains your Hugging Face token; remove it from the file "
                "(and revoke the token at https://huggingface.co/settings/tokens)"
            )
