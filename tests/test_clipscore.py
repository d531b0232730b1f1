"""CLIPScore against an independent open_clip computation, on real images (skimage.data).

The reference side never touches synthvlm_data.scoring: it builds the same tiny open_clip model,
a torchvision transform written out by hand (the official CLIPScore preprocessing: bicubic resize
of the short side, center crop, RGB, ToTensor, CLIP mean/std), open_clip's module-level
`tokenize`, and computes F.normalize(encode_image) . F.normalize(encode_text).
"""

from __future__ import annotations

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from synthvlm_data.models import clip
from synthvlm_data.models import tiny as tiny_models
from synthvlm_data.config import ClipScoreConfig
from synthvlm_data.errors import ModelUnavailableError
from synthvlm_data.models.preflight import check_available
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.scoring.clipscore import CLIPSCORE_W, ClipScorer, clipscore_scaled

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's normalisation (openai/CLIP clip.py)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PREFIX = "A photo depicts "

CAPTIONS = [
    "An astronaut in an orange suit next to a flag.",
    "A cup of coffee on a saucer.",
    "A cat with green eyes.",
    "A rocket on a launch pad at night.",
    "A man looking through a camera on a tripod.",
]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    arrays = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(), skimage.data.camera()]
    return [Image.fromarray(a) for a in arrays]  # camera is grayscale: the scorer must convert to RGB


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    return ClipScorer(ClipScoreConfig(model=ModelRef(id=tiny_models.TINY_CLIP), batch_size=2), device="cpu")


def reference_cosines(images, texts, token_ids=None) -> np.ndarray:
    model = tiny_models.build_tiny_open_clip(seed=0).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    pre = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.Lambda(lambda im: im.convert("RGB")),
        T.ToTensor(),
        T.Normalize(OPENAI_MEAN, OPENAI_STD),
    ])
    with torch.no_grad():
        img = F.normalize(model.encode_image(torch.stack([pre(im) for im in images])), dim=-1)
        tok = token_ids if token_ids is not None else open_clip.tokenize(texts)
        txt = F.normalize(model.encode_text(tok), dim=-1)
    return (img * txt).sum(-1).double().numpy()


def test_matches_independent_open_clip_on_real_images(scorer, images):
    got = scorer(images, CAPTIONS)
    want = reference_cosines(images, [PREFIX + c for c in CAPTIONS])
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.ptp(got) > 1e-3  # the pairs really differ: the comparison is not vacuous


def test_precision_auto_is_fp16_on_cuda_and_exact_fp32_elsewhere(scorer, images):
    """`score.clip.precision: auto` runs CLIP as the official CLIPScore code does: fp16 weights on a
    GPU (OpenAI's clip.load), fp32 on a CPU, where the scores keep their bytes (open_clip's own
    normalised embeddings, bit for bit)."""
    from synthvlm_data.models.clip import clip_precision

    assert clip_precision("auto", "cuda:3") == "fp16" and clip_precision("auto", "cpu") == "fp32"
    assert clip_precision("auto", "mps") == "fp32" and clip_precision("bf16", "cpu") == "bf16"
    assert scorer.precision == "fp32"
    model = tiny_models.build_tiny_open_clip(seed=0).eval()
    pixels = scorer.pixels(images)
    with torch.no_grad():  # in the scorer's batches of 2
        want_img = np.concatenate([model.encode_image(pixels[i : i + 2], normalize=True).numpy() for i in range(0, 5, 2)])
        tokens = scorer.tokenize(CAPTIONS)
        want_txt = np.concatenate([model.encode_text(tokens[i : i + 2], normalize=True).numpy() for i in range(0, 5, 2)])
    np.testing.assert_array_equal(scorer.encode_pixels(pixels), want_img)
    np.testing.assert_array_equal(scorer.encode_texts(CAPTIONS), want_txt)


