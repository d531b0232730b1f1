"""Publishing: local checks before any request, the HfApi calls (autospec'd), error paths, token safety."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import httpx2
import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard, ModelCardData, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from PIL import Image

from conftest import small_tiny_recipe
from synthvlm_data.hub import publish as hub
from synthvlm_data.hub.validate import check_safetensors_header
from synthvlm_data.cli import main as cli_main
from synthvlm_data.hub import HubError
from synthvlm_data.hub.publish import publish_folder
from synthvlm_data.outdir import write_marker

FAKE_TOKEN = "hf_fakeTOKENforTESTS0123456789abcdefXYZ"
REPO = "someone/synthvlm-tiny"


# --------------------------------------------------------------------------- fixtures


def make_dataset_folder(root: Path, rows: int = 6, per_shard: int = 3) -> Path:
    """A small valid dataset folder written by the real export helpers (no build needed)."""
    import datasets

    from synthvlm_data.presentation.cards import dataset_card_data, write_dataset_card
    from synthvlm_data.columns import dataset_features
    from synthvlm_data.stages.export import shard_name

    recipe = small_tiny_recipe()
    feats = dataset_features(False)
    (root / "data").mkdir(parents=True)
    n_shards, num_bytes = -(-rows // per_shard), 0
    for s in range(n_shards):
        ids = range(s * per_shard, min(rows, (s + 1) * per_shard))
        cols = {k: [] for k in feats}
        for i in ids:
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(buf, format="PNG")
            row = {"id": f"id{i}", "image": {"bytes": buf.getvalue(), "path": None}, "caption": f"caption {i}",
                   "prompt": "Describe.", "clip_score": 0.1, "ssim": 0.5, "score": 0.35, "seed": i, "repeat": 0,
                   "source": "test", "source_id": str(i), "generator": "tiny"}
            for k in feats:
                cols[k].append(row[k])
        ds = datasets.Dataset.from_dict(cols, features=feats)
        num_bytes += ds.data.nbytes
        ds.to_parquet(str(root / "data" / shard_name(s, n_shards)))
    card_data = dataset_card_data(recipe=recipe, features=feats, num_rows=rows, num_bytes=num_bytes, num_shards=n_shards)
    stats = {"captions_in": rows, "captions_out": rows, "selected": rows}
    write_dataset_card(root, card_data, recipe=recipe, stats=stats, num_rows=rows, num_shards=n_shards, columns=list(feats))
    (root / "synthvlm_stats.json").write_text(json.dumps(stats))
    return root


def make_model_folder(root: Path) -> Path:
    from safetensors.numpy import save_file

    root.mkdir(parents=True)
    save_file({"projector.weight": np.zeros((4, 4), np.float32)}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"model_type": "llava"}))
    Image.new("RGB", (4, 4)).save(root / "loss_curve.png")
    data = ModelCardData(license="apache-2.0", base_model=["HuggingFaceTB/SmolLM2-135M-Instruct"],
                         datasets=[REPO], pipeline_tag="image-text-to-text", library_name="transformers")
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n# tiny llava\n\n![loss](loss_curve.png)\n").save(root / "README.md")
    return root


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    return make_dataset_folder(tmp_path / "synthvlm-tiny")


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return make_model_folder(tmp_path / "model")


@pytest.fixture
def online(monkeypatch):
    """Not offline, with a (fake) token in the environment, as on a user's machine."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)


@pytest.fixture
def api(monkeypatch):
    """The HfApi instance publish_folder creates: autospec'd, so wrong call signatures fail."""
    instance = mock.create_autospec(HfApi, instance=True)
    instance.create_repo.return_value = f"https://huggingface.co/datasets/{REPO}"
    instance.upload_folder.return_value = mock.Mock(commit_url=f"https://huggingface.co/datasets/{REPO}/commit/abc123")
    factory = mock.Mock(return_value=instance)
    monkeypatch.setattr(hub, "HfApi", factory)
    return instance


def http_error(status: int, message: str = "") -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error: {message}", response=httpx2.Response(status, request=request))


