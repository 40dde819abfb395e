"""Preprocessing as the original: NaN -> median, diff < -100 -> 0, per-channel L2 norm."""

import numpy as np
import pytest

from tails.preprocess import BAD_DIFF_NEG, preprocess_stack, preprocess_tiles


def _tile(rng, n=1):
    return rng.normal(100.0, 5.0, size=(n, 32, 32, 3)).astype(np.float32)


def test_each_channel_has_unit_norm():
    out, valid = preprocess_tiles(_tile(np.random.default_rng(0), 4))
    assert valid.all()
    norms = np.linalg.norm(out.reshape(4, -1, 3), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_nan_becomes_channel_median_before_normalising():
    rng = np.random.default_rng(1)
    t = _tile(rng)
    t[0, :4, :4, 0] = np.nan
    med = np.nanmedian(t[0, ..., 0])
    expected = np.where(np.isnan(t[0, ..., 0]), med, t[0, ..., 0])
    expected = expected / np.linalg.norm(expected)
    out, valid = preprocess_tiles(t)
    assert valid[0] and np.isfinite(out).all()
    np.testing.assert_allclose(out[0, ..., 0], expected, rtol=1e-5)


def test_large_negative_difference_values_are_zeroed():
    t = _tile(np.random.default_rng(2))
    t[0, 5, 5, 2] = BAD_DIFF_NEG - 1
    t[0, 6, 6, 2] = BAD_DIFF_NEG + 1
    t[0, 7, 7, 0] = BAD_DIFF_NEG - 1  # only the difference channel is fixed
    out, _ = preprocess_tiles(t)
    assert out[0, 5, 5, 2] == 0
    assert out[0, 6, 6, 2] < 0
    assert out[0, 7, 7, 0] < 0


@pytest.mark.parametrize("bad", ["all_nan", "zero"])
def test_unusable_tiles_are_flagged_not_crashing(bad):
    t = _tile(np.random.default_rng(3), 3)
    t[1, ..., 1] = np.nan if bad == "all_nan" else 0.0
    out, valid = preprocess_tiles(t)
    assert valid.tolist() == [True, False, True]
    assert np.isfinite(out).all() and not out[1].any()


def test_preprocess_stack_matches_batch_and_returns_none_for_bad_tiles():
    t = _tile(np.random.default_rng(4))
    batch, _ = preprocess_tiles(t)
    single = t[0].copy()
    assert preprocess_stack(single) is single
    np.testing.assert_allclose(single, batch[0])
    assert preprocess_stack(np.zeros((8, 8, 3), np.float32)) is None


def _original(tile):
    """The original's steps on one (H, W, 3) tile, one at a time, in float64."""
    x = tile.astype(np.float64).copy()
    for c in range(3):
        ch = x[..., c]
        ch[np.isnan(ch)] = np.nanmedian(ch)
    d = x[..., 2]
    d[d < BAD_DIFF_NEG] = 0.0
    return x / np.linalg.norm(x.reshape(-1, 3), axis=0)


def test_mixed_tiles_match_the_originals_steps():
    """NaNs and bad negative differences in the same tiles: the median is taken before the
    clipping (a NaN-filled difference whose median is below -100 becomes 0), and every channel
    ends with unit norm, those changed by the clipping too."""
    t = _tile(np.random.default_rng(5), 5)
    t[1, :8, :, 2] = BAD_DIFF_NEG - 50  # clipped only
    t[2, :3, :3, 2] = np.nan  # NaN, then clipped pixels in the same channel
    t[2, 10:14, :, 2] = BAD_DIFF_NEG - 7
    t[3, ..., 2] = BAD_DIFF_NEG - 20  # median below -100: the NaN pixels end at 0 too
    t[3, 0, :5, 2] = np.nan
    t[3, 1, :, 2] = 5.0
    t[4, :2, :2, 1] = np.nan  # NaN in the reference only
    out, valid = preprocess_tiles(t)
    assert valid.all()
    for k in range(5):
        np.testing.assert_allclose(out[k], _original(t[k]), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(out.reshape(5, -1, 3), axis=1), 1.0, rtol=1e-5)
    assert (out[3, 0, :5, 2] == 0).all()


def test_in_place_preprocessing_gives_the_same_tiles_without_a_copy():
    t = _tile(np.random.default_rng(5), 3)
    t[1, :3, :3, 1] = np.nan
    t[2, 4, 4, 2] = BAD_DIFF_NEG - 1
    expected, expected_valid = preprocess_tiles(t)
    out, valid = preprocess_tiles(t, copy=False)
    assert out is t or np.shares_memory(out, t)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(valid, expected_valid)
