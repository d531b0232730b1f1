"""Synth^2 caption synthesis: an instruction LLM writes factual captions for each concept.

Balanced by construction: exactly `n_per_concept` captions are kept per concept. Candidates are
generated in rounds; a round asks, for every concept still short, for (missing + oversample)
candidates, in concept-list order, in fixed batches. Batch b of round r samples with torch seeded
from (seed, r, b) inside `fork_rng`, so the result depends only on the config and the seed, not on
the caller's RNG state. A candidate is kept when it is a clean one-line caption within the length
bounds, names its concept, passes the recipe's rule filters, and is neither an exact duplicate of
any caption nor a near-duplicate (embedding cosine) of a caption kept for the same concept.

Through an OpenAI-compatible server (`synthesis.endpoint`), each candidate is one chat request (the
same messages) with its own `seed` = request_seed(batch seed, index in batch); `finished` is
finish_reason == "stop". Servers differ in seed support: vLLM and llama.cpp seed each request;
`transformers serve` sets the global torch seed, so concurrent sampled requests are not
reproducible there (and it samples only when the served folder's generation_config has
`do_sample: true`). Every answer is recorded in the caption stage's folder, so a resumed stage is
byte-identical whatever the server does.
"""

from __future__ import annotations

import copy
import re
import sys
from collections import Counter

import torch

from synthvlm_data.captions.concepts import ConceptMatcher, load_concepts
from synthvlm_data.captions.dedup import ExactDedup, NearDedup
from synthvlm_data.models.text import LM, Embedder, cache_kwarg, output_cache
from synthvlm_data.errors import InputDataError
from synthvlm_data.workunits import stable_hash

_PREFIX = re.compile(r"^\s*(?:here(?:'s| is)[^:]*:|caption\s*\d*\s*[:\-]|\d+[.)]|[-*•])\s*", re.I)
_QUOTES = "\"'“”‘’`"


def batch_seed(seed: int, round_: int, start: int) -> int:
    """torch seed of the synthesis batch starting at candidate `start` of round `round_` (the
    project's `stable_hash`, as first written: '\\x1f'-joined, little-endian, modulo 2^63 - 1)."""
    return stable_hash(seed, "synthesis", round_, start, sep="\x1f", byteorder="little") % (2**63 - 1)


def request_seed(batch_seed_: int, index: int) -> int:
    """The `seed` of candidate `index` of a synthesis batch sent to a server (31 bits: every
    server's seed type holds it)."""
    return stable_hash(batch_seed_, index, sep="\x1f", byteorder="little") % (2**31 - 1)


def slug(concept: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", concept.lower()).strip("-")


def article(concept: str) -> str:
    return "an" if concept[:1].lower() in "aeiou" else "a"


# a sentence ends at . ! ? (and any closing quotes) followed by the end of the line, or by space and
# a capital (or an opening quote/bracket): "3.5 m" and "e.g. a" do not end one
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s*$|\s+[\"'“‘(\[]?[A-Z])")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mt ft jr sr prof rev gen capt lt sgt col vs approx ave blvd rd no nos fig inc ltd co "
    "e.g i.e a.m p.m u.s u.k".split())
MIN_SENTENCE_WORDS = 3


def _ends_sentence(line: str, m: re.Match) -> bool:
    """Whether the mark at `m` ends the first sentence: not after an abbreviation ("Mr.",
    "St. Louis") or a single capital initial ("J. K. Rowling"), and not before the sentence has
    MIN_SENTENCE_WORDS words (an unknown abbreviation then cuts nothing useful)."""
    words = line[: m.start()].split()
    if len(words) < MIN_SENTENCE_WORDS and m.end() < len(line.rstrip()):
        return False
    if line[m.start()] != "." or not words:
        return True
    last = words[-1].strip("\"'“”‘’(")
    return not (last.lower() in _ABBREVIATIONS or (len(last) == 1 and last.isupper()))


def first_sentence(line: str) -> str | None:
    """The line up to the end of its first sentence, or None if no sentence ends in it."""
    for m in _SENTENCE_END.finditer(line):
        if _ends_sentence(line, m):
            return line[: m.end()]
    return None


def clean(text: str, finished: bool = True) -> str:
    """The first sentence of the first non-empty line, without list markers, 'Caption:' prefixes
    or wrapping quotes. An unfinished generation (no end-of-turn) keeps only complete sentences."""
    for line in text.splitlines():
        line = _PREFIX.sub("", line.strip()).strip().strip(_QUOTES).strip()
        if not line:
            continue
        sentence = first_sentence(line)
        if sentence is not None:
            line = sentence
        elif not finished:
            return ""
        return " ".join(line.split()).strip(_QUOTES)
    return ""