def expected_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


# --------------------------------------------------------------------------- happy paths


def test_publish_dataset_calls_hfapi_in_order(dataset_dir, online, api):
    (dataset_dir / ".lock").write_text("")  # hidden files stay local
    result = publish_folder(dataset_dir, REPO)

    files = expected_files(dataset_dir)
    assert files == ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                     "synthvlm_stats.json"]
    assert [c[0] for c in api.mock_calls] == ["whoami", "create_repo", "upload_folder"]
    api.create_repo.assert_called_once_with(REPO, repo_type="dataset", private=None, exist_ok=True)
    api.create_branch.assert_not_called()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO and kwargs["repo_type"] == "dataset" and kwargs["revision"] is None
    assert Path(kwargs["folder_path"]) == dataset_dir
    assert kwargs["allow_patterns"] == files  # exactly the listed files are uploaded
    assert kwargs["delete_patterns"] == ["data/train-*.parquet"]  # stale shards of an older version go
    assert result.paths == files and not result.dry_run
    assert result.commit_url.endswith("/commit/abc123")
    for call in api.mock_calls:  # the token is never handed over explicitly (HfApi resolves it itself)
        assert FAKE_TOKEN not in repr(call)


def test_publish_private_to_branch(dataset_dir, online, api):
    publish_folder(dataset_dir, REPO, private=True, revision="v1")
    assert [c[0] for c in api.mock_calls] == ["whoami", "create_repo", "create_branch", "upload_folder"]
    api.create_repo.assert_called_once_with(REPO, repo_type="dataset", private=True, exist_ok=True)
    api.create_branch.assert_called_once_with(REPO, branch="v1", repo_type="dataset", exist_ok=True)
    assert api.upload_folder.call_args.kwargs["revision"] == "v1"


def test_publish_model_folder(model_dir, online, api):
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.license == "apache-2.0" and card.data.datasets == [REPO]
    result = publish_folder(model_dir, "someone/tiny-llava", repo_type="model")
    api.create_repo.assert_called_once_with("someone/tiny-llava", repo_type="model", private=None, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_type"] == "model"
    assert kwargs["allow_patterns"] == ["README.md", "config.json", "loss_curve.png", "model.safetensors"]
    assert "*.safetensors" in kwargs["delete_patterns"]
    assert result.paths == kwargs["allow_patterns"]


def test_publishing_a_model_points_its_card_at_the_repo(model_dir, online, api):
    """The card written at training time loads the model from the local output folder and may list
    a local dataset folder; the published card loads it from the repo and lists Hub datasets only."""
    card = ModelCard.load(model_dir / "README.md")
    card.data.datasets = [REPO, "synthvlm-tiny"]
    card.text += '\nmodel = AutoModelForImageTextToText.from_pretrained("outputs/tiny-pretrain")\n'
    card.save(model_dir / "README.md")
    write_marker(model_dir, "model", None)  # what training does: the folder and its card are this package's
    publish_folder(model_dir, "someone/tiny-llava", repo_type="model", dry_run=True)
    assert "outputs/tiny-pretrain" in (model_dir / "README.md").read_text()  # a dry run changes nothing
    publish_folder(model_dir, "someone/tiny-llava", repo_type="model")
    published = ModelCard.load(model_dir / "README.md")
    assert published.data.datasets == [REPO]
    assert 'from_pretrained("someone/tiny-llava")' in published.text and "outputs/tiny-pretrain" not in published.text


def test_publishing_a_model_folder_not_written_here_leaves_its_card_alone(model_dir, online, api):
    """Only a card this package wrote is pointed at the repo: another model folder (no training
    output marker) is uploaded exactly as it is."""
    card = model_dir / "README.md"
    card.write_text(card.read_text() + '\nmodel = AutoModel.from_pretrained("their/local/path")\n')
    before = card.read_bytes()
    publish_folder(model_dir, "someone/tiny-llava", repo_type="model")
    assert card.read_bytes() == before and api.upload_folder.called


def test_reproduce_command_records_a_cpu_launch():
    from synthvlm_data.presentation.model_card import reproduce_command

    cmd = "accelerate launch train/pretrain.py --config train/configs/tiny.yaml"
    assert reproduce_command(cmd, "cpu", 1) == "accelerate launch --cpu train/pretrain.py --config train/configs/tiny.yaml"
    assert reproduce_command(cmd, "cpu", 2).startswith("accelerate launch --config_file train/accelerate/cpu.yaml --num_processes 2 ")
    assert reproduce_command(cmd, "cuda", 8) == cmd


MODEL_FILES = ["README.md", "config.json", "loss_curve.png", "model.safetensors"]


def make_training_output(root: Path) -> Path:
    """A model folder as train/pretrain.py leaves it: the model plus run state and pickles."""
    folder = make_model_folder(root)
    ckpt = folder / "checkpoints" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin"):
        (ckpt / name).write_bytes(b"\x80\x04pickle")
    shutil.copy(folder / "model.safetensors", ckpt / "model.safetensors")  # safetensors, but run state
    (ckpt / "trainer_state.json").write_text("{}")
    (folder / "logs" / "tensorboard").mkdir(parents=True)
    (folder / "logs" / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"\0")
    (folder / "runs" / "Jan01").mkdir(parents=True)
    (folder / "runs" / "Jan01" / "events.out.tfevents.2.host").write_bytes(b"\0")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "config.json").write_text("{}")
    for name in ("training_args.bin", "pytorch_model.bin", "extra.pkl", "state.pickle", "last.ckpt", "w.pth"):
        (folder / name).write_bytes(b"\x80\x04pickle")
    return folder