@pytest.mark.parametrize("precision, dtype, tol", [("fp16", torch.float16, 2e-3), ("bf16", torch.bfloat16, 2e-2)])
def test_low_precision_clip_is_open_clips_mixed_precision(scorer, images, precision, dtype, tol):
    """fp16/bf16 as open_clip's factory sets them (and OpenAI's convert_weights): linear and conv
    weights in the low dtype, LayerNorm in fp32; images enter in that dtype, scores stay close."""
    low = ClipScorer(ClipScoreConfig(model=ModelRef(id=tiny_models.TINY_CLIP), batch_size=2, precision=precision),
                     device="cpu")
    v = low.model.visual
    assert v.conv1.weight.dtype == dtype and v.transformer.resblocks[0].mlp.c_fc.weight.dtype == dtype
    assert v.ln_pre.weight.dtype == torch.float32 and type(v.ln_pre).__name__ == "LayerNormFp32"
    got, want = low(images, CAPTIONS), scorer(images, CAPTIONS)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=tol)
    assert np.abs(got - want).max() > 0  # really computed in the low precision


def test_preprocessing_is_the_official_clip_transform(scorer, images):
    """open_clip's eval transform equals the hand-written official one, pixel for pixel."""
    size = tiny_models.build_tiny_open_clip(seed=0).visual.image_size[0]  # (64, 64): resize the short side
    official = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                          T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    for im in images[:3]:
        torch.testing.assert_close(scorer.preprocess(im.convert("RGB")), official(im.convert("RGB")), atol=1e-6, rtol=0)


def test_prefix_is_applied(images):
    with_prefix = ClipScorer(ClipScoreConfig(model=ModelRef(id=tiny_models.TINY_CLIP)), device="cpu")
    no_prefix = ClipScorer(ClipScoreConfig(model=ModelRef(id=tiny_models.TINY_CLIP), text_prefix=""), device="cpu")
    a = with_prefix(images[:3], CAPTIONS[:3])
    # Without the prefix the scores change ...
    assert not np.allclose(a, no_prefix(images[:3], CAPTIONS[:3]), atol=1e-4)
    # ... and writing the prefix into the caption by hand gives the default's scores exactly.
    np.testing.assert_allclose(a, no_prefix(images[:3], [PREFIX + c for c in CAPTIONS[:3]]), atol=1e-7)


def test_long_caption_is_truncated_to_77_tokens(scorer, images):
    long = " ".join(["a very long caption about a small red boat on a calm blue lake"] * 30)  # ~400 tokens
    tail_a, tail_b = long + " with a dog", long + " under heavy snow and thunder"
    got = scorer([images[0], images[0]], [tail_a, tail_b])
    assert np.isfinite(got).all()
    assert got[0] == got[1]  # everything after token 76 is cut off
    # Same as scoring the explicitly truncated token sequence: <sot> + first 75 BPE tokens + <eot>.
    tok = open_clip.tokenizer._tokenizer
    ids = [tok.sot_token_id, *tok.encode(PREFIX + tail_a)[:75], tok.eot_token_id]
    assert len(ids) == 77
    token_ids = torch.tensor([ids])
    want = reference_cosines([images[0]], None, token_ids=token_ids)
    np.testing.assert_allclose(got[:1], want, atol=1e-6)
    assert scorer.tokenize([tail_a]).shape == (1, 77)
    # A caption that fits scores differently from its truncated long version (the test can fail).
    assert not np.isclose(scorer([images[0]], ["a small red boat"])[0], got[0], atol=1e-5)


def test_batching_and_repeated_captions_do_not_change_scores(images):
    """k images of one caption: every pair is scored, independent of batch size."""
    caps = [CAPTIONS[0]] * 3 + [CAPTIONS[1]] * 2
    imgs = [images[0], images[1], images[2], images[1], images[3]]
    one = ClipScorer(ClipScoreConfig(model=ModelRef(id=tiny_models.TINY_CLIP), batch_size=1), device="cpu")(imgs, caps)
    many = ClipScorer(ClipScoreConfig(model=ModelRef(id=tiny_models.TINY_CLIP), batch_size=64), device="cpu")(imgs, caps)
    np.testing.assert_allclose(one, many, atol=1e-6)
    np.testing.assert_allclose(many, reference_cosines(imgs, [PREFIX + c for c in caps]), atol=1e-6)
    assert len(set(np.round(many, 6))) == 5  # five distinct pairs, five distinct scores


def test_mismatched_lengths_and_empty_input(scorer, images):
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        scorer(images[:2], CAPTIONS[:1])
    assert scorer([], []).shape == (0,)


def test_clipscore_scaled():
    cos = np.array([-0.3, 0.0, 0.1, 0.36, 1.0])
    np.testing.assert_allclose(clipscore_scaled(cos), [0.0, 0.0, 0.25, 0.9, 2.5])
    assert CLIPSCORE_W == 2.5


