"""The full-scale path on one GPU, at real size with random weights (FLOPs do not depend on them).

- SDXL base + refiner as `synthvlm-100k` runs them (`stages.generate.ImageGenerator`: 60 steps, the
  base to `high_noise_frac`, the refiner after it, CFG, 1024 px, fp16), batch 1/4/8: s/image and
  peak memory, eager and with `torch.compile` + channels_last UNets; the FLOPs per image (the UNet
  calls + the VAE decode, `synthvlm_data.models.flops`, as the pilot counts them) against the card's peak.
- CLIPScore's CLIP ViT-B/32 (open_clip; transformers' CLIP of the same shape if open_clip is not
  installed) in fp16: images/s.
- One LLaVA-1.5-7B training step per stage (`training.assembly` on Vicuna-7B + CLIP ViT-L/14-336
  shapes, bf16, the 7b config's per-device batch, gradient checkpointing): tokens/s, peak memory and
  MFU against the card's bf16 dense peak. Stage 2's optimizer step is left out (its fp32 Adam
  states, 81 GB for 7B, are sharded over 8 GPUs by ZeRO in a real run): forward + backward only.

Model FLOPs per token (PaLM appendix B convention, recomputation not counted): stage 2
6 N + 12 L h s (all weights trained); stage 1 4 N + 8 L h s (the frozen LLM's backward computes
input gradients only, no weight gradients), plus the vision tower's forward 2 N_v per patch.

    python bench/gpu_rehearsal.py [--out gpu_rehearsal.json] [--sections sdxl,clip,llava]
    python bench/gpu_rehearsal.py --toy      # tiny configs on the CPU in seconds (the test)

Prints a markdown table and writes the JSON file.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synthvlm_data.models.flops import peak_tflops  # noqa: E402  (one table of GPU peaks, the pilot's too)


class Clock:
    """Wall time of a block, synchronised with the device; peak memory since the last reset."""

    def __init__(self, device: str):
        self.device = device

    def reset(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 1024**3 if self.device == "cuda" else None


# --------------------------------------------------------------------------- SDXL


def _clip_tokenizer():
    """`models.tiny.clip_tokenizer`, or, where open_clip cannot be imported (it needs torchvision), the
    same conversion of the CLIP BPE file open_clip ships, found without importing open_clip."""
    try:
        from synthvlm_data.models.tiny import clip_tokenizer

        clip_tokenizer()
        return clip_tokenizer
    except ImportError:
        pass
    import gzip
    import importlib.util
    import tempfile

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec("open_clip")
    bpe = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out = Path(tempfile.mkdtemp(prefix="clip-tok-"))
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return lambda pad_token="<|endoftext|>": CLIPTokenizer.from_pretrained(str(out), pad_token=pad_token,
                                                                           model_max_length=77)


def sdxl_pipelines(toy: bool, device: str, dtype):
    """(base, refiner) diffusers pipelines: tiny builders, or real-size components from the shipped configs."""
    if toy:
        from synthvlm_data.models import tiny

        saved, tiny.clip_tokenizer = tiny.clip_tokenizer, _clip_tokenizer()  # the fallback where open_clip fails
        try:
            base, refiner = tiny.build_tiny_sdxl(seed=0)
        finally:
            tiny.clip_tokenizer = saved
    else:
        from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

        from synthvlm_data.models.tiny import _scheduler

        clip_tokenizer = _clip_tokenizer()
        from synthvlm_data.rehearsal.catalogue import lookup
        from synthvlm_data.rehearsal.meta import build

        parts = {c.name.split(" ")[0]: c for c in lookup("stabilityai/stable-diffusion-xl-base-1.0", None).components}
        ref_unet = lookup("stabilityai/stable-diffusion-xl-refiner-1.0", None).components[0]
        mods = {k: build(c, device=device, dtype=dtype) for k, c in parts.items()}
        tok2 = clip_tokenizer(pad_token="!")
        base = StableDiffusionXLPipeline(vae=mods["vae"], text_encoder=mods["text_encoder"],
                                         text_encoder_2=mods["text_encoder_2"], tokenizer=clip_tokenizer(),
                                         tokenizer_2=tok2, unet=mods["unet"], scheduler=_scheduler())
        refiner = StableDiffusionXLImg2ImgPipeline(
            vae=mods["vae"], text_encoder=None, text_encoder_2=mods["text_encoder_2"], tokenizer=None,
            tokenizer_2=tok2, unet=build(ref_unet, device=device, dtype=dtype), scheduler=_scheduler(),
            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    for pipe in (base, refiner):
        pipe.to(device=device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
    return base, refiner


class _StageCall:
    """`ImageGenerator._run` as of this version (same arguments): base to `high_noise_frac`, latents
    to the refiner from there, CFG with the recipe's negative prompt, per-sample CPU generators."""

    def __init__(self, cfg, pipe, refiner):
        self.cfg, self.pipe, self.refiner = cfg, pipe, refiner

    @torch.inference_mode()
    def __call__(self, prompts, seeds):
        cfg = self.cfg
        common = dict(prompt=list(prompts), negative_prompt=[cfg.negative_prompt] * len(prompts),
                      num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale)
        gens = lambda: [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        latents = self.pipe(**common, height=cfg.height, width=cfg.width, generator=gens(),
                            denoising_end=cfg.high_noise_frac, output_type="latent").images
        return self.refiner(**common, image=latents, generator=gens(), denoising_start=cfg.high_noise_frac,
                            output_type="pil").images


def bench_sdxl(args, device: str, clock: Clock) -> list[dict[str, Any]]:
    from synthvlm_data.config import load_recipe

    recipe = load_recipe("tiny" if args.toy else "synthvlm-100k")
    cfg = recipe.generate
    if args.toy:
        cfg = cfg.model_copy(update={"steps": 4})
    dtype = torch.float32 if args.toy else torch.float16
    base, refiner = sdxl_pipelines(args.toy, device, dtype)
    try:
        from synthvlm_data.stages.generate import ImageGenerator

        gen = ImageGenerator.__new__(ImageGenerator)  # the stage's generator around the pipelines built here
        gen.cfg, gen.device, gen.pipe, gen.refiner = cfg, device, base, refiner
        caller = "stages.generate.ImageGenerator"
    except ImportError as err:  # the stage imports the shard store (pyarrow), not carried to a bare GPU box
        gen, caller = _StageCall(cfg, base, refiner), f"copy of the stage's call ({err.name} missing)"
    from synthvlm_data.models.flops import image_flops  # the pilot's count: steps split as diffusers splits them

    counted = image_flops(base, refiner, cfg)
    base_steps, flops_image = counted.base_steps, counted.total
    rows = []
    variants = [("eager", False)] + ([("compile + channels_last", True)] if args.compile_batches else [])
    for variant, compiled in variants:
        if compiled:
            for pipe in (base, refiner):
                pipe.unet.to(memory_format=torch.channels_last)
                pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode, fullgraph=False)
        for batch in (args.compile_batches if compiled else args.batches):
            prompts = ["a photo of a red bus in front of a stone church"] * batch
            seeds = list(range(batch))
            clock.reset()
            t0 = clock.now()
            gen(prompts, seeds)  # warm-up (and compilation)
            warm = clock.now() - t0
            clock.reset()
            t0 = clock.now()
            for _ in range(args.repeats):
                gen(prompts, seeds)
            seconds = (clock.now() - t0) / args.repeats
            rows.append({"section": "sdxl", "variant": variant, "batch": batch, "caller": caller, "steps": cfg.steps,
                         "base_steps": base_steps, "px": cfg.height, "s_per_image": seconds / batch,
                         "warmup_s": warm, "peak_gib": clock.peak_gib(), "flops_per_image": flops_image,
                         "tflops": flops_image * batch / seconds / 1e12})
    return rows