def test_model_repo_leaves_pickles_and_run_state_local(tmp_path, online, api):
    folder = make_training_output(tmp_path / "tiny-pretrain")
    result = publish_folder(folder, "someone/tiny-llava", repo_type="model")
    kwargs = api.upload_folder.call_args.kwargs
    assert Path(kwargs["folder_path"]) == folder
    assert kwargs["allow_patterns"] == MODEL_FILES and result.paths == MODEL_FILES
    (warning,) = result.warnings
    assert warning.startswith("not uploaded (pickles and trainer/tracker state stay local in model repos): ")
    for kept in ("checkpoints/ (6 files)", "checkpoint-2/ (1 files)", "logs/ (1 files)", "runs/ (1 files)",
                 "training_args.bin", "pytorch_model.bin", "extra.pkl", "state.pickle", "last.ckpt", "w.pth"):
        assert kept in warning


def test_cli_dry_run_of_a_training_output_lists_only_the_model(tmp_path, online, api, capsys):
    folder = make_training_output(tmp_path / "tiny-pretrain")
    argv = ["publish", str(folder), "--repo-id", "someone/tiny-llava", "--repo-type", "model", "--dry-run"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    listed = [line.split("  (")[0].strip() for line in out.splitlines() if line.startswith("  ")]
    assert listed == MODEL_FILES
    assert "warning: not uploaded" in out and "checkpoints/ (6 files)" in out and api.mock_calls == []


def test_dataset_repo_filtering_is_unchanged(dataset_dir, online, api):
    (dataset_dir / "logs").mkdir()
    (dataset_dir / "logs" / "build.log").write_text("ok\n")
    assert "logs/build.log" in publish_folder(dataset_dir, REPO, dry_run=True).paths


def test_model_card_may_not_link_a_file_that_stays_local(model_dir, online, api):
    (model_dir / "logs").mkdir()
    Image.new("RGB", (4, 4)).save(model_dir / "logs" / "curve.png")
    card = (model_dir / "README.md").read_text().replace("(loss_curve.png)", "(logs/curve.png)")
    (model_dir / "README.md").write_text(card)
    with pytest.raises(HubError, match="links 'logs/curve.png', which is never uploaded to a model repo"):
        publish_folder(model_dir, "someone/tiny-llava", repo_type="model")
    assert api.mock_calls == []


def test_dry_run_makes_no_call_and_lists_files(dataset_dir, online, api):
    result = publish_folder(dataset_dir, REPO, dry_run=True)
    assert api.mock_calls == [] and hub.HfApi.call_count == 0
    assert result.dry_run and result.paths == expected_files(dataset_dir)
    assert result.notes == ()
    assert result.total_bytes == sum((dataset_dir / p).stat().st_size for p in result.paths)


def test_warns_about_plots_the_card_does_not_show(dataset_dir, online, api, capsys):
    (dataset_dir / "plots").mkdir()
    Image.new("RGB", (4, 4)).save(dataset_dir / "plots" / "score_hist.png")
    result = publish_folder(dataset_dir, REPO, dry_run=True)
    assert "plots/score_hist.png" in result.paths
    assert len(result.warnings) == 1 and result.warnings[0].startswith("plots/score_hist.png is not shown")
    assert "plots/*" in result.delete_patterns

    from synthvlm_data.presentation.cards import refresh_dataset_card

    refresh_dataset_card(dataset_dir, small_tiny_recipe())  # the card now links it
    assert publish_folder(dataset_dir, REPO, dry_run=True).warnings == ()


def test_dry_run_on_the_tiny_build(tiny_build, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_main(["publish", str(tiny_build.out_dir), "--repo-id", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for rel in expected_files(tiny_build.out_dir):
        assert f"  {rel}  (" in out
    assert "note: a real run would stop here: the Hub is in offline mode" in out


def test_cli_publish_prints_commit(dataset_dir, online, api, capsys):
    assert cli_main(["publish", str(dataset_dir), "--repo-id", REPO, "--private"]) == 0
    out = capsys.readouterr().out
    assert "published 4 files" in out and "commit/abc123" in out
    assert api.create_repo.call_args.kwargs["private"] is True


# --------------------------------------------------------------------------- errors before any upload


def test_offline_stops_before_any_call(dataset_dir, monkeypatch, api):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="offline mode"):
        publish_folder(dataset_dir, REPO)
    assert api.mock_calls == []


def test_no_token_stops_before_any_call(dataset_dir, online, api, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no `hf auth login` file either
    with pytest.raises(HubError, match="no Hugging Face token.*hf auth login"):
        publish_folder(dataset_dir, REPO)
    assert api.mock_calls == []


@pytest.mark.parametrize(
    ("failing", "status", "match"),
    [
        ("whoami", 401, "rejected your token \\(401"),
        ("create_repo", 403, "may not write to 'someone' \\(403"),
        ("upload_folder", 403, "403 Forbidden\\) while uploading"),
        ("create_repo", 500, "refused creating dataset repo"),
    ],
)
def test_auth_errors_are_one_line(dataset_dir, online, api, failing, status, match):
    getattr(api, failing).side_effect = http_error(status, f"server says: bad credentials {FAKE_TOKEN}\nmore")
    with pytest.raises(HubError, match=match) as info:
        publish_folder(dataset_dir, REPO)
    message = str(info.value)
    assert "\n" not in message and FAKE_TOKEN not in message
    if failing != "upload_folder":
        api.upload_folder.assert_not_called()


def test_offline_error_raised_by_hub_is_mapped(dataset_dir, online, api):
    api.whoami.side_effect = OfflineModeIsEnabled("offline")
    with pytest.raises(HubError, match="offline mode"):
        publish_folder(dataset_dir, REPO)


def test_auth_error_through_cli(dataset_dir, online, api, capsys):
    api.whoami.side_effect = http_error(401, f"token {FAKE_TOKEN} is invalid")
    assert cli_main(["publish", str(dataset_dir), "--repo-id", REPO]) == HubError.exit_code
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: the Hub rejected your token")
    assert "Traceback" not in captured.err and FAKE_TOKEN not in captured.out + captured.err


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "owner/has space", "owner/--bad", "owner/bad.", "/name"])
def test_invalid_repo_id(dataset_dir, online, api, repo_id):
    with pytest.raises(HubError, match="invalid repo id"):
        publish_folder(dataset_dir, repo_id)
    assert api.mock_calls == []


def test_invalid_revision_and_repo_type(dataset_dir, online, api):
    with pytest.raises(HubError, match="invalid --revision"):
        publish_folder(dataset_dir, REPO, revision="bad..name")
    with pytest.raises(HubError, match="invalid repo type"):
        publish_folder(dataset_dir, REPO, repo_type="space")
    assert api.mock_calls == []


def _drop_readme(d: Path) -> None:
    (d / "README.md").unlink()


def _drop_shard(d: Path) -> None:
    (d / "data" / "train-00001-of-00002.parquet").unlink()


def _drop_all_shards(d: Path) -> None:
    shutil.rmtree(d / "data")


def _truncate_shard(d: Path) -> None:
    p = d / "data" / "train-00000-of-00002.parquet"
    p.write_bytes(p.read_bytes()[:200])


def _add_script(d: Path) -> None:
    (d / "synthvlm-tiny.py").write_text("import datasets\n")


def _drop_configs(d: Path) -> None:
    text = (d / "README.md").read_text()
    start = text.index("configs:")
    end = text.index("dataset_info:")
    (d / "README.md").write_text(text[:start] + text[end:])


def _broken_link(d: Path) -> None:
    with (d / "README.md").open("a") as fh:
        fh.write("\n![score histogram](plots/missing.png)\n")


def _feature_mismatch(d: Path) -> None:
    text = (d / "README.md").read_text()
    (d / "README.md").write_text(text.replace("  - name: generator\n", "  - name: generator_model\n"))


@pytest.mark.parametrize(
    ("breakage", "match"),
    [
        (_drop_readme, "README.md \\(the dataset card\\) is missing"),
        (_drop_shard, "has 6 rows but the shards hold 3"),
        (_drop_all_shards, "no file matches it"),
        (_truncate_shard, "not a complete parquet file"),
        (_add_script, "dataset scripts are not supported"),
        (_drop_configs, "no `configs:`"),
        (_broken_link, "links 'plots/missing.png'"),
        (_feature_mismatch, "declares features"),
    ],
)
def test_invalid_dataset_folder_rejected_before_upload(dataset_dir, online, api, breakage, match):
    breakage(dataset_dir)
    with pytest.raises(HubError, match=match):
        publish_folder(dataset_dir, REPO)
    assert api.mock_calls == []


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _truncated_weights(d: Path) -> None:
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-8])


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _card_without_yaml(d: Path) -> None:
    (d / "README.md").write_text("# a model\n")