def test_score_stage_scores_every_image_of_every_caption(tiny_build, scorer):
    """The build's score shards hold one row per generated image, with the scorer's value."""
    from synthvlm_data.columns import decode_image

    work = tiny_build.work_dir
    for gen_path in sorted((work / "generate").glob("*.parquet")):
        gen = pq.read_table(gen_path, columns=["id", "repeat", "image"])
        score = pq.read_table(work / "score" / gen_path.name.replace("generate", "score", 1))
        caps = pq.read_table(work / "captions" / gen_path.name.replace("generate", "captions", 1), columns=["id", "caption"])
        assert list(zip(score["id"].to_pylist(), score["repeat"].to_pylist(), strict=True)) == list(
            zip(gen["id"].to_pylist(), gen["repeat"].to_pylist(), strict=True)
        )
        k = tiny_build.stats["images_generated"] // tiny_build.stats["captions_out"]
        assert k == 2 and gen.num_rows == k * caps.num_rows
        caption_of = dict(zip(caps["id"].to_pylist(), caps["caption"].to_pylist(), strict=True))
        images = [decode_image(b) for b in gen["image"].to_pylist()]
        again = scorer(images, [caption_of[i] for i in gen["id"].to_pylist()])
        np.testing.assert_allclose(score["clip_score"].to_numpy(), again, atol=1e-6)


# --------------------------------------------------------------------------- full scale


def test_full_scale_model_fails_with_one_clear_line():
    """ViT-B-32/openai has no weights here: ModelUnavailableError names it and what to do."""
    ref = ModelRef(id="ViT-B-32", revision="openai")
    for call in (lambda: check_available(ref, "score.clip.model"), lambda: clip.load_clip_scorer(ref, "cpu")):
        with pytest.raises(ModelUnavailableError) as exc:
            call()
        msg = str(exc.value)
        assert "\n" not in msg and "ViT-B-32" in msg and "`--recipe tiny`" in msg


def test_architecture_without_pretrained_tag_is_refused():
    with pytest.raises(ModelUnavailableError, match="needs its pretrained tag"):
        clip.load_clip_scorer(ModelRef(id="ViT-B-32"), "cpu")


def test_full_scale_uses_create_model_and_transforms_with_official_preprocessing(monkeypatch, images):
    """The full-scale path asks open_clip for (arch, pretrained=tag) and scores with the eval
    transform it returns (the third value), not the training one."""
    calls = {}
    real_get_tokenizer = open_clip.get_tokenizer
    tiny = tiny_models.build_tiny_open_clip(seed=0)
    eval_tf = open_clip.image_transform(64, is_train=False)

    def fake_create(name, pretrained=None, **kw):
        calls["create"] = (name, pretrained, kw)
        return tiny, "TRAIN-TRANSFORM-MUST-NOT-BE-USED", eval_tf

    def fake_tokenizer(name, **kw):
        calls["tokenizer"] = name
        return real_get_tokenizer("ViT-B-32")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    monkeypatch.setattr(open_clip, "get_tokenizer", fake_tokenizer)
    s = ClipScorer(ClipScoreConfig(), device="cpu")  # default: ViT-B-32 / openai
    assert calls["create"] == ("ViT-B-32", "openai", {"force_quick_gelu": True, "weights_only": True,
                                                       "precision": "fp32"})  # auto on a CPU
    assert calls["tokenizer"] == "ViT-B-32"
    assert s.preprocess is eval_tf
    np.testing.assert_allclose(s(images[:2], CAPTIONS[:2]), reference_cosines(images[:2], [PREFIX + c for c in CAPTIONS[:2]]), atol=1e-6)
    ClipScorer(ClipScoreConfig(precision="bf16"), device="cpu")
    assert calls["create"][2]["precision"] == "bf16"  # open_clip sets the weights' dtypes itself


def test_open_clip_names_for_hub_and_local_models(tmp_path):
    assert clip.open_clip_name(ModelRef(id="ViT-L-14", revision="laion2b_s32b_b82k")) == ("ViT-L-14", "laion2b_s32b_b82k")
    assert clip.open_clip_name(ModelRef(id="laion/CLIP-ViT-B-32-laion2B-s34B-b79K")) == ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)
    assert clip.open_clip_name(ModelRef(id=str(tmp_path))) == (f"local-dir:{tmp_path}", None)


