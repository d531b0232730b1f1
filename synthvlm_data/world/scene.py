"""The miniature world: scenes with exact ground truth, sampled from a seed.

Why a world at all: no CLIP or diffusion weights exist offline, so random-weight models can only
prove that code runs. A world small enough to train its own models on a CPU, with every
attribute of every image known, lets curation, selection and training be *measured*.

A scene is 1-3 non-overlapping objects (shape, colour, size, position) on a background (tone,
pattern). Sampling rejects layouts whose described relation would be ambiguous, so ground truth
never depends on a judgement call: the centres of two objects differ by at least
`RELATION_MARGIN` pixels more along the axis their relation names than along the other.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

IMAGE_SIZE = 64  # px; see README ("The miniature world") for why 64
SHAPES = ("circle", "square", "triangle", "star")
# Saturated object colours (sRGB): far apart in Lab hue so a verifier can name them back.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (245, 140, 20),
    "yellow": (236, 212, 30),
    "green": (44, 170, 60),
    "blue": (40, 90, 220),
    "purple": (148, 60, 196),
}
SIZES = ("small", "large")
# Half the bounding-box extent (px at IMAGE_SIZE) of each size: small objects are 11-15 px across,
# large ones 20-26 px, so a bounding-box side of 17.5 px separates them with margin.
SIZE_RADIUS = {"small": (6.0, 7.5), "large": (11.0, 13.0)}
SIZE_SPLIT_PX = 17.5
CIRCUMSCRIBE = 1.3  # circumscribed radius / r for every shape (the square's corners reach 1.27 r)
# Backgrounds: low chroma, so that objects are the only saturated pixels.
TONES = {"light": 228, "grey": 140, "dark": 36}
PATTERNS = ("plain", "gradient", "striped", "noisy")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_MARGIN = 8.0  # px, see module docstring
MIN_GAP = 4.0  # px between circumscribed circles: objects never touch


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    x: float  # centre, px
    y: float
    r: float  # half the bounding-box extent, px
    rgb: tuple[int, int, int]  # the jittered colour actually drawn


@dataclass(frozen=True)
class Background:
    tone: str
    pattern: str
    level: int  # mean grey level
    tint: tuple[int, int, int]  # small per-channel offset (chroma stays low)
    angle: float  # gradient / stripe direction, radians
    period: float  # stripe period, px
    amplitude: float  # gradient / stripe / noise strength, grey levels


@dataclass(frozen=True)
class Scene:
    seed: int
    objects: tuple[Obj, ...]
    background: Background

    def relation(self, i: int, j: int) -> str:
        """Where object i is relative to object j (image y grows downwards)."""
        a, b = self.objects[i], self.objects[j]
        dx, dy = a.x - b.x, a.y - b.y
        if abs(dx) >= abs(dy):
            return "left of" if dx < 0 else "right of"
        return "above" if dy < 0 else "below"

    def to_dict(self) -> dict:
        return asdict(self)


def scene_seed(world_seed: int, index: int) -> int:
    """A stable per-scene seed (same on every platform and Python version)."""
    digest = hashlib.sha256(f"world:{world_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _relation_clear(a: Obj, b: Obj) -> bool:
    dx, dy = abs(a.x - b.x), abs(a.y - b.y)
    return abs(dx - dy) >= RELATION_MARGIN


def sample_scene(seed: int, n_objects: int | None = None) -> Scene:
    """One scene from its seed. Objects have distinct (colour, shape) pairs, so a caption can
    name each one unambiguously; every pair of objects has a clear relation."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    for _ in range(1000):
        objs: list[Obj] = []
        used: set[tuple[str, str]] = set()
        ok = True
        for _k in range(n):
            while True:
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
                colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
                if (colour, shape) not in used:
                    break
            used.add((colour, shape))
            size = SIZES[int(rng.integers(2))] if n < 3 else ("small" if rng.random() < 0.6 else "large")
            r = float(rng.uniform(*SIZE_RADIUS[size]))
            placed = False
            for _t in range(60):
                x = float(rng.uniform(r + 2, IMAGE_SIZE - r - 2))
                y = float(rng.uniform(r + 2, IMAGE_SIZE - r - 2))
                cand = Obj(shape, colour, size, x, y, r, _jitter(COLOURS[colour], rng))
                if all(math.hypot(x - o.x, y - o.y) >= CIRCUMSCRIBE * (r + o.r) + MIN_GAP and _relation_clear(cand, o) for o in objs):
                    objs.append(cand)
                    placed = True
                    break
            if not placed:
                ok = False
                break
        if ok:
            return Scene(seed=seed, objects=tuple(objs), background=_background(rng))
    raise RuntimeError(f"could not place {n} objects for scene seed {seed}")  # never seen in practice


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _background(rng: np.random.Generator) -> Background:
    tone = list(TONES)[int(rng.integers(len(TONES)))]
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    level = TONES[tone] + int(rng.integers(-10, 11))
    tint = tuple(int(v) for v in rng.integers(-5, 6, size=3))
    amplitude = {"plain": 0.0, "gradient": float(rng.uniform(18, 28)), "striped": float(rng.uniform(10, 16)),
                 "noisy": float(rng.uniform(7, 10))}[pattern]
    return Background(tone=tone, pattern=pattern, level=level, tint=tint,  # type: ignore[arg-type]
                      angle=float(rng.choice([0.0, math.pi / 2, math.pi / 4, 3 * math.pi / 4])),
                      period=float(rng.uniform(7, 10)), amplitude=amplitude)


def sample_scenes(world_seed: int, n: int, offset: int = 0) -> list[Scene]:
    """Scenes `offset .. offset+n-1` of a world: disjoint index ranges give disjoint splits."""
    return [sample_scene(scene_seed(world_seed, offset + i)) for i in range(n)]