def concepts_of(cfg) -> list[str]:
    concepts = list(cfg.concepts) if cfg.concepts else load_concepts(cfg.concepts_file)
    if len({c.lower() for c in concepts}) != len(concepts):
        raise InputDataError("synthesis.concepts lists a concept twice; remove the duplicate")
    return concepts[: cfg.max_concepts] if cfg.max_concepts else concepts


_MARK = "\x00REQUEST\x00"


def chat_messages(cfg, request: str) -> list[dict]:
    """System prompt, few-shot turns, then the user turn `request`."""
    msgs = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    for ex in cfg.few_shot:
        msgs += [{"role": "user", "content": user_turn(cfg, ex.concept)}, {"role": "assistant", "content": ex.caption}]
    return msgs + [{"role": "user", "content": request}]


def user_turn(cfg, concept: str) -> str:
    return cfg.prompt.format(concept=concept, article=article(concept))


def chat_parts(tok, cfg) -> tuple[str, str]:
    """The chat prompt split around the final request: (shared head, tail template with {request}).

    The head (system prompt + few-shot turns) is identical for every concept; its KV cache is
    computed once and reused, so a candidate costs only its request's tokens plus generation."""
    msgs = chat_messages(cfg, _MARK)
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n".join(m["content"] for m in msgs) + "\n"
    head, tail = text.split(_MARK, 1)
    return head, tail


class Generator:
    """Seeded sampling of chat completions that share a prompt head (cached once)."""

    def __init__(self, lm: LM, cfg):
        self.lm, self.cfg = lm, cfg
        tok = lm.tokenizer
        head, self.tail = chat_parts(tok, cfg)
        self.head_ids = tok(head, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            self.head_cache = output_cache(lm.model(input_ids=torch.tensor([self.head_ids], device=lm.model.device),
                                                    use_cache=True))
        ends = lm.model.generation_config.eos_token_id
        self.stops = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
        self.stops |= set(ends if isinstance(ends, list) else [ends] if ends is not None else [])

    def request_ids(self, concept: str) -> list[int]:
        text = self.cfg.prompt.format(concept=concept, article=article(concept)) + self.tail
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def __call__(self, concepts: list[str], seed: int) -> list[tuple[str, bool]]:
        """(text, finished) per concept; finished = the LM ended its turn within max_new_tokens."""
        tok, model, cfg = self.lm.tokenizer, self.lm.model, self.cfg
        pad = tok.pad_token_id
        reqs = [self.request_ids(c) for c in concepts]
        width, n_head = max(map(len, reqs)), len(self.head_ids)
        # head | padding | request: the padding sits between the cached head and each request;
        # position ids follow the attention mask, so every request sees the same positions
        ids = torch.tensor([self.head_ids + [pad] * (width - len(r)) + r for r in reqs])
        mask = torch.tensor([[1] * n_head + [0] * (width - len(r)) + [1] * len(r) for r in reqs])
        cache = copy.deepcopy(self.head_cache)
        cache.batch_repeat_interleave(len(reqs))
        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # seeds the CUDA generator too; both restored on exit
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 **{cache_kwarg(model): cache}, do_sample=True, temperature=cfg.temperature,
                                 top_p=cfg.top_p, top_k=0, max_new_tokens=cfg.max_new_tokens, pad_token_id=pad)
        new = out[:, ids.shape[1] :].cpu()
        finished = [any(int(t) in self.stops for t in row) for row in new]
        return list(zip(tok.batch_decode(new, skip_special_tokens=True), finished))


class EndpointGenerator:
    """The same chats through an OpenAI-compatible server: one request per candidate, each with its
    own seed (see the module docstring)."""

    def __init__(self, endpoint, cfg):
        self.endpoint, self.cfg = endpoint, cfg
        self.name = endpoint.name

    def __call__(self, concepts: list[str], seed: int) -> list[tuple[str, bool]]:
        cfg = self.cfg
        reqs = [{"messages": chat_messages(cfg, user_turn(cfg, c)), "max_tokens": cfg.max_new_tokens,
                 "temperature": cfg.temperature, "top_p": cfg.top_p, "seed": request_seed(seed, i)}
                for i, c in enumerate(concepts)]
        out = []
        for r in self.endpoint.chat(reqs):
            choice = r["choices"][0]
            out.append(((choice.get("message") or {}).get("content") or "", choice.get("finish_reason") == "stop"))
        return out