# --------------------------------------------------------------------------- activation per pretrained tag


def _activations(model) -> tuple[bool, bool]:
    """(has QuickGELU, has GELU) among the model's modules."""
    from open_clip.transformer import QuickGELU

    mods = list(model.modules())
    return any(isinstance(m, QuickGELU) for m in mods), any(type(m) is torch.nn.GELU for m in mods)


def shipped_open_clip_models() -> list[tuple[str, str | None]]:
    """Every (open_clip architecture, pretrained tag) any shipped recipe names, anywhere in it."""
    from synthvlm_data.config import load_recipe, shipped_recipes

    found: set = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("id"), str) and clip.is_open_clip_arch(node["id"]):
                found.add((node["id"], node.get("revision")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in shipped_recipes():
        walk(load_recipe(name).model_dump(mode="json"))
    return sorted(found)


def test_activation_of_every_shipped_open_clip_model_is_the_one_its_tag_declares():
    """OpenAI's CLIP weights were trained with QuickGELU; open_clip's `ViT-B-32` config is GELU and
    only warns when they are loaded into it. The model built for each (architecture, tag) of the
    shipped recipes (real size, meta device, no weights) has QuickGELU iff the tag declares it."""
    shipped = shipped_open_clip_models()
    assert ("ViT-B-32", "openai") in shipped  # the paper's scorer and caption filter: not vacuous
    for arch, tag in shipped:
        declared = open_clip.get_pretrained_cfg(arch, tag or "")
        assert declared, f"{arch}/{tag}: not an open_clip pretrained tag"
        model = clip.build_open_clip_architecture(ModelRef(id=arch, revision=tag))
        assert next(model.parameters()).device.type == "meta"
        quick, gelu = _activations(model)
        assert (quick, gelu) == (bool(declared.get("quick_gelu")), not declared.get("quick_gelu")), (arch, tag)


def test_activation_follows_the_tag_both_ways():
    """A GELU-trained tag keeps GELU, a `-quickgelu` config is not forced twice, and the real size
    is built (ViT-B/32: 151.3 M parameters)."""
    laion = clip.build_open_clip_architecture(ModelRef(id="ViT-B-32", revision="laion2b_s34b_b79k"))
    assert _activations(laion) == (False, True) and not clip.open_clip_spec(ModelRef(id="ViT-B-32", revision="laion2b_s34b_b79k")).get("force_quick_gelu")
    spec = clip.open_clip_spec(ModelRef(id="ViT-B-32-quickgelu", revision="openai"))
    assert spec == {"model_name": "ViT-B-32-quickgelu", "pretrained": "openai"}
    openai = clip.build_open_clip_architecture(ModelRef(id="ViT-B-32", revision="openai"))
    assert _activations(openai) == (True, False)
    assert sum(p.numel() for p in openai.parameters()) == 151_277_313


def test_openai_scorer_load_path_builds_quickgelu_and_clipscore_preprocessing(monkeypatch, images):
    """`load_clip_scorer(ViT-B-32/openai)` through open_clip's own factory, with only the weight
    download stubbed out: the model has QuickGELU, and its eval transform equals the anchor's
    (jmhessel/clipscore `_transform_test(224)`: bicubic resize, center crop, RGB, CLIP mean/std)."""
    import open_clip.factory

    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: "")  # no weights, no network
    model, preprocess, tokenizer = clip.load_clip_scorer(ModelRef(id="ViT-B-32", revision="openai"), "cpu")
    assert _activations(model) == (True, False)
    anchor = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                        T.Lambda(lambda im: im.convert("RGB")), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    for im in images:
        torch.testing.assert_close(preprocess(im.convert("RGB")), anchor(im), atol=1e-6, rtol=0)
    # clip.tokenize(prefix + caption, truncate=True): 77 ids, <sot> ... <eot>
    tok = open_clip.tokenizer._tokenizer
    ids = tokenizer([PREFIX + CAPTIONS[0]])[0].tolist()
    body = tok.encode(PREFIX + CAPTIONS[0])
    assert ids[: len(body) + 2] == [tok.sot_token_id, *body, tok.eot_token_id] and len(ids) == 77
