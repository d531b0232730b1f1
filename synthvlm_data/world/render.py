"""Render a `Scene` to an anti-aliased RGB image (PIL + numpy, deterministic).

Shapes are drawn at `SUPERSAMPLE`x the image size and box-filtered down, which gives each edge
pixel its true coverage (anti-aliasing). The background is computed at the image size: its noise
and stripes are per-pixel structure, which is exactly what SSIM's resize round trip measures.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from synthvlm_data.world.scene import IMAGE_SIZE, Background, Obj, Scene

SUPERSAMPLE = 4


def shape_polygon(obj: Obj, scale: float = 1.0) -> list[tuple[float, float]] | None:
    """The outline of a polygonal shape (None for a circle), in pixels times `scale`.

    Every shape spans about 2r across, so a size class reads the same from any shape's bounding box.
    """
    cx, cy, r = obj.x * scale, obj.y * scale, obj.r * scale
    if obj.shape == "square":
        h = 0.9 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.shape == "triangle":
        return [(cx, cy - 0.95 * r), (cx + r, cy + 0.85 * r), (cx - r, cy + 0.85 * r)]
    if obj.shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a) + 0.1 * r))
        return pts
    return None


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, fill) -> None:
    s = SUPERSAMPLE
    poly = shape_polygon(obj, s)
    if poly is None:
        draw.ellipse((obj.x * s - obj.r * s, obj.y * s - obj.r * s, obj.x * s + obj.r * s, obj.y * s + obj.r * s), fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def background_array(bg: Background, size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """(size, size, 3) float32 background in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx - size / 2) * math.cos(bg.angle) + (yy - size / 2) * math.sin(bg.angle)
    grey = np.full((size, size), float(bg.level), np.float32)
    if bg.pattern == "gradient":
        grey += bg.amplitude * (u / (size / 2))
    elif bg.pattern == "striped":
        grey += bg.amplitude * np.sign(np.sin(2 * math.pi * u / bg.period))
    elif bg.pattern == "noisy":
        grey += bg.amplitude * np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32)
    rgb = grey[..., None] + np.asarray(bg.tint, np.float32)[None, None, :]
    return np.clip(rgb, 0, 255)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The scene as an RGB image of `size` px (the world's native size is IMAGE_SIZE)."""
    if size != IMAGE_SIZE:
        return render(scene).resize((size, size), Image.BICUBIC)
    return Image.fromarray(render_layers(scene)[0], "RGB")


def render_layers(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, object coverage in [0, 1]) at IMAGE_SIZE: the coverage is the renderer's
    own anti-aliased object mask (what a loss weights object pixels by)."""
    size = IMAGE_SIZE
    big = IMAGE_SIZE * SUPERSAMPLE
    colour = Image.new("RGB", (big, big))
    alpha = Image.new("L", (big, big), 0)
    cdraw, adraw = ImageDraw.Draw(colour), ImageDraw.Draw(alpha)
    for obj in scene.objects:
        _draw(cdraw, obj, obj.rgb)
        _draw(adraw, obj, 255)
    a = np.asarray(alpha.resize((size, size), Image.BOX), np.float32)[..., None] / 255.0
    # colour where coverage > 0, averaged over covered sub-pixels only (no dark fringes)
    c_sum = np.asarray(Image.fromarray(np.asarray(colour) * (np.asarray(alpha)[..., None] > 0)).resize((size, size), Image.BOX), np.float32)
    c = np.where(a > 0, c_sum / np.maximum(a, 1e-6), 0.0)
    bg = background_array(scene.background, size, seed=scene.seed)
    out = bg * (1 - a) + np.clip(c, 0, 255) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), a[..., 0]
