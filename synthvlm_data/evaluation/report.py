"""Evaluation results as files (`eval-<suite>.json`, `eval-<suite>.md`) and as a section of the
checkpoint's model card (README.md), between markers so that re-running a suite replaces its block
and keeps the other suite's."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from synthvlm_data.presentation.templates import render

EVAL_TEMPLATE = "model_card_eval.md.j2"
SECTION_START, SECTION_END = "<!-- synthvlm-eval -->", "<!-- /synthvlm-eval -->"
EVAL_HEADING = "## Evaluation"
NOT_EVALUATED = "Not evaluated yet: `synthvlm eval CHECKPOINT` adds the world suite's table here."


def _f(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _ci(s: dict) -> str:
    ci = s.get("ci95")
    return "-" if not ci or any(math.isnan(v) for v in ci) else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _caption_metric(metric: str) -> str:
    if metric == "hallucination":
        return "hallucinated objects (lower is better)"
    attr, _, kind = metric.partition("_")
    return {"": f"{attr} accuracy", "precision": f"{attr} precision", "f1": f"{attr} F1"}[kind]


def world_rows(result: dict) -> list[dict]:
    base = result["baselines"]
    rows = []
    for task, metrics in (("captioning", result["captioning"]), ("vqa", result["vqa"])):
        for metric, s in metrics.items():
            maj = base["majority"].get(task, {}).get(metric)
            chance = base["chance"].get(task, {}).get(metric)
            metric_name = _caption_metric(metric) if task == "captioning" else (
                "exact match (all)" if metric == "all" else f"exact match ({metric})")
            rows.append({"task": task, "metric": metric_name, "n": s["n"], "model": _f(s["score"]), "ci": _ci(s),
                         "majority": _f(maj["score"]) if maj else "-", "chance": _f(chance["score"]) if chance else "-"})
    return rows


def lmms_rows(result: dict) -> list[dict]:
    rows = []
    for task, metrics in result["results"].items():
        n = result.get("n_samples", {}).get(task, "-")
        for key, value in metrics.items():
            if key == "alias" or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric = key.split(",")[0]
            stderr = metrics.get(key.replace(metric, metric + "_stderr", 1))
            rows.append({"task": task, "metric": metric, "n": n, "score": _f(float(value)),
                         "stderr": _f(stderr) if isinstance(stderr, (int, float)) else "-"})
    return rows


def section(result: dict) -> str:
    suite = result["suite"]
    if suite == "world":
        ctx = {"suite": suite, "rows": world_rows(result), "items_description": result["items"],
               "n_scenes": result["n_scenes"], "n_questions": result["n_questions"],
               "bootstrap": result["bootstrap"], "caption_prompt": result["caption_prompt"]}
    else:
        ctx = {"suite": suite, "rows": lmms_rows(result), "lmms_version": result["lmms_eval_version"],
               "limit": result.get("limit")}
    return render(EVAL_TEMPLATE, **ctx).strip() + "\n"


def write_results(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    suite = result["suite"]
    js, md = out_dir / f"eval-{suite}.json", out_dir / f"eval-{suite}.md"
    js.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    md.write_text(f"# Evaluation of `{result['checkpoint_name']}`\n\n" + section(result), encoding="utf-8")
    return [js, md]


def _blocks(body: str) -> dict[str, str]:
    return dict(re.findall(r"<!-- synthvlm-eval:(\w+) -->\n(.*?)<!-- /synthvlm-eval:\1 -->", body, flags=re.S))


def update_card(checkpoint: Path, result: dict) -> Path | None:
    """Put (or replace) the suite's block in the card's Evaluation section; None: no card there."""
    path = Path(checkpoint) / "README.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    blocks = _blocks(text[start:end]) if 0 <= start < end else {}
    blocks[result["suite"]] = section(result)
    body = "\n".join(f"<!-- synthvlm-eval:{k} -->\n{blocks[k]}<!-- /synthvlm-eval:{k} -->\n" for k in sorted(blocks))
    block = f"{SECTION_START}\n{body}{SECTION_END}"
    if 0 <= start < end:
        text = text[:start] + block + text[end + len(SECTION_END):]
    else:  # a card from before evaluation existed: add the section before "How to use", else at the end
        new = f"{EVAL_HEADING}\n\n{block}\n\n"
        at = text.find("## How to use")
        text = text[:at] + new + text[at:] if at >= 0 else text.rstrip("\n") + "\n\n" + new
    path.write_text(text, encoding="utf-8")
    return path
