"""Rule filters of SynthVLM's caption curation (Data-Juicer operators, appendix Table 1).

Each statistic is re-implemented from the Data-Juicer / BigScience text-data-filtering definitions
(no tokenization, English) so the paper's thresholds mean the same thing here. They are pure
functions of one string; a `Step` wraps one with its thresholds from the recipe.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache

from synthvlm_data.captions import config as C
from synthvlm_data.errors import InputDataError

# Data-Juicer's SPECIAL_CHARACTERS: punctuation, digits, whitespace, typographic symbols, emoji.
# Emoji come from the `emoji` package there; here any symbol codepoint (Unicode So/Sk/Cs) counts.
_MAIN_SPECIAL = string.punctuation + string.digits + string.whitespace
_OTHER_SPECIAL = (
    "\u2002\u2003\u3000\u2009\u200a\ufffc’“”–ー一▬…✦�£•€«»°·═×士＾˘⇓↓↑←→（）§″′´¿−±∈¢ø‚„½¼¾¹²³―⁃，ˌ¸‹›"
    "ʺˈʻ¦‐⠀‰‑≤≥‖◆●■►▼▲▴∆▻¡★☆✱ːº。¯˜¥ɪ≈†上ン：∼⁄・♡✓⊕․．⋅÷１‟；،、¨◦˚゜ʼ≖¤ッツシ℃√！【】‿∞➤～π۩☛₨➩☻๑٪♥ı《‘©﴿٬？▷Г♫∟™ª₪®「—❖」﴾》\u200b\u00a0"
)
SPECIAL_CHARACTERS = frozenset(_MAIN_SPECIAL + _OTHER_SPECIAL)
_DELETE_SPECIAL = {ord(c): None for c in SPECIAL_CHARACTERS}


def _is_symbol(ch: str) -> bool:
    return unicodedata.category(ch) in ("So", "Sk", "Cs")


def alnum_ratio(text: str) -> float:
    """Alphanumeric characters / characters."""
    return sum(map(str.isalnum, text)) / len(text) if text else 0.0


def special_char_ratio(text: str) -> float:
    """Special characters / characters (whitespace counts, as in Data-Juicer)."""
    if not text:
        return 0.0
    rest = text.translate(_DELETE_SPECIAL)
    n_special = len(text) - len(rest)
    if not rest.isascii():
        n_special += sum(1 for ch in rest if ord(ch) > 127 and _is_symbol(ch))
    return n_special / len(text)


def char_repetition_ratio(text: str, rep_len: int = 10) -> float:
    """Share of all char n-grams covered by the sqrt(#distinct n-grams) most frequent repeated ones."""
    n_grams = len(text) - rep_len + 1
    if n_grams <= 0:
        return 0.0
    freq = Counter(text[i : i + rep_len] for i in range(n_grams))
    counts = sorted(freq.values(), reverse=True)
    n_once = sum(1 for c in counts if c == 1)
    n_rep = min(int(math.sqrt(len(counts))), len(counts) - n_once)
    return sum(counts[:n_rep]) / n_grams


def _strip(word: str) -> str:
    beg, end = 0, len(word)
    while beg < end and (word[beg] in SPECIAL_CHARACTERS or _is_symbol(word[beg])):
        beg += 1
    while end > beg and (word[end - 1] in SPECIAL_CHARACTERS or _is_symbol(word[end - 1])):
        end -= 1
    return word[beg:end]


def words(text: str) -> list[str]:
    """Data-Juicer words: split on whitespace, lower-case, strip special characters at both ends."""
    out = []
    for w in text.lower().split():
        w = _strip(w)
        if w:
            out.append(w)
    return out


def word_repetition_ratio(text: str, rep_len: int = 10) -> float:
    """Share of word n-grams that occur more than once."""
    ws = words(text)
    n_grams = len(ws) - rep_len + 1
    if n_grams <= 0:
        return 0.0
    freq = Counter(" ".join(ws[i : i + rep_len]) for i in range(n_grams))
    return sum(c for c in freq.values() if c > 1) / n_grams


def flagged_word_ratio(text: str, flagged: frozenset[str]) -> float:
    ws = words(text)
    return sum(1 for w in ws if w in flagged) / len(ws) if ws else 0.0


@lru_cache(maxsize=8)
def load_word_list(path: str) -> frozenset[str]:
    from synthvlm_data.captions.sources import resolve_path

    p = resolve_path(path)
    if not p.is_file():
        raise InputDataError(f"flagged-words list {p} does not exist; fix `words_file` in the recipe")
    out = set()
    with p.open(encoding="utf-8") as f:
        for line in f:
            w = line.split("#", 1)[0].strip().lower()
            if w:
                out.add(w)
    return frozenset(out)


# --------------------------------------------------------------------------- steps


class RuleStep:
    """A rule filter: a statistic of the caption kept when min <= value <= max."""

    kind = "rule"

    def __init__(self, cfg, fn, lo: float, hi: float, params: dict):
        self.cfg, self.fn, self.lo, self.hi = cfg, fn, lo, hi
        self.label = cfg.label
        self.params = {"type": cfg.type, **params}

    def value(self, caption: str) -> float:
        return self.fn(caption)

    def values(self, rows: list[dict]) -> list[float]:
        fn = self.fn
        return [fn(r["caption"]) for r in rows]

    def passes(self, v: float) -> bool:
        return self.lo <= v <= self.hi


def build_rule_step(cfg) -> RuleStep:
    if isinstance(cfg, C.AlnumRatioFilter):
        return RuleStep(cfg, alnum_ratio, cfg.min_ratio, cfg.max_ratio,
                        {"min_ratio": cfg.min_ratio, "max_ratio": cfg.max_ratio})
    if isinstance(cfg, C.CharRepetitionFilter):
        n = cfg.rep_len
        return RuleStep(cfg, lambda t: char_repetition_ratio(t, n), cfg.min_ratio, cfg.max_ratio,
                        {"rep_len": n, "min_ratio": cfg.min_ratio, "max_ratio": cfg.max_ratio})
    if isinstance(cfg, C.WordRepetitionFilter):
        n = cfg.rep_len
        return RuleStep(cfg, lambda t: word_repetition_ratio(t, n), cfg.min_ratio, cfg.max_ratio,
                        {"rep_len": n, "min_ratio": cfg.min_ratio, "max_ratio": cfg.max_ratio})
    if isinstance(cfg, C.SpecialCharactersFilter):
        return RuleStep(cfg, special_char_ratio, cfg.min_ratio, cfg.max_ratio,
                        {"min_ratio": cfg.min_ratio, "max_ratio": cfg.max_ratio})
    if isinstance(cfg, C.FlaggedWordsFilter):
        flagged = load_word_list(cfg.words_file)
        return RuleStep(cfg, lambda t: flagged_word_ratio(t, flagged), 0.0, cfg.max_ratio,
                        {"words_file": cfg.words_file, "n_words": len(flagged), "max_ratio": cfg.max_ratio})
    if isinstance(cfg, C.RegexFilter):
        pats = [re.compile(p) for p in cfg.patterns]
        return RuleStep(cfg, lambda t: float(any(p.search(t) for p in pats)), 0.0, 0.0,
                        {"patterns": list(cfg.patterns)})
    raise TypeError(f"not a rule filter: {type(cfg).__name__}")


RULE_TYPES = (C.AlnumRatioFilter, C.CharRepetitionFilter, C.WordRepetitionFilter,
              C.SpecialCharactersFilter, C.FlaggedWordsFilter, C.RegexFilter)


def is_rule(cfg) -> bool:
    return isinstance(cfg, RULE_TYPES)
