"""Model registry: every model a stage uses is resolved here, never hard-coded in stage code.

A `ModelRef.id` is one of
- a Hub id (`stabilityai/stable-diffusion-xl-base-1.0`) with an optional pinned `revision`,
- a local directory (a diffusers/transformers/open_clip checkpoint saved with safetensors),
- `tiny:<name>`: the *real* library class (diffusers UNet/VAE, transformers CLIP text encoders,
  open_clip CLIP) built from a tiny config with seeded random weights. These run offline on a CPU
  in seconds and exercise the same code paths as the full-scale models; their outputs demonstrate
  the machinery, not quality.

Full-scale models that cannot be loaded (no network, no cache, gated repo) raise
`ModelUnavailableError` naming the model and what to do, before any stage starts (`preflight`).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from synthvlm_data.errors import ModelUnavailableError, one_line
from synthvlm_data.schema import ModelRef

TINY_SDXL_BASE = "tiny:sdxl-base"
TINY_SDXL_REFINER = "tiny:sdxl-refiner"
TINY_SD3 = "tiny:sd3"
TINY_CLIP = "tiny:clip"
TINY_IDS = (TINY_SDXL_BASE, TINY_SDXL_REFINER, TINY_SD3, TINY_CLIP)

# open_clip architecture names are not Hub ids: `ViT-B-32` + pretrained tag `openai`.
_OPEN_CLIP_ARCH_PREFIXES = ("ViT-", "RN", "convnext", "EVA", "coca", "xlm", "roberta", "mt5")

OFFLINE_HINT = "use RECIPE=tiny (`--recipe tiny`) to run offline, or point the recipe at a local model directory"


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for building weights without leaking RNG state to the caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def resolve_device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def effective_dtype(dtype: str, device: str) -> torch.dtype:
    """fp16 on a CPU is slow and partly unsupported: CPU runs compute in float32."""
    return torch.float32 if device == "cpu" else torch_dtype(dtype)


# --------------------------------------------------------------------------- preflight


def _is_open_clip_arch(model_id: str) -> bool:
    return model_id.startswith(_OPEN_CLIP_ARCH_PREFIXES) and "/" not in model_id


def check_available(ref: ModelRef, role: str) -> None:
    """Fail early, with one clear line, if `ref` cannot be loaded here.

    Tiny builders and local directories are always available. A Hub id must be in the local
    cache or reachable; we ask the Hub for the repo's metadata only (no weights are downloaded).
    """
    if ref.is_tiny:
        if ref.id not in TINY_IDS:
            raise ModelUnavailableError(f"{role}: unknown tiny model '{ref.id}' (known: {', '.join(TINY_IDS)})")
        return
    if Path(ref.id).expanduser().is_dir():
        return
    if ref.id.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"{role}: local model directory {ref.id} does not exist")
    if _is_open_clip_arch(ref.id):
        _check_open_clip_pretrained(ref, role)
        return
    _check_hub_repo(ref.id, ref.revision, role)


def _check_hub_repo(repo_id: str, revision: str | None, role: str) -> None:
    from huggingface_hub import HfApi, snapshot_download

    with contextlib.suppress(Exception):
        snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=["*.json"])
        return
    what = f"{role} '{repo_id}'" + (f" (revision {revision})" if revision else "")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise ModelUnavailableError(f"cannot load {what}: HF_HUB_OFFLINE is set and it is not in the local cache; {OFFLINE_HINT}")
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=10)
    except Exception as err:  # network errors, 401/403 (gated), 404 all mean the same to the user
        reason = type(err).__name__
        raise ModelUnavailableError(
            f"cannot load {what}: the Hugging Face Hub is unreachable or refused it ({reason}); {OFFLINE_HINT}"
        ) from None


def _check_open_clip_pretrained(ref: ModelRef, role: str) -> None:
    import open_clip

    tag = ref.revision or ""
    if ref.id not in open_clip.list_models():
        raise ModelUnavailableError(f"{role}: unknown open_clip architecture '{ref.id}'")
    cfg = open_clip.get_pretrained_cfg(ref.id, tag)
    if not cfg:
        raise ModelUnavailableError(f"{role}: open_clip has no pretrained tag '{tag}' for '{ref.id}'")
    hub_id = cfg.get("hf_hub", "").rstrip("/")
    if hub_id:
        _check_hub_repo(hub_id, None, f"{role} ({ref.id}/{tag})")
    else:
        raise ModelUnavailableError(f"cannot load {role} model '{ref.id}/{tag}': its weights need a download; {OFFLINE_HINT}")


# --------------------------------------------------------------------------- tokenizer


@lru_cache(maxsize=1)
def clip_tokenizer_dir() -> str:
    """A transformers CLIPTokenizer (vocab.json + merges.txt) derived from open_clip's BPE file.

    open_clip ships the real CLIP vocabulary (`bpe_simple_vocab_16e6.txt.gz`); converting it the
    way open_clip's SimpleTokenizer reads it yields ids identical to the original CLIP tokenizer,
    with no download. Written once per process to a temp dir.
    """
    from open_clip.tokenizer import bytes_to_unicode

    bpe = resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(tempfile.mkdtemp(prefix="synthvlm-clip-tok-"))
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return str(out)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(clip_tokenizer_dir(), pad_token=pad_token, model_max_length=77)


# --------------------------------------------------------------------------- tiny diffusion


def _tiny_text_config(projection: bool):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=32,
    )


def _tiny_unet(cross_attention_dim: int, time_ids: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        # SDXL adds time ids to the pooled text embedding: 6 for the base (sizes and crop),
        # 5 for the refiner (aesthetic score instead of target size); 8 dims each + 32 pooled.
        projection_class_embeddings_input_dim=time_ids * 8 + 32,
        cross_attention_dim=cross_attention_dim,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=128,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # SDXL's scheduler settings (scheduler_config.json of stable-diffusion-xl-base-1.0).
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_tiny_sdxl(seed: int = 0):
    """Tiny StableDiffusionXLPipeline + StableDiffusionXLImg2ImgPipeline refiner (shared VAE and
    second text encoder, as in the diffusers SDXL docs)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with seeded(seed):
        unet = _tiny_unet(cross_attention_dim=64, time_ids=6)
        vae = _tiny_vae()
        text_encoder = CLIPTextModel(_tiny_text_config(projection=False))
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config(projection=True))
        refiner_unet = _tiny_unet(cross_attention_dim=32, time_ids=5)
    tok = clip_tokenizer()
    base = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tok,
        tokenizer_2=clip_tokenizer(pad_token="!"),  # SDXL's tokenizer_2 pads with "!"
        unet=unet,
        scheduler=_scheduler(),
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=base.tokenizer_2,
        unet=refiner_unet,
        scheduler=_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    return base, refiner


