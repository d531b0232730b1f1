"""The batched SSIM must equal scikit-image's default `structural_similarity`, image by image.

Every comparison is against scikit-image itself (the paper's implementation), never against
numbers copied from our own code, so a wrong window, border, constant or channel mean fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageFilter
from skimage.metrics import structural_similarity

from synthvlm_data.config import SSIMConfig
from synthvlm_data.scoring import ssim as ssim_mod
from synthvlm_data.scoring.ssim import resize_roundtrip, ssim_roundtrip, structural_similarity_batch

TOL = 1e-6


def _skimage_batch(a: np.ndarray, b: np.ndarray, **kwargs: object) -> np.ndarray:
    return np.array([structural_similarity(x, y, **kwargs) for x, y in zip(a, b)])


def _noisy_pair(rng: np.random.Generator, shape: tuple[int, ...], noise: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated uint8 pairs, so SSIM spans (0, 1) rather than sitting near 0."""
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


# ---------------------------------------------------------------- batch vs scikit-image


@pytest.mark.parametrize("noise", [0, 10, 80, 255])
def test_uint8_grayscale_matches_skimage(noise: int) -> None:
    rng = np.random.default_rng(noise)
    a, b = _noisy_pair(rng, (4, 61, 83), noise)
    got = structural_similarity_batch(a, b)
    want = _skimage_batch(a, b)
    assert got.shape == (4,) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    if noise == 0:
        np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-12)


def test_independent_random_images_match_skimage() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 40, 40), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 40, 40), dtype=np.uint8)
    np.testing.assert_allclose(structural_similarity_batch(a, b), _skimage_batch(a, b), rtol=0, atol=TOL)


@pytest.mark.parametrize("win_size", [3, 5, 11, 13])
def test_other_window_sizes_match_skimage(win_size: int) -> None:
    # 13 pushes uint8 window sums past int32 range: exercises the int64 path.
    rng = np.random.default_rng(win_size)
    a, b = _noisy_pair(rng, (2, 50, 37), 40)
    got = structural_similarity_batch(a, b, win_size=win_size)
    want = _skimage_batch(a, b, win_size=win_size)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("data_range", [1.0, 2.0, 0.25])
def test_float64_with_data_range_matches_skimage(data_range: float) -> None:
    rng = np.random.default_rng(7)
    a = rng.random((3, 48, 56))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    got = structural_similarity_batch(a, b, data_range=data_range)
    want = _skimage_batch(a, b, data_range=data_range)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_float32_is_computed_in_float64() -> None:
    """scikit-image works in float32 for float32 input; we stay within its rounding (~1e-6)."""
    img = skimage.data.moon()
    blur, _ = _degraded(img)
    a, b = (img / 255).astype(np.float32)[None], (blur / 255).astype(np.float32)[None]
    got = structural_similarity_batch(a, b, data_range=1.0)
    exact = structural_similarity_batch(a.astype(np.float64), b.astype(np.float64), data_range=1.0)
    assert got[0] == exact[0]
    np.testing.assert_allclose(got, _skimage_batch(a, b, data_range=1.0), rtol=0, atol=1e-5)


def test_float_values_far_from_zero_match_skimage() -> None:
    # Large offsets stress the sum(x^2) - sum(x)^2 cancellation.
    rng = np.random.default_rng(8)
    a = 1000.0 + rng.random((2, 30, 30)) * 10
    b = a + rng.normal(0, 1, a.shape)
    got = structural_similarity_batch(a, b, data_range=10.0)
    np.testing.assert_allclose(got, _skimage_batch(a, b, data_range=10.0), rtol=0, atol=TOL)


