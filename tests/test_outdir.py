"""Output folders: a command writes only into new or empty folders, or its own earlier output.

Every command that writes or replaces a folder is given a folder holding a user's file: it must
refuse with one line naming the folder, keep the file, and stop before any work (no work dir, no
stage). Its own earlier output is still replaced, atomically, and only its own files go.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthvlm_data.outdir import (
    MARKER,
    DestinationRefused,
    add_files,
    check_destination,
    owner_kind,
    read_marker,
    remove_owned,
    replace_dir,
    staging_dir,
    write_marker,
)

ROOT = Path(__file__).resolve().parents[1]
LEGACY_STATS = {"captions_in": 10, "captions_out": 8, "images_generated": 16}
TINY_TRAIN = ROOT / "train" / "configs" / "tiny.yaml"


def users_folder(root: Path, name: str = "home") -> tuple[Path, Path]:
    """A folder as a user has it: a project with a thesis in it."""
    folder = root / name
    (folder / "projects").mkdir(parents=True)
    thesis = folder / "projects" / "thesis.tex"
    thesis.write_text("thesis draft")
    return folder, thesis


def one_error_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# --------------------------------------------------------------------------- the rule


def test_a_users_folder_is_refused_even_with_overwrite(tmp_path):
    folder, thesis = users_folder(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(DestinationRefused) as err:
            check_destination(folder, "dataset", overwrite=overwrite)
        msg = str(err.value)
        assert str(folder) in msg and "projects/" in msg and "--out" in msg and "--overwrite" in msg
        assert "\n" not in msg
    assert thesis.read_text() == "thesis draft"


def test_new_empty_and_own_folders_are_accepted_other_kinds_need_overwrite(tmp_path):
    check_destination(tmp_path / "new", "dataset")
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", "dataset")
    own = tmp_path / "own"
    (own / "data").mkdir(parents=True)
    (own / "data" / "train-00000-of-00001.parquet").write_bytes(b"x")
    write_marker(own, "dataset")
    check_destination(own, "dataset")
    with pytest.raises(DestinationRefused, match="--overwrite"):
        check_destination(own, "llava-json")
    check_destination(own, "llava-json", overwrite=True)
    (own / "notes.txt").write_text("mine")  # a user's file in the package's folder
    for kind, overwrite in (("dataset", False), ("llava-json", True)):
        with pytest.raises(DestinationRefused, match="notes.txt"):
            check_destination(own, kind, overwrite=overwrite)
    run = tmp_path / "run"  # a training run: its files are not listed, so it is never replaced
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"x")
    write_marker(run, "model", None)
    check_destination(run, "model")
    with pytest.raises(DestinationRefused, match="never replaced"):
        check_destination(run, "dataset", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DestinationRefused, match="not a folder"):
        check_destination(tmp_path / "file", "dataset")


def test_a_dataset_written_before_markers_is_recognised(tmp_path):
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)
    (old / "data" / "train-00000-of-00001.parquet").write_bytes(b"x")
    (old / "README.md").write_text("card")
    (old / "synthvlm_stats.json").write_text(json.dumps(LEGACY_STATS))
    check_destination(old, "dataset")
    (old / "thesis.tex").write_text("mine")
    with pytest.raises(DestinationRefused, match="thesis.tex"):
        check_destination(old, "dataset")


def test_replace_removes_only_the_packages_files(tmp_path, capsys):
    dst = tmp_path / "out"
    first = staging_dir(dst)
    (first / "a.json").write_text("1")
    replace_dir(first, dst, "llava-json")
    assert read_marker(dst)["files"] == ["a.json"] and not list(tmp_path.glob(".out.*"))
    # A user's file appears while the next export runs: it survives, in the new folder.
    second = staging_dir(dst)
    (second / "b.json").write_text("2")
    (dst / "late.txt").write_text("mine")
    replace_dir(second, dst, "llava-json")
    assert (dst / "b.json").read_text() == "2" and not (dst / "a.json").exists()
    assert (dst / "late.txt").read_text() == "mine" and read_marker(dst)["files"] == ["b.json"]
    assert not list(tmp_path.glob(".out.*"))
    # One that has the name of a new file stays in the renamed old folder, with a warning.
    third = staging_dir(dst)
    (third / "late.txt").write_text("new")
    replace_dir(third, dst, "llava-json")
    kept = list(tmp_path.glob(".out.old-*"))
    assert len(kept) == 1 and (kept[0] / "late.txt").read_text() == "mine"
    assert "late.txt" in capsys.readouterr().err


def _own_dataset(root: Path, name: str = "own") -> Path:
    own = root / name
    (own / "data").mkdir(parents=True)
    (own / "data" / "train-00000-of-00001.parquet").write_bytes(b"x")
    (own / "README.md").write_text("card")
    return own


@pytest.mark.parametrize("files", [None, "all", {"a": 1}, [1, 2], ["../thesis.tex"], ["/etc/passwd"], [""]])
def test_a_marker_that_lists_no_valid_files_owns_nothing(tmp_path, files):
    """Only an incremental writer's marker (a training run, the experiment) may list no files; a
    dataset marker with `files: null` or a malformed list is not this package's marker, so a
    replace deletes nothing."""
    own = _own_dataset(tmp_path)
    (own / "projects").mkdir()
    (own / "projects" / "thesis.tex").write_text("thesis draft")
    (own / MARKER).write_text(json.dumps({"kind": "dataset", "files": files}))
    assert read_marker(own) is None
    with pytest.raises(DestinationRefused, match="thesis.tex"):
        check_destination(own, "dataset", overwrite=True)
    assert remove_owned(own) and (own / "projects" / "thesis.tex").read_text() == "thesis draft"
    (own / MARKER).write_text(json.dumps({"kind": "model", "files": None}))
    assert read_marker(own)["kind"] == "model"  # a training run's marker: it owns what it wrote over time


def test_legacy_layouts_are_matched_per_path_component(tmp_path):
    """`*` in a legacy pattern never crosses a `/`, every signature file is needed, and the JSON
    signature must hold what this package writes there: a user's folder with a `report.json`,
    pictures or a `.cache/huggingface` is not a report or a dataset."""
    folder = tmp_path / "pictures"
    (folder / "holiday").mkdir(parents=True)
    (folder / "holiday" / "beach.png").write_bytes(b"x")
    (folder / "report.json").write_text('{"quarter": 3}')
    (folder / "report.md").write_text("my report")
    for kind in ("report", "dataset", "world-models", "experiment", "model"):
        with pytest.raises(DestinationRefused):
            check_destination(folder, kind, overwrite=True)
    assert owner_kind(folder) is None
    add_files(folder, ["score_hist.png"], "report")  # recording the report's files claims only those
    assert read_marker(folder)["files"] == ["score_hist.png"]
    with pytest.raises(DestinationRefused, match="holiday/beach.png"):
        check_destination(folder, "report")

    old = _own_dataset(tmp_path, "old")
    (old / "synthvlm_stats.json").write_text(json.dumps(LEGACY_STATS))
    (old / "plots" / "sub").mkdir(parents=True)
    (old / "plots" / "sub" / "mine.png").write_bytes(b"x")  # plots/*.png is one level only
    with pytest.raises(DestinationRefused, match="plots/sub/mine.png"):
        check_destination(old, "dataset")
    (old / "plots" / "sub" / "mine.png").unlink()
    (old / "synthvlm_stats.json").write_text('{"my": "stats"}')  # a user's file of that name
    with pytest.raises(DestinationRefused):
        check_destination(old, "dataset")


def test_a_symlinked_out_and_the_current_folder_are_refused(tmp_path, monkeypatch):
    real, thesis = users_folder(tmp_path, "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    for kind in ("dataset", "llava-json"):
        with pytest.raises(DestinationRefused, match="symbolic link"):
            check_destination(link, kind, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for out in (Path("."), Path(".."), empty):
        with pytest.raises(DestinationRefused, match="the folder you are in"):
            check_destination(out, "dataset")
    (tmp_path / "via").symlink_to(tmp_path)  # the folder you are in, named through a link above it
    with pytest.raises(DestinationRefused, match="the folder you are in"):
        check_destination(tmp_path / "via" / "empty", "dataset")
    staging = staging_dir(Path("sub"))  # a relative destination is made absolute, not `Path('.')`-named
    replace_dir(staging, Path("sub"), "llava-json")
    assert read_marker(empty / "sub")["kind"] == "llava-json" and thesis.read_text() == "thesis draft"
    # A command that adds files or resumes (report into a dataset, training, the experiment) may run
    # in the folder itself: only a replace may not.
    write_marker(empty, "model", None)
    check_destination(Path("."), "model", replaces=False)  # a training run resumed with --output_dir .
    with pytest.raises(DestinationRefused, match="the folder you are in"):
        check_destination(Path("."), "model")


def _killed_mid_replace(tmp_path: Path) -> tuple[Path, Path, int]:
    """An export at `out`, then renamed aside as a replace killed between its two renames leaves it
    (`.out.old-<pid of a finished process>-*`): returns (destination, aside folder, that pid)."""
    import subprocess
    import sys

    dst = tmp_path / "out"
    first = staging_dir(dst)
    (first / "a.json").write_text("1")
    replace_dir(first, dst, "llava-json")
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    aside = tmp_path / f".out.old-{dead}-deadbeef"
    dst.rename(aside)
    return dst, aside, dead


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    """`replace_dir` renames the old folder aside, then swaps the new one in: killed in between,
    the destination is missing; the next command puts the old folder back before anything else."""
    dst, aside, dead = _killed_mid_replace(tmp_path)
    check_destination(dst, "llava-json")
    assert (dst / "a.json").read_text() == "1" and not aside.exists()
    dst.rename(aside)
    # What a replace leaves when a user's file had a new file's name: their files, no marker. It is
    # not the output renamed aside, so it is never put back in its place (even when newer).
    leftover = tmp_path / f".out.old-{dead}-0000beef"
    leftover.mkdir()
    (leftover / "notes.txt").write_text("mine")

    from synthvlm_data.stages.export import sweep_stale_exports

    sweep_stale_exports(dst)  # the build's sweep restores too, rather than deleting the only copy
    assert (dst / "a.json").read_text() == "1" and not aside.exists()
    assert (leftover / "notes.txt").read_text() == "mine"  # swept: only the package's files go, and it has none


def test_a_marker_named_file_the_package_did_not_write_is_never_replaced(tmp_path):
    """A file named like the marker that is not one (a user's, or damaged) is neither overwritten
    when a command marks the folder nor deleted when the folder's own files are removed."""
    folder = _own_dataset(tmp_path)
    (folder / "synthvlm_stats.json").write_text(json.dumps(LEGACY_STATS))  # a dataset from before markers
    (folder / MARKER).write_text("my notes")
    with pytest.raises(DestinationRefused, match="not a marker"):
        write_marker(folder, "dataset")
    with pytest.raises(DestinationRefused, match="not a marker"):
        add_files(folder, ["decontamination.json"], "dataset")
    remove_owned(folder)
    assert (folder / MARKER).read_text() == "my notes" and not (folder / "README.md").exists()


def test_two_ranks_restoring_at_once_do_not_crash(tmp_path, monkeypatch):
    """Every accelerate rank checks the destination: the rank that loses the rename race goes on."""
    import os

    import synthvlm_data.outdir as outdir_mod

    dst, _aside, _dead = _killed_mid_replace(tmp_path)
    real_replace = os.replace

    def other_rank_first(src, target):
        real_replace(src, target)  # the other rank's rename
        raise FileNotFoundError(src)  # ours then finds nothing to move

    monkeypatch.setattr(outdir_mod.os, "replace", other_rank_first)
    assert outdir_mod.restore_interrupted(dst) is None
    monkeypatch.setattr(outdir_mod.os, "replace", real_replace)
    check_destination(dst, "llava-json")
    assert (dst / "a.json").read_text() == "1"


def test_build_refuses_an_out_that_overlaps_the_work_dir(tmp_path, capsys):
    from synthvlm_data import cli

    work = tmp_path / "runs" / "w"
    for out in (tmp_path / "runs", work / "out", work):
        code = cli.main(["build", "--recipe", "tiny", "--out", str(out), "--work-dir", str(work), "--limit", "2"])
        assert code != 0
        one_error_line(capsys.readouterr().err, "overlaps the work dir")
    assert not work.exists()


# --------------------------------------------------------------------------- each command


def test_build_refuses_a_users_folder_before_any_work(tmp_path, capsys):
    from synthvlm_data.cli import main

    home, thesis = users_folder(tmp_path)
    work = tmp_path / "work"
    for extra in ([], ["--overwrite"]):
        assert main(["build", "--recipe", "tiny", "--out", str(home), "--work-dir", str(work), *extra]) != 0
        one_error_line(capsys.readouterr().err, str(home), "projects/")
    assert thesis.read_text() == "thesis draft" and not work.exists()


def test_builder_refuses_a_users_folder_before_any_work(tmp_path, capsys):
    from builders.__main__ import main

    home, thesis = users_folder(tmp_path)
    work, cache = tmp_path / "work", tmp_path / "cache"
    assert main(["--out", str(home), "--work-dir", str(work), "--cache-dir", str(cache), "--quiet"]) != 0
    one_error_line(capsys.readouterr().err, str(home))
    assert thesis.read_text() == "thesis draft" and not work.exists() and not cache.exists()


@pytest.fixture
def dataset_copy(tiny_build, tmp_path) -> Path:
    folder = tmp_path / "synthvlm-tiny"
    shutil.copytree(tiny_build.out_dir, folder)
    return folder


def test_the_export_is_marked_with_the_files_it_wrote(tiny_build):
    marker = read_marker(tiny_build.out_dir)
    assert marker["kind"] == "dataset"
    assert set(marker["files"]) >= {"README.md", "synthvlm_stats.json",
                                    *(p.relative_to(tiny_build.out_dir).as_posix()
                                      for p in tiny_build.out_dir.glob("data/*.parquet"))}


@pytest.mark.parametrize("fmt", ["llava-json", "webdataset"])
def test_export_refuses_a_users_folder_default_and_out(dataset_copy, tmp_path, capsys, fmt):
    from synthvlm_data.cli import main
    from synthvlm_data.stages.formats import default_out

    mywork, notes = users_folder(tmp_path, "mywork")
    assert main(["export", str(dataset_copy), "--format", fmt, "--out", str(mywork), "--overwrite"]) != 0
    one_error_line(capsys.readouterr().err, str(mywork))
    assert notes.read_text() == "thesis draft" and not list(tmp_path.glob(".mywork.*"))
    # The default folder next to the dataset: a user's folder of that name is refused too, and no
    # other format is written before the refusal.
    default, mine = users_folder(tmp_path, default_out(dataset_copy, fmt).name)
    other = default_out(dataset_copy, "webdataset" if fmt == "llava-json" else "llava-json")
    assert main(["export", str(dataset_copy), "--format", "llava-json", "--format", "webdataset"]) != 0
    one_error_line(capsys.readouterr().err, str(default))
    assert mine.read_text() == "thesis draft" and not other.exists()
    # Its own earlier export is replaced; into the dataset folder itself it never goes.
    shutil.rmtree(default)
    assert main(["export", str(dataset_copy), "--format", fmt]) == 0
    assert main(["export", str(dataset_copy), "--format", fmt]) == 0
    assert read_marker(default)["kind"] == fmt and not list(tmp_path.glob(f".{default.name}.*"))
    assert main(["export", str(dataset_copy), "--format", fmt, "--out", str(dataset_copy), "--overwrite"]) != 0
    one_error_line(capsys.readouterr().err, "overlaps")
    assert read_marker(dataset_copy)["kind"] == "dataset"


def test_decontaminate_refuses_a_dataset_holding_a_users_file(dataset_copy, tmp_path, capsys):
    from synthvlm_data.cli import main

    captions = tmp_path / "eval.txt"
    captions.write_text("a caption that matches nothing at all in this dataset\n")
    (dataset_copy / "notes.txt").write_text("mine")
    before = sorted(p.name for p in dataset_copy.rglob("*"))
    assert main(["decontaminate", str(dataset_copy), "--against", str(captions), "--remove"]) != 0
    one_error_line(capsys.readouterr().err, str(dataset_copy), "notes.txt")
    assert sorted(p.name for p in dataset_copy.rglob("*")) == before
    (dataset_copy / "notes.txt").unlink()
    assert main(["decontaminate", str(dataset_copy), "--against", str(captions), "--remove"]) == 0
    assert "decontamination.json" in read_marker(dataset_copy)["files"]


def test_report_refuses_a_users_folder(dataset_copy, tiny_build, tmp_path, capsys):
    from synthvlm_data.cli import main

    mine, thesis = users_folder(tmp_path, "plots-here")
    assert main(["report", str(dataset_copy), "--work-dir", str(tiny_build.work_dir), "--out", str(mine)]) != 0
    one_error_line(capsys.readouterr().err, str(mine))
    assert thesis.read_text() == "thesis draft" and sorted(p.name for p in mine.iterdir()) == ["projects"]
    (dataset_copy / "plots").mkdir(exist_ok=True)
    (dataset_copy / "plots" / "my-figure.svg").write_text("<svg/>")
    assert main(["report", str(dataset_copy), "--work-dir", str(tiny_build.work_dir)]) != 0
    one_error_line(capsys.readouterr().err, "my-figure.svg")
    assert not (dataset_copy / "plots" / "report.json").exists()


def test_experiment_refuses_a_users_folder(tmp_path, capsys):
    from synthvlm_data.experiment.run import main

    out, thesis = users_folder(tmp_path, "exp")
    assert main(["--out", str(out)]) != 0
    one_error_line(capsys.readouterr().err, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["projects"] and thesis.read_text() == "thesis draft"


def test_build_models_never_writes_the_packages_weights_unless_named(tmp_path, capsys):
    from synthvlm_data.world.build_models import WEIGHTS_DIR, main

    before = sorted((p.relative_to(WEIGHTS_DIR).as_posix(), p.stat().st_mtime_ns) for p in WEIGHTS_DIR.rglob("*"))
    assert main(["build-models", "--quick"]) == 2
    one_error_line(capsys.readouterr().err, "--out")
    assert main(["build-models", "--quick", "--out", str(WEIGHTS_DIR)]) == 2
    one_error_line(capsys.readouterr().err, "--quick", "--out")
    out, thesis = users_folder(tmp_path, "models")
    assert main(["build-models", "--quick", "--out", str(out)]) != 0
    one_error_line(capsys.readouterr().err, str(out))
    assert thesis.read_text() == "thesis draft" and not list(tmp_path.glob(".models.staging-*"))
    assert sorted((p.relative_to(WEIGHTS_DIR).as_posix(), p.stat().st_mtime_ns) for p in WEIGHTS_DIR.rglob("*")) == before
    check_destination(WEIGHTS_DIR, "world-models")  # the committed models are the package's own


def test_training_refuses_a_users_output_dir_and_resumes_its_own(tmp_path, capsys):
    from synthvlm_data.training import cli

    out, thesis = users_folder(tmp_path, "run")
    for extra in ([], ["--validate-only"]):
        assert cli.main("pretrain", ["--config", str(TINY_TRAIN), "--output_dir", str(out), *extra]) != 0
        one_error_line(capsys.readouterr().err, str(out), "--output_dir")
    assert sorted(p.name for p in out.iterdir()) == ["projects"] and thesis.read_text() == "thesis draft"
    # A run of this package (marked when training starts; or with its training log, from before
    # markers) is resumed into, never refused.
    own = tmp_path / "own"
    (own / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (own / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    # Trainer checkpoints alone do not make a folder this package's (any HF Trainer writes them).
    with pytest.raises(DestinationRefused, match="not written by synthvlm-data"):
        check_destination(own, "model")
    write_marker(own, "model", None)
    (own / "anything-the-trainer-writes.bin").write_bytes(b"x")
    check_destination(own, "model")


# --------------------------------------------------------------------------- validate-only reads the records


def _llava_json(tmp_path: Path, records) -> Path:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(images / "ok.png")
    path = tmp_path / "lcs.json"
    path.write_text(json.dumps(records))
    return path


def _record(image: str) -> dict:
    return {"id": image, "image": image,
            "conversations": [{"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "a red square"}]}


@pytest.mark.parametrize("case", ["missing", "truncated", "not-a-list", "multi-turn"])
def test_validate_only_reads_every_llava_record_and_image(tmp_path, capsys, case, monkeypatch):
    from PIL import ImageFile

    from synthvlm_data.training import cli

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as lmms-eval sets it at import: still refused

    records = [_record("ok.png")]
    if case == "missing":
        records.append(_record("gone.png"))
    if case == "multi-turn":  # a LLaVA-665K record: stage 2 data, refused by stage 1
        records.append(_record("ok.png"))
        records[-1]["conversations"] += records[-1]["conversations"]
    path = _llava_json(tmp_path, records if case != "not-a-list" else {"data": records})
    if case == "truncated":
        good = (tmp_path / "images" / "ok.png").read_bytes()
        (tmp_path / "images" / "cut.png").write_bytes(good[: len(good) // 2])
        path.write_text(json.dumps(records + [_record("cut.png")]))
    args = ["--config", str(TINY_TRAIN), "--validate-only", "--output_dir", str(tmp_path / "run"),
            "--pretrain.data.dataset", str(path), "--pretrain.data.format", "llava_json",
            "--pretrain.data.image_folder", str(tmp_path / "images")]
    assert cli.main("pretrain", args) != 0
    needle = {"missing": "gone.png", "truncated": "cut.png", "not-a-list": "list", "multi-turn": "4 turns"}[case]
    one_error_line(capsys.readouterr().err, needle)
    path.write_text(json.dumps([_record("ok.png")]))
    assert cli.main("pretrain", args) == 0
    assert "1 parsed, every image decodes" in capsys.readouterr().out


# --------------------------------------------------------------------------- a re-run is never poorer


def test_rebuilding_a_reported_dataset_keeps_its_report(tiny_build, tmp_path):
    """`synthvlm report` adds plots/ and the card's quality section, `decontaminate` its check;
    re-running the build (all shards complete: only the export runs again) keeps them; other rows
    get a fresh report."""
    from conftest import parquet_checksums, small_tiny_recipe

    from synthvlm_data.build import build
    from synthvlm_data.cli import main
    from synthvlm_data.presentation.report import report_into_dataset

    work = tmp_path / "work"
    shutil.copytree(tiny_build.work_dir, work)
    folder = tmp_path / "ds"
    shutil.copytree(tiny_build.out_dir, folder)
    report_into_dataset(folder, work)
    captions = tmp_path / "eval.txt"
    captions.write_text("a caption that matches nothing at all in this dataset\n")
    assert main(["decontaminate", str(folder), "--against", str(captions)]) == 0
    card = (folder / "README.md").read_text()
    plots = sorted(p.name for p in (folder / "plots").iterdir())
    assert "report.json" in plots and "report.md" in card and "### Contamination check" in card
    build(small_tiny_recipe(), folder, work_dir=work, progress=False)
    assert sorted(p.name for p in (folder / "plots").iterdir()) == plots
    assert (folder / "README.md").read_text() == card and (folder / "decontamination.json").is_file()
    assert parquet_checksums(folder) == parquet_checksums(tiny_build.out_dir)
    assert {f"plots/{p}" for p in plots} <= set(read_marker(folder)["files"])
    # Other rows (another selection ratio on the same work dir): the report is made again for them.
    build(small_tiny_recipe(select={"ratio": 0.25}), folder, work_dir=work, progress=False)
    report = json.loads((folder / "plots" / "report.json").read_text())
    selected = next(r for r in report["table"] if r["set"] == "selected")
    rows = sum(pq.read_metadata(p).num_rows for p in folder.glob("data/*.parquet"))
    assert selected["clip_score"]["count"] == rows < tiny_build.stats["selected"]
    assert report["work_dir"] == str(work) and "report.md" in (folder / "README.md").read_text()


def test_marker_is_hidden_from_load_dataset_and_publish(tiny_build):
    from synthvlm_data.hub.validate import list_upload_files

    assert (tiny_build.out_dir / MARKER).is_file()
    assert MARKER not in {f.path for f in list_upload_files(tiny_build.out_dir)}