def _tiny_t5():
    """A real transformers `T5Tokenizer` (Unigram, from a vocab list) + `T5EncoderModel`.

    No T5 vocabulary ships offline, so the tokenizer's vocab is T5's special tokens plus
    characters and word-start characters: every caption tokenizes (character by character),
    which is all a random-weight encoder needs.
    """
    import string

    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("\u2581" + c, -4.0) for c in string.ascii_letters + string.digits]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    encoder = T5EncoderModel(
        T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, decoder_start_token_id=0)
    )
    return tokenizer, encoder


def build_tiny_sd3(seed: int = 0):
    """Tiny StableDiffusion3Pipeline: SD3Transformer2DModel (MMDiT), two CLIP text encoders with
    projection, a T5 encoder, a VAE with SD3's scaling/shift factors and the flow-matching
    scheduler (sizes from diffusers' own SD3 fast tests)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    with seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=32, patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
            pooled_projection_dim=64,  # the two CLIP projections (32 + 32), concatenated
        )
        text_encoder = CLIPTextModelWithProjection(_tiny_text_config(projection=True))
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config(projection=True))
        tokenizer_3, text_encoder_3 = _tiny_t5()
        vae = AutoencoderKL(
            block_out_channels=[32, 64], in_channels=3, out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=128,
            shift_factor=0.0609, scaling_factor=1.5035,  # SD3's VAE normalisation (values of diffusers' tests)
            use_quant_conv=False, use_post_quant_conv=False,
        )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3-medium's scheduler_config.json
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def _tiny_generator(gen_cfg):
    """(pipeline, refiner) for a `tiny:` generator, checked against the recipe's pipeline family."""
    model_id = gen_cfg.model.id
    families = {TINY_SDXL_BASE: "sdxl", TINY_SD3: "sd3"}
    if model_id not in families:
        raise ModelUnavailableError(
            f"generate.model: '{model_id}' is not a tiny generator (known: {TINY_SDXL_BASE}, {TINY_SD3})"
        )
    if gen_cfg.pipeline not in (families[model_id], "auto"):
        raise ModelUnavailableError(
            f"generate.model: '{model_id}' is a tiny {families[model_id]} model but generate.pipeline is '{gen_cfg.pipeline}'"
        )
    if model_id == TINY_SD3:
        return build_tiny_sd3(seed=0), None
    base, refiner = build_tiny_sdxl(seed=0)
    if gen_cfg.refiner is None:
        return base, None
    if gen_cfg.refiner.id != TINY_SDXL_REFINER:
        raise ModelUnavailableError(f"generate.refiner: tiny base needs '{TINY_SDXL_REFINER}', got '{gen_cfg.refiner.id}'")
    return base, refiner


