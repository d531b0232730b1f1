"""Text statistics shared by the rule filters, re-implemented from the Data-Juicer / BigScience
text-data-filtering definitions (no tokenization, English) so SynthVLM's thresholds (appendix
Table 1) mean the same thing here: Data-Juicer's special characters and its word splitting."""

from __future__ import annotations

import string
import unicodedata

# Data-Juicer's SPECIAL_CHARACTERS: punctuation, digits, whitespace, typographic symbols, emoji.
# Emoji come from the `emoji` package there; here any symbol codepoint (Unicode So/Sk/Cs) counts.
_MAIN_SPECIAL = string.punctuation + string.digits + string.whitespace
_OTHER_SPECIAL = (
    "\u2002\u2003\u3000\u2009\u200a\ufffc’“”–ー一▬…✦�£•€«»°·═×士＾˘⇓↓↑←→（）§″′´¿−±∈¢ø‚„½¼¾¹²³―⁃，ˌ¸‹›"
    "ʺˈʻ¦‐⠀‰‑≤≥‖◆●■►▼▲▴∆▻¡★☆✱ːº。¯˜¥ɪ≈†上ン：∼⁄・♡✓⊕․．⋅÷１‟；،、¨◦˚゜ʼ≖¤ッツシ℃√！【】‿∞➤～π۩☛₨➩☻๑٪♥ı《‘©﴿٬？▷Г♫∟™ª₪®「—❖」﴾》\u200b\u00a0"
)
SPECIAL_CHARACTERS = frozenset(_MAIN_SPECIAL + _OTHER_SPECIAL)
_DELETE_SPECIAL = {ord(c): None for c in SPECIAL_CHARACTERS}


def is_symbol(ch: str) -> bool:
    return unicodedata.category(ch) in ("So", "Sk", "Cs")


def _strip(word: str) -> str:
    beg, end = 0, len(word)
    while beg < end and (word[beg] in SPECIAL_CHARACTERS or is_symbol(word[beg])):
        beg += 1
    while end > beg and (word[end - 1] in SPECIAL_CHARACTERS or is_symbol(word[end - 1])):
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


def special_char_ratio(text: str) -> float:
    """Special characters / characters (whitespace counts, as in Data-Juicer)."""
    if not text:
        return 0.0
    rest = text.translate(_DELETE_SPECIAL)
    n_special = len(text) - len(rest)
    if not rest.isascii():
        n_special += sum(1 for ch in rest if ord(ch) > 127 and is_symbol(ch))
    return n_special / len(text)