# --------------------------------------------------------------------------- CLIPScore


def bench_clip(args, device: str, clock: Clock) -> list[dict[str, Any]]:
    dtype = torch.float32 if args.toy else torch.float16
    batch = 8 if args.toy else 256  # the recipes' score.clip.batch_size
    try:
        if args.toy:
            from synthvlm_data.models.tiny import build_tiny_open_clip

            model, impl = build_tiny_open_clip(0), "open_clip (tiny)"
        else:
            import open_clip

            model, impl = open_clip.create_model("ViT-B-32", pretrained=None, device=device), "open_clip ViT-B-32"
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        tokens = torch.randint(1, 49407, (batch, 77), device=device)  # CLIPScore encodes each caption too
        encode = lambda x: (model.encode_image(x), model.encode_text(tokens))
        impl += ", image + text"
    except ImportError:  # open_clip needs torchvision, which a bare GPU machine may lack
        from transformers import CLIPConfig, CLIPModel

        width, layers, px, patch = (64, 2, 64, 16) if args.toy else (768, 12, 224, 32)
        config = CLIPConfig(  # openai/clip-vit-base-patch32's shape: the architecture of ViT-B-32/openai
            text_config={"hidden_size": width * 2 // 3, "intermediate_size": width * 8 // 3, "num_hidden_layers": layers,
                         "num_attention_heads": 8 if not args.toy else 2, "hidden_act": "quick_gelu"},
            vision_config={"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers,
                           "num_attention_heads": width // 64, "patch_size": patch, "image_size": px,
                           "hidden_act": "quick_gelu"},
            projection_dim=width * 2 // 3)
        model, impl, size = CLIPModel(config), "transformers CLIP ViT-B/32 shape, image + text", px
        tokens = torch.randint(1, 49407, (batch, 77), device=device)
        encode = lambda x: (model.get_image_features(pixel_values=x),
                            model.get_text_features(input_ids=tokens))
    model.to(device=device, dtype=dtype).eval()
    images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    with torch.inference_mode():
        encode(images)
        clock.reset()
        t0 = clock.now()
        for _ in range(args.repeats):
            encode(images)
        seconds = (clock.now() - t0) / args.repeats
    return [{"section": "clip", "variant": impl, "batch": batch, "images_per_s": batch / seconds,
             "peak_gib": clock.peak_gib()}]


# --------------------------------------------------------------------------- LLaVA


def llava_model(toy: bool, device: str, dtype):
    from synthvlm_data.rehearsal.llava import llama_shaped_tokenizer
    from synthvlm_data.training.assembly import assemble_llava
    from synthvlm_data.training.config import load_config, shipped_configs_dir

    if toy:
        from transformers import LlamaConfig, LlamaForCausalLM

        from synthvlm_data.models.tiny import build_tiny_vision_tower

        cfg = load_config(shipped_configs_dir() / "7b.yaml")
        tower = build_tiny_vision_tower(0)
        lm = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                          num_attention_heads=4, vocab_size=32000))
    else:
        from synthvlm_data.rehearsal.catalogue import lookup
        from synthvlm_data.rehearsal.meta import build

        cfg = load_config(shipped_configs_dir() / "7b.yaml")
        tower = build(lookup(cfg.model.vision_tower.id, None).components[0], device=device, dtype=dtype)
        lm = build(lookup(cfg.model.llm.id, None).components[0], device=device, dtype=dtype)
    model, processor = assemble_llava(tower.to(device, dtype), lm.to(device, dtype),
                                      llama_shaped_tokenizer(lm.config.vocab_size), cfg.model)
    return cfg, model.to(device), processor


