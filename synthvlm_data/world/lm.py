"""A tiny language model for the world: a word-level tokenizer + a `LlamaForCausalLM` pretrained
on world text (captions and question/answer turns of `train`-split scenes).

Why not SmolLM2-135M: on this 2-core CPU it costs ~5 s per training batch of 4 and ~2.6 s per
generated caption, so five LLaVA runs + evaluation would take many hours. The world's language
has ~150 words; a 4-layer, 128-wide Llama speaks it after a minute of text-only pretraining (the
analogue of the LLM's language pretraining), and every experiment arm starts from that same LM.

The tokenizer knows the chat template's markers (`<|im_start|>`, `<|im_end|>`, ChatML as
`training/chat_templates.py` renders it), so the standard LLaVA path (processor, TRL, generate)
runs unchanged; `<|im_end|>` is EOS, so generation stops at the end of the assistant turn.
"""

from __future__ import annotations

import json
import re
import string
import time
from pathlib import Path

import numpy as np
import torch

from synthvlm_data.world.questions import CAPTION_PROMPT, VQA_SUFFIX, scene_questions
from synthvlm_data.world import tokenizer as world_tok
from synthvlm_data.world.data import SPLIT_OFFSET, WORLD_SEED
from synthvlm_data.world.scene import sample_scenes
from synthvlm_data.world.scene import COLOURS, SHAPES, SIZES, TONES
from synthvlm_data.world.text import caption

PAD, UNK = "[PAD]", "[UNK]"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_WORD = re.compile(r"\w+|[^\w\s]+")  # what pre_tokenizers.Whitespace splits on
LM_SCENE_OFFSET = 1_000_000  # train-split scenes 1,000,000+ : the LM's text (the VLM data uses lower indices)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def vocabulary() -> list[str]:
    """World caption words + instruction/question/answer words + chat roles, in a fixed order."""
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS

    texts = [CAPTION_PROMPT, VQA_SUFFIX, *BRIEF_CAPTION_PROMPTS, "user assistant system yes no 1 2 3",
             "What colour is the ? What shape is the object ? Is the small or large ? How many objects are there ?",
             "Is the background light , grey or dark ? to the left of right above below",
             " ".join([*COLOURS, *SHAPES, *SIZES, *TONES])]
    words = set(world_tok.vocabulary()[len(world_tok.SPECIALS):])
    for t in texts:
        words.update(_words(t))
    words.update(string.punctuation)
    return [PAD, UNK] + sorted(words)


def build_tokenizer():
    """A `PreTrainedTokenizerFast` (WordLevel, lower-cased) with the ChatML markers as special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tk = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # words joined by spaces, " ." -> "."
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=UNK, pad_token=PAD, model_max_length=256)
    tok.add_special_tokens({"eos_token": AddedToken(IM_END, special=True, normalized=False),
                            "additional_special_tokens": [AddedToken(IM_START, special=True, normalized=False)]})
    return tok


def chat_text(user: str, assistant: str) -> str:
    """One ChatML exchange, as `training/chat_templates.CHATML` renders it (text only)."""
    return f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n{assistant}{IM_END}\n"


def pretraining_texts(n_scenes: int, seed: int = 0) -> list[str]:
    """A caption exchange and every question of each of `n_scenes` train-split scenes."""
    scenes = sample_scenes(WORLD_SEED, n_scenes, offset=SPLIT_OFFSET["train"] + LM_SCENE_OFFSET)
    out = []
    for i, s in enumerate(scenes):
        rng = np.random.default_rng([seed, i])
        out.append(chat_text(CAPTION_PROMPT, caption(s, rng)))
        out.extend(chat_text(q.prompt, q.answer) for q in scene_questions(s, i, rng))
    return out


def build_lm(tokenizer, hidden: int = 128, layers: int = 4, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=hidden // 32, num_key_value_heads=hidden // 32,
                      max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def pretrain_lm(out: str | Path, *, n_scenes: int = 4000, steps: int = 600, batch: int = 32, lr: float = 3e-3,
                hidden: int = 128, layers: int = 4, seed: int = 0) -> dict:
    """Train the LM on world text and save it (safetensors + tokenizer) to `out`; skip if present."""
    out = Path(out)
    info_path = out / "pretraining.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    t0 = time.perf_counter()
    tok = build_tokenizer()
    model = build_lm(tok, hidden, layers, seed)
    texts = pretraining_texts(n_scenes, seed)
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    for step in range(steps):
        idx = rng.choice(len(enc), size=batch, replace=False)
        rows = [enc[i] for i in idx]
        width = max(map(len, rows))
        ids = torch.full((batch, width), tok.pad_token_id)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
        labels = ids.masked_fill(ids == tok.pad_token_id, -100)
        loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    info = {"n_texts": len(texts), "n_scenes": n_scenes, "steps": steps, "batch": batch, "lr": lr, "hidden": hidden,
            "layers": layers, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab": len(tok), "first_loss": round(losses[0], 4), "last_loss": round(float(np.mean(losses[-20:])), 4),
            "seconds": round(time.perf_counter() - t0, 1)}
    (tmp / "pretraining.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    tmp.rename(out)
    return info