def test_uint16_infers_full_range_like_skimage() -> None:
    rng = np.random.default_rng(9)
    a = rng.integers(0, 65536, (2, 32, 32), dtype=np.uint16)
    b = (a // 2 + 1000).astype(np.uint16)
    with pytest.warns(UserWarning, match="data_range"):
        got = structural_similarity_batch(a, b)
    with pytest.warns(UserWarning):
        want = _skimage_batch(a, b)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_int8_infers_signed_range_like_skimage() -> None:
    rng = np.random.default_rng(16)
    a = rng.integers(-128, 128, (2, 24, 24), dtype=np.int8)
    b = (a // 2).astype(np.int8)
    with pytest.warns(UserWarning, match="data_range inferred from dtype int8 as 255"):
        got = structural_similarity_batch(a, b)
    with pytest.warns(UserWarning):
        want = _skimage_batch(a, b)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_int16_with_negative_values_matches_skimage() -> None:
    rng = np.random.default_rng(10)
    a = rng.integers(-500, 500, (2, 20, 24), dtype=np.int16)
    b = (a + rng.integers(-50, 50, a.shape)).astype(np.int16)
    got = structural_similarity_batch(a, b, data_range=1000)
    np.testing.assert_allclose(got, _skimage_batch(a, b, data_range=1000), rtol=0, atol=TOL)


@pytest.mark.parametrize("channel_axis", [-1, 3, 1])
def test_rgb_mean_over_channels_matches_skimage(channel_axis: int) -> None:
    rng = np.random.default_rng(11)
    a, b = _noisy_pair(rng, (3, 45, 52, 3), 60)
    b[..., 1] = a[..., 1]  # channels differ, so a wrong channel mean would show
    if channel_axis == 1:
        a, b = np.moveaxis(a, -1, 1), np.moveaxis(b, -1, 1)
    got = structural_similarity_batch(a, b, channel_axis=channel_axis)
    want = _skimage_batch(a, b, channel_axis=channel_axis - 1 if channel_axis > 0 else channel_axis)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def _degraded(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two realistic distortions of a real image: blur and a JPEG-like resize round trip."""
    pil = Image.fromarray(img)
    blur = np.asarray(pil.filter(ImageFilter.GaussianBlur(1.5)))
    w, h = pil.size
    rt = np.asarray(pil.resize((w // 3, h // 3), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR))
    return blur, rt


@pytest.mark.parametrize("name", ["camera", "moon", "coins", "text", "astronaut", "coffee", "chelsea", "rocket"])
def test_real_images_match_skimage(name: str) -> None:
    img = getattr(skimage.data, name)()
    channel_axis = -1 if img.ndim == 3 else None
    blur, rt = _degraded(img)
    a = np.stack([img, img, img])
    b = np.stack([blur, rt, img])
    got = structural_similarity_batch(a, b, channel_axis=channel_axis)
    want = _skimage_batch(a[:2], b[:2], channel_axis=channel_axis)
    np.testing.assert_allclose(got[:2], want, rtol=0, atol=TOL)
    assert got[2] == pytest.approx(1.0, abs=1e-12)  # identical pair
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0


def test_real_images_as_float_match_skimage() -> None:
    img = skimage.data.camera().astype(np.float64) / 255.0
    blur, _ = _degraded(skimage.data.camera())
    a, b = img[None], (blur.astype(np.float64) / 255.0)[None]
    got = structural_similarity_batch(a, b, data_range=1.0)
    np.testing.assert_allclose(got, _skimage_batch(a, b, data_range=1.0), rtol=0, atol=TOL)


def test_tiling_paths_match_skimage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row bands (big images) and image groups (small ones) give the same numbers."""
    rng = np.random.default_rng(12)
    a, b = _noisy_pair(rng, (5, 70, 66), 50)
    want = _skimage_batch(a, b)
    for budget in (66 * 7, 66 * 10, 70 * 66 * 2, 10**9):  # 1-row bands .. whole batch
        monkeypatch.setattr(ssim_mod, "_CPU_TILE_PIXELS", budget)
        np.testing.assert_allclose(structural_similarity_batch(a, b), want, rtol=0, atol=TOL)


def test_readonly_and_strided_inputs() -> None:
    img = skimage.data.astronaut()
    blur, _ = _degraded(img)
    a, b = img[None], blur[None]
    a.setflags(write=False)
    strided_a, strided_b = a[:, ::2, ::3], b[:, ::2, ::3]
    got = structural_similarity_batch(strided_a, strided_b, channel_axis=-1)
    want = _skimage_batch(strided_a, strided_b, channel_axis=-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_empty_batch() -> None:
    out = structural_similarity_batch(np.zeros((0, 8, 8), np.uint8), np.zeros((0, 8, 8), np.uint8))
    assert out.shape == (0,) and out.dtype == np.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_skimage() -> None:
    rng = np.random.default_rng(13)
    a, b = _noisy_pair(rng, (3, 64, 64), 30)
    got = structural_similarity_batch(a, b, device="cuda")
    np.testing.assert_allclose(got, _skimage_batch(a, b), rtol=0, atol=TOL)


@pytest.mark.parametrize("num_threads", [None, 1, 2])
def test_thread_count_gives_same_result_and_is_restored(num_threads: int | None) -> None:
    rng = np.random.default_rng(15)
    a, b = _noisy_pair(rng, (2, 300, 200), 30)  # tiles big enough for torch to parallelise
    before = torch.get_num_threads()
    got = structural_similarity_batch(a, b, num_threads=num_threads)
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(got, _skimage_batch(a, b), rtol=0, atol=TOL)


@pytest.mark.parametrize("num_threads", [0, -2, 1.5])
def test_bad_thread_count_is_an_error(num_threads: object) -> None:
    a = np.zeros((1, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="num_threads"):
        structural_similarity_batch(a, a, num_threads=num_threads)  # type: ignore[arg-type]


# ---------------------------------------------------------------- constant images never NaN


@pytest.mark.parametrize("value", [0, 1, 128, 255])
def test_identical_constant_images_score_one_like_skimage(value: int) -> None:
    a = np.full((2, 16, 16), value, np.uint8)
    got = structural_similarity_batch(a, a.copy())
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _skimage_batch(a, a.copy()), rtol=0, atol=TOL)
    np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-12)


def test_black_vs_white_is_finite_and_matches_skimage() -> None:
    a = np.zeros((1, 16, 16), np.uint8)
    b = np.full((1, 16, 16), 255, np.uint8)
    got = structural_similarity_batch(a, b)
    assert np.isfinite(got).all() and got[0] < 1e-3
    np.testing.assert_allclose(got, _skimage_batch(a, b), rtol=0, atol=TOL)


# ---------------------------------------------------------------- the SynthVLM round trip


def _paper_ssim(img: Image.Image, cfg: SSIMConfig) -> float:
    """The paper's recipe, written out directly with PIL + scikit-image, one image at a time."""
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[cfg.interpolation]
    ref = img.resize((cfg.size, cfg.size), resample)
    back = ref.resize((cfg.down, cfg.down), resample).resize((cfg.size, cfg.size), resample)
    if cfg.grayscale:
        return structural_similarity(np.array(ref.convert("L")), np.array(back.convert("L")), win_size=cfg.win_size)
    rgb_ref, rgb_back = np.array(ref.convert("RGB")), np.array(back.convert("RGB"))
    return structural_similarity(rgb_ref, rgb_back, win_size=cfg.win_size, channel_axis=-1)


def _test_images() -> list[Image.Image]:
    rng = np.random.default_rng(14)
    noise = Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 900).astype(np.uint8), (700, 1)))  # mode L
    return [
        Image.fromarray(skimage.data.astronaut()),  # 512x512, upsampled
        Image.fromarray(skimage.data.hubble_deep_field()),  # 1000x872, downsampled, non-square
        noise,  # worst case: nothing survives 336 px
        ramp,  # smooth: everything survives
    ]