def bench_llava(args, device: str, clock: Clock) -> list[dict[str, Any]]:
    from synthvlm_data.training.freezing import freeze_for_stage, parameter_counts

    dtype = torch.float32 if args.toy else torch.bfloat16
    cfg, model, _ = llava_model(args.toy, device, dtype)
    model.config.use_cache = False
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()  # per decoder layer, as the configs' gradient_checkpointing: true
    vcfg, tcfg = model.config.vision_config, model.config.text_config
    n_img = model.config.image_seq_length
    n_vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    n_llm = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    peak = peak_tflops(torch.cuda.get_device_name()) if device == "cuda" else None
    rows = []
    for stage in ("pretrain", "finetune"):
        targs = cfg.stage(stage).training
        batch = 2 if args.toy else targs.per_device_train_batch_size
        seq = n_img + 64 if stage == "pretrain" else (n_img + 64 if args.toy else targs.max_length)
        freeze_for_stage(model, stage)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        ids = torch.randint(3, 32000, (batch, seq), device=device)
        ids[:, 1:1 + n_img] = model.config.image_token_id
        labels = ids.clone()
        labels[:, :1 + n_img] = -100
        pixels = torch.randn(batch, 3, vcfg.image_size, vcfg.image_size, device=device, dtype=dtype)

        def step(ids=ids, pixels=pixels, labels=labels, trainable=trainable):
            loss = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
            loss.backward()
            for p in trainable:
                p.grad = None

        step()  # warm-up
        clock.reset()
        t0 = clock.now()
        for _ in range(args.repeats):
            step()
        seconds = (clock.now() - t0) / args.repeats
        tokens = batch * seq
        attn = tcfg.num_hidden_layers * tcfg.hidden_size * seq
        per_token = (6 * n_llm + 12 * attn) if stage == "finetune" else (4 * n_llm + 8 * attn)
        flops = per_token * tokens + 2 * n_vision * batch * (n_img + 1)
        tflops = flops / seconds / 1e12
        rows.append({"section": "llava", "variant": f"7B {stage}" + (" (toy)" if args.toy else ""), "batch": batch,
                     "seq": seq, "trainable": parameter_counts(model)["trainable"], "s_per_step": seconds,
                     "tokens_per_s": tokens / seconds, "peak_gib": clock.peak_gib(), "tflops": tflops,
                     "mfu": tflops / peak if peak else None, "optimizer_step": False})
    return rows