# --------------------------------------------------------------------------- full-scale diffusion


def _from_pretrained(cls, ref: ModelRef, role: str, **kwargs):
    try:
        return cls.from_pretrained(ref.id, revision=ref.revision, use_safetensors=True, **kwargs)
    except Exception as err:
        raise ModelUnavailableError(
            f"cannot load {role} model '{ref.id}': {one_line(err, 200)}; {OFFLINE_HINT}"
        ) from None


def load_generator(gen_cfg, device: str):
    """Return (pipeline, refiner_or_None) for a GenerateConfig."""
    dtype = effective_dtype(gen_cfg.dtype, device)
    if gen_cfg.model.is_tiny:
        base, refiner = _tiny_generator(gen_cfg)
    else:
        from diffusers import AutoPipelineForText2Image, StableDiffusion3Pipeline, StableDiffusionXLPipeline

        cls = {"sdxl": StableDiffusionXLPipeline, "sd3": StableDiffusion3Pipeline, "auto": AutoPipelineForText2Image}[gen_cfg.pipeline]
        base = _from_pretrained(cls, gen_cfg.model, "generate.model", dtype=dtype)
        refiner = None
        if gen_cfg.refiner is not None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            refiner = _from_pretrained(
                StableDiffusionXLImg2ImgPipeline,
                gen_cfg.refiner,
                "generate.refiner",
                dtype=dtype,
                text_encoder_2=base.text_encoder_2,
                vae=base.vae,
            )
    for pipe in (base, refiner):
        if pipe is not None:
            pipe.to(device)  # dtype is set at load (from_pretrained dtype; tiny builds are fp32)
            pipe.set_progress_bar_config(disable=True)
            for component in pipe.components.values():
                if isinstance(component, torch.nn.Module):
                    component.eval()  # modules built from configs start in train mode (T5 dropout 0.1)
    return base, refiner


def load_vae(gen_cfg, device: str):
    """The generator's VAE alone (for decoding stored latents without loading the denoiser).

    Tiny generators are rebuilt (cheap; same seed, same weights); full-scale ones load only the
    `vae` subfolder of the model, with the class its config names (`diffusers.AutoModel`).
    """
    if gen_cfg.model.is_tiny:
        pipe, _ = _tiny_generator(gen_cfg.model_copy(update={"refiner": None}))
        vae = pipe.vae
    else:
        from diffusers import AutoModel

        vae = _from_pretrained(
            AutoModel, gen_cfg.model, "generate.model (vae)", subfolder="vae",
            dtype=effective_dtype(gen_cfg.dtype, device),
        )
    return vae.to(device).eval()


