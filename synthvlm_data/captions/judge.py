"""LLM judge (SynthVLM: LLaMA3-70B-Instruct answers Yes/No to "is this caption detailed, coherent
and clear enough to guide a diffusion model?").

The answer is read from the next-token distribution after the chat prompt, restricted to the answer
tokens (`Yes`/`No` and their spacing/case variants): p_yes = P(yes) / (P(yes) + P(no)). Greedy
(temperature 0) keeps the caption when p_yes >= min_p_yes; with temperature > 0 the answer is drawn
with a generator seeded by (seed, caption), so a decision never depends on its batch.

The part of the prompt before `{caption}` is identical for every caption: it is run through the LM
once and its KV cache reused for each batch, so a caption costs only its own tokens plus the short
tail of the template (3-4x cheaper than running the full prompt).

`EndpointJudge` asks an OpenAI-compatible server the same chat (system + user turn; the server
applies the chat template) for one greedy token with `top_logprobs`, and reads p_yes from them the
same way (the answer tokens' probabilities, renormalised over the two). A server that returns no
logprobs (`transformers serve` 5.24 ignores the field) gives only its greedy token: p_yes is then 1
for a yes and 0 otherwise. With `endpoint.tokenizer` (the served model's tokenizer) that token is
restricted to the answer tokens by `logit_bias`, so it is the more likely answer: the in-process
rule p_yes >= 0.5. Without it, an answer that is neither counts as no (`not_yes_no` in the
report). That path refuses temperature > 0 and min_p_yes != 0.5, which need the probability.
Captions are not token-truncated there (`max_tokens` is the in-process budget); the server's
context length applies.
"""

from __future__ import annotations

import copy
import math
import sys
from collections import Counter

import numpy as np
import torch

from synthvlm_data.errors import ModelUnavailableError
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


