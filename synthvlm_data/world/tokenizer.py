"""The world's word-level tokenizer (a real `tokenizers` WordLevel model in a transformers
`PreTrainedTokenizerFast`), shared by the world CLIP and the world text-to-image model.

Why not CLIP's BPE: its 49,408-row embedding alone would be 6 MB in fp16 at width 64, over the
5 MB a committed weight file may weigh, for a world that uses about a hundred words. Words
outside the vocabulary map to [UNK], so any caption (spam, gibberish, other datasets) tokenizes.
"""

from __future__ import annotations

import string
from functools import lru_cache

from synthvlm_data.world import text as T
from synthvlm_data.world.scene import COLOURS, SHAPES

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0-3; EOS is not 2 (transformers' CLIPTextModel reads 2 as legacy argmax pooling)
CONTEXT_LENGTH = 48  # longest world caption: 41 tokens with BOS/EOS

_TEMPLATE_WORDS = """a an the on there is are sits against picture of single shape shapes two three one with and
background backdrop to left right above below beneath under""".split()


def vocabulary() -> list[str]:
    """Every token a world caption can contain, in a fixed order (ids are positions)."""
    words = set(_TEMPLATE_WORDS) | set(COLOURS) | set(SHAPES) | {s + "s" for s in SHAPES}
    for group in (T.SIZE_WORDS, T.TONE_WORDS, T.PATTERN_WORDS):
        for ws in group.values():
            for w in ws:
                words.update(w.replace("-", " - ").split())
    for ws in T.RELATION_WORDS.values():
        for w in ws:
            words.update(w.split())
    words.update(T.COUNT_WORDS.values())
    return list(SPECIALS) + sorted(words) + list(string.punctuation)


@lru_cache(maxsize=1)
def build_tokenizer():
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocabulary()))}
    tk = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=CONTEXT_LENGTH, padding_side="right", truncation_side="right",
    )