# --------------------------------------------------------------------------- driver


def markdown(result: dict[str, Any]) -> str:
    dev = result["device"]
    title = f"GPU rehearsal on {dev['name']} (peak {dev['peak_tflops'] or '?'} TFLOP/s dense bf16/fp16), torch {dev['torch']}"
    lines = [title, "",
             "| section | variant | batch | measure | peak GiB | TFLOP/s | of peak |", "|---|---|---|---|---|---|---|"]
    peak = dev["peak_tflops"]
    for r in result["rows"]:
        if r["section"] == "sdxl":
            measure = f"{r['s_per_image']:.2f} s/image ({r['steps']} steps, base {r['base_steps']}, {r['px']} px)"
        elif r["section"] == "clip":
            measure = f"{r['images_per_s']:.0f} images/s"
        else:
            measure = f"{r['tokens_per_s']:.0f} tokens/s, {r['s_per_step']:.2f} s/step ({r['batch']} x {r['seq']})"
        tf = r.get("tflops")
        share = f"{100 * tf / peak:.0f}%" if tf and peak else ""
        gib = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "n/a (CPU)"
        lines.append(f"| {r['section']} | {r['variant']} | {r['batch']} | {measure} | {gib} | "
                     f"{f'{tf:.1f}' if tf else ''} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="tiny configs on the CPU (seconds): the code path, no numbers")
    p.add_argument("--out", type=Path, default=Path("gpu_rehearsal.json"))
    p.add_argument("--sections", default="sdxl,clip,llava")
    p.add_argument("--batches", default="1,4,8", help="SDXL batch sizes, eager")
    p.add_argument("--compile-batches", default="4", help="SDXL batch sizes with torch.compile + channels_last ('' = none)")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--repeats", type=int, default=2, help="timed runs after the warm-up (--toy: 1)")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.compile_batches = [int(b) for b in args.compile_batches.split(",") if b]
    if args.toy:
        args.batches, args.compile_batches, args.repeats = [1, 2], [], 1
    device = "cpu" if args.toy or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.toy:
        print("error: no CUDA device visible; run with --toy for the CPU code path", file=sys.stderr)
        return 2
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    result: dict[str, Any] = {"device": {"name": name, "peak_tflops": peak_tflops(name) if device == "cuda" else None,
                                         "torch": torch.__version__, "toy": args.toy},
                              "rows": [], "errors": {}}
    clock = Clock(device)
    benches = {"sdxl": bench_sdxl, "clip": bench_clip, "llava": bench_llava}
    for section in args.sections.split(","):
        start = time.perf_counter()
        try:
            result["rows"] += benches[section](args, device, clock)
        except Exception as err:  # one section failing must not lose the others' numbers
            result["errors"][section] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            print(f"{section} failed: {result['errors'][section]}", file=sys.stderr)
        result.setdefault("section_seconds", {})[section] = round(time.perf_counter() - start, 1)
        if device == "cuda":  # compiled graphs hold the UNets: drop them before the 7B model comes in
            torch._dynamo.reset()
            gc.collect()
            torch.cuda.empty_cache()
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # after each section: a timeout keeps the rest
    print(markdown(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
