"""The offline `tiny:` builders: the real library classes from tiny configs, seeded random weights.

No CLIP or diffusion weights install offline, so `tiny` recipes and configs build the real classes
(diffusers SDXL / SD3 pipelines, an open_clip `CLIP`, a transformers `CLIPVisionModel`) from tiny
configs. They run on a CPU in seconds and exercise the same code paths as the full-scale models;
their outputs demonstrate the machinery, not quality. The transformers `CLIPTokenizer` they use is
derived from the real CLIP vocabulary open_clip ships, so ids match open_clip's tokenizer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

from synthvlm_data.models.devices import seeded
from synthvlm_data.models.families import TINY_SD3, TINY_SDXL_BASE, TINY_SDXL_REFINER

TINY_CLIP = "tiny:clip"
TINY_VISION_TOWER = "tiny:clip-vit"
TINY_LATENT_TOWER = "tiny:latent-vit"  # the same ViT over VAE latents (Synth^2), see latent_vision_config
# Every tiny builder and what it builds (a recipe or config may name only these).
TINY_MODELS = {
    TINY_SDXL_BASE: "SDXL base pipeline",
    TINY_SDXL_REFINER: "SDXL refiner pipeline",
    TINY_SD3: "SD3 pipeline",
    TINY_CLIP: "open_clip CLIP",
    TINY_VISION_TOWER: "CLIP vision tower (LLaVA)",
}


# --------------------------------------------------------------------------- tokenizer


@lru_cache(maxsize=1)
def clip_tokenizer_dir() -> str:
    """A transformers CLIPTokenizer (vocab.json + merges.txt) derived from open_clip's BPE file.

    open_clip ships the real CLIP vocabulary (`bpe_simple_vocab_16e6.txt.gz`); converting it the
    way open_clip's SimpleTokenizer reads it yields ids identical to the original CLIP tokenizer,
    with no download. Written once into the package's cache folder, keyed by the BPE file's bytes
    (a temp folder per process would be left behind by every process).
    """
    from open_clip.tokenizer import bytes_to_unicode

    from synthvlm_data.models.refs import cache_dir

    raw = (resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    out = cache_dir() / "clip-tokenizer" / hashlib.sha256(raw).hexdigest()[:12]
    if (out / "merges.txt").is_file():
        return str(out)
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                        encoding="utf-8")
        with contextlib.suppress(OSError):  # another process won the race: its copy is the same bytes
            os.replace(tmp, out)  # onto a missing or empty folder only: a non-empty one is never replaced
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (out / "merges.txt").is_file():
        from synthvlm_data.errors import ModelUnavailableError

        raise ModelUnavailableError(f"the CLIP tokenizer cache {out} exists but holds no merges.txt: move it away "
                                    "(it is rebuilt on the next run)")
    return str(out)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(clip_tokenizer_dir(), pad_token=pad_token, model_max_length=77)


# --------------------------------------------------------------------------- diffusion


def _tiny_text_config():
    """The tiny CLIP text config of every tiny text encoder (CLIPTextModel ignores projection_dim)."""
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
        text_encoder = CLIPTextModel(_tiny_text_config())
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config())
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
        text_encoder = CLIPTextModelWithProjection(_tiny_text_config())
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config())
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


# --------------------------------------------------------------------------- open_clip


def build_tiny_open_clip(seed: int = 0, precision: str = "fp32"):
    """A real open_clip `CLIP` (ViT image tower + text transformer) from a tiny config, its weights
    in `precision` as open_clip's factory sets them (fp16/bf16: LayerNorm in fp32)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp, get_cast_dtype

    with seeded(seed):
        model = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
            cast_dtype=get_cast_dtype(precision),
        )
    if precision in ("fp16", "bf16"):
        convert_weights_to_lp(model, dtype=get_cast_dtype(precision))
    return model


# --------------------------------------------------------------------------- LLaVA vision tower


def tiny_vision_config():
    """CLIP-ViT shaped like the real one, scaled down: 64 px, 16 px patches -> 16 image tokens."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=64, patch_size=16, hidden_size=64, intermediate_size=256,
        num_hidden_layers=3, num_attention_heads=4, projection_dim=64, hidden_act="quick_gelu",
    )


def build_tiny_vision_tower(seed: int = 0):
    """A real transformers `CLIPVisionModel` from `tiny_vision_config`, seeded random weights."""
    from transformers import CLIPVisionModel

    with seeded(seed):
        return CLIPVisionModel(tiny_vision_config())


def latent_vision_config(channels: int, size: int, patch_size: int):
    """`tiny_vision_config` reading VAE latents: the patch embedding (a conv) takes `channels` latent
    channels over a `size` x `size` latent, `patch_size` latent pixels per token."""
    config = tiny_vision_config()
    config.num_channels, config.image_size, config.patch_size = channels, size, patch_size
    return config


def build_latent_vision_tower(channels: int, size: int, patch_size: int, seed: int = 0):
    """A real transformers `CLIPVisionModel` from `latent_vision_config`, seeded random weights."""
    from transformers import CLIPVisionModel

    with seeded(seed):
        return CLIPVisionModel(latent_vision_config(channels, size, patch_size))