def synthesize(cfg, lm, *, seed: int, embedder: Embedder | None, near_threshold: float | None,
               rule_steps: list, exact: ExactDedup, min_chars: int, max_chars: int,
               max_examples: int = 5) -> tuple[list[dict], dict]:
    concepts = concepts_of(cfg)
    matcher = ConceptMatcher(concepts)
    patterns = [re.compile(p) for p in cfg.reject_patterns]
    remote = not isinstance(lm, LM)  # an Endpoint (synthvlm_data.models.endpoint)
    reused_before = lm.reused if remote else 0  # the judge may share the endpoint
    gen = EndpointGenerator(lm, cfg) if remote else Generator(lm, cfg)
    kept: dict[str, list[str]] = {c: [] for c in concepts}
    near = {c: NearDedup(near_threshold) for c in concepts} if (embedder and near_threshold) else {}
    reasons: Counter = Counter()
    examples: list[dict] = []
    generated = 0
    rounds_used = 0
    n = cfg.n_per_concept
    answers: dict[str, set[str]] = {c: set() for c in concepts}  # distinct raw answers: is the model sampling?

    def reject(concept: str, text: str, why: str, note: str | None = None) -> None:
        reasons[why] += 1
        if len(examples) < max_examples:
            examples.append({"concept": concept, "caption": text[:300], "reason": why, **({"note": note} if note else {})})

    for r in range(cfg.max_rounds):
        todo = [(c, n - len(kept[c]) + cfg.oversample) for c in concepts if len(kept[c]) < n]
        if not todo:
            break
        rounds_used = r + 1
        jobs = [c for c, k in todo for _ in range(k)]
        outputs: list[tuple[str, bool]] = []
        for b in range(0, len(jobs), cfg.batch_size):
            outputs += gen(jobs[b : b + cfg.batch_size], batch_seed(seed, r, b))
        generated += len(outputs)
        # checks that need no model, in candidate order
        survivors: list[tuple[str, str]] = []
        for c, (raw, finished) in zip(jobs, outputs):
            answers[c].add(raw)
            text = clean(raw, finished)
            if not text:
                reject(c, raw, "empty_or_unfinished")
            elif len(text) < min_chars or len(text) > max_chars:
                reject(c, text, "length")
            elif cfg.require_mention and not matcher.mentions(text, c):
                reject(c, text, "concept_not_mentioned")
            elif any(p.search(text) for p in patterns):
                reject(c, text, "reject_pattern")
            else:
                failed = next((s.label for s in rule_steps if not s.passes(s.value(text))), None)
                if failed:
                    reject(c, text, f"filter:{failed}")
                else:
                    survivors.append((c, text))
        emb = embedder.encode([t for _, t in survivors]) if (near and survivors) else None
        for i, (c, text) in enumerate(survivors):
            if len(kept[c]) >= n:
                reject(c, text, "surplus")
                continue
            ident = f"{slug(c)}-{len(kept[c]):03d}"
            dup = exact.find(text)
            if dup is not None:
                reject(c, text, "exact_duplicate", f"of {dup}")
                continue
            batch = near[c].batch(emb[i : i + 1]) if c in near else None
            if batch is not None:
                hit = batch.check(0)
                if hit is not None:
                    reject(c, text, "near_duplicate", f"cos {hit[0]:.3f} with {hit[1]}")
                    continue
                batch.add(0, ident)
            # registered only now: a near-duplicate reject never claims an id that another caption gets
            exact.add(text, ident)
            kept[c].append(text)

    short = {c: len(v) for c, v in kept.items() if len(v) < n}
    rows = [{"source": cfg.source, "source_id": f"{slug(c)}-{i:03d}", "caption": t, "concept": c}
            for c in concepts for i, t in enumerate(kept[c])]
    report = {
        "name": "synthesis", "seen": generated, "kept": len(rows), "dropped": generated - len(rows),
        "examples": examples, "reasons": dict(sorted(reasons.items())),
        "params": {"model": lm.name, "n_per_concept": n, "n_concepts": len(concepts),
                   "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
                   "system_prompt": cfg.system_prompt, "prompt": cfg.prompt,
                   "few_shot": [fs.model_dump() for fs in cfg.few_shot], "reject_patterns": cfg.reject_patterns,
                   "seed": seed,
                   "seeding": ("request seed = request_seed(batch_seed(seed, round, batch_start), index); answers "
                               "recorded for resume" if remote else
                               "torch.manual_seed(batch_seed(seed, round, batch_start)) in fork_rng"),
                   "batch_size": cfg.batch_size, "oversample": cfg.oversample, "max_rounds": cfg.max_rounds,
                   "near_dup_threshold": near_threshold if near else None},
        "rounds": rounds_used,
        "shortfall": short,
        # every request for each short concept got one and the same answer: the model is not sampling
        "identical_answers": bool(short) and generated > len(concepts) and all(len(answers[c]) == 1 for c in short),
    }
    if remote:
        report["params"]["endpoint"] = lm.cfg.url
        if lm.reused - reused_before:  # where the last run stopped, not a property of the result: logged, not reported
            print(f"captions synthesis: {lm.reused - reused_before} answers replayed from {lm.record}",
                  file=sys.stderr, flush=True)
    return rows, report
