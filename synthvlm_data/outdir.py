"""Output folders: which ones a command may write or replace, and how it replaces them.

Every folder this package writes carries a marker, `.synthvlm-output.json`: the kind of output
(`dataset`, `llava-json`, `webdataset`, `report`, `experiment`, `world-models`, `model`) and,
for folders written whole, the files it wrote. A destination that exists is written only when it
is empty or carries the marker of the same kind; anything else is refused before any work, with
one line naming the folder, what it holds and the way out.

`--overwrite` lets a command replace output this package wrote for another purpose (a LLaVA JSON
export where a dataset should now go). It never deletes a file the package did not write: a
folder holding one is refused even with `--overwrite`. Replacing is atomic (the new folder is
assembled under a temporary name and swapped in), and the swap removes only the files the old
marker lists; a file that appeared in the old folder while the command ran is moved into the new
one (or, when a new file has its name, left in the renamed old folder with a warning).

The marker is a hidden file: `load_dataset`, `synthvlm publish` and Hub uploads ignore it.
Folders written before markers existed are recognised by their own files for the kinds that
re-runs and resumes need (a dataset, a quality report, a training run, the world's models).
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import itertools
import json
import os
import sys
import uuid
from pathlib import Path

from synthvlm_data.errors import SynthVLMError

MARKER = ".synthvlm-output.json"
KINDS = ("dataset", "llava-json", "webdataset", "report", "experiment", "world-models", "model", "served-model",
         "images")
# Incremental writers (a training run, the experiment, `decode --images`): their marker, written before
# their first file, lists no files: the folder's files are theirs (a killed run resumes in it).
UNLISTED_KINDS = ("experiment", "model", "images")

# Folders written before the marker: (files all of which must exist, patterns every file must match;
# a `*` stays within one path component, `**` matches any number of them). A training run has no
# legacy layout: a folder of Trainer checkpoints may be anyone's.
LEGACY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dataset": (("synthvlm_stats.json", "README.md", "data/train-*-of-*.parquet"),
                ("README.md", "synthvlm_stats.json", "data/train-*-of-*.parquet", "plots/*.png", "plots/report.json",
                 "plots/report.md", "decontamination.json", ".gitattributes", ".cache/huggingface/**")),
    "report": (("report.json", "report.md"), ("report.json", "report.md", "*.png")),
    "world-models": (("CHECKSUMS.sha256", "training.json"),
                     ("CHECKSUMS.sha256", "training.json", "clip/*", "sdxl/*", "sdxl/*/*")),
    "experiment": (("settings.json",), ("settings.json", "results.json", "results.md", "timings.json", "work/**",
                                         "arms/**")),
}
# What a legacy signature file must hold (a JSON object with these keys): a user's own `report.json`
# or `settings.json` does not make their folder this package's.
LEGACY_KEYS: dict[str, tuple[str, set[str]]] = {
    "dataset": ("synthvlm_stats.json", {"captions_in", "captions_out", "images_generated"}),
    "report": ("report.json", {"recipe", "table", "files"}),
    "experiment": ("settings.json", {"arms", "seeds", "stage1_steps"}),
}


class DestinationRefused(SynthVLMError):
    """A command would write into a folder it may not replace."""


def iter_files(folder: Path):
    """Every file (and symlink) under `folder`, as POSIX paths relative to it, lazily (a refusal of
    a big folder such as a home directory must not walk all of it); the marker excluded."""
    folder = Path(folder)
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        base = Path(root)
        for name in sorted(files) + [d for d in dirs if (base / d).is_symlink()]:
            rel = (base / name).relative_to(folder).as_posix()
            if rel != MARKER:
                yield rel


def files_in(folder: Path) -> list[str]:
    """`iter_files`, sorted."""
    return sorted(iter_files(folder))


def read_marker(folder: Path) -> dict | None:
    """The folder's marker, or None (no marker, or a file of that name this package did not write)."""
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    files = data.get("files")
    if files is None:
        # Only an incremental writer's marker owns whatever the folder holds.
        return data if data["kind"] in UNLISTED_KINDS else None
    if not isinstance(files, list) or not all(isinstance(f, str) and _safe_rel(f) for f in files):
        return None
    return data