def generator_family(gen_cfg) -> str:
    """`sdxl`, `sd3` or `auto` (anything else): what decides how a pipeline decodes its latents.

    `pipeline: auto` names no family, so the model's `model_index.json` says which pipeline class
    it is (SDXL decodes fp16 VAEs upcast to fp32 and watermarks: a decode of stored latents must
    do the same to reproduce pixel mode).
    """
    if gen_cfg.pipeline != "auto":
        return gen_cfg.pipeline
    if gen_cfg.model.is_tiny:
        return "sd3" if gen_cfg.model.id == TINY_SD3 else "sdxl"
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(gen_cfg.model.id, revision=gen_cfg.model.revision)
    except Exception as err:
        raise ModelUnavailableError(
            f"cannot read generate.model '{gen_cfg.model.id}' (model_index.json): {type(err).__name__}; {OFFLINE_HINT}"
        ) from None
    name = str(index.get("_class_name", ""))
    return "sdxl" if "StableDiffusionXL" in name else "sd3" if "StableDiffusion3" in name else "auto"


# --------------------------------------------------------------------------- CLIP scorer


def build_tiny_open_clip(seed: int = 0):
    """A real open_clip `CLIP` (ViT image tower + text transformer) from a tiny config."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with seeded(seed):
        model = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        )
    return model


def open_clip_name(ref: ModelRef) -> tuple[str, str | None]:
    """(model_name, pretrained) for `open_clip.create_model_and_transforms`.

    `ViT-B-32` + revision `openai` -> ("ViT-B-32", "openai") (architecture + pretrained tag, as the
    official SynthVLM code loads CLIP ViT-B/32); a local directory -> "local-dir:<path>"; any other
    id -> "hf-hub:<id>" (an open_clip checkpoint on the Hub).
    """
    if _is_open_clip_arch(ref.id):
        if not ref.revision:
            # open_clip would silently build random weights without a pretrained tag.
            raise ModelUnavailableError(
                f"score.clip.model: open_clip architecture '{ref.id}' needs its pretrained tag in `revision` "
                "(e.g. {id: ViT-B-32, revision: openai})"
            )
        return ref.id, ref.revision
    if Path(ref.id).expanduser().is_dir():
        return "local-dir:" + str(Path(ref.id).expanduser()), None
    return (ref.id if ref.id.startswith("hf-hub:") else "hf-hub:" + ref.id), None


def load_clip_scorer(ref: ModelRef, device: str):
    """Return (model, preprocess, tokenizer) with open_clip's official eval preprocessing."""
    import open_clip

    if ref.id == TINY_CLIP:
        model = build_tiny_open_clip(seed=0)
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the real CLIP BPE, 77 tokens
    elif ref.is_tiny:
        raise ModelUnavailableError(f"score.clip.model: unknown tiny model '{ref.id}' (known: {TINY_CLIP})")
    else:
        name, pretrained = open_clip_name(ref)
        try:
            # The third return value is the eval transform (resize + center crop + normalise with
            # the checkpoint's mean/std and interpolation): the official CLIPScore preprocessing.
            # open_clip takes a checkpoint's .safetensors when the repo has one, and its torch.load
            # fallback is pinned to weights_only=True: tensors only, never arbitrary pickled objects.
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, weights_only=True)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:
            what = f"'{ref.id}'" + (f" (pretrained '{ref.revision}')" if ref.revision else "")
            raise ModelUnavailableError(
                f"cannot load score.clip model {what}: {one_line(err)}; {OFFLINE_HINT}"
            ) from None
    model.eval().to(device)
    return model, preprocess, tokenizer
