"""The world's questions: the prompts a LLaVA model is asked about a scene, and the questions each
scene allows with their true answers. Shared by the evaluation suite (`evaluation.world_suite`),
which scores answers, and the world's own LM (`world.lm`), which is trained on the same prompts.
No torch at import."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from synthvlm_data.world.scene import COLOURS, INVERSE, SHAPES, SIZES, TONES, Scene

CAPTION_PROMPT = "Describe the image concisely."  # BRIEF_CAPTION_PROMPTS[0], what stage 1 trains on
VQA_SUFFIX = "\nAnswer the question using a single word or phrase."  # LLaVA-1.5 / lmms-eval short answers
QUESTION_TYPES = ("colour", "shape", "size", "relation", "count", "background")
_REL_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_SYNONYMS = {"grey": ["grey", "gray"]}


@dataclass(frozen=True)
class Question:
    id: str
    scene_index: int
    qtype: str
    question: str
    answers: tuple[str, ...]  # accepted answers; answers[0] is the canonical one
    options: tuple[str, ...]  # every answer the question type allows (for the chance baseline)

    @property
    def answer(self) -> str:
        return self.answers[0]

    @property
    def prompt(self) -> str:
        return self.question + VQA_SUFFIX


def _name(obj) -> str:
    return f"{obj.colour} {obj.shape}"


def scene_questions(scene: Scene, index: int, rng: np.random.Generator) -> list[Question]:
    objs = scene.objects
    out: list[Question] = []

    def add(qtype: str, text: str, answer: str, options) -> None:
        out.append(Question(id=f"{index:05d}-{qtype}", scene_index=index, qtype=qtype, question=text,
                            answers=tuple(_SYNONYMS.get(answer, [answer])), options=tuple(options)))

    shapes, colours = Counter(o.shape for o in objs), Counter(o.colour for o in objs)
    unique_shape = [o for o in objs if shapes[o.shape] == 1]
    if unique_shape:
        o = unique_shape[int(rng.integers(len(unique_shape)))]
        add("colour", f"What colour is the {o.shape}?", o.colour, COLOURS)
    unique_colour = [o for o in objs if colours[o.colour] == 1]
    if unique_colour:
        o = unique_colour[int(rng.integers(len(unique_colour)))]
        add("shape", f"What shape is the {o.colour} object?", o.shape, SHAPES)
    o = objs[int(rng.integers(len(objs)))]
    add("size", f"Is the {_name(o)} small or large?", o.size, SIZES)
    if len(objs) > 1:
        i, j = (int(k) for k in rng.choice(len(objs), size=2, replace=False))
        true_rel = scene.relation(i, j)
        asked = true_rel if rng.random() < 0.5 else INVERSE[true_rel]
        add("relation", f"Is the {_name(objs[i])} {_REL_PHRASE[asked]} the {_name(objs[j])}?",
            "yes" if asked == true_rel else "no", ("yes", "no"))
    add("count", "How many objects are there?", str(len(objs)), ("1", "2", "3"))
    add("background", "Is the background light, grey or dark?", scene.background.tone, TONES)
    return out
