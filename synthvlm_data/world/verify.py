"""The world verifier: read objects back from pixels with classical image analysis, and score any
image against any caption, attribute by attribute.

Objects are the only saturated pixels of a world image (backgrounds are near-grey), so they are
found by thresholding Lab chroma, split into connected components (`skimage.measure.label`) and
described by `regionprops`: colour by the nearest reference in Lab, size by the bounding box,
shape by solidity and extent (a star is concave, a square fills its box, a triangle half of it).
The background's tone is its median lightness; its pattern comes from a plane fit (gradient) and
what the plane leaves (stripes are spatially correlated, noise is not).

No learned component: the verifier is the fixed ruler against which generated images, selection
rules and trained VLMs are measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment
from skimage import color, measure, morphology

from synthvlm_data.world.scene import COLOURS, SIZE_SPLIT_PX, Scene
from synthvlm_data.world.text import Claims, parse

CHROMA_MIN = 28.0  # Lab chroma of an object pixel (backgrounds stay below ~8, objects reach 60-90)
MIN_AREA = 20  # px: smaller specks are not objects (the smallest triangle covers ~60 px)
MAX_SIDE = 40  # px: the largest object spans 26 px; a wider component is clutter, not an object
UNKNOWN = "unknown"  # a background too covered to read: never agrees with any claim
_REF_LAB = {name: color.rgb2lab(np.array([[rgb]], np.float64) / 255.0)[0, 0] for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class Detected:
    colour: str
    shape: str
    size: str
    x: float
    y: float
    area: int
    solidity: float
    extent: float


@dataclass(frozen=True)
class Reading:
    """Everything the verifier reads from one image."""

    objects: tuple[Detected, ...]
    tone: str
    pattern: str


def _shape(solidity: float, extent: float) -> str:
    if solidity < 0.84:
        return "star"
    if extent > 0.86:
        return "square"
    if extent > 0.64:
        return "circle"
    return "triangle"


def _colour(lab_pixels: np.ndarray) -> str:
    mean = lab_pixels.mean(axis=0)
    # hue matters most: weight lightness down (shading, anti-aliasing and backgrounds shift it)
    w = np.array([0.35, 1.0, 1.0])
    return min(_REF_LAB, key=lambda n: float(np.sum(((mean - _REF_LAB[n]) * w) ** 2)))


def relation(ax: float, ay: float, bx: float, by: float) -> str:
    """Where a point a is relative to b (same rule as `Scene.relation`)."""
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def read(image: Image.Image | np.ndarray) -> Reading:
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, np.float64) / 255.0
    lab = color.rgb2lab(rgb)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    mask = chroma > CHROMA_MIN
    labels = measure.label(mask, connectivity=2)
    objs = []
    for p in measure.regionprops(labels):
        r0, c0, r1, c1 = p.bbox
        if p.area < MIN_AREA or max(r1 - r0, c1 - c0) > MAX_SIDE:
            continue
        px = lab[labels == p.label]
        core = px[np.hypot(px[:, 1], px[:, 2]) >= np.percentile(np.hypot(px[:, 1], px[:, 2]), 40)]
        objs.append(Detected(
            colour=_colour(core), shape=_shape(float(p.solidity), float(p.extent)),
            size="large" if max(r1 - r0, c1 - c0) > SIZE_SPLIT_PX else "small",
            x=float(p.centroid[1]), y=float(p.centroid[0]), area=int(p.area),
            solidity=float(p.solidity), extent=float(p.extent),
        ))
    objs.sort(key=lambda o: (o.x, o.y))
    bg_mask = ~morphology.dilation(mask, morphology.disk(2))
    tone, pattern = _background(lab[..., 0], rgb.mean(axis=-1) * 255.0, bg_mask)
    return Reading(objects=tuple(objs), tone=tone, pattern=pattern)


def _background(lightness: np.ndarray, grey: np.ndarray, bg: np.ndarray) -> tuple[str, str]:
    if bg.sum() < 50:
        return UNKNOWN, UNKNOWN
    L = float(np.median(lightness[bg]))
    tone = "dark" if L < 35 else "light" if L > 76 else "grey"
    yy, xx = np.nonzero(bg)
    g = grey[bg]
    A = np.column_stack([xx, yy, np.ones_like(xx)]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, g, rcond=None)
    resid_img = np.zeros_like(grey)
    resid_img[bg] = g - A @ coef
    spread = float(np.hypot(coef[0], coef[1]) * grey.shape[0])  # grey levels across the image
    resid = float(np.std(g - A @ coef))
    if resid < 3.0:
        return tone, "gradient" if spread > 12.0 else "plain"
    # lag-1 correlation of the residual along x and y, over background pixel pairs
    corr = []
    for a, b, ma, mb in ((resid_img[:, 1:], resid_img[:, :-1], bg[:, 1:], bg[:, :-1]),
                         (resid_img[1:, :], resid_img[:-1, :], bg[1:, :], bg[:-1, :])):
        m = ma & mb
        if m.sum() > 10:
            corr.append(float(np.corrcoef(a[m], b[m])[0, 1]))
    return tone, "striped" if corr and max(corr) > 0.35 else "noisy"


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Verdict:
    """Per-claim agreement of an image with a caption."""

    checks: dict[str, list[bool]]  # attribute -> one bool per claim of that attribute

    @property
    def n(self) -> int:
        return sum(len(v) for v in self.checks.values())

    @property
    def alignment(self) -> float:
        """Share of the caption's claims the image satisfies (1.0 = all)."""
        return sum(sum(v) for v in self.checks.values()) / self.n if self.n else 0.0

    @property
    def exact(self) -> bool:
        return self.n > 0 and all(all(v) for v in self.checks.values())