def _index_with_missing_shard(d: Path) -> None:
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}}))


@pytest.mark.parametrize(
    ("breakage", "match"),
    [
        (_no_weights, "no \\*.safetensors"),
        (_truncated_weights, "not a complete safetensors file"),
        (_no_config, "config.json is missing"),
        (_card_without_yaml, "no YAML metadata"),
        (_index_with_missing_shard, "missing: model-00002-of-00002.safetensors"),
    ],
)
def test_invalid_model_folder_rejected(model_dir, online, api, breakage, match):
    breakage(model_dir)
    with pytest.raises(HubError, match=match):
        publish_folder(model_dir, "someone/tiny-llava", repo_type="model")
    assert api.mock_calls == []


def test_safetensors_header_check_accepts_real_file(model_dir):
    path = model_dir / "model.safetensors"
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n > 0
    check_safetensors_header(path)  # no error


# --------------------------------------------------------------------------- token safety


def test_refuses_to_upload_a_file_containing_the_token(dataset_dir, online, api):
    (dataset_dir / "synthvlm_stats.json").write_text(json.dumps({"oops": FAKE_TOKEN}))
    with pytest.raises(HubError, match="synthvlm_stats.json contains your Hugging Face token") as info:
        publish_folder(dataset_dir, REPO, dry_run=True)
    assert FAKE_TOKEN not in str(info.value)
    assert api.mock_calls == []


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_token_never_printed_or_written(dataset_dir, tmp_path):
    """Dry run and an error path in a real subprocess with a token in the env: it appears nowhere."""
    home = tmp_path / "hf-home"
    home.mkdir()
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0"}
    before = _snapshot(dataset_dir)
    cmd = [sys.executable, "-m", "synthvlm_data.cli", "publish", str(dataset_dir), "--repo-id", REPO]

    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "token: found (not shown)" in dry.stdout and "README.md" in dry.stdout

    failed = subprocess.run(cmd, capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, timeout=120,
                            cwd=tmp_path)
    assert failed.returncode == HubError.exit_code
    assert failed.stderr.startswith("error: the Hub is in offline mode") and "Traceback" not in failed.stderr

    for proc in (dry, failed):
        assert FAKE_TOKEN not in proc.stdout + proc.stderr
        assert FAKE_TOKEN[:12] not in proc.stdout + proc.stderr
    assert _snapshot(dataset_dir) == before  # publishing writes nothing into the folder
    for root in (tmp_path,):
        for path in root.rglob("*"):
            if path.is_file():
                assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_server_error_mid_upload_then_rerun_continues(dataset_dir, online, api):
    """A 503 during upload_folder: one-line error, the local folder untouched; a re-run uploads."""
    from synthvlm_data.shards import sha256_file

    before = {p: sha256_file(p) for p in sorted(dataset_dir.rglob("*")) if p.is_file()}
    api.upload_folder.side_effect = http_error(503, "Service Unavailable")
    with pytest.raises(hub.HubError) as err:
        publish_folder(dataset_dir, REPO)
    assert "503" in str(err.value) and "\n" not in str(err.value)
    assert {p: sha256_file(p) for p in sorted(dataset_dir.rglob("*")) if p.is_file()} == before
    api.upload_folder.side_effect = None
    result = publish_folder(dataset_dir, REPO)
    assert result.commit_url.endswith("/commit/abc123") and api.upload_folder.call_count == 2


