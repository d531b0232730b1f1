"""`synthvlm eval`: evaluate a checkpoint written by `train/` and record the results.

Writes `eval-<suite>.json` (every score with its CI; no timings or absolute paths, so the same
checkpoint, n and seed give the same bytes), `eval-<suite>.md` and, for the world suite,
`eval-world-samples.jsonl` (every prompt, prediction and verdict) into `out` (default: the
checkpoint folder), and the table into the checkpoint's model card (README.md).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from synthvlm_data.evaluation import report
from synthvlm_data.evaluation.checkpoint import CheckpointModel, EvalInputError, check_checkpoint, eval_placement
from synthvlm_data.evaluation.world_suite import (
    BOOTSTRAP,
    CAPTION_PROMPT,
    baselines,
    build_items,
    caption_scores,
    score_captions,
    score_vqa,
    vqa_correct,
)

SUITES = ("world", "lmms")
CAPTION_TOKENS = 48
ANSWER_TOKENS = 8


@dataclass
class EvalOutcome:
    result: dict
    files: list[Path]
    card: Path | None
    seconds: float
    main_process: bool = True  # False on the other ranks of a multi-process launch: they write nothing


def world_predictions(model, items) -> tuple[list[str], list[str]]:
    from synthvlm_data.world.render import render

    images = [render(s) for s in items.scenes]
    captions = [model.generate([im], CAPTION_PROMPT, max_new_tokens=CAPTION_TOKENS) for im in images]
    answers = [model.generate([images[q.scene_index]], q.prompt, max_new_tokens=ANSWER_TOKENS) for q in items.questions]
    return captions, answers


def world_result(items, captions: list[str], answers: list[str], name: str) -> tuple[dict, list[dict]]:
    result = {
        "suite": "world", "checkpoint_name": name, "items": items.describe(), "n_scenes": len(items.scenes),
        "n_questions": len(items.questions), "seed": items.seed, "bootstrap": BOOTSTRAP,
        "caption_prompt": CAPTION_PROMPT,
        "captioning": score_captions(items, captions), "vqa": score_vqa(items, answers), "baselines": baselines(items),
    }
    samples = [{"id": f"{i:05d}-caption", "task": "captioning", "prompt": CAPTION_PROMPT, "prediction": c,
                "scores": caption_scores(s, c)} for i, (s, c) in enumerate(zip(items.scenes, captions))]
    samples += [{"id": q.id, "task": "vqa", "qtype": q.qtype, "prompt": q.question, "answers": list(q.answers),
                 "prediction": a, "correct": vqa_correct(q, a)} for q, a in zip(items.questions, answers)]
    return result, samples


def evaluate(checkpoint: Path, suite: str = "world", n: int = 100, seed: int = 0, out: Path | None = None, *,
             tasks: list[str] | None = None, limit: int | None = None, dataset_paths: list[str] | None = None,
             update_card: bool = True, device: str | None = None, dtype: str | None = None) -> EvalOutcome:
    """Run a suite on `checkpoint` and write its results. `device` / `dtype` default to CUDA in
    bfloat16 when a GPU is visible, else the CPU in float32 (`eval_placement`)."""
    if suite not in SUITES:
        raise EvalInputError(f"--suite {suite}: unknown suite; known: {', '.join(SUITES)}")
    checkpoint = check_checkpoint(Path(checkpoint))
    out = Path(out) if out is not None else checkpoint
    if suite == "world":
        given = [flag for flag, v in (("--tasks", tasks), ("--limit", limit), ("--dataset-path", dataset_paths)) if v]
        if given:
            raise EvalInputError(f"{given[0]} applies to --suite lmms only (the world suite takes --n and --seed)")
    if suite == "world":
        if int(os.environ.get("RANK", "0")) != 0:  # the world suite is one process's work: rank 0 does it
            return EvalOutcome(result={}, files=[], card=None, seconds=0.0, main_process=False)
        device, dtype = eval_placement(device, dtype)
    else:
        eval_placement(device, dtype)  # bad values fail here, before lmms-eval is imported
    items = build_items(n, seed)
    t0 = time.time()
    if suite == "world":
        model = CheckpointModel(checkpoint, dtype=dtype, device=device)
        captions, answers = world_predictions(model, items)
        result, samples = world_result(items, captions, answers, checkpoint.name)
        files = report.write_results(result, out)
        path = out / "eval-world-samples.jsonl"
        path.write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in samples), encoding="utf-8")
        files.append(path)
    else:
        from synthvlm_data.evaluation.lmms import WORLD_TASK, parse_dataset_paths, run_lmms, suite_tasks

        chosen = tasks or suite_tasks()
        result = run_lmms(checkpoint, chosen, items if WORLD_TASK in chosen else None, out / "lmms-data", limit=limit,
                          dataset_paths=parse_dataset_paths(dataset_paths), seed=seed, device=device, dtype=dtype)
        if result is None:  # not the main process: its answers went to rank 0
            return EvalOutcome(result={}, files=[], card=None, seconds=time.time() - t0, main_process=False)
        result["checkpoint_name"] = checkpoint.name
        result.pop("seconds", None)
        samples = result.pop("samples")
        files = report.write_results(result, out)
        path = out / "eval-lmms-samples.jsonl"
        path.write_text("".join(json.dumps({"task": t, **r}, sort_keys=True, default=str) + "\n"
                                for t, rows in samples.items() for r in rows), encoding="utf-8")
        files.append(path)
    card = report.update_card(checkpoint, result) if update_card else None
    return EvalOutcome(result=result, files=files, card=card, seconds=time.time() - t0)
