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

import contextlib
import re
import tempfile
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import get_token

from synthvlm_data.hub import HubError
from synthvlm_data.hub.validate import (
    UploadFile,
    check_repo_id,
    check_revision,
    check_token_not_in_files,
    list_upload_files,
    local_only_summary,
    unlinked_images,
    validate_dataset_folder,
    validate_model_folder,
)
from synthvlm_data.models.refs import hub_offline
from synthvlm_data.outdir import owner_kind

REPO_TYPES = ("dataset", "model")
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN to a token with write access"


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
    check_token_not_in_files(folder, files, token)

    branch = revision or constants.DEFAULT_REVISION
    delete_patterns = default_delete_patterns(folder, repo_type, data_patterns)
    warnings = []
    if repo_type == "dataset":
        warnings = [
            f"{rel} is not shown in README.md; re-render the card to link it "
            "(synthvlm_data.presentation.cards.refresh_dataset_card(folder, recipe))"
            for rel in unlinked_images(folder)
        ]
    card_for_hub = redacted_card(folder)
    if card_for_hub is not None:
        warnings.append("README.md is uploaded with local paths and local server addresses redacted "
                        "(the local card keeps them)")
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

    if repo_type == "model" and owner_kind(folder) == "model":
        from synthvlm_data.presentation.model_card import finalize_for_hub

        # The card names its Hub repo, not the local folder. Only a card this package wrote is edited:
        # another model folder is uploaded exactly as it is.
        finalize_for_hub(folder, repo_id)
        card_for_hub = redacted_card(folder)  # the card now names the repo: redact that text
    api = HfApi()
    errors = _network_errors()
    action = "checking your token"
    with contextlib.ExitStack() as stack:
        # The card of a folder this package wrote goes up with local paths redacted: from a staging
        # folder of links to the listed files, the redacted card in place of README.md.
        upload_root = folder if card_for_hub is None else stack.enter_context(
            _with_card(folder, [f.path for f in files], card_for_hub))
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
                folder_path=str(upload_root),
                repo_type=repo_type,
                revision=revision,
                allow_patterns=[_glob_escape(f.path) for f in files],
                delete_patterns=list(delete_patterns),
                commit_message=f"Upload {folder.name} with synthvlm-data {_version()}",
            )
        except errors as err:
            raise _hub_error(err, action=action, repo_id=repo_id, repo_type=repo_type, token=token) from None
    return replace(result, url=str(url), commit_url=getattr(commit, "commit_url", None) or str(url))


def redacted_card(folder: Path) -> str | None:
    """README.md of a folder this package wrote with local paths and servers redacted, or None when
    there is nothing to redact (or the folder is someone else's: uploaded exactly as it is)."""
    from synthvlm_data.presentation.redact import redact_text

    card = Path(folder) / "README.md"
    if owner_kind(folder) not in ("dataset", "model") or not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    redacted = redact_text(text)
    return redacted if redacted != text else None


@contextlib.contextmanager
def _with_card(folder: Path, paths: list[str], card: str):
    """A temporary folder mirroring `paths` of `folder` as symbolic links (nothing is copied), with
    `card` as its README.md."""
    with tempfile.TemporaryDirectory(prefix="synthvlm-publish-") as tmp:
        root = Path(tmp)
        for rel in paths:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel == "README.md":
                target.write_text(card, encoding="utf-8")
            else:
                target.symlink_to((Path(folder) / rel).resolve())
        yield root


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
