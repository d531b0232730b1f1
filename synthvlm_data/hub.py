"""Publish a dataset folder or a model checkpoint to the Hugging Face Hub.

`publish_folder` checks everything it can locally before the first request (the folder is a
valid dataset or model, the repo id is well formed, the Hub is not in offline mode, a token
exists) and then calls `HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder`, which is
resumable: re-running the same command after an interruption skips what was already uploaded.

The token is resolved by huggingface_hub itself (`HF_TOKEN`, then `hf auth login`'s file):
this module only asks whether one exists and never passes, prints or stores it. Hub error
messages are scrubbed of it anyway, in case a server echoes it back.

A model repo gets the model only: pickle-format files and trainer/tracker folders (a training
output dir's checkpoints/, logs/, training_args.bin) stay local, and the result's warnings say so.
This is the one rule for `synthvlm publish --repo-type model` and `train/*.py --push-to-hub`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import struct
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path, PurePosixPath

from huggingface_hub import DatasetCard, HfApi, ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import get_token, validate_repo_id

from synthvlm_data.errors import SynthVLMError

REPO_TYPES = ("dataset", "model")
SCAN_LIMIT_BYTES = 16 * 1024 * 1024  # files small enough to scan for a leaked token (cards, JSON, configs)
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN to a token with write access"


class HubError(SynthVLMError):
    """Publishing cannot proceed: offline, no or bad token, bad repo id, invalid folder, Hub refusal."""

    exit_code = 4


@dataclass(frozen=True)
class UploadFile:
    path: str  # POSIX path relative to the folder (= path in the repo)
    size: int


@dataclass(frozen=True)
class PublishResult:
    """What was (or, for a dry run, would be) published."""

    repo_id: str
    repo_type: str
    revision: str
    private: bool
    url: str
    files: tuple[UploadFile, ...]
    delete_patterns: tuple[str, ...]
    dry_run: bool
    commit_url: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)  # why a real run would stop (dry run only)
    warnings: tuple[str, ...] = field(default_factory=tuple)  # publishable, but probably not intended

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def __str__(self) -> str:
        if self.dry_run:
            return f"dry run: {len(self.files)} files ({human_size(self.total_bytes)}) -> {self.url}"
        return self.commit_url or self.url


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


# --------------------------------------------------------------------------- local checks


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
        _check_safetensors_header(path)
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


def _check_safetensors_header(path: Path) -> None:
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


def _check_token_not_in_files(folder: Path, files: list[UploadFile], token: str | None) -> None:
    if not token:
        return
    needle = token.encode()
    for f in files:
        if f.size <= SCAN_LIMIT_BYTES and needle in (folder / f.path).read_bytes():
            raise HubError(
                f"refusing to publish: {f.path} contains your Hugging Face token; remove it from the file "
                "(and revoke the token at https://huggingface.co/settings/tokens)"
            )


def hub_offline() -> bool:
    """huggingface_hub's offline switch, or HF_HUB_OFFLINE set after it was imported."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or env.strip().lower() in {"1", "on", "yes", "true"}


def repo_url(repo_id: str, repo_type: str) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{constants.ENDPOINT}/{prefix}{repo_id}"


def default_delete_patterns(folder: Path, repo_type: str, data_patterns: list[str]) -> list[str]:
    """Remote files to drop if this upload does not bring them back.

    Stale shards of an earlier, larger version would otherwise still match the card's data-file
    globs (or the checkpoint's weight files) and silently mix into `load_dataset` / `from_pretrained`.
    """
    if repo_type == "dataset":
        dirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "data")
        return [*dict.fromkeys(data_patterns), *(f"{d}/*" for d in dirs)]
    return ["*.safetensors", "*.safetensors.index.json"]


# --------------------------------------------------------------------------- publishing


def _scrub(text: str, token: str | None) -> str:
    text = " ".join(str(text).split())
    if token:
        text = text.replace(token, "hf_***")
    return text


def _hub_error(err: BaseException, *, action: str, repo_id: str, repo_type: str, token: str | None) -> HubError:
    """One actionable line for a Hub failure (never a traceback, never the token)."""
    if isinstance(err, OfflineModeIsEnabled):
        return HubError(f"the Hub is in offline mode (HF_HUB_OFFLINE) while {action}: unset HF_HUB_OFFLINE to publish")
    status = getattr(getattr(err, "response", None), "status_code", None)
    owner = repo_id.split("/")[0]
    if status == 401:
        return HubError(f"the Hub rejected your token (401 Unauthorized) while {action}: it is invalid or expired; {LOGIN_HINT}")
    if status == 403:
        return HubError(
            f"your token may not write to '{owner}' (403 Forbidden) while {action}: use a token with write access to "
            f"that user or organization (fine-grained tokens need repo write permission), or publish under your own name"
        )
    if isinstance(err, RepositoryNotFoundError) or status == 404:
        return HubError(
            f"{repo_type} repo {repo_id} was not found or is not visible to your token (404) while {action}; "
            f"check --repo-id and --repo-type, or {LOGIN_HINT}"
        )
    if isinstance(err, HfHubHTTPError):
        detail = getattr(err, "server_message", None) or str(err).splitlines()[0]
        return HubError(f"the Hub refused {action} ({status}): {_scrub(detail, token)[:300]}")
    return HubError(f"cannot reach the Hub while {action} ({type(err).__name__}: {_scrub(err, token)[:200]}): check your network")


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    return (HfHubHTTPError, OfflineModeIsEnabled, httpx2.HTTPError, httpx2.TransportError, ConnectionError, TimeoutError)


