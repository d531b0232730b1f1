"""A Llama-family tokenizer built here, offline, to render training samples before any download.

Vicuna v1.5's tokenizer cannot be fetched offline, but what decides a chat template's token ids and
label masks is the tokenizer's *kind*, not its vocabulary: transformers' `LlamaTokenizer`
(SentencePiece-style BPE with byte fallback, the `▁` word marker, `<unk>`/`<s>`/`</s>` as ids 0/1/2,
BOS added by default, `legacy=False` as Vicuna v1.5 ships it). This builds that class with merges
learned from a small fixed corpus, so `--validate-only` and the tests see BOS, `</s>`, the `▁`
prefix and special-token splitting exactly as the real tokenizer does them; only the ids of
ordinary words differ.
"""

from __future__ import annotations

from functools import lru_cache

LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")


def _corpus() -> list[str]:
    from synthvlm_data.training.chat_templates import VICUNA_V1_SYSTEM
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS

    return [VICUNA_V1_SYSTEM, *BRIEF_CAPTION_PROMPTS, "USER: ASSISTANT:",
            "A red cube on a wooden table next to a blue sphere.", "What colour is the cube? It is red.",
            "Two cats sleep on a sofa in the afternoon sun."]


@lru_cache(maxsize=4)
def _vocab_and_merges(vocab_size: int) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127) if chr(c) != " "] + ["▁", "\n"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(LLAMA_SPECIALS),
                                  initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    # Llama's layout: specials, then the 256 byte-fallback tokens, then the learned pieces
    vocab = {tok: i for i, tok in enumerate(LLAMA_SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    merges = tuple(tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"])
    return tuple(vocab.items()), merges


def llama_tokenizer(vocab_size: int = 600):
    """A fresh `LlamaTokenizer` (Vicuna v1.5's settings) with a small vocabulary learned offline."""
    from transformers import LlamaTokenizer

    vocab, merges = _vocab_and_merges(vocab_size)
    return LlamaTokenizer(vocab=dict(vocab), merges=list(merges), legacy=False, add_bos_token=True,
                          add_eos_token=False, model_max_length=4096)
