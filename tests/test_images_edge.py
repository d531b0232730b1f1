"""Degenerate images: scores stay finite; undecodable bytes are a clear error naming the sample."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthvlm_data.config import ClipScoreConfig, SSIMConfig
from synthvlm_data.errors import ShardError
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.scoring.clipscore import ClipScorer
from synthvlm_data.scoring.ssim import ssim_roundtrip
from synthvlm_data.columns import decode_image

EDGE_IMAGES = {
    "all_black": Image.new("RGB", (64, 64), (0, 0, 0)),
    "all_white": Image.new("RGB", (64, 64), (255, 255, 255)),
    "constant_gray": Image.new("L", (40, 30), 128),
    "one_pixel": Image.new("RGB", (1, 1), (10, 200, 30)),
    "rgba_transparent": Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
}


def test_ssim_is_finite_on_degenerate_images():
    values = ssim_roundtrip(list(EDGE_IMAGES.values()), SSIMConfig(size=64, down=28))
    assert values.shape == (len(EDGE_IMAGES),) and np.all(np.isfinite(values))
    assert values[0] == pytest.approx(1.0)  # a constant image survives any resize


def test_clipscore_is_finite_on_degenerate_images():
    scorer = ClipScorer(ClipScoreConfig(model=ModelRef(id="tiny:clip")), device="cpu")
    values = scorer([im.convert("RGB") for im in EDGE_IMAGES.values()], ["a black square"] * len(EDGE_IMAGES))
    assert np.all(np.isfinite(values)) and np.all(np.abs(values) <= 1.0 + 1e-6)


@pytest.mark.parametrize("blob", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_undecodable_image_names_the_sample(blob):
    with pytest.raises(ShardError, match="abc in generate-00001-of-00003 cannot be decoded"):
        decode_image(blob, "abc in generate-00001-of-00003")
