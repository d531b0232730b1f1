"""`synthvlm eval`: the world suite (items, scorers, baselines, CIs), its run on a checkpoint written
by train/ (table files, model card), and lmms-eval itself run offline on the world questions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from synthvlm_data.cli import main
from synthvlm_data.evaluation import world_suite as ws
from synthvlm_data.world.data import SPLIT_OFFSET, split_scenes
from synthvlm_data.world.scene import INVERSE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def items():
    return ws.build_items(60, seed=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real stage-1 output of train/ (1 optimizer step on 2 demo rows): weights, processor, card."""
    import torch

    from synthvlm_data.training.config import load_config
    from synthvlm_data.training.demo_data import write_demo_dataset
    from synthvlm_data.training.run import run_stage

    root = tmp_path_factory.mktemp("eval-ckpt")
    data = write_demo_dataset(root / "demo", size=64)
    out = root / "tiny-pretrain"
    cfg = load_config(ROOT / "train" / "configs" / "tiny.yaml", [
        "--dataset", str(data), "--max_samples", "2", "--eval_ratio", "0", "--output_dir", str(out),
        "--per_device_train_batch_size", "2", "--global_batch_size", "2", "--max_steps", "1", "--warmup_ratio", "0",
        "--save_strategy", "no"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stage(cfg, "pretrain", command="pytest")
    finally:
        torch.set_num_threads(before)
    assert "Not evaluated yet" in (out / "README.md").read_text()  # the card's stub, replaced by the first eval
    return out


@pytest.fixture(scope="module")
def world_run(checkpoint, tmp_path_factory):
    """`synthvlm eval CHECKPOINT --n 1 --out DIR` once: (exit code, DIR)."""
    out = tmp_path_factory.mktemp("eval-world") / "a"
    return main(["eval", str(checkpoint), "--n", "1", "--out", str(out)]), out


# --------------------------------------------------------------------------- items and scorers


def test_items_are_held_out_deterministic_and_true_to_the_scene(items):
    again = ws.build_items(60, seed=3)
    assert again.questions == items.questions and [s.seed for s in again.scenes] == [s.seed for s in items.scenes]
    assert [s.seed for s in items.scenes] == [s.seed for s in split_scenes("test", 60)]
    assert SPLIT_OFFSET["test"] not in (SPLIT_OFFSET["train"], SPLIT_OFFSET["eval"], SPLIT_OFFSET["pool"])
    other = ws.build_items(60, seed=4)
    assert other.questions != items.questions  # the seed picks what is asked
    assert {q.qtype for q in items.questions} == set(ws.QUESTION_TYPES)
    names = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
    for q in items.questions:  # every answer re-derived from the ground truth, independently of the generator
        scene = items.scenes[q.scene_index]
        objs = scene.objects
        words = q.question.rstrip("?").split()
        if q.qtype == "count":
            assert q.answer == str(len(objs))
        elif q.qtype == "colour":
            shape = words[-1]
            assert [o.colour for o in objs if o.shape == shape] == [q.answer]
        elif q.qtype == "shape":
            colour = words[-2]
            assert [o.shape for o in objs if o.colour == colour] == [q.answer]
        elif q.qtype == "size":
            colour, shape = words[2], words[3]
            assert [o.size for o in objs if (o.colour, o.shape) == (colour, shape)] == [q.answer]
        elif q.qtype == "relation":
            a = next(k for k, o in enumerate(objs) if (o.colour, o.shape) == (words[2], words[3]))
            b = next(k for k, o in enumerate(objs) if (o.colour, o.shape) == (words[-2], words[-1]))
            asked = names[next(w for w in words[4:-3] if w in names)]
            assert q.answer == ("yes" if scene.relation(a, b) == asked else "no")
            assert asked in (scene.relation(a, b), INVERSE[scene.relation(a, b)])
        else:
            assert q.answer == scene.background.tone


def test_oracle_scores_one_constant_scores_its_rate_majority_baseline(items):
    oracle = ws.score_vqa(items, [q.answer.upper() + "." for q in items.questions])  # normalisation undoes case/dot
    assert all(s["score"] == 1.0 for s in oracle.values())
    const = ws.score_vqa(items, ["yes"] * len(items.questions))
    rel = [q for q in items.questions if q.qtype == "relation"]
    assert const["relation"]["score"] == pytest.approx(sum(q.answer == "yes" for q in rel) / len(rel))
    assert const["count"]["score"] == 0.0 and 0 < const["relation"]["score"] < 1
    base = ws.baselines(items)
    ref = ws.reference_items(items.seed)
    assert not {s.seed for s in ref.scenes} & {s.seed for s in items.scenes}
    for t in ws.QUESTION_TYPES:
        top = Counter(q.answer for q in ref.questions if q.qtype == t).most_common(1)[0][0]
        answers = [q.answer for q in items.questions if q.qtype == t]
        assert base["majority"]["vqa"][t]["score"] == pytest.approx(answers.count(top) / len(answers))
        n_options = len(next(q for q in items.questions if q.qtype == t).options)
        assert base["chance"]["vqa"][t]["score"] == pytest.approx(1 / n_options)
    two = ws.normalize_answer("Two."), ws.normalize_answer("The gray"), ws.normalize_answer("Yes, it is.")
    assert two == ("2", "gray", "yes it is")


def test_caption_scorer_against_ground_truth(items):
    perfect = ws.score_captions(items, ws.oracle_captions(items))  # the world's own paraphrases, parsed back
    assert all(s["score"] == (0.0 if a == "hallucination" else 1.0) for a, s in perfect.items())
    assert perfect["relation"]["n"] == sum(len(s.objects) > 1 for s in items.scenes)
    nothing = ws.score_captions(items, [""] * len(items.scenes))
    assert all(s["score"] == 0.0 for a, s in nothing.items() if a != "hallucination")
    assert nothing["hallucination"]["n"] == 0  # no object named: left out, not the best score
    scene = next(s for s in items.scenes if len(s.objects) == 2)
    a, b = scene.objects
    other = next(c for c in ("red", "orange", "yellow", "green", "blue", "purple") if (c, a.shape) != (b.colour, b.shape)
                 and c != a.colour)
    half = ws.caption_scores(scene, f"A {a.size} {other} {a.shape} on a {scene.background.tone} "
                                    f"{scene.background.pattern} background.")
    assert half == pytest.approx({"colour": 0.0, "shape": 0.5, "size": 0.5, "count": 0.0, "relation": 0.0,
                                  "background": 1.0, "exact": 0.0, "colour_precision": 0.0, "shape_precision": 1.0,
                                  "size_precision": 1.0, "colour_f1": 0.0, "shape_f1": 2 / 3, "size_f1": 2 / 3,
                                  "hallucination": 1.0})
    rel = scene.relation(0, 1)
    flipped = ws.caption_scores(scene, f"A {a.size} {a.colour} {a.shape} {INVERSE[rel]} a {b.size} {b.colour} {b.shape}.")
    assert flipped["relation"] == 0.0 and flipped["colour"] == 1.0 and flipped["count"] == 1.0
    right = ws.caption_scores(scene, f"A {a.size} {a.colour} {a.shape} {rel} a {b.size} {b.colour} {b.shape}.")
    assert right["relation"] == 1.0 and right["background"] == 0.0


def test_a_caption_naming_everything_no_longer_scores_high(items):
    """Recall alone gives a caption listing all 24 colour-shape pairs colour and shape 1.0: its
    precision, F1 and hallucination rate expose it, against the true caption of the same scene."""
    from synthvlm_data.world.scene import COLOURS, SHAPES

    everything = "Shapes: " + ", ".join(f"a {c} {s}" for c in COLOURS for s in SHAPES) + "."
    for scene, true in zip(items.scenes[:20], ws.oracle_captions(items)[:20], strict=True):
        spam, good = ws.caption_scores(scene, everything), ws.caption_scores(scene, true)
        k = len(scene.objects)
        assert spam["colour"] == spam["shape"] == 1.0  # what recall alone would report
        assert spam["shape_precision"] == pytest.approx(k / 24) and spam["hallucination"] == pytest.approx(1 - k / 24)
        assert spam["shape_f1"] < 0.25 and spam["colour_f1"] < 0.25 and spam["exact"] == 0.0
        assert good["shape_f1"] == good["colour_f1"] == 1.0 and good["hallucination"] == 0.0


def test_bootstrap_ci():
    assert ws.bootstrap_ci([1.0] * 30, seed=0) == (1.0, 1.0)
    half = [0.0, 1.0] * 100
    lo, hi = ws.bootstrap_ci(half, seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.2 and (lo, hi) == ws.bootstrap_ci(half, seed=0)
    assert np.isnan(ws.bootstrap_ci([], seed=0)[0])


# --------------------------------------------------------------------------- synthvlm eval on a checkpoint


def test_eval_errors_are_one_line(tmp_path, capsys, checkpoint):
    for argv, needle in (
        (["eval", str(tmp_path / "nope")], "no such directory"),
        (["eval", str(tmp_path)], "not a model folder written by train/"),
        (["eval", str(checkpoint), "--suite", "mmmu"], "--suite mmmu: unknown suite; known: world, lmms"),
        (["eval", str(checkpoint), "--n", "0"], "--n 0"),
        (["eval", str(checkpoint), "--tasks", "pope"], "--tasks applies to --suite lmms only"),
        (["eval", str(checkpoint), "--suite", "lmms", "--dataset-path", f"pope={tmp_path / 'no'}"], "no such directory"),
        (["eval", str(checkpoint), "--suite", "lmms"], "lmms tasks vqav2_val, gqa, scienceqa_img, textvqa_val, "
                                                        "mmbench_en_dev, mme, pope: their datasets are on the Hugging Face Hub"),
        (["eval", str(checkpoint), "--suite", "lmms", "--tasks", "pope"], "lmms task pope"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    # a real benchmark offline names the task, its Hub dataset and both ways out
    assert "lmms-lab-encoder/POPE" in err and "--dataset-path pope=DIR" in err and "Hub" in err


def test_eval_world_suite_end_to_end(checkpoint, world_run):
    from huggingface_hub import ModelCard

    code, first = world_run
    assert code == 0
    result = json.loads((first / "eval-world.json").read_text())
    n_q = result["n_questions"]
    assert result["n_scenes"] == 1 and n_q >= 4 and result["vqa"]["all"]["n"] == n_q
    assert set(result["captioning"]) == set(ws.CAPTION_ATTRIBUTES) and "majority" in result["baselines"]
    samples = [json.loads(line) for line in (first / "eval-world-samples.jsonl").read_text().splitlines()]
    assert len(samples) == 1 + n_q and all(s["prediction"].strip() for s in samples)  # the model really answered
    hits = [s["correct"] for s in samples if s["task"] == "vqa"]
    assert result["vqa"]["all"]["score"] == pytest.approx(sum(hits) / n_q)
    md = (first / "eval-world.md").read_text()
    assert "| vqa | exact match (all) |" in md
    card = (checkpoint / "README.md").read_text()
    assert card.count("<!-- synthvlm-eval:world -->") == 1 and "| vqa | exact match (all) |" in card
    assert "Not evaluated yet" not in card and ModelCard.load(checkpoint / "README.md").data.pipeline_tag
    assert not (checkpoint / "eval-world.json").exists()  # --out: the files went there, the card still updated


@pytest.mark.slow
def test_eval_is_deterministic_and_replaces_its_card_block(checkpoint, world_run, tmp_path):
    """Same checkpoint, n and seed: the same bytes (~20 s: a second run); the card keeps one world block."""
    assert main(["eval", str(checkpoint), "--n", "1", "--out", str(tmp_path / "b")]) == 0
    assert (world_run[1] / "eval-world.json").read_bytes() == (tmp_path / "b" / "eval-world.json").read_bytes()
    assert (checkpoint / "README.md").read_text().count("<!-- synthvlm-eval:world -->") == 1


def test_lmms_eval_runs_offline_on_the_world_task(checkpoint, world_run, tmp_path, monkeypatch):
    """lmms-eval's own simple_evaluate, the synthvlm_llava adapter, the world questions as a local
    parquet task: no Hub."""
    from synthvlm_data.evaluation.lmms import WORLD_TASK
    from synthvlm_data.evaluation.run import evaluate

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    res = evaluate(checkpoint, "lmms", n=1, seed=0, out=tmp_path, tasks=[WORLD_TASK])
    items = ws.build_items(1, 0)
    task = res.result["results"][WORLD_TASK]
    assert res.result["n_samples"][WORLD_TASK] == len(items.questions)
    assert 0.0 <= task["exact_match,none"] <= 1.0 and res.result["lmms_eval_version"] == "0.7.3"
    # the same items, prompt, scorer and greedy decoding as `--suite world`: the same predictions and score
    samples = [json.loads(x) for x in (world_run[1] / "eval-world-samples.jsonl").read_text().splitlines()]
    world_answers = [s["prediction"] for s in samples if s["task"] == "vqa"]
    logged = [json.loads(x) for x in (tmp_path / "eval-lmms-samples.jsonl").read_text().splitlines()]
    assert [r["prediction"].strip() for r in logged] == world_answers and all(world_answers)
    assert task["exact_match,none"] == pytest.approx(ws.score_vqa(items, world_answers)["all"]["score"])
    assert "| synthvlm_world_vqa | exact_match |" in (tmp_path / "eval-lmms.md").read_text()
    assert "<!-- synthvlm-eval:lmms -->" in (checkpoint / "README.md").read_text()


def test_adapter_manifest_resolves_in_lmms_eval():
    """What the pyproject's `lmms_eval.models` entry point hands lmms-eval resolves to the adapter
    (the entry point itself needs an install of this checkout, which the shared venv is not)."""
    import tomllib

    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    from synthvlm_data.evaluation import lmms
    from synthvlm_data.evaluation.lmms_adapter import SynthVLMLlava

    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lmms_eval.models"]
    module, _, attr = eps["synthvlm"].partition(":")
    assert (module, attr) == (lmms.__name__, "manifests")
    for manifest in lmms.manifests():
        MODEL_REGISTRY_V2.register_manifest(manifest)
    assert get_model(lmms.MODEL_ID) is SynthVLMLlava


@pytest.mark.slow
def test_lmms_eval_hub_failure_is_one_line(checkpoint, tmp_path, monkeypatch):
    """Without the offline switch set (a machine with no route to the Hub): lmms-eval itself tries,
    retries and fails (~30 s: its task index and retries); the error is still one line naming the task."""
    from synthvlm_data.evaluation.checkpoint import EvalInputError
    from synthvlm_data.evaluation.run import evaluate
    from synthvlm_data.models import refs

    monkeypatch.setattr(refs, "hub_offline", lambda: False)  # skip our fast check: lmms-eval meets the Hub
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(EvalInputError) as err:
        evaluate(checkpoint, "lmms", n=1, out=tmp_path, tasks=["pope"])
    text = str(err.value)
    assert len(text.splitlines()) == 1 and text.startswith("lmms task pope:") and "--dataset-path pope=DIR" in text
    assert not (tmp_path / "eval-lmms.json").exists()


# --------------------------------------------------------------------------- device, dtype and ranks


def test_eval_placement_defaults_and_refusals():
    """CUDA in bfloat16 when a GPU is visible (this rank's GPU under a multi-process launch), else
    the CPU in float32; explicit values win; bad values are one line."""
    from synthvlm_data.evaluation.checkpoint import EvalInputError, eval_placement

    assert eval_placement(cuda=True) == ("cuda", "bfloat16")
    assert eval_placement(cuda=True, local_rank=3, num_processes=8) == ("cuda:3", "bfloat16")
    assert eval_placement(cuda=False, local_rank=1, num_processes=2) == ("cpu", "float32")
    assert eval_placement("cuda:1", "float16", cuda=True, local_rank=0, num_processes=2) == ("cuda:1", "float16")
    assert eval_placement("cpu", cuda=True) == ("cpu", "float32")
    assert eval_placement("cpu", "bfloat16", cuda=False) == ("cpu", "bfloat16")
    for kwargs, needle in ((dict(dtype="fp8"), "--dtype fp8: unknown"), (dict(device="cuda"), "--device cuda: no CUDA GPU")):
        with pytest.raises(EvalInputError, match=needle):
            eval_placement(cuda=False, **kwargs)


def test_eval_dtype_flag_reaches_the_model(checkpoint, capsys):
    """`--dtype bfloat16` loads the checkpoint in bfloat16 and still answers (pixels are cast to
    the model's dtype); a bad --dtype / --device is one line before anything loads."""
    import torch

    from synthvlm_data.evaluation.checkpoint import CheckpointModel

    model = CheckpointModel(checkpoint, dtype="bfloat16", device="cpu")
    assert model.model.dtype == torch.bfloat16
    from synthvlm_data.world.render import render

    items = ws.build_items(1, 0)
    assert isinstance(model.generate([render(items.scenes[0])], items.questions[0].prompt, max_new_tokens=2), str)
    assert main(["eval", str(checkpoint), "--dtype", "half"]) == 2
    assert "--dtype half: unknown" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", str(checkpoint), "--suite", "lmms", "--device", "cuda"]) == 2
        assert "--device cuda: no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.slow
def test_lmms_eval_two_ranks_split_the_requests(checkpoint, world_run, tmp_path):
    """Two ranks of `accelerate launch --num_processes 2` (~70 s): each answers only its share of the
    documents, rank 0 alone writes the results, and the predictions are those of one process."""
    import os
    import socket
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent('''
        import json, os, sys
        from synthvlm_data.evaluation import lmms_adapter
        seen = []
        real = lmms_adapter.SynthVLMLlava.generate_until
        def counting(self, requests):
            seen.extend(r.args[3] for r in requests)  # doc ids this rank answered
            return real(self, requests)
        lmms_adapter.SynthVLMLlava.generate_until = counting
        from synthvlm_data.cli import main
        code = main(["eval", sys.argv[1], "--suite", "lmms", "--tasks", "synthvlm_world_vqa", "--n", "1",
                     "--out", sys.argv[2], "--no-card-update"])
        with open(os.path.join(sys.argv[3], "rank%s.json" % os.environ["RANK"]), "w") as fh:
            json.dump({"code": code, "docs": seen}, fh)
    '''))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # as the Makefile launches ranks: --multi_gpu starts them via torchrun (CPU processes on gloo here)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    proc = subprocess.run([*launch, str(script), str(checkpoint), str(out), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    n_q = len(ws.build_items(1, 0).questions)
    docs = [set(r["docs"]) for r in ranks]
    assert all(r["code"] == 0 for r in ranks) and all(docs)
    assert not docs[0] & docs[1] and docs[0] | docs[1] == set(range(n_q))  # a split, not a repeat
    assert all(len(r["docs"]) <= (n_q + 1) // 2 for r in ranks)  # (an uneven split pads with a repeat)
    result = json.loads((out / "eval-lmms.json").read_text())
    assert result["n_samples"]["synthvlm_world_vqa"] == n_q and result["dtype"] == "float32"
    samples = [json.loads(x) for x in (world_run[1] / "eval-world-samples.jsonl").read_text().splitlines()]
    logged = [json.loads(x) for x in (out / "eval-lmms-samples.jsonl").read_text().splitlines()]
    assert [r["prediction"].strip() for r in logged] == [s["prediction"] for s in samples if s["task"] == "vqa"]
