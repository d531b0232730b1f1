"""The world suite: a trained VLM scored against the exact ground truth of held-out world renders.

Items come from the world's `test` split (scene indices 30,000,000 + i of world seed 0; no
training set, caption pool, world model or verifier calibration uses that range), so a model never
saw them. `seed` chooses which objects and relations the questions ask about; the same
(n, seed) gives the same items, byte for byte.

(a) Captioning: the model describes each render; `world.text.parse` reads the claims back and
each attribute is scored per scene against the ground truth (recall-style: what the caption does
not say is wrong):

* colour / shape / size: the share of the scene's objects whose matched caption object has the
  true value (caption objects are matched to true objects one-to-one, maximising agreement);
* count: the caption names exactly as many objects as the scene has;
* relation (scenes with 2-3 objects only): the share of the caption's relation claims that hold
  between the matched objects; no relation claim scores 0;
* background: the caption names the true tone and the true pattern;
* exact: every attribute above is fully right.

Recall alone rewards a caption that names everything (one listing all 24 colour-shape pairs would
score colour and shape 1.0), so each object attribute also has a precision (the share of the
caption's objects whose matched true object has the value it claims; an object with no true
counterpart is wrong) and their F1, and `hallucination` is the share of the caption's objects whose
colour-shape pair is in no object of the scene (CHAIR_i of Rohrbach et al. 2018, averaged over the
captions that name an object; one that names none is left out, not scored 0, the best value).

(b) VQA: short questions generated from the ground truth (colour, shape, size, relation yes/no,
count, background tone), scored by exact match after VQAv2's answer normalisation (lmms-eval's
`EvalAIAnswerProcessor`: lower case, punctuation, articles, number words -> digits).

Every score is a mean over items with a bootstrap 95% CI over items. Baselines: majority (each
question answered with its type's most frequent answer over 500 train-split scenes, the prior a
model could learn; one caption of their most frequent attributes) through the same scorers
(`score_captions`, `score_vqa`), and chance (a uniform guess among the type's answers).
"""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from synthvlm_data.evaluation.checkpoint import EvalInputError
from synthvlm_data.world.data import SPLIT_OFFSET, WORLD_SEED, split_scenes
# the questions and prompts live with the world (its LM trains on them); the suite re-exports them
from synthvlm_data.world.questions import CAPTION_PROMPT, QUESTION_TYPES, VQA_SUFFIX, Question, scene_questions  # noqa: F401
from synthvlm_data.world.scene import Scene
from synthvlm_data.world.text import Claims, canonical, caption, parse, truth_claims

SPLIT = "test"
CAPTION_ATTRIBUTES = ("colour", "shape", "size", "count", "relation", "background", "exact",
                      "colour_precision", "shape_precision", "size_precision", "colour_f1", "shape_f1", "size_f1",
                      "hallucination")
BOOTSTRAP = 1000


@dataclass
class Items:
    n: int
    seed: int
    scenes: list[Scene]
    questions: list[Question] = field(default_factory=list)

    def describe(self) -> str:
        lo = SPLIT_OFFSET[SPLIT]
        return (f"world split '{SPLIT}' (world seed {WORLD_SEED}, scene indices {lo:,}-{lo + self.n - 1:,}), "
                f"question seed {self.seed}")


# --------------------------------------------------------------------------- items


def build_items(n: int, seed: int = 0) -> Items:
    """`n` held-out scenes and their questions (every question type a scene allows)."""
    if n < 1:
        raise EvalInputError(f"--n {n}: the world suite needs at least 1 scene")
    scenes = split_scenes(SPLIT, n)
    items = Items(n=n, seed=seed, scenes=scenes)
    for i, scene in enumerate(scenes):
        items.questions.extend(scene_questions(scene, i, np.random.default_rng([seed, i])))
    return items


# --------------------------------------------------------------------------- scoring


