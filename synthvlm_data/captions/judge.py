"""LLM judge (SynthVLM: LLaMA3-70B-Instruct answers Yes/No to "is this caption detailed, coherent
and clear enough to guide a diffusion model?").

The answer is read from the next-token distribution after the chat prompt, restricted to the answer
tokens (`Yes`/`No` and their spacing/case variants): p_yes = P(yes) / (P(yes) + P(no)). Greedy
(temperature 0) keeps the caption when p_yes >= min_p_yes; with temperature > 0 the answer is drawn
with a generator seeded by (seed, caption), so a decision never depends on its batch.

The part of the prompt before `{caption}` is identical for every caption: it is run through the LM
once and its KV cache reused for each batch, so a caption costs only its own tokens plus the short
tail of the template (3-4x cheaper than running the full prompt).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from synthvlm_data.models.text import LM, cache_kwarg, output_cache
from synthvlm_data.workunits import stable_hash

MARK = "\x00CAPTION\x00"


def _answer_ids(tok, word: str) -> list[int]:
    ids = set()
    for v in {word, " " + word, word.lower(), " " + word.lower(), word.capitalize(), " " + word.capitalize()}:
        enc = tok(v, add_special_tokens=False)["input_ids"]
        if enc:
            ids.add(enc[0])
    return sorted(ids)


def _split_prompt(tok, system: str, template: str) -> tuple[str, str]:
    """The chat-formatted prompt as (text before the caption, text after it)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": template.replace("{caption}", MARK)}]
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = (system + "\n\n" if system else "") + template.replace("{caption}", MARK) + "\nAnswer:"
    head, tail = text.split(MARK, 1)
    return head, tail


def caption_seed(seed: int, caption: str) -> int:
    """The sampling seed of one caption's answer (64 bits, as numpy takes them)."""
    return stable_hash(seed, caption, sep="\x1f", byteorder="little")


class Judge:
    def __init__(self, cfg, lm: LM, seed: int):
        self.cfg, self.lm, self.seed = cfg, lm, seed
        tok = lm.tokenizer
        self.yes_ids = _answer_ids(tok, cfg.yes)
        self.no_ids = _answer_ids(tok, cfg.no)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"judge: answers {cfg.yes!r} and {cfg.no!r} share a first token")
        head, self.tail = _split_prompt(tok, cfg.system_prompt, cfg.prompt)
        # "Caption: " + "Sunset" tokenizes as "Caption:" + " Sunset": spaces go with the caption
        stripped = head.rstrip(" ")
        self.lead, head = head[len(stripped) :], stripped
        self.head_ids = tok(head, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([self.head_ids], device=lm.model.device), use_cache=True)
        self.head_cache = output_cache(out)

    MIN_CAPTION_TOKENS = 8

    def caption_room(self, n_tail: int) -> int:
        """Caption tokens judged: what max_tokens leaves after the prompt head and tail, but at
        least MIN_CAPTION_TOKENS, so a small max_tokens truncates the caption (never a negative
        slice that would keep it nearly whole, or an empty caption)."""
        return max(self.MIN_CAPTION_TOKENS, self.cfg.max_tokens - len(self.head_ids) - n_tail)

    @torch.inference_mode()
    def p_yes(self, captions: list[str]) -> list[float]:
        tok, model = self.lm.tokenizer, self.lm.model
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        n_head = len(self.head_ids)
        tail_ids = tok(self.tail, add_special_tokens=False)["input_ids"]
        room = self.caption_room(len(tail_ids))
        texts = [self.lead + c for c in captions]
        all_ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        order = sorted(range(len(all_ids)), key=lambda i: (len(all_ids[i]), i))  # less padding
        out: list[float] = [math.nan] * len(all_ids)
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s : s + self.cfg.batch_size]
            seqs = [all_ids[i][:room] + tail_ids for i in idx]
            width = max(map(len, seqs))
            x = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), n_head + width), dtype=torch.long)
            mask[:, :n_head] = 1
            for i, q in enumerate(seqs):
                x[i, : len(q)] = torch.tensor(q)
                mask[i, n_head : n_head + len(q)] = 1
            cache = copy.deepcopy(self.head_cache)
            cache.batch_repeat_interleave(len(seqs))
            pos = torch.arange(n_head, n_head + width).unsqueeze(0).expand(len(seqs), -1)
            dev = model.device
            x, mask, pos = x.to(dev), mask.to(dev), pos.to(dev)
            # only the last real position needs the (49k-wide) output layer
            hidden = model.base_model(input_ids=x, attention_mask=mask, position_ids=pos, use_cache=True,
                                      **{cache_kwarg(model.base_model): cache}).last_hidden_state
            last = torch.tensor([len(q) - 1 for q in seqs], device=dev)
            logits = model.get_output_embeddings()(hidden[torch.arange(len(seqs), device=dev), last])
            lp = torch.log_softmax(logits.float(), dim=-1).cpu()
            ly = torch.logsumexp(lp[:, self.yes_ids], dim=-1)
            ln = torch.logsumexp(lp[:, self.no_ids], dim=-1)
            for i, p in zip(idx, torch.sigmoid(ly - ln).tolist()):
                out[i] = p
        return out

    def decide(self, caption: str, p: float) -> bool:
        if self.cfg.temperature == 0.0:
            return p >= self.cfg.min_p_yes
        t = self.cfg.temperature
        ly, ln = math.log(max(p, 1e-12)) / t, math.log(max(1 - p, 1e-12)) / t
        p_t = 1.0 / (1.0 + math.exp(ln - ly))
        return bool(np.random.default_rng(caption_seed(self.seed, caption)).random() < p_t)
