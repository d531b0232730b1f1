"""Captions of world scenes: templated descriptions, a parser that reads them back, and
corruptions of known kinds (the curation test set).

The parser is what lets the verifier score *any* image against *any* caption: it extracts the
claims a caption makes (objects with colour / shape / size, relations between them, the object
count, the background), and the verifier checks each claim on pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from synthvlm_data.world.scene import COLOURS, INVERSE, SHAPES, Scene

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
TONE_WORDS = {"light": ("light", "white", "pale"), "grey": ("grey", "gray", "mid-grey"), "dark": ("dark", "black")}
PATTERN_WORDS = {"plain": ("plain", "flat", "solid"), "gradient": ("gradient", "shaded"),
                 "striped": ("striped",), "noisy": ("noisy", "grainy")}
RELATION_WORDS = {"left of": ("to the left of", "left of"), "right of": ("to the right of", "right of"),
                  "above": ("above",), "below": ("below", "beneath", "under")}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}

_SIZE_OF = {w: k for k, ws in SIZE_WORDS.items() for w in ws}
_TONE_OF = {w: k for k, ws in TONE_WORDS.items() for w in ws}
_PATTERN_OF = {w: k for k, ws in PATTERN_WORDS.items() for w in ws}
def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_NP = re.compile(
    r"\b(?:(?P<size>" + _alternatives(_SIZE_OF) + r")\s+)?(?P<colour>" + "|".join(COLOURS) + r")\s+(?P<shape>"
    + "|".join(SHAPES) + r")s?\b"
)
_REL = re.compile(r"\b(" + _alternatives(w for ws in RELATION_WORDS.values() for w in ws) + r")\b")
_REL_OF = {w: k for k, ws in RELATION_WORDS.items() for w in ws}
_BG = re.compile(
    r"(?<![\w-])(?P<tone>" + _alternatives(_TONE_OF) + r")(?:\s+(?P<pattern>" + _alternatives(_PATTERN_OF) + r"))?\s+(?:background|backdrop)\b"
)


# --------------------------------------------------------------------------- writing captions


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _np(obj, rng, *, article: str = "a", with_size: bool = True) -> str:
    size = _pick(rng, SIZE_WORDS[obj.size]) + " " if with_size else ""
    art = article
    if article == "a" and (size or obj.colour)[0] in "aeiou":
        art = "an"
    return f"{art} {size}{obj.colour} {obj.shape}"


def _bg_phrase(scene: Scene, rng) -> str:
    bg = scene.background
    tone = _pick(rng, TONE_WORDS[bg.tone])
    pattern = _pick(rng, PATTERN_WORDS[bg.pattern])
    noun = _pick(rng, ("background", "background", "backdrop"))
    return f"{tone} {pattern} {noun}"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A true caption of `scene`, in one of several paraphrases (chosen by `rng`)."""
    objs = scene.objects
    bg = _bg_phrase(scene, rng)
    if len(objs) == 1:
        o = _np(objs[0], rng)
        t = _pick(rng, (
            "{O} on a {bg}.", "There is {o} on a {bg}.", "{O} against a {bg}.",
            "A picture of {o} on a {bg}.", "On a {bg}, {o}.", "A single shape: {o} on a {bg}.",
        ))
        return _cap(t.format(O=o[0].upper() + o[1:], o=o, bg=bg))
    if len(objs) == 2:
        i, j = (0, 1) if rng.random() < 0.5 else (1, 0)
        rel = scene.relation(i, j)
        a, b = _np(objs[i], rng), _np(objs[j], rng)
        r = _pick(rng, RELATION_WORDS[rel])
        t = _pick(rng, (
            "{A} {r} {b} on a {bg}.", "{A} is {r} {b}, on a {bg}.", "On a {bg}, {a} sits {r} {b}.",
            "Two shapes on a {bg}: {a} {r} {b}.", "A picture of {a} {r} {b} against a {bg}.",
        ))
        return _cap(t.format(A=a[0].upper() + a[1:], a=a, b=b, r=r, bg=bg))
    # three objects: a related pair and the third, each named once (naming an object twice trips
    # Table 1's char_repetition filter on 84% of such captions: measured, see tests/test_world.py)
    i, j = (int(x) for x in rng.choice(3, size=2, replace=False))
    k = 3 - i - j
    rel = scene.relation(i, j)
    a, b, c = _np(objs[i], rng), _np(objs[j], rng), _np(objs[k], rng)
    r = _pick(rng, RELATION_WORDS[rel])
    t = _pick(rng, (
        "Three shapes on a {bg}: {a} {r} {b}, and {c}.",
        "{A} {r} {b}, and {c}, on a {bg}.",
        "On a {bg} there are three shapes: {c}, and {a} {r} {b}.",
        "A picture of {c}, and of {a} {r} {b}, against a {bg}.",
    ))
    return _cap(t.format(a=a, A=a[0].upper() + a[1:], b=b, c=c, r=r, bg=bg))


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