@functools.cache
def _answer_processor():
    """lmms-eval's VQAv2 answer normalisation, loaded from its one file: importing the lmms_eval
    package to reach it takes ~18 s (its task registry), the file itself imports only `re`."""
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvalInputError("synthvlm eval needs lmms-eval (VQAv2 answer normalisation, the lmms suite): "
                        "pip install 'synthvlm-data[eval]'")
    path = Path(spec.submodule_search_locations[0]) / "tasks" / "_task_utils" / "vqa_eval_metric.py"
    mod_spec = importlib.util.spec_from_file_location("_synthvlm_vqa_eval_metric", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.EvalAIAnswerProcessor()


def normalize_answer(text: str) -> str:
    """VQAv2 normalisation of a short answer (first line only: a model may continue past it)."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return _answer_processor()(first).strip().lower()


def vqa_correct(question: Question, prediction: str) -> bool:
    return normalize_answer(prediction) in {normalize_answer(a) for a in question.answers}


def _pair(truth: list[dict], claimed: list[dict]) -> dict[int, int]:
    """True object index -> claimed object index, one-to-one, maximising agreeing attributes
    (the verifier's weighting: colour and shape 2, size 1)."""
    if not truth or not claimed:
        return {}
    gain = np.array([[2 * (t["colour"] == c["colour"]) + 2 * (t["shape"] == c["shape"]) + (t["size"] == c["size"])
                      for c in claimed] for t in truth], dtype=float)
    rows, cols = linear_sum_assignment(-gain)
    return dict(zip(rows.tolist(), cols.tolist()))


def caption_scores(scene: Scene, text: str) -> dict[str, float]:
    """Per-attribute scores (0..1) of one caption of one scene; `relation` only for 2+ objects."""
    truth = truth_claims(scene, relations=False)
    claims: Claims = parse(text or "")
    match = _pair(truth.objects, claims.objects)
    k = len(truth.objects)
    s = {a: sum(i in match and claims.objects[match[i]][a] == t[a] for i, t in enumerate(truth.objects)) / k
         for a in ("colour", "shape", "size")}
    s["count"] = float(claims.count == k)
    if k > 1:
        back = {c: t for t, c in match.items()}
        ok = [a in back and b in back and scene.relation(back[a], back[b]) == rel for a, rel, b in claims.relations]
        s["relation"] = sum(ok) / len(ok) if ok else 0.0
    s["background"] = float(claims.tone == truth.tone and claims.pattern == truth.pattern)
    s["exact"] = float(all(v == 1.0 for v in s.values()))
    m = len(claims.objects)
    for a in ("colour", "shape", "size"):
        right = sum(claims.objects[c][a] == truth.objects[t][a] for t, c in match.items())
        s[f"{a}_precision"] = right / m if m else 0.0
        p, r = s[f"{a}_precision"], s[a]
        s[f"{a}_f1"] = 2 * p * r / (p + r) if p + r else 0.0
    present = {(o["colour"], o["shape"]) for o in truth.objects}
    if m:  # a caption that names no object has no hallucination rate (it is not scored as 0, the best)
        s["hallucination"] = sum((c["colour"], c["shape"]) not in present for c in claims.objects) / m
    return s


def bootstrap_ci(values, seed: int, iters: int = BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95% CI of the mean over items (resampling items with replacement)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, len(v), size=(iters, len(v)))
    means = v[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def _summary(values, seed: int) -> dict:
    lo, hi = bootstrap_ci(values, seed)
    return {"n": len(values), "score": float(np.mean(values)) if len(values) else float("nan"), "ci95": [lo, hi]}


def score_captions(items: Items, captions: list[str]) -> dict[str, dict]:
    """Attribute accuracy over scenes (see the module docstring), each with its bootstrap CI."""
    if len(captions) != len(items.scenes):
        raise ValueError(f"{len(captions)} captions for {len(items.scenes)} scenes")
    per = [caption_scores(s, c) for s, c in zip(items.scenes, captions)]
    return {a: _summary([p[a] for p in per if a in p], items.seed) for a in CAPTION_ATTRIBUTES}


def score_vqa(items: Items, predictions: list[str]) -> dict[str, dict]:
    """Exact-match accuracy per question type and over all questions, each with its bootstrap CI."""
    if len(predictions) != len(items.questions):
        raise ValueError(f"{len(predictions)} answers for {len(items.questions)} questions")
    hits = [float(vqa_correct(q, p)) for q, p in zip(items.questions, predictions)]
    out = {t: _summary([h for q, h in zip(items.questions, hits) if q.qtype == t], items.seed) for t in QUESTION_TYPES}
    out["all"] = _summary(hits, items.seed)
    return out


# --------------------------------------------------------------------------- baselines


REFERENCE_SCENES = 500  # the majority baseline's prior: the first 500 scenes of the world's train split


@functools.cache
def reference_items(seed: int) -> Items:
    """Questions about train-split scenes (what a model could learn as a prior; never eval items)."""
    scenes = split_scenes("train", REFERENCE_SCENES)
    items = Items(n=len(scenes), seed=seed, scenes=scenes)
    for i, scene in enumerate(scenes):
        items.questions.extend(scene_questions(scene, i, np.random.default_rng([seed, i])))
    return items


def _top(values):
    return Counter(values).most_common(1)[0][0]


def majority_answers(items: Items) -> list[str]:
    """Each question answered with its type's most frequent answer over the reference (train) scenes."""
    ref = reference_items(items.seed)
    top = {t: _top(q.answer for q in ref.questions if q.qtype == t) for t in QUESTION_TYPES}
    return [top[q.qtype] for q in items.questions]


def chance_scores(items: Items) -> dict[str, dict]:
    """Expected accuracy of a uniform guess among the type's allowed answers (exact, no sampling)."""
    def mean(qs):
        return {"n": len(qs), "score": float(np.mean([1 / len(q.options) for q in qs])) if qs else float("nan"),
                "ci95": None}
    out = {t: mean([q for q in items.questions if q.qtype == t]) for t in QUESTION_TYPES}
    out["all"] = mean(items.questions)
    return out


def majority_caption(items: Items) -> str:
    """One caption for every scene: the most frequent size, colour, shape, tone and pattern of the
    reference (train) scenes."""
    scenes = reference_items(items.seed).scenes
    objs = [o for s in scenes for o in s.objects]
    claims = Claims(objects=[{"colour": _top(o.colour for o in objs), "shape": _top(o.shape for o in objs),
                              "size": _top(o.size for o in objs)}],
                    tone=_top(s.background.tone for s in scenes), pattern=_top(s.background.pattern for s in scenes))
    return canonical(claims)


def oracle_captions(items: Items) -> list[str]:
    """True captions of the item scenes, in the world's own paraphrases (`world.text.caption`)."""
    return [caption(s, np.random.default_rng([items.seed, i])) for i, s in enumerate(items.scenes)]


def baselines(items: Items) -> dict[str, dict]:
    cap = majority_caption(items)
    return {
        "majority": {"captioning": score_captions(items, [cap] * len(items.scenes)),
                     "vqa": score_vqa(items, majority_answers(items)), "caption": cap},
        "chance": {"vqa": chance_scores(items)},
    }