def test_published_card_has_local_paths_and_servers_redacted(dataset_dir, online, api):
    """A recipe pointing at a model folder under the home directory and an LLM server on the local
    network: the uploaded README.md names neither (basename and `<local server>` instead); the
    local card keeps them, and every other file goes up byte for byte."""
    write_marker(dataset_dir, "dataset")
    card = dataset_dir / "README.md"
    card.write_text(card.read_text() + "\n- generator: `/home/someone/models/sdxl-local`\n"
                    "- captions: served at http://192.168.1.20:8000/v1 (`~/llm/smollm2`)\n"
                    "- judge: https://api.example.com/v1\n")
    local = card.read_text()
    seen = {}

    def upload(**kwargs):
        root = Path(kwargs["folder_path"])
        seen["card"] = (root / "README.md").read_text()
        seen["files"] = {rel: (root / rel).read_bytes() for rel in kwargs["allow_patterns"] if rel != "README.md"}
        return mock.Mock(commit_url="https://huggingface.co/x/commit/1")

    api.upload_folder.side_effect = upload
    result = publish_folder(dataset_dir, REPO)
    uploaded = seen["card"]
    assert "/home/someone" not in uploaded and "192.168.1.20" not in uploaded and "~/llm" not in uploaded
    assert "`<local>/sdxl-local`" in uploaded and "http://<local server>:8000/v1" in uploaded
    assert "(`<local>/smollm2`)" in uploaded and "https://api.example.com/v1" in uploaded  # public: kept
    assert "data/train-*.parquet" in uploaded  # relative paths untouched
    assert card.read_text() == local  # the local card is unchanged
    assert seen["files"] == {rel: (dataset_dir / rel).read_bytes() for rel in seen["files"]} and seen["files"]
    assert any("redacted" in w for w in result.warnings)


def test_card_without_local_paths_is_uploaded_from_the_folder_itself(dataset_dir, online, api):
    write_marker(dataset_dir, "dataset")
    publish_folder(dataset_dir, REPO)
    assert Path(api.upload_folder.call_args.kwargs["folder_path"]) == dataset_dir
