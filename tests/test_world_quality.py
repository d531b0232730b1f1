"""The world models' quality measurements (synthvlm_data.world.quality) and the VAE gate."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from synthvlm_data.world import quality


def test_summarise_counts_claims_and_bootstraps_over_scenes():
    """Shares are claims right / claims made, pooled over scenes; the interval resamples scenes, so a
    share that is the same in every scene has no spread and one that differs between scenes has."""
    per_scene = [{"colour": [True, True], "shape": [True, False]}, {"colour": [True], "shape": [False]},
                 {"colour": [False], "tone": [True]}] * 10
    s = quality.summarise(per_scene, seed=0, n_boot=500)
    assert s["colour"]["share"] == pytest.approx(3 / 4, abs=1e-4) and s["colour"]["claims"] == 40
    assert s["shape"]["share"] == pytest.approx(1 / 3, abs=1e-4) and s["tone"] == {"share": 1.0, "ci": [1.0, 1.0], "claims": 10}
    assert s["colour"]["ci"][0] < 0.75 < s["colour"]["ci"][1]
    assert "pattern" not in s  # no claim of it: no share
    # alignment is the mean over scenes of each scene's own share of claims
    assert s["alignment"]["mean"] == pytest.approx(np.mean([3 / 4, 1 / 2, 1 / 2]), abs=1e-4)
    assert quality.summarise(per_scene, seed=0, n_boot=500) == s  # seeded: reproducible to the digit


def test_gate_names_each_attribute_below_its_floor():
    rt = {"shape": {"share": 0.94}, "colour": {"share": 0.99}, "pattern": {"share": 0.5}}
    assert quality.vae_gate_failures(rt, quality.VAE_TARGET) == ["shape 0.940 < 0.95", "pattern 0.500 < 0.95"]
    assert quality.vae_gate_failures(rt) == ["pattern 0.500 < 0.7"]  # the build's gate
    assert quality.vae_gate_failures({a: {"share": 1.0} for a in quality.VAE_TARGET}) == []


def test_untrained_vae_fails_the_gate_and_the_unet_is_never_trained(tmp_path):
    """A VAE below the gate stops `train_diffusion` before the UNet phase, naming what it lost,
    and writes no model."""
    from synthvlm_data.world.train_diffusion import V2, VaeGateError, train_diffusion

    cfg = replace(V2, n_train=24, vae_steps=2, vae_batch=4, unet_steps=2, unet_batch=4, warmup=1, vae_gate_n=16)
    lines = []
    with pytest.raises(VaeGateError, match=r"below the gate \(.*shape 0\.\d+ < 0\.8.*the UNet is not trained"):
        train_diffusion(tmp_path / "sdxl", cfg, lines.append)
    assert not any("unet step" in line for line in lines) and not (tmp_path / "sdxl").exists()


def test_shipped_vae_round_trip_keeps_colour_and_count_and_loses_shape_as_measured():
    """The packaged (v1) VAE, loaded as the generate stage loads it (fp16 weights computed in fp32),
    on 300 validation renders: measured on 500 at colour 0.952, count 0.936, pattern 0.716, shape
    0.574. Floors a little under those; it stays below the v2 gate on shape (what v2 fixes)."""
    import torch
    from diffusers import AutoencoderKL

    from synthvlm_data.world.build_models import WEIGHTS_DIR
    from synthvlm_data.world.data import split_scenes

    torch.set_num_threads(1)
    vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "sdxl" / "vae", torch_dtype=torch.float32).eval()
    rt = quality.vae_round_trip(vae, split_scenes("validation", 300))
    floors = {"colour": 0.92, "count": 0.90, "tone": 0.98, "pattern": 0.65, "shape": 0.50}
    assert all(rt[a]["share"] >= f for a, f in floors.items()), rt
    assert quality.vae_gate_failures(rt) and "shape" in quality.vae_gate_failures(rt)[0], rt


def test_validation_split_is_disjoint_from_the_others():
    from synthvlm_data.world.data import SPLIT_OFFSET, split_scenes

    assert "validation" in SPLIT_OFFSET and len(set(SPLIT_OFFSET.values())) == len(SPLIT_OFFSET)
    val = {s.seed for s in split_scenes("validation", 200)}
    for split in ("train", "eval", "pool", "test"):
        assert not val & {s.seed for s in split_scenes(split, 200)}, split


def test_quality_command_refuses_an_existing_json_and_a_folder_without_models(tmp_path):
    target = tmp_path / "q.json"
    target.write_text("mine")
    run = lambda *a: subprocess.run([sys.executable, "-m", "synthvlm_data.world", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=300)
    res = run("quality", "--json", str(target))
    assert res.returncode == 2 and "exists" in res.stderr and target.read_text() == "mine"
    res = run("sweep", "--models", str(tmp_path))
    assert res.returncode == 2 and "holds no world models" in res.stderr and "build-models" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json"]


def test_v2_preset_builds_the_fixed_generator_into_a_new_folder_only(tmp_path):
    """`build-models --preset v2` (at --quick size): the saved pipeline samples with zero terminal SNR,
    v-prediction and trailing timesteps, the UNet cross-attends at 16x16, and the VAE's validation round
    trip is recorded; the package's own folder and --check are refused in one line."""
    import json

    from synthvlm_data.world.build_models import WEIGHTS_DIR

    run = lambda *a: subprocess.run([sys.executable, "-m", "synthvlm_data.world", "build-models", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    mine = tmp_path / "earlier"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for bad in (["--out", str(WEIGHTS_DIR)], ["--check"], ["--repeat"], ["--out", str(mine)]):
        res = run("--quick", "--preset", "v2", *bad)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "new or empty folder" in res.stderr, res.stderr
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    out = tmp_path / "v2"
    res = run("--quick", "--preset", "v2", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    sched = json.loads((out / "sdxl" / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["prediction_type"], sched["rescale_betas_zero_snr"], sched["timestep_spacing"]) == (
        "v_prediction", True, "trailing")
    unet = json.loads((out / "sdxl" / "unet" / "config.json").read_text())
    assert unet["down_block_types"][0] == "CrossAttnDownBlock2D" and unet["cross_attention_dim"] == 128
    meta = json.loads((out / "training.json").read_text())
    assert meta["preset"] == "v2" and set(meta["models"]["sdxl"]["vae_round_trip"]) >= {"shape", "colour", "pattern"}
    packaged = json.loads((WEIGHTS_DIR / "sdxl" / "scheduler" / "scheduler_config.json").read_text())
    assert packaged["prediction_type"] == "epsilon"  # the packaged v1 model is unchanged


def test_loss_weights_and_the_schedule_guard():
    """Epsilon: Min-SNR min(snr, 5) / snr. v: min(snr + 1, 5) / (snr + 1), weight 1 up to snr 4 and
    at the terminal step of a zero-terminal-SNR schedule (snr 0), where Min-SNR's own v form is 0.
    Zero terminal SNR with epsilon prediction is refused (nothing to predict at snr 0)."""
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from synthvlm_data.world.train_diffusion import V2, DiffusionTrainConfig, loss_weight, schedule_config

    t = torch.tensor([0, 100, 500, 900, 999])
    v1, v2 = DiffusionTrainConfig(), V2
    s1, s2 = DDPMScheduler(**schedule_config(v1)), DDPMScheduler(**schedule_config(v2))
    snr1, snr2 = compute_snr(s1, t), compute_snr(s2, t)
    assert float(snr2[-1]) == 0.0 and float(snr1[-1]) > 0  # zero terminal SNR only in v2
    assert torch.allclose(loss_weight(s1, t, v1), torch.clamp(snr1, max=5.0) / snr1)
    w2 = loss_weight(s2, t, v2)
    assert torch.allclose(w2, torch.clamp(snr2 + 1, max=5.0) / (snr2 + 1)) and float(w2[-1]) == 1.0
    assert float(w2[0]) < 0.01  # the near-clean step weighted down
    with pytest.raises(ValueError, match="zero_terminal_snr needs prediction_type v_prediction"):
        replace(v1, zero_terminal_snr=True)


def test_quality_command_as_typed_measures_the_packaged_models_through_the_build_path(tmp_path):
    """`python -m synthvlm_data.world quality ... --json F` on the packaged models (a few scenes, 2
    denoising steps): every part is there with intervals, the oracle best of 2 is never below a random
    image, and the images it scores are the ones the generate stage makes for the same seeds."""
    import json

    import torch

    from synthvlm_data.config import GenerateConfig
    from synthvlm_data.models.refs import ModelRef
    from synthvlm_data.stages.generate import ImageGenerator
    from synthvlm_data.world.build_models import WEIGHTS_DIR

    out = tmp_path / "q.json"
    res = subprocess.run([sys.executable, "-m", "synthvlm_data.world", "quality", "--n", "6", "--k", "2", "--steps", "2",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["split"] == "validation" and got["generator"]["settings"]["k"] == 2
    assert got["generator"]["oracle_minus_random"]["mean"] >= 0
    assert {"shape", "colour", "pattern"} <= set(got["vae_round_trip"]) and "relation" in got["clip_zero_shot"]
    assert "generator: mean alignment of one image" in res.stdout
    torch.set_num_threads(1)
    pipe, _ = quality.load_world_models(WEIGHTS_DIR, clip=False)
    prompts, seeds = ["A red circle on a dark plain background.", "A small blue star above a green square."], [3, 11]
    ours = quality.generate(pipe, prompts, seeds, steps=2, guidance=3.0)
    cfg = GenerateConfig(model=ModelRef(id=str(WEIGHTS_DIR / "sdxl")), steps=2, guidance_scale=3.0, height=64, width=64,
                         dtype="float32", device="cpu")
    stage = ImageGenerator(cfg)(prompts, seeds)
    for a, b in zip(ours, stage, strict=True):
        assert np.array_equal(a, np.asarray(b)), np.abs(a.astype(int) - np.asarray(b).astype(int)).max()


def test_sweep_and_calibrate_as_typed():
    """`sweep` prints one row per (steps, guidance) setting; `calibrate` a threshold on validation renders."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "synthvlm_data.world", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=600)
    res = run("sweep", "--n", "2", "--steps", "2", "--guidance", "1,3")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split() for line in res.stdout.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("2", "1.0"), ("2", "3.0")] and all(0 <= float(r[3]) <= 1 for r in rows)
    res = run("calibrate", "--n", "12")
    assert res.returncode == 0, res.stderr[-2000:]
    got = dict(line.split(": ", 1) for line in res.stdout.splitlines())
    assert got["split"] == "validation" and got["n"] == "12" and -1 <= float(got["min_similarity"]) <= 1