# --------------------------------------------------------------------------- reading captions


@dataclass
class Claims:
    """What a caption says about an image (anything it does not say is None / empty)."""

    objects: list[dict] = field(default_factory=list)  # {"colour", "shape", "size" (or None)}
    relations: list[tuple[int, str, int]] = field(default_factory=list)  # (object i, relation, object j)
    tone: str | None = None
    pattern: str | None = None

    @property
    def count(self) -> int:
        return len(self.objects)

    def n_attributes(self) -> int:
        n = sum(2 + (o["size"] is not None) for o in self.objects) + len(self.relations)
        return n + (self.tone is not None) + (self.pattern is not None) + (1 if self.objects else 0)


def parse(text: str) -> Claims:
    """The claims of a caption. Objects are identified by (colour, shape): a second mention
    ("the red circle") refers back to the first."""
    low = text.lower()
    claims = Claims()
    index: dict[tuple[str, str], int] = {}
    mentions: list[tuple[int, int, int]] = []  # (start, end, object index)
    for m in _NP.finditer(low):
        key = (m["colour"], m["shape"])
        size = _SIZE_OF.get(m["size"]) if m["size"] else None
        if key not in index:
            index[key] = len(claims.objects)
            claims.objects.append({"colour": key[0], "shape": key[1], "size": size})
        elif size and claims.objects[index[key]]["size"] is None:
            claims.objects[index[key]]["size"] = size
        mentions.append((m.start(), m.end(), index[key]))
    for (_, e1, i), (s2, _, j) in zip(mentions, mentions[1:]):
        between = low[e1:s2]
        rel = _REL.search(between)
        if rel and i != j and ";" not in between[: rel.start()] and "," not in between[rel.end():]:
            claims.relations.append((i, _REL_OF[rel.group(1)], j))
    bg = _BG.search(low)
    if bg:
        claims.tone = _TONE_OF[bg["tone"]]
        claims.pattern = _PATTERN_OF[bg["pattern"]] if bg["pattern"] else None
    return claims


# --------------------------------------------------------------------------- corruptions

CORRUPTIONS = (
    "repeated_words", "repeated_chars", "url_spam", "flagged_word", "gibberish", "shuffled", "wrong_attribute",
)
_SPAM = (
    "Buy now at www.shapes-{n}.com, free shipping on all orders!",
    "Visit http://cheap-prints.shop/{n} for 50% off today only",
    "Order today: shop.example-deals.net/item{n} best price guaranteed",
)
_FLAGGED = ("porn", "xxx", "nude", "fuck")  # all in the shipped flagged-words list