def _match(claims: Claims, found: tuple[Detected, ...]) -> dict[int, int]:
    """Claimed object index -> detected object index, maximising agreeing attributes."""
    if not claims.objects or not found:
        return {}
    gain = np.zeros((len(claims.objects), len(found)))
    for i, c in enumerate(claims.objects):
        for j, d in enumerate(found):
            gain[i, j] = (c["colour"] == d.colour) * 2 + (c["shape"] == d.shape) * 2 + (c["size"] == d.size)
    rows, cols = linear_sum_assignment(-gain)
    return dict(zip(rows.tolist(), cols.tolist()))


def verify(image: Image.Image | np.ndarray | Reading, caption: str | Claims) -> Verdict:
    claims = parse(caption) if isinstance(caption, str) else caption
    reading = image if isinstance(image, Reading) else read(image)
    found = reading.objects
    match = _match(claims, found)
    checks: dict[str, list[bool]] = {"colour": [], "shape": [], "size": [], "relation": [], "count": [],
                                     "tone": [], "pattern": []}
    for i, c in enumerate(claims.objects):
        d = found[match[i]] if i in match else None
        checks["colour"].append(d is not None and d.colour == c["colour"])
        checks["shape"].append(d is not None and d.shape == c["shape"])
        if c["size"] is not None:
            checks["size"].append(d is not None and d.size == c["size"])
    for i, rel, j in claims.relations:
        if i in match and j in match:
            a, b = found[match[i]], found[match[j]]
            checks["relation"].append(relation(a.x, a.y, b.x, b.y) == rel)
        else:
            checks["relation"].append(False)
    if claims.objects:
        checks["count"].append(len(found) == claims.count)
    if claims.tone is not None:
        checks["tone"].append(reading.tone == claims.tone)
    if claims.pattern is not None:
        checks["pattern"].append(reading.pattern == claims.pattern)
    return Verdict(checks={k: v for k, v in checks.items() if v})


def agreement_with_truth(scene: Scene, reading: Reading) -> dict[str, list[bool]]:
    """Per-attribute agreement of a reading with a scene's ground truth (the verifier's own test)."""
    claims = Claims(
        objects=[{"colour": o.colour, "shape": o.shape, "size": o.size} for o in scene.objects],
        relations=[(i, scene.relation(i, j), j) for i in range(len(scene.objects)) for j in range(len(scene.objects)) if i != j],
        tone=scene.background.tone, pattern=scene.background.pattern,
    )
    return verify(reading, claims).checks