def _safe_rel(rel: str) -> bool:
    """A relative POSIX path inside the folder (no `..`, not absolute, not the marker itself)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and rel != MARKER


def _match_one(rel: str, pattern: str) -> bool:
    """fnmatch per path component: `*` never crosses a `/`; a trailing `**` component matches the rest."""
    parts, pats = rel.split("/"), pattern.split("/")
    if pats[-1] == "**":
        head = pats[:-1]
        return len(parts) > len(head) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, head))
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats))


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(_match_one(rel, p) for p in patterns)


def _legacy_kind(folder: Path, kind: str) -> bool:
    """Whether an unmarked folder is `kind` output written before the marker existed: all of its
    signature files are there (the JSON one holding what this package writes in it) and every
    file is named as that output names its files."""
    if kind not in LEGACY:
        return False
    folder = Path(folder)
    signatures, patterns = LEGACY[kind]
    if not all(any(p.is_file() and not p.is_symlink() for p in folder.glob(s)) for s in signatures):
        return False
    if kind in LEGACY_KEYS:
        name, keys = LEGACY_KEYS[kind]
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or not keys <= data.keys():
            return False
    return all(_matches(f, patterns) for f in iter_files(folder))


def owner_kind(folder: Path) -> str | None:
    """The kind of output this package wrote into `folder` (marker, else legacy files), or None."""
    marker = read_marker(folder)
    if marker is not None:
        return marker["kind"]
    return next((k for k in LEGACY if _legacy_kind(folder, k)), None)


def foreign_files(folder: Path, kind: str | None = None) -> list[str]:
    """Files in `folder` this package did not write: not listed by its marker (a marker without a
    list owns the folder's files), or, unmarked, all of them unless it is legacy `kind` output."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        return [] if kind is not None and _legacy_kind(folder, kind) else files_in(folder)
    files = files_in(folder)
    owned = marker.get("files")
    if owned is None:
        return []
    owned = set(owned)
    return [f for f in files if f not in owned]


def describe(files: list[str], limit: int = 3) -> str:
    """'notes.txt, projects/thesis.tex, b.py and 4 more': what a folder holds."""
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def check_destination(path: Path, kind: str, *, overwrite: bool = False, flag: str = "--out",
                      overwrite_flag: str | None = "--overwrite", replaces: bool = True) -> None:
    """Refuse (DestinationRefused, one line) unless `path` may receive `kind` output: it does not
    exist, is empty, or holds this package's output of `kind` (another kind with `overwrite`),
    and in every case holds no file the package did not write. `replaces`: the command swaps the
    whole folder for a new one (`replace_dir`), so it may not be the folder the user is in; a
    command that adds files or resumes passes False. Call it first: it writes nothing, except that
    it puts back a folder a killed replace left aside (`restore_interrupted`)."""
    path = Path(path)
    if path.is_symlink():
        raise DestinationRefused(f"{path} is a symbolic link: give the folder it points to ({os.path.realpath(path)}) "
                                 f"or another {flag}")
    absolute = Path(os.path.realpath(path))
    cwd = Path.cwd().resolve()
    if replaces and (cwd == absolute or cwd.is_relative_to(absolute)):
        raise DestinationRefused(f"{flag} {path} is the folder you are in (or holds it): choose a new folder "
                                 f"for the output, e.g. {flag} {absolute.name or 'out'}-output")
    restore_interrupted(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise DestinationRefused(f"{path} exists and is not a folder: choose another {flag}")
    if not any(path.iterdir()):
        return
    marker = read_marker(path)
    owner = marker["kind"] if marker is not None else kind if _legacy_kind(path, kind) else None
    if owner is None:
        # Name first what does not look like `kind` output (the user's files in an older output folder).
        patterns = LEGACY.get(kind, ((), ("",)))[1]
        shown = (list(itertools.islice((f for f in iter_files(path) if not _matches(f, patterns)), 50))
                 or list(itertools.islice(iter_files(path), 50)))
        raise DestinationRefused(
            f"{path} is not empty and was not written by synthvlm-data (it holds {describe(shown) or 'empty folders'}): "
            f"choose another {flag}, or move those files away"
            + (f" ({overwrite_flag} never deletes files this package did not write)" if overwrite_flag else ""))
    foreign = foreign_files(path, kind if owner == kind else owner)
    if foreign:
        raise DestinationRefused(
            f"{path} holds files synthvlm-data did not write ({describe(foreign)}): move them away or choose "
            f"another {flag}; they are never deleted" + (f", even with {overwrite_flag}" if overwrite_flag else ""))
    if owner != kind and marker is not None and marker.get("files") is None:
        raise DestinationRefused(
            f"{path} holds a synthvlm-data {owner} folder (a training run or experiment, written over time, so "
            f"its files are not listed): it is never replaced, even with {overwrite_flag or '--overwrite'}; "
            f"choose another {flag}")
    if owner != kind and not overwrite:
        how = f"pass {overwrite_flag} to replace it, or choose" if overwrite_flag else "choose"
        raise DestinationRefused(f"{path} holds synthvlm-data {owner} output, not {kind}: {how} another {flag}")


def check_not_inside(out: Path, source: Path, flag: str = "--out", what: str = "the input folder") -> None:
    """An output folder may neither be its own input folder nor contain it, nor sit inside it."""
    o, s = Path(out).resolve(), Path(source).resolve()
    if o == s or o.is_relative_to(s) or s.is_relative_to(o):
        raise DestinationRefused(f"{flag} {out} overlaps {what} {source}: choose a folder outside it")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def stale_siblings(dst: Path, kinds: tuple[str, ...] = ("partial", "old")) -> list[Path]:
    """`.<name>.partial-<pid>-*` (staging) and `.<name>.old-<pid>-*` (replaced) folders next to `dst`
    whose process is gone, newest first: what a kill while replacing `dst` leaves behind. Links
    are never followed."""
    dst = Path(os.path.abspath(dst))
    if not dst.parent.is_dir():
        return []
    stale = []
    for path in dst.parent.glob(f".{glob.escape(dst.name)}.*-*-*"):
        kind, _, rest = path.name[len(dst.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if (kind in kinds and pid.isdigit() and path.is_dir() and not path.is_symlink()
                and not pid_alive(int(pid))):
            try:
                changed = path.stat().st_ctime_ns  # a rename sets it
            except OSError:  # gone meanwhile (another rank restored or swept it)
                continue
            stale.append((changed, path.name, path))
    return [p for *_, p in sorted(stale, reverse=True)]  # newest first


def restore_interrupted(dst: Path) -> Path | None:
    """A command killed between renaming `dst` aside and swapping the new folder in leaves `dst`
    missing and its old content in `.<name>.old-<pid>-*`: put the newest such folder back."""
    dst = Path(os.path.abspath(dst))
    if dst.exists() or dst.is_symlink():
        return None
    # Only a folder that still carries its output's marker (or a dataset's layout from before markers)
    # is one renamed aside whole; a leftover of a replace (a user's files kept, marker removed) is not.
    olds = [p for p in stale_siblings(dst, ("old",)) if read_marker(p) is not None or _legacy_kind(p, "dataset")]
    for old in olds:
        try:
            os.replace(old, dst)
        except OSError:  # another process (an accelerate rank) restored it first, or dst appeared
            if dst.exists():
                return None
            continue
        print(f"note: {dst} was being replaced when its command stopped; its previous content is back",
              file=sys.stderr)
        return old
    return None


def write_marker(folder: Path, kind: str, files: list[str] | None | bool = True) -> None:
    """Mark `folder` as `kind` output. `files=True`: it owns the files now in it; a list: those;
    None: everything it holds (incremental writers that never delete: training, the experiment)."""
    folder = Path(folder)
    existing = folder / MARKER
    if (existing.exists() or existing.is_symlink()) and read_marker(folder) is None:
        raise DestinationRefused(f"{existing} exists and is not a marker synthvlm-data wrote: move it away")
    listed = files_in(folder) if files is True else (sorted(files) if files is not None else None)
    data = {"kind": kind, "written_by": f"synthvlm-data {_version()}", "files": listed}
    tmp = folder / f"{MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("synthvlm-data")
    except metadata.PackageNotFoundError:
        return "unknown"


def ensure_marker(folder: Path, kind: str) -> None:
    """Mark an incremental writer's folder once (it owns whatever it writes there)."""
    marker = read_marker(folder)
    if marker is None or marker["kind"] != kind:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_marker(folder, kind, None)


def add_files(folder: Path, rel_paths: list[str], kind: str) -> None:
    """Record files a later command added to a folder (the quality report in a dataset's plots/).
    An unmarked folder is marked as `kind` owning those files only."""
    marker = read_marker(folder)
    if marker is not None and marker.get("files") is None:
        return
    owned = set(marker["files"]) if marker is not None else set()
    if marker is None and _legacy_kind(Path(folder), kind):
        owned = {f for f in files_in(folder) if _matches(f, LEGACY[kind][1])}
    write_marker(folder, marker["kind"] if marker else kind, sorted(owned | set(rel_paths)))


def staging_dir(dst: Path) -> Path:
    """A new, empty `.<name>.partial-<pid>-<random>` folder next to `dst` (the build sweeps the
    ones whose process is gone: `stages.export.stale_export_dirs`)."""
    dst = Path(os.path.abspath(dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = dst.with_name(f".{dst.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    return staging


def remove_owned(folder: Path) -> list[str]:
    """Delete the files `folder`'s marker (or legacy layout) says this package wrote, then empty
    folders; returns what is left (files it did not write), in which case `folder` stays."""
    folder = Path(folder)
    marker = read_marker(folder)
    files = files_in(folder)
    if marker is None:  # only the folders `replace_dir` swaps out are removed: a dataset from before markers
        owned = {f for f in files if _matches(f, LEGACY["dataset"][1])} if _legacy_kind(folder, "dataset") else set()
    else:
        owned = set(files) if marker.get("files") is None else set(marker["files"])
    for rel in files:
        if rel in owned:
            with contextlib.suppress(OSError):
                (folder / rel).unlink()
    if marker is not None:  # a file of that name the package did not write stays
        with contextlib.suppress(OSError):
            (folder / MARKER).unlink()
    _prune_empty(folder)
    return files_in(folder) if folder.exists() else []


def _prune_empty(folder: Path) -> None:
    """Remove the empty folders under `folder`, deepest first, and `folder` itself when empty."""
    for root, _dirs, _files in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            Path(root).rmdir()  # fails, and so keeps it, unless it is empty


def replace_dir(staging: Path, dst: Path, kind: str) -> None:
    """Mark `staging` as `kind` output owning its files and swap it in for `dst`, atomically: `dst`
    is renamed aside first and only the files the package wrote there are deleted afterwards."""
    staging, dst = Path(staging), Path(os.path.abspath(dst))
    write_marker(staging, kind)
    old = None
    if dst.exists() or dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(staging, dst)
    if old is None:
        return
    left = remove_owned(old)
    kept = []
    for rel in left:  # appeared while the command ran: the user's, so they move to the new folder
        target = dst / rel
        if target.exists() or target.is_symlink():
            kept.append(rel)
            continue
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old / rel, target)
    _prune_empty(old)  # the folders the moves emptied
    if kept:
        print(f"warning: {old} keeps files synthvlm-data did not write ({describe(kept)}): a new file has their "
              f"name in {dst}; move them where you want them", file=sys.stderr)


__all__ = ["MARKER", "DestinationRefused", "add_files", "check_destination", "check_not_inside", "ensure_marker",
           "files_in", "foreign_files", "owner_kind", "pid_alive", "read_marker", "remove_owned", "replace_dir",
           "restore_interrupted", "stale_siblings", "staging_dir", "write_marker"]