def test_ssim_roundtrip_matches_paper_recipe_default_config() -> None:
    cfg = SSIMConfig()
    images = _test_images()
    got = ssim_roundtrip(images, cfg)
    want = np.array([_paper_ssim(img, cfg) for img in images])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert got[2] < 0.5 < got[0] < got[3]  # noise loses most, a smooth ramp almost nothing


@pytest.mark.parametrize(
    "cfg",
    [
        SSIMConfig(size=256, down=96, grayscale=False),
        SSIMConfig(size=200, down=64, interpolation="bicubic", win_size=11),
    ],
)
def test_ssim_roundtrip_matches_paper_recipe_other_configs(cfg: SSIMConfig) -> None:
    images = _test_images()
    got = ssim_roundtrip(images, cfg)
    want = np.array([_paper_ssim(img, cfg) for img in images])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_resize_roundtrip_shapes_and_modes() -> None:
    images = [Image.fromarray(skimage.data.logo()), Image.fromarray(skimage.data.camera())]  # RGBA, L
    ref, back = resize_roundtrip(images, SSIMConfig(size=64, down=32))
    assert ref.shape == back.shape == (2, 64, 64) and ref.dtype == np.uint8
    ref, back = resize_roundtrip(images, SSIMConfig(size=64, down=32, grayscale=False))
    assert ref.shape == back.shape == (2, 64, 64, 3)
    assert not np.array_equal(ref, back)


