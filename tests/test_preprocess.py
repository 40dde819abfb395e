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
