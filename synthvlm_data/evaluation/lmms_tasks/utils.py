"""Functions of the synthvlm_world_vqa lmms-eval task: the world suite's own prompt and scorer."""

from synthvlm_data.evaluation.world_suite import VQA_SUFFIX, normalize_answer


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"] + VQA_SUFFIX


def process_results(doc, results):
    accepted = {normalize_answer(a) for a in doc["answers"]}
    return {"exact_match": float(normalize_answer(results[0]) in accepted)}