def test_palette_images_are_scored_as_rgb() -> None:
    """PIL resizes mode "P" with nearest-neighbour; we convert to RGB first so bilinear applies."""
    rgb = Image.fromarray(skimage.data.astronaut())
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    cfg = SSIMConfig(size=256, down=96)
    got = ssim_roundtrip([pal], cfg)
    np.testing.assert_allclose(got, ssim_roundtrip([pal.convert("RGB")], cfg), rtol=0, atol=0)
    ref = pal.resize((256, 256), Image.Resampling.BILINEAR)  # silently nearest for mode "P"
    back = ref.resize((96, 96), Image.Resampling.BILINEAR).resize((256, 256), Image.Resampling.BILINEAR)
    naive = structural_similarity(np.array(ref.convert("L")), np.array(back.convert("L")))
    assert abs(got[0] - naive) > 0.01  # so the conversion matters and this test can fail


def test_ssim_roundtrip_constant_images_are_finite_and_one() -> None:
    images = [
        Image.new("RGB", (1024, 1024), (0, 0, 0)),
        Image.new("L", (640, 480), 0),
        Image.new("RGB", (300, 300), (255, 255, 255)),
        Image.new("RGBA", (100, 100), (37, 90, 200, 0)),
    ]
    for cfg in (SSIMConfig(), SSIMConfig(size=128, down=48, grayscale=False)):
        got = ssim_roundtrip(images, cfg)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-12)
        ref, back = resize_roundtrip(images, cfg)
        kw = {} if cfg.grayscale else {"channel_axis": -1}
        np.testing.assert_allclose(got, _skimage_batch(ref, back, **kw), rtol=0, atol=TOL)


def test_ssim_roundtrip_empty() -> None:
    assert ssim_roundtrip([], SSIMConfig()).shape == (0,)


# ---------------------------------------------------------------- errors


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        structural_similarity_batch(np.zeros((2, 16, 16), np.uint8), np.zeros((2, 16, 17), np.uint8))


def test_images_smaller_than_window_are_an_error() -> None:
    a = np.zeros((1, 6, 30), np.uint8)
    with pytest.raises(ValueError, match="win_size=7 exceeds the image size 6x30"):
        structural_similarity_batch(a, a)


@pytest.mark.parametrize("win_size", [4, 8])
def test_even_window_is_an_error(win_size: int) -> None:
    a = np.zeros((1, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="win_size must be odd"):
        structural_similarity_batch(a, a, win_size=win_size)


def test_window_of_one_is_an_error() -> None:
    a = np.zeros((1, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="win_size must be >= 3"):
        structural_similarity_batch(a, a, win_size=1)


def test_float_without_data_range_is_an_error() -> None:
    a = np.zeros((1, 16, 16), np.float32)
    with pytest.raises(ValueError, match="data_range is required"):
        structural_similarity_batch(a, a)


@pytest.mark.parametrize("data_range", [0, -1.0, float("nan"), float("inf")])
def test_bad_data_range_is_an_error(data_range: float) -> None:
    a = np.zeros((1, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="data_range must be a finite number > 0"):
        structural_similarity_batch(a, a, data_range=data_range)


def test_nan_pixels_are_an_error() -> None:
    a = np.zeros((1, 16, 16))
    b = a.copy()
    b[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="b contains NaN"):
        structural_similarity_batch(a, b, data_range=1.0)


@pytest.mark.parametrize(
    ("shape", "channel_axis", "match"),
    [
        ((16, 16), None, r"single image pass image\[None\]"),
        ((1, 16, 16, 3), None, "channel_axis=-1"),
        ((1, 16, 16), -1, r"colour batch of shape \(N, H, W, C\)"),
        ((1, 16, 16, 3), 0, "batch axis"),
        ((1, 16, 16, 3), 4, "batch axis"),
    ],
)
def test_bad_dimensions_are_an_error(shape: tuple[int, ...], channel_axis: int | None, match: str) -> None:
    a = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match=match):
        structural_similarity_batch(a, a, channel_axis=channel_axis)


def test_bool_images_are_an_error() -> None:
    a = np.zeros((1, 16, 16), bool)
    with pytest.raises(ValueError, match="integer or float dtype"):
        structural_similarity_batch(a, a)
