"""Concept lists and "does this caption mention the concept?" (Synth^2 balance over concepts).

A caption mentions a concept when the concept's words appear consecutively, the last one possibly
in plural (`fire truck` matches "two fire trucks"; `strawberry` matches "strawberries"). Matching
is a dictionary lookup over the caption's 1-3 word n-grams, so 300 concepts x 100K captions is fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from synthvlm_data.errors import InputDataError

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_IRREGULAR = {
    "knife": ["knives"], "leaf": ["leaves"], "child": ["children"], "mouse": ["mice"],
    "person": ["people"], "man": ["men"], "woman": ["women"], "goose": ["geese"],
    "foot": ["feet"], "tooth": ["teeth"], "shelf": ["shelves"], "wolf": ["wolves"],
    "loaf": ["loaves"], "fisherman": ["fishermen"], "policeman": ["policemen"],
}


def load_concepts(path: str) -> list[str]:
    from synthvlm_data.data import resolve_path

    p = resolve_path(path)
    if not p.is_file():
        raise InputDataError(f"concept list {p} does not exist; fix synthesis.concepts_file in the recipe")
    out, seen = [], set()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputDataError(f"concept list {p} is not UTF-8 text ({err.reason}); re-save it as UTF-8") from None
    if True:
        for lineno, line in enumerate(lines, 1):
            c = line.split("#", 1)[0].strip()
            if not c:
                continue
            key = " ".join(c.lower().split())
            if key in seen:
                raise InputDataError(f"{p}:{lineno}: concept '{c}' is listed twice; remove the duplicate")
            seen.add(key)
            out.append(c)
    if not out:
        raise InputDataError(f"concept list {p} is empty")
    return out


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def plural_forms(word: str) -> list[str]:
    forms = [word, word + "s", word + "es"]
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    if word.endswith("fe"):
        forms.append(word[:-2] + "ves")
    forms += _IRREGULAR.get(word, [])
    return forms


class ConceptMatcher:
    def __init__(self, concepts: list[str]):
        self.concepts = list(concepts)
        self.index: dict[tuple[str, ...], int] = {}
        self.max_n = 1
        for ci, c in enumerate(self.concepts):
            ws = tokens(c)
            if not ws:
                continue
            self.max_n = max(self.max_n, len(ws))
            for last in plural_forms(ws[-1]):
                self.index.setdefault(tuple(ws[:-1] + [last]), ci)

    def find(self, caption: str) -> list[str]:
        """Concepts mentioned in the caption, in concept-list order."""
        ws = tokens(caption)
        hits = set()
        for n in range(1, self.max_n + 1):
            for i in range(len(ws) - n + 1):
                ci = self.index.get(tuple(ws[i : i + n]))
                if ci is not None:
                    hits.add(ci)
        return [self.concepts[i] for i in sorted(hits)]

    def mentions(self, caption: str, concept: str) -> bool:
        ws = tokens(concept)
        if not ws:
            return False
        cap = tokens(caption)
        n = len(ws)
        forms = {tuple(ws[:-1] + [last]) for last in plural_forms(ws[-1])}
        return any(tuple(cap[i : i + n]) in forms for i in range(len(cap) - n + 1))


def balance(captions: Iterable[str], concepts: list[str], assigned: list[str | None] | None = None) -> dict:
    """Per-concept counts. `assigned` gives one concept per caption (synthetic); otherwise each
    caption counts for every concept it mentions. `captions` is read once (an iterator will do)."""
    from synthvlm_data.clustering import normalised_entropy

    counts = dict.fromkeys(concepts, 0)
    unmatched = 0
    if assigned is not None:
        for c in assigned:
            if c in counts:
                counts[c] += 1
            else:
                unmatched += 1
        n = len(assigned)
    else:
        m = ConceptMatcher(concepts)
        n = 0
        for cap in captions:
            n += 1
            hits = m.find(cap)
            unmatched += not hits
            for h in hits:
                counts[h] += 1
    covered = [v for v in counts.values() if v > 0]
    return {
        "n_captions": n,
        "n_concepts": len(concepts),
        "covered_concepts": len(covered),
        "coverage": round(len(covered) / len(concepts), 6) if concepts else 0.0,
        "unmatched_captions": unmatched,
        "normalised_entropy": round(normalised_entropy(list(counts.values())), 6),
        "max_min_ratio": round(max(covered) / min(covered), 6) if covered else None,
        "per_concept": {c: v for c, v in counts.items() if v > 0},
    }
