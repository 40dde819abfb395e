"""The second look at candidates (tails.refine): re-centred tiles, the 8 views and back."""

import numpy as np
import pandas as pd
import pytest
from toy_models import peak_model

from tails.refine import (
    MAX_VIEWS,
    centred_offsets,
    check_refine_config,
    combine_views,
    dihedral_views,
    refine_candidates,
    undo_dihedral,
)

T = 256


def test_a_centred_tile_puts_its_pixel_at_the_centre_and_stays_inside_the_image():
    offsets = centred_offsets([1000.4, 5.0, 3070.0], [900.6, 3000.0, 10.0], (3080, 3072), T)
    assert offsets.tolist() == [[901 - 128, 1000 - 128], [3080 - T, 0], [0, 3072 - T]]
    with pytest.raises(ValueError, match="does not fit"):
        centred_offsets([10], [10], (200, 300), T)


def test_the_views_are_the_eight_symmetries_of_the_square_with_the_tile_itself_first():
    tile = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32)
    views = dihedral_views(tile)
    assert views.shape == (MAX_VIEWS, 8, 8, 3)
    assert np.array_equal(views[0], tile[0])
    assert len({v.tobytes() for v in views}) == MAX_VIEWS
    assert np.array_equal(dihedral_views(tile, 3), views[:3])
    assert np.array_equal(dihedral_views(tile, 8, start=1), views[1:])
    with pytest.raises(ValueError, match="1 to 8"):
        dihedral_views(tile, 9)


@pytest.mark.parametrize("row, col", [(3, 250), (128, 17), (0, 0), (255, 254)])
def test_every_view_maps_its_pixel_back_to_the_same_place(row, col):
    tile = np.zeros((1, T, T, 3), np.float32)
    tile[0, row, col, 2] = 1.0
    views = dihedral_views(tile)
    # what a perfect model answers in each view: the pixel it sees, in units of the tile side
    seen = [np.unravel_index(np.argmax(v[..., 2]), (T, T)) for v in views]
    predictions = np.array([[1.0, c / T, r / T] for r, c in seen])
    back = undo_dihedral(predictions, MAX_VIEWS, T)[0]
    assert np.array_equal(back[:, 1:] * T, np.tile([col, row], (MAX_VIEWS, 1)))


def test_views_combine_to_the_mean_score_and_the_median_position():
    views = np.array([[[0.9, 0.5, 0.5], [0.7, 0.5, 0.6], [0.2, 0.9, 0.1]]])  # one view points elsewhere
    assert np.allclose(combine_views(views), [[0.6, 0.5, 0.5]])


def _frame(blobs, shape=(400, 600)):
    """sci, ref, diff with Gaussian blobs at (x, y, flux) in sci and diff."""
    rng = np.random.default_rng(1)
    sci = rng.normal(100.0, 1.0, shape).astype(np.float32)
    ref = rng.normal(100.0, 1.0, shape).astype(np.float32)
    diff = rng.normal(0.0, 1.0, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for x, y, flux in blobs:
        blob = flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5).astype(np.float32)
        sci += blob
        diff += blob
    return sci, ref, diff


def test_a_candidate_is_looked_at_again_in_a_tile_centred_on_it():
    arrays = _frame([(590.0, 200.0, 500.0)])  # 10 px from the frame's right edge
    # the tessellation's estimate: a few px off, from a tile whose corner is (0, 0)
    candidates = pd.DataFrame({"tile": [3, 7], "p": [0.6, 0.1], "x": [585.0, 100.0], "y": [203.0, 100.0],
                               "x_tile": [585.0, 100.0], "y_tile": [203.0, 100.0], "row0": [0, 0], "col0": [0, 0]})
    out = refine_candidates(candidates, arrays, peak_model(), min_score=0.2, tile_size=T)
    first, second = out.iloc[0], out.iloc[1]
    assert (first.x, first.y, first.p) == (590.0, 200.0, 1.0)
    # the tile is centred on the estimate in y, and moved inside the frame in x
    assert (first.row0, first.col0) == (203 - 128, 600 - T)
    assert (first.x_tile, first.y_tile) == (590.0 - (600 - T), 200.0 - (203 - 128))
    # below min_score: untouched
    assert second.equals(candidates.iloc[1])


class CountingModel:
    """A model that counts the tiles it is shown."""

    def __init__(self, model):
        self.model, self.input_shape, self.tiles = model, model.input_shape, 0

    def predict_on_batch(self, x):
        self.tiles += len(x)
        return self.model.predict_on_batch(x)


def test_only_a_candidate_whose_centred_tile_still_scores_is_seen_in_all_views():
    arrays = _frame([(300.0, 200.0, 500.0)])
    # the second candidate is on empty sky: its centred tile scores 0
    candidates = pd.DataFrame({"tile": [0, 1], "p": [0.6, 0.7], "x": [300.0, 100.0], "y": [200.0, 100.0],
                               "x_tile": [300.0, 100.0], "y_tile": [200.0, 100.0], "row0": [0, 0],
                               "col0": [0, 0]})
    model = CountingModel(peak_model())
    out = refine_candidates(candidates, arrays, model, min_score=0.2, tile_size=T)
    assert model.tiles == 2 + (MAX_VIEWS - 1)
    assert out["p"].tolist() == [1.0, 0.0] and (out.loc[0, "x"], out.loc[0, "y"]) == (300.0, 200.0)
    assert out["row0"].tolist() == [200 - 128, 0] and out["col0"].tolist() == [300 - 128, 0]


def test_nothing_above_min_score_leaves_the_candidates_as_they_are():
    arrays = _frame([])
    candidates = pd.DataFrame({"tile": [0], "p": [0.3], "x": [50.0], "y": [60.0], "x_tile": [50.0],
                               "y_tile": [60.0], "row0": [0], "col0": [0]})
    out = refine_candidates(candidates, arrays, peak_model(), min_score=0.5, tile_size=T)
    assert out.equals(candidates)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"enabled": "yes", "min_score": 0.2, "views": 8}, "tails.refine.enabled must be true or false"),
        ({"enabled": True, "min_score": 1.5, "views": 8}, r"tails.refine.min_score must be a number in \[0, 1\]"),
        ({"enabled": True, "min_score": 0.2, "views": 0}, "tails.refine.views must be an integer from 1 to 8"),
        ({"enabled": True, "min_score": 0.2, "views": 2.0}, "tails.refine.views must be an integer"),
    ],
)
def test_a_bad_refine_section_is_refused_with_its_key(section, message):
    with pytest.raises(ValueError, match=message):
        check_refine_config(section)
    assert check_refine_config({"enabled": True, "min_score": 0, "views": 1}) == (True, 0.0, 1)