def _version() -> str:
    try:
        return metadata.version("synthvlm-data")
    except metadata.PackageNotFoundError:
        return "dev"


def publish_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "dataset",
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
) -> PublishResult:
    """Upload `folder` to `repo_id` (creating the repo and the branch if needed).

    All local checks run first, so nothing is created or uploaded when any fails. With
    `dry_run=True` only those checks run (no network): the result lists the files that would be
    uploaded and, in `notes`, why a real run would stop (offline, no token).
    """
    folder = Path(folder)
    if repo_type not in REPO_TYPES:
        raise HubError(f"invalid repo type '{repo_type}': use one of {', '.join(REPO_TYPES)}")
    check_repo_id(repo_id)
    check_revision(revision)
    if not folder.is_dir():
        raise HubError(f"{folder} is not a directory: pass the dataset folder `synthvlm build` wrote (or a model folder)")
    if repo_type == "dataset":
        data_patterns = validate_dataset_folder(folder)
    else:
        validate_model_folder(folder)
        data_patterns = []
    files = list_upload_files(folder, repo_type)
    token = get_token()
    _check_token_not_in_files(folder, files, token)

    branch = revision or constants.DEFAULT_REVISION
    delete_patterns = default_delete_patterns(folder, repo_type, data_patterns)
    warnings = []
    if repo_type == "dataset":
        warnings = [
            f"{rel} is not shown in README.md; re-render the card to link it "
            "(synthvlm_data.cards.refresh_dataset_card(folder, recipe))"
            for rel in unlinked_images(folder)
        ]
    kept = local_only_summary(folder, repo_type)
    if kept:
        warnings.append(
            f"not uploaded (pickles and trainer/tracker state stay local in model repos): {', '.join(kept)}"
        )
    result = PublishResult(
        repo_id=repo_id, repo_type=repo_type, revision=branch, private=private, url=repo_url(repo_id, repo_type),
        files=tuple(files), delete_patterns=tuple(delete_patterns), dry_run=dry_run, warnings=tuple(warnings),
    )
    problems = []
    if hub_offline():
        problems.append("the Hub is in offline mode (HF_HUB_OFFLINE=1): unset it to publish")
    if token is None:
        problems.append(f"no Hugging Face token found: {LOGIN_HINT}")
    if dry_run:
        return replace(result, notes=tuple(problems))
    if problems:
        raise HubError(problems[0])

    api = HfApi()
    errors = _network_errors()
    action = "checking your token"
    try:
        api.whoami()
        action = f"creating {repo_type} repo {repo_id}"
        url = api.create_repo(repo_id, repo_type=repo_type, private=private or None, exist_ok=True)
        if revision is not None and revision != constants.DEFAULT_REVISION:
            action = f"creating branch '{revision}'"
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        action = f"uploading {len(files)} files"
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            revision=revision,
            allow_patterns=[_glob_escape(f.path) for f in files],
            delete_patterns=list(delete_patterns),
            commit_message=f"Upload {folder.name} with synthvlm-data {_version()}",
        )
    except errors as err:
        raise _hub_error(err, action=action, repo_id=repo_id, repo_type=repo_type, token=token) from None
    return replace(result, url=str(url), commit_url=getattr(commit, "commit_url", None) or str(url))


def _glob_escape(path: str) -> str:
    """An fnmatch pattern matching exactly `path` (upload_folder filters with fnmatch)."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def format_result(result: PublishResult) -> str:
    """The CLI's report: the file list for a dry run, the commit URL otherwise."""
    kind = "private" if result.private else "public"
    lines = [f"warning: {w}" for w in result.warnings]
    if result.dry_run:
        lines.append(
            f"dry run: would upload {len(result.files)} files ({human_size(result.total_bytes)}) to {result.url} "
            f"({result.repo_type}, branch {result.revision}, {kind})"
        )
        lines += [f"  {f.path}  ({human_size(f.size)})" for f in result.files]
        lines.append(f"remote files matching {', '.join(result.delete_patterns)} that this upload does not replace are deleted")
        lines += [f"note: a real run would stop here: {note}" for note in result.notes]
        if not result.notes:
            lines.append("token: found (not shown)")
    else:
        lines.append(f"published {len(result.files)} files ({human_size(result.total_bytes)}) to {result.url}")
        if result.commit_url:
            lines.append(f"commit: {result.commit_url}")
    return "\n".join(lines)


__all__ = ["HubError", "PublishResult", "UploadFile", "format_result", "publish_folder", "validate_dataset_folder",
           "validate_model_folder"]
