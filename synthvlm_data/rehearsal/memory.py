"""Memory plans per GPU: LLaVA training under DeepSpeed ZeRO, and SDXL / SD3 generation.

Training (bytes per GPU; Psi = all parameters, Psi_t = trainable ones, N = GPUs):
- Mixed-precision Adam keeps 16 bytes per trainable parameter (ZeRO paper, Rajbhandari et al. 2020,
  section 3.1): 2 (bf16 weights) + 2 (bf16 gradients) + 12 (fp32 master weights, momentum and
  variance, K = 12). Frozen parameters keep their 2 bf16 bytes only.
- ZeRO partitions over the N data-parallel ranks: stage 1 the optimizer states (12 Psi_t / N),
  stage 2 also the gradients (2 Psi_t / N), stage 3 also the weights (2 Psi / N).
- Activations of a Llama decoder layer, counted from the tensors autograd keeps for backward in
  transformers' `LlamaDecoderLayer` (bf16; SDPA/flash attention stores no s x s score matrix):
  per token 22 h + 6 h_kv + 8 i bytes (two RMSNorms with their fp32 upcast 2 x 6h; q/k/v input and
  outputs 2h + 2h + 4 h_kv; rotated q/k 2h + 2 h_kv; attention output 2h; MLP input 2h; gate, up,
  silu(gate) and their product 8i). Without checkpointing all L layers keep theirs; with gradient
  checkpointing each layer keeps its input (2 h per token) and one layer is recomputed at a time.
  The frozen vision tower runs without autograd state (its inputs and weights need no gradient).
- Logits: b s V x 10 bytes (bf16 logits, the fp32 copy the loss takes, its fp32 gradient).
- A plan "fits" a card when the total is at most 90% of it: the CUDA context, NCCL buffers and the
  allocator's fragmentation take the rest.

Generation (fp16 weights; inference, no autograd state): the denoiser's working set at batch B with
classifier-free guidance (2B samples: the skip tensors of the down path plus the largest GEGLU
activation) is small; the peak is the VAE decode, upcast to fp32 (SDXL's `force_upcast`), about
three fp32 feature maps of the decoder's widest full-resolution layer (256 channels at H x W) per
image decoded at once: the whole batch, or one image with `vae.enable_slicing()`. These are
estimates from shapes; `bench/gpu_rehearsal.py` measures the real peaks on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
CARDS_GB = (24, 40, 80)
USABLE = 0.9  # share of a card a plan may use (see the module docstring)

ADAM_BYTES = {"weights": 2, "grads": 2, "optimizer": 12}  # ZeRO paper, mixed-precision Adam: 16 bytes/param
LOGIT_BYTES = 10


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    kv_hidden: int  # num_key_value_heads x head_dim (= hidden without grouped-query attention)
    intermediate: int
    layers: int
    vocab: int


@dataclass(frozen=True)
class TrainPlan:
    """Bytes per GPU, by kind."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits


def layer_activation_bytes_per_token(shape: LlamaShape) -> int:
    """Bytes one decoder layer keeps for backward per token (see the module docstring)."""
    return 22 * shape.hidden + 6 * shape.kv_hidden + 8 * shape.intermediate


def activation_bytes(shape: LlamaShape, tokens: int, checkpointing: bool) -> int:
    """Activations kept for the backward pass of `tokens` = micro-batch x sequence length."""
    per_layer = layer_activation_bytes_per_token(shape) * tokens
    if not checkpointing:
        return shape.layers * per_layer
    return shape.layers * 2 * shape.hidden * tokens + per_layer


def training_plan(*, total_params: int, trainable_params: int, shape: LlamaShape, micro_batch: int, seq_len: int,
                  zero_stage: int, n_gpus: int, checkpointing: bool) -> TrainPlan:
    """Per-GPU memory of one training configuration under ZeRO stage 0-3 over `n_gpus` ranks."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage}")
    n = max(1, n_gpus)
    weights = ADAM_BYTES["weights"] * total_params / (n if zero_stage >= 3 else 1)
    grads = ADAM_BYTES["grads"] * trainable_params / (n if zero_stage >= 2 else 1)
    optimizer = ADAM_BYTES["optimizer"] * trainable_params / (n if zero_stage >= 1 else 1)
    tokens = micro_batch * seq_len
    return TrainPlan(weights, grads, optimizer, activation_bytes(shape, tokens, checkpointing),
                     LOGIT_BYTES * tokens * shape.vocab)


@dataclass(frozen=True)
class GenerationPlan:
    weights: float
    denoiser: float
    vae_decode: float

    @property
    def total(self) -> float:
        return self.weights + max(self.denoiser, self.vae_decode)


def unet_working_bytes(config: dict, latent: int, batch: int, guidance: bool) -> int:
    """fp16 working set of a UNet2DConditionModel step: skip tensors + the largest GEGLU output."""
    channels = config["block_out_channels"]
    samples = batch * (2 if guidance else 1)
    skips = channels[0] * latent**2  # conv_in
    geglu = 0
    for level, (c, kind) in enumerate(zip(channels, config["down_block_types"], strict=True)):
        side = latent // 2**level
        last = level == len(channels) - 1
        skips += (config["layers_per_block"] + (0 if last else 1)) * c * side**2
        if "CrossAttn" in kind:
            geglu = max(geglu, side**2 * 8 * c)  # GEGLU projects to 2 x 4c
    return 2 * samples * (skips + geglu)


def transformer_working_bytes(config: dict, latent: int, batch: int, guidance: bool, text_tokens: int) -> int:
    """fp16 working set of an SD3 MMDiT block: image + text tokens, hidden and 4x MLP."""
    samples = batch * (2 if guidance else 1)
    tokens = (latent // config["patch_size"]) ** 2 + text_tokens
    width = config["num_attention_heads"] * config["attention_head_dim"]
    return 2 * samples * tokens * (6 * width)


def vae_decode_bytes(vae_config: dict, height: int, width: int, images: int) -> int:
    """fp32 peak of decoding `images` at once: three maps of the widest full-resolution layer."""
    widest = vae_config["block_out_channels"][1]  # the last up block's input at full resolution
    return 3 * 4 * widest * height * width * images


def fits(total_bytes: float, card_gb: int) -> bool:
    """Whether a plan fits a card of `card_gb` GiB (a 24 GB card has 24 GiB) with the headroom above."""
    return total_bytes <= USABLE * card_gb * GIB