def corrupt(text: str, scene: Scene, kind: str, rng: np.random.Generator) -> str:
    """`text` (a true caption of `scene`) damaged in one known way."""
    words = text.rstrip(".").split()
    if kind == "repeated_words":  # a phrase stuttered, as in scraped alt text ("red circle red circle ...")
        m = int(rng.integers(2, 5))
        k = int(rng.integers(0, len(words) - m + 1))
        reps = -(-10 // m) + int(rng.integers(1, 3))  # long enough to repeat a 10-word window
        return " ".join(words[:k] + words[k : k + m] * reps + words[k + m :]) + "."
    if kind == "repeated_chars":
        k = int(rng.integers(0, len(words)))
        w = words[k]
        words[k] = w + w[-1] * int(rng.integers(30, 46))
        return " ".join(words) + "!!!!!!!!!!"
    if kind == "url_spam":
        return text + " " + _pick(rng, _SPAM).format(n=int(rng.integers(100, 999)))
    if kind == "flagged_word":
        k = int(rng.integers(1, len(words)))
        return " ".join(words[:k] + [_pick(rng, _FLAGGED)] + words[k:]) + "."
    if kind == "gibberish":
        letters = np.array(list("bcdfghjklmnpqrstvwxzaeiouy"))
        n = len(words)
        return _cap(" ".join("".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(n)) + ".")
    if kind == "shuffled":
        perm = rng.permutation(len(words))
        return _cap(" ".join(words[int(p)].lower() for p in perm) + ".")
    if kind == "wrong_attribute":
        return _cap(wrong_attribute(text, scene, rng))
    raise ValueError(f"unknown corruption kind {kind!r}; known: {', '.join(CORRUPTIONS)}")


OBJECT_ATTRIBUTES = ("colour", "shape", "size", "relation")
BACKGROUND_ATTRIBUTES = ("tone", "pattern")


def wrong_attribute(text: str, scene: Scene, rng: np.random.Generator,
                    attributes: tuple[str, ...] = OBJECT_ATTRIBUTES) -> str:
    """The caption with one attribute changed (one of `attributes`, as the caption allows).

    The result is fluent and well-formed (every rule filter passes it): only a comparison with
    the original image can tell it is false. A changed relation is the inverse one ("left of" ->
    "right of"), which keeps the sentence's geometry plausible and is false by construction.
    """
    claims = parse(text)
    present = {(o.colour, o.shape) for o in scene.objects}
    possible = {"colour": True, "shape": True, "size": any(o["size"] for o in claims.objects),
                "relation": bool(claims.relations), "tone": claims.tone is not None, "pattern": claims.pattern is not None}
    kind = _pick(rng, [a for a in attributes if possible[a]])
    if kind == "relation":
        m = _REL.search(text.lower())
        word = m.group(1)
        new = _pick(rng, RELATION_WORDS[INVERSE[_REL_OF[word]]])
        return text[: m.start()] + new + text[m.end():]
    if kind in BACKGROUND_ATTRIBUTES:
        m = _BG.search(text.lower())
        words, table, current = (TONE_WORDS, _TONE_OF, m["tone"]) if kind == "tone" else (PATTERN_WORDS, _PATTERN_OF, m["pattern"])
        new = _pick(rng, [w for k, ws in words.items() if k != table[current] for w in ws])
        start, end = m.span(kind)
        return text[:start] + new + text[end:]
    target = claims.objects[int(rng.integers(len(claims.objects)))]
    colour, shape = target["colour"], target["shape"]
    if kind == "size":
        target = next(o for o in claims.objects if o["size"])
        colour, shape = target["colour"], target["shape"]
        pat = re.compile(r"\b(" + "|".join(_SIZE_OF) + r")(\s+" + colour + r"\s+" + shape + r")\b", re.I)
        other = "large" if target["size"] == "small" else "small"
        return pat.sub(lambda m: _pick(rng, SIZE_WORDS[other]) + m.group(2), text, count=1)
    if kind == "colour":
        choices = [c for c in COLOURS if c != colour and (c, shape) not in present]
        new = _pick(rng, choices)
        pat = re.compile(r"\b" + colour + r"(\s+" + shape + r")\b", re.I)
        return pat.sub(lambda m: new + m.group(1), text)
    choices = [s for s in SHAPES if s != shape and (colour, s) not in present]
    new = _pick(rng, choices)
    pat = re.compile(r"\b(" + colour + r"\s+)" + shape + r"\b", re.I)
    return pat.sub(lambda m: m.group(1) + new, text)


def canonical(claims: Claims) -> str:
    """One fixed wording of a set of claims (zero-shot prompts, evaluation answers)."""
    def np_(o: dict) -> str:
        words = [o["size"]] if o.get("size") else []
        return " ".join(["a", *words, o["colour"], o["shape"]])

    objs = [np_(o) for o in claims.objects]
    if claims.relations and len(objs) == 2:
        i, rel, j = claims.relations[0]
        body = f"{objs[i]} {rel if rel in ('above', 'below') else 'to the ' + rel} {objs[j]}"
    elif len(objs) > 1:
        body = ", ".join(objs[:-1]) + " and " + objs[-1]
    else:
        body = objs[0] if objs else "nothing"
    bg = " ".join(w for w in (claims.tone, claims.pattern) if w)
    return _cap(f"{body} on a {bg} background." if bg else f"{body}.")


def truth_claims(scene: Scene, *, relations: bool = True) -> Claims:
    """Everything true of a scene that a caption can say (one relation per object pair, i < j)."""
    n = len(scene.objects)
    return Claims(
        objects=[{"colour": o.colour, "shape": o.shape, "size": o.size} for o in scene.objects],
        relations=[(i, scene.relation(i, j), j) for i in range(n) for j in range(i + 1, n)] if relations else [],
        tone=scene.background.tone, pattern=scene.background.pattern,
    )