def judge_messages(system: str, template: str, caption: str) -> list[dict]:
    """The judge's chat: the system prompt (if any) and the user turn asking about `caption`."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": template.replace("{caption}", caption)}]


def _split_prompt(tok, system: str, template: str) -> tuple[str, str]:
    """The chat-formatted prompt as (text before the caption, text after it)."""
    messages = judge_messages(system, template, MARK)
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

    @property
    def name(self) -> str:
        return self.lm.name

    def decide(self, caption: str, p: float) -> bool:
        return decide(self.cfg, self.seed, caption, p)

    def report_extra(self) -> dict:
        return {}


def decide(cfg, seed: int, caption: str, p: float) -> bool:
    """Keep a caption: p_yes >= min_p_yes at temperature 0, else a seeded draw at temperature t."""
    if cfg.temperature == 0.0:
        return p >= cfg.min_p_yes
    t = cfg.temperature
    ly, ln = math.log(max(p, 1e-12)) / t, math.log(max(1 - p, 1e-12)) / t
    p_t = 1.0 / (1.0 + math.exp(ln - ly))
    return bool(np.random.default_rng(caption_seed(seed, caption)).random() < p_t)


def _word(token: str) -> str:
    return token.strip().strip(".,!:;\"'").lower()


class EndpointJudge:
    """The judge through an OpenAI-compatible server (`synthvlm_data.models.endpoint`).

    The first answer decides how p_yes is read: from `top_logprobs` when the server returns them;
    otherwise from the greedy token, restricted to the answer tokens with `logit_bias` when
    `endpoint.tokenizer` names the served model's tokenizer (then greedy = the more likely of the
    two answers, the in-process rule at min_p_yes 0.5), else unrestricted (an answer that is
    neither Yes nor No counts as no, and as `not_yes_no` in the report)."""

    def __init__(self, cfg, endpoint, seed: int):
        self.cfg, self.endpoint, self.seed = cfg, endpoint, seed
        self.yes, self.no = _word(cfg.yes), _word(cfg.no)
        if self.yes == self.no:
            raise ValueError(f"judge: answers {cfg.yes!r} and {cfg.no!r} are the same word")
        self.mode: str | None = None  # logprobs / answer_tokens / greedy_token, set by the first answer
        self.bias: dict[str, float] = {}
        if endpoint.cfg.tokenizer is not None:
            from synthvlm_data.models.text import load_tokenizer

            tok = load_tokenizer(endpoint.cfg.tokenizer, "judge endpoint tokenizer")
            yes_ids, no_ids = _answer_ids(tok, cfg.yes), _answer_ids(tok, cfg.no)
            if set(yes_ids) & set(no_ids):
                raise ValueError(f"judge: answers {cfg.yes!r} and {cfg.no!r} share a first token")
            self.bias = {str(i): 100.0 for i in yes_ids + no_ids}
        self.sources: Counter = Counter()
        self.not_yes_no = 0

    @property
    def name(self) -> str:
        return self.endpoint.name

    def request(self, caption: str) -> dict:
        body = {"messages": judge_messages(self.cfg.system_prompt, self.cfg.prompt, caption), "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "top_logprobs": self.endpoint.cfg.top_logprobs}
        return {**body, "logit_bias": self.bias} if self.mode == "answer_tokens" else body

    def p_yes(self, captions: list[str]) -> list[float]:
        if captions and self.mode is None:
            first = self.endpoint.chat([self.request(captions[0])])[0]
            if _top_logprobs(first) is not None:
                self.mode = "logprobs"  # the first answer is reused below (same request)
            elif self.cfg.temperature != 0.0 or self.cfg.min_p_yes != 0.5:
                raise ModelUnavailableError(
                    f"judge: endpoint {self.endpoint.cfg.url} returns no logprobs, so p(yes) is unknown and "
                    "judge.temperature > 0 / min_p_yes != 0.5 cannot be honoured; use a server that returns them "
                    "(vLLM, SGLang, TGI) or set judge.temperature: 0 and min_p_yes: 0.5 (the greedy answer)")
            else:
                self.mode = "answer_tokens" if self.bias else "greedy_token"
        odd_before = self.not_yes_no
        out = []
        self.answer_info = []  # per caption, kept by CachedJudge so that a resumed run reports the same counts
        for r in self.endpoint.chat([self.request(c) for c in captions]):
            out.append(self._p_yes(r))
            self.answer_info.append({"from": self.mode, "not_yes_no": self.not_yes_no > odd_before})
            odd_before = self.not_yes_no
        return out

    def _p_yes(self, response: dict) -> float:
        self.sources[self.mode] += 1
        if self.mode == "logprobs":
            py = pn = 0.0
            for alt in _top_logprobs(response) or []:
                w = _word(alt["token"])
                if w == self.yes:
                    py += math.exp(alt["logprob"])
                elif w == self.no:
                    pn += math.exp(alt["logprob"])
            if py + pn == 0.0:
                self.not_yes_no += 1
                return 0.0
            return py / (py + pn)
        w = _word((response["choices"][0].get("message") or {}).get("content") or "")
        if w not in (self.yes, self.no):
            self.not_yes_no += 1
        return 1.0 if w == self.yes else 0.0

    def decide(self, caption: str, p: float) -> bool:
        return decide(self.cfg, self.seed, caption, p)

    def report_extra(self, answers: dict | None = None) -> dict:
        """The judge step's report; `answers` ({"from": the ways p_yes was read, "not_yes_no": count},
        summed by CachedJudge over every caption judged in the stage) makes it count over the whole
        stage rather than over this run's requests."""
        # how many answers came from llm_responses.jsonl depends on where the last run stopped: the log says
        # it, the report (which the published folder carries) does not
        if self.endpoint.reused:
            print(f"captions judge: {self.endpoint.reused} answers replayed from {self.endpoint.record}",
                  file=sys.stderr, flush=True)
        mode, odd = self.mode, self.not_yes_no
        if answers:
            mode, odd = "/".join(sorted(answers["from"])), answers["not_yes_no"]
        extra = {"endpoint": self.endpoint.cfg.url, "p_yes_from": mode, "not_yes_no": odd}
        if mode in ("answer_tokens", "greedy_token"):
            extra["note"] = ("the server returned no logprobs: p_yes is 1 or 0 from its greedy answer"
                             + (" restricted to the Yes/No tokens (logit_bias)" if mode == "answer_tokens"
                                else "; set endpoint.tokenizer to restrict it to the Yes/No tokens"))
        return extra


def _top_logprobs(response: dict) -> list[dict] | None:
    """The first answer token's alternatives, or None when the server returned no logprobs."""
    content = (response["choices"][0].get("logprobs") or {}).get("content") or []
    return content[0].get("top_logprobs") or None if content else None
