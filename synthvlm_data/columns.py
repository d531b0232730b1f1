"""The columns of every table the project writes, and how images and latents are stored in them.

- Stage shards (Arrow schemas): captions -> generate (pixels or latents) -> decode -> score ->
  select. A stage's shards always have exactly its schema, so shard bytes depend on nothing else.
- The published dataset (`datasets.Features`): what `load_dataset("<name>")` returns. The export
  writes it, the builder declares it, training reads it, and the demo data follows it.
- Encodings: images as PNG/JPEG/WebP bytes (deterministic: no timestamps or random metadata),
  latents as little-endian float16 bytes of one sample's (C, H, W).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from synthvlm_data.errors import ShardError

# --------------------------------------------------------------------------- stage shards

CAPTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("caption", pa.string()),
        ("prompt", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("concept", pa.string()),
    ]
)
GENERATE_SCHEMA = pa.schema(  # pixel-mode generate shards, and decode shards
    [
        ("id", pa.string()),
        ("repeat", pa.int32()),
        ("seed", pa.int64()),
        ("image", pa.binary()),
        ("generator", pa.string()),
    ]
)


def _latents_instead_of_image(schema: pa.Schema) -> pa.Schema:
    """Latent-mode generate shards: the denoised latent (float16 little-endian, C order) and its
    (C, H, W) shape in place of `image`."""
    i = schema.get_field_index("image")
    return schema.remove(i).insert(i, pa.field("latent_shape", pa.list_(pa.int32()))).insert(i, pa.field("latent", pa.binary()))


LATENT_SCHEMA = _latents_instead_of_image(GENERATE_SCHEMA)
SCORE_SCHEMA = pa.schema(
    [("id", pa.string()), ("repeat", pa.int32()), ("clip_score", pa.float64()), ("ssim", pa.float64())]
)
# With `score.safety`: the detector's verdict, appended to score and selection shards (and the dataset).
SAFETY_FIELDS = [("nsfw_score", pa.float64()), ("safe", pa.bool_())]


def score_schema(safety: bool) -> pa.Schema:
    return pa.schema(list(SCORE_SCHEMA) + [pa.field(n, t) for n, t in SAFETY_FIELDS]) if safety else SCORE_SCHEMA


SELECTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("repeat", pa.int32()),
        ("clip_score", pa.float64()),
        ("ssim", pa.float64()),
        ("score", pa.float64()),
        ("rank", pa.int64()),
    ]
)


# --------------------------------------------------------------------------- the published dataset


def _published():
    import datasets

    return {
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "clip_score": datasets.Value("float64"),
        "ssim": datasets.Value("float64"),
        "score": datasets.Value("float64"),
        "seed": datasets.Value("int64"),
        "repeat": datasets.Value("int32"),
        "source": datasets.Value("string"),
        "source_id": datasets.Value("string"),
        "generator": datasets.Value("string"),
    }


def dataset_features(with_concept: bool, latent_shape: tuple[int, ...] | None = None, with_safety: bool = False):
    """The published columns (`datasets.Features`). Synth^2 runs add `concept`; latent-mode runs carry
    `latent` (Array3D float16, (C, H, W)) in place of `image`; runs with `score.safety` add
    `nsfw_score` and `safe`."""
    import datasets

    feats = _published()
    if latent_shape is not None:
        latent = datasets.Array3D(shape=tuple(int(d) for d in latent_shape), dtype="float16")
        feats = {("latent" if k == "image" else k): (latent if k == "image" else v) for k, v in feats.items()}
    if with_concept:
        feats["concept"] = datasets.Value("string")
    if with_safety:
        feats["nsfw_score"] = datasets.Value("float64")
        feats["safe"] = datasets.Value("bool")
    return datasets.Features(feats)


# --------------------------------------------------------------------------- encodings

# Stored latents: IEEE half precision, little-endian, C order, one sample's (C, H, W) per row.
LATENT_DTYPE = np.dtype("<f2")


def latent_to_bytes(latent) -> bytes:
    """One sample's latent (C, H, W) tensor as float16 little-endian bytes."""
    import torch

    return np.ascontiguousarray(latent.detach().to("cpu", torch.float32).numpy().astype(LATENT_DTYPE)).tobytes()


def latent_from_bytes(data: bytes, shape: Sequence[int]):
    """Inverse of `latent_to_bytes`: a float16 tensor of `shape`."""
    import torch

    arr = np.frombuffer(data, dtype=LATENT_DTYPE).reshape(tuple(int(s) for s in shape))
    return torch.from_numpy(arr.astype(np.float16))


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode deterministically (no timestamps or random metadata)."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality, method=4)
    else:  # the recipe schema rejects anything else first
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def decode_image(data: bytes, where: str = "") -> Image.Image:
    """Decode image bytes to RGB; a file PIL cannot read is an error naming where it came from."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ShardError(f"image {where or '<bytes>'} cannot be decoded ({type(err).__name__}: {err}); "
                         "delete that shard and its .sha256 to regenerate it") from None
    return img.convert("RGB")
