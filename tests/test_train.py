"""Training pieces: labels follow augmentation, tile labelling, schedule, and bad input refused."""

import copy
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tails.config import ConfigError, load_config
from tails.dataset import (
    DatasetSpec, _save_shard, _shard_name, broad_seeing_frames, build_dataset, frame_to_examples, label_tiles,
    load_dataset,
)
from tails.train import (
    BEST_BY, TileBatches, augment_batch, learnable_tiles, learning_rate, mine_hard_negatives, position_error_pix,
    prefetched, recalibrate_batch_norm, resolve_jit_compile, track_best, train,
)
from toy_tiles import blob_shards


def test_labels_follow_every_flip_and_transpose():
    rng = np.random.default_rng(0)
    n, size = 64, 32
    x = np.zeros((n, size, size, 3), np.float32)
    y = np.zeros((n, 3), np.float32)
    for i in range(n):
        r, c = rng.integers(0, size, 2)
        x[i, r, c, :] = 1.0
        y[i] = (1.0, c / size, r / size)
    xa, ya = augment_batch(x, y, rng, tile_size=size)
    for i in range(n):
        r, c = np.unravel_index(np.argmax(xa[i, ..., 0]), (size, size))
        assert (c / size, r / size) == pytest.approx((ya[i, 1], ya[i, 2]), abs=1e-6)
    assert not np.array_equal(xa, x)  # something was augmented


def test_negatives_keep_their_labels_under_augmentation():
    x = np.random.default_rng(1).normal(size=(8, 16, 16, 3)).astype(np.float32)
    y = np.zeros((8, 3), np.float32)
    _, ya = augment_batch(x, y, np.random.default_rng(2), tile_size=16)
    assert not ya.any()


def test_tiles_are_labelled_by_the_nucleus_they_hold():
    offsets = np.array([[0, 0], [0, 236], [236, 0], [2000, 2000]])
    comets = pd.DataFrame({"x": [240.0], "y": [220.0], "coma_pix": [30.0]})
    labels, index, ambiguous = label_tiles(offsets, comets, tile_size=256)
    # the nucleus at column 240 lies in the overlap of the first two tiles: both positive
    np.testing.assert_allclose(labels[0], [1, 240 / 256, 220 / 256])
    np.testing.assert_allclose(labels[1], [1, 4 / 256, 220 / 256])
    assert index.tolist() == [0, 0, -1, -1]
    # the tile below is within the coma's reach but holds no nucleus: left out
    assert ambiguous.tolist() == [False, False, True, False]


def test_learning_rate_schedule_is_the_originals():
    assert learning_rate(0, 3e-4, 30, 0.1) == 3e-4
    assert learning_rate(29, 3e-4, 30, 0.1) == 3e-4
    assert learning_rate(30, 3e-4, 30, 0.1) == pytest.approx(3e-4 * np.exp(-0.1))
    assert learning_rate(31, 3e-4, 30, 0.1) == pytest.approx(3e-4 * np.exp(-0.2))


def test_the_best_epoch_is_the_one_with_the_lowest_validation_loss():
    state = {"epoch": 0, "best": None, "best_epoch": None, "best_by": BEST_BY}
    assert track_best(state, 1, 0.5)
    assert not track_best(state, 2, 0.6)
    assert not track_best(state, 3, float("nan"))
    assert track_best(state, 4, 0.4)
    assert (state["best"], state["best_epoch"]) == (0.4, 4)
    # a run resumed from before the choice was by validation loss (best = 14.7 px) starts afresh
    legacy = {"epoch": 8, "best": 14.7, "best_epoch": 8}
    assert track_best(legacy, 9, 0.42)
    assert (legacy["best"], legacy["best_epoch"], legacy["best_by"]) == (0.42, 9, BEST_BY)


def test_batch_norm_recalibration_averages_the_batch_statistics():
    import keras

    inputs = keras.Input((4, 4, 2))
    outputs = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(3, 1, name="conv")(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(64, 4, 4, 2)) * 0.01 + 5.0).astype(np.float32)  # far from mean 0, var 1
    kernel = model.get_layer("conv").get_weights()
    recalibrate_batch_norm(model, x, batch_size=16, batches=4, seed=3)
    bn = model.get_layer("bn")
    features = np.asarray(model.get_layer("conv")(x))
    assert np.asarray(bn.moving_mean) == pytest.approx(features.mean(axis=(0, 1, 2)), rel=1e-4)
    assert np.asarray(bn.moving_variance) == pytest.approx(features.var(axis=(0, 1, 2)), rel=0.2)
    assert bn.momentum == pytest.approx(0.99)  # restored
    for a, b in zip(kernel, model.get_layer("conv").get_weights()):
        np.testing.assert_array_equal(a, b)  # weights untouched


def test_batch_norm_recalibration_keeps_no_model_alive():
    """The compiled statistics are kept per model, and go with it."""
    import gc
    import weakref

    import keras

    from tails.train import _STATISTICS

    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Conv2D(3, 1)(inputs)))
    recalibrate_batch_norm(model, np.full((32, 4, 4, 2), 5.0, np.float32), batch_size=16, batches=2)
    assert model in _STATISTICS
    held = weakref.ref(model)
    del model
    gc.collect()
    assert held() is None


def test_batches_are_balanced_and_reproducible():
    y = np.zeros((100, 3), np.float32)
    y[:10, 0] = 1
    x = np.zeros((100, 8, 8, 3), np.float16)
    b = TileBatches(x, y, batch_size=8, steps=5, positive_fraction=0.5, augment=False, seed=3)
    xb, yb = b[0]
    assert xb.dtype == np.float32 and yb[:, 0].sum() == 4 and len(b) == 5
    np.testing.assert_array_equal(b[0][1], yb)


def test_batches_assembled_ahead_in_threads_are_the_same_batches_in_order():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 8, 8, 3)).astype(np.float16)
    y = np.zeros((30, 3), np.float32)
    y[:12] = np.c_[np.ones(12), rng.uniform(0, 1, (12, 2))]
    b = TileBatches(x, y, batch_size=6, steps=7, positive_fraction=0.5, augment=True, seed=3)
    want = [b[i] for i in range(len(b))]
    for threads in (0, 1, 3, 10):
        got = list(prefetched(b, threads))
        assert len(got) == len(want)
        for (xg, yg), (xw, yw) in zip(got, want):
            np.testing.assert_array_equal(xg, xw)
            np.testing.assert_array_equal(yg, yw)


def test_augmenting_converts_as_it_copies_and_leaves_the_input_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 8, 8, 3)).astype(np.float16)
    y = np.c_[np.ones(5), rng.uniform(0, 1, (5, 2))].astype(np.float32)
    x0, y0 = x.copy(), y.copy()
    xa, ya = augment_batch(x, y, np.random.default_rng(0), tile_size=8, dtype=np.float32)
    xb, yb = augment_batch(x.astype(np.float32), y, np.random.default_rng(0), tile_size=8)
    assert xa.dtype == np.float32
    assert augment_batch(x, y, np.random.default_rng(0), tile_size=8)[0].dtype == np.float16  # x's own
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_curriculum_draws_only_the_easy_positives():
    y = np.zeros((100, 3), np.float32)
    y[:10, 0] = 1
    x = np.arange(100, dtype=np.float16)[:, None, None, None] * np.ones((1, 8, 8, 3), np.float16)
    easy = np.zeros(100, bool)
    easy[[2, 5]] = True
    b = TileBatches(x, y, batch_size=8, steps=20, positive_fraction=0.5, augment=False, seed=3, easy=easy)
    drawn = lambda: {int(xb[i, 0, 0, 0]) for s in range(20) for xb, yb in [b[s]] for i in range(8) if yb[i, 0]}  # noqa: E731
    b.curriculum = True
    assert drawn() == {2, 5}
    b.curriculum = False
    assert len(drawn() - {2, 5}) > 0
    with pytest.raises(ValueError, match="curriculum leaves no positives"):
        TileBatches(x, y, batch_size=8, steps=1, easy=np.zeros(100, bool))


def _brightness_model():
    """A model whose comet score grows with a tile's mean: sigmoid((mean - 50) / 10)."""
    import keras

    inputs = keras.Input((8, 8, 3))
    dense = keras.layers.Dense(3, activation="sigmoid")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([[1 / 30, 0, 0]] * 3, np.float32), np.array([-5, 0, 0], np.float32)])
    return model


def test_point_like_comets_are_left_out_and_every_negative_kept():
    y = np.zeros((6, 3), np.float32)
    y[:4, 0] = 1
    meta = pd.DataFrame({"snr_extended": [12.0, 4.9, 5.0, 0.0, np.nan, np.nan]})  # negatives: no comet
    np.testing.assert_array_equal(learnable_tiles(y, meta, 5.0), [True, False, True, False, True, True])
    np.testing.assert_array_equal(learnable_tiles(y, meta, 0.0), [True] * 6)
    # a data set built before the truth had snr_extended is refused, not silently kept whole
    for old in (pd.DataFrame({"snr": np.ones(6)}), meta.assign(snr_extended=[12.0, np.nan, 5, 0, 1, 1])):
        with pytest.raises(ValueError, match="snr_extended.*build the data set again"):
            learnable_tiles(y, old, 5.0)
    assert learnable_tiles(y, pd.DataFrame({"snr": np.ones(6)}), 0.0).all()


def test_training_leaves_out_the_point_like_comets_it_is_asked_to(tmp_path, caplog):
    import logging
    import time

    cfg = _config(tmp_path)
    for sub, seed in (("train", 1), ("val", 2)):
        (tmp_path / sub).mkdir()
        blob_shards(tmp_path / sub, [seed], snr_extended=[8.0, 2.0, 9.0, 1.0])
    cfg["train"]["dataset"].update(seeds=[1, 2], val_seeds=[2, 3], processes=1)
    cfg["train"]["min_snr_extended"] = 5.0
    with caplog.at_level(logging.INFO, logger="tails.train"):
        train(cfg, deadline=time.time())
    assert "left out as point-like (snr_extended < 5): 2 of 4 training positives, 2 of 4 validation" in caplog.text
    cfg["train"]["min_snr_extended"] = -1
    with pytest.raises(ConfigError, match="train.min_snr_extended must be a non-negative number, got -1"):
        train(cfg)
    cfg["train"]["min_snr_extended"] = 5.0
    blob_shards(tmp_path / "train", [1])  # the same shard without snr_extended
    with pytest.raises(ValueError, match="build the data set again"):
        train(cfg)


def test_hard_negatives_are_those_the_model_takes_for_comets():
    x = np.arange(100, dtype=np.float16)[:, None, None, None] * np.ones((1, 8, 8, 3), np.float16)
    negatives = np.arange(10, 100)
    hard, scores = mine_hard_negatives(_brightness_model(), x, negatives, pool=1000, min_score=0.5, seed=1)
    assert hard.tolist() == list(range(99, 49, -1))  # mean >= 50, highest score first
    assert len(scores) == 90
    hard, scores = mine_hard_negatives(_brightness_model(), x, negatives, pool=30, min_score=0.5, seed=1)
    assert len(scores) == 30 and set(hard) <= set(range(50, 100)) and len(hard) > 0


def test_batches_draw_their_share_of_hard_negatives():
    y = np.zeros((100, 3), np.float32)
    y[:10, 0] = 1
    x = np.arange(100, dtype=np.float16)[:, None, None, None] * np.ones((1, 8, 8, 3), np.float16)
    b = TileBatches(x, y, batch_size=10, steps=20, positive_fraction=0.2, augment=False, seed=3, hard_fraction=0.5)
    assert b.n_hard == 4
    plain = [int(v) for s in range(20) for v in b[s][0][:, 0, 0, 0]]
    b.hard = np.array([97, 98, 99])
    for s in range(20):
        xb, yb = b[s]
        ids = xb[:, 0, 0, 0].astype(int)
        assert yb[:, 0].sum() == 2 and set(ids[2:6]) <= {97, 98, 99}  # 2 positives, 4 hard
    assert sum(v in (97, 98, 99) for v in plain) < 10  # without mining they are rare


def test_position_error_in_pixels():
    yt = np.array([[1, 0.5, 0.5], [0, 0, 0]], np.float32)
    yp = np.array([[0.9, 0.5 + 3 / 256, 0.5 + 4 / 256], [0.1, 0.9, 0.9]], np.float32)
    assert position_error_pix(yt, yp) == pytest.approx(5.0, abs=1e-4)


def _config(tmp_path):
    cfg = copy.deepcopy(load_config())
    cfg["train"]["output_dir"] = str(tmp_path / "run")
    cfg["train"]["dataset"]["path"] = str(tmp_path / "train")
    cfg["train"]["dataset"]["val_path"] = str(tmp_path / "val")
    return cfg


def test_malformed_train_config_is_refused(tmp_path):
    cfg = _config(tmp_path)
    cfg["train"]["batch_size"] = 0
    cfg["train"]["dataset"]["seeds"] = [5, 1]
    cfg["train"]["localisation"] = "centroid"
    cfg["train"]["hard_negatives"]["fraction"] = 1.5
    cfg["train"]["jit_compile"] = "yes"
    cfg["train"]["dataset"]["broad_seeing"].update(fraction=1.5, range=[4.5, 3.6])
    cfg["train"]["dataset"]["processes"] = "two"
    with pytest.raises(
        ConfigError,
        match=r"train\.batch_size must be a positive integer.*train\.jit_compile must be true, false or auto"
        r".*train\.localisation must be one of dense, heatmap"
        r".*train\.hard_negatives\.fraction must be in \[0, 1\)"
        r".*train\.dataset\.processes must be an integer of at least 1, got 'two'"
        r".*train\.dataset\.broad_seeing\.fraction must be in \[0, 1\], got 1\.5"
        r".*train\.dataset\.broad_seeing\.range must be \[low, high\] arcsec.*train\.dataset\.seeds",
    ):
        train(cfg)


def test_finished_run_is_not_overwritten(tmp_path):
    cfg = _config(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "DONE").write_text("{}")
    with pytest.raises(FileExistsError, match="finished training run.*--overwrite"):
        train(cfg)


def test_a_data_set_refused_leaves_no_run_and_keeps_the_finished_one(tmp_path):
    """Nothing is written, or replaced with --overwrite, until the data sets are there."""
    import json

    cfg = _config(tmp_path)
    cfg["train"]["dataset"].update(seeds=[5, 6], val_seeds=[7, 8])
    _save_shard(tmp_path / "train" / _shard_name(5), np.zeros((1, 4, 4, 3), np.float16),
                np.zeros((1, 3), np.float32), [{"seed": 5}])
    (tmp_path / "train" / "dataset.json").write_text(json.dumps({"seeds": [5], "comets_per_frame": 3}))
    with pytest.raises(ValueError, match="holds shards built with comets_per_frame=3"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "DONE").write_text("{}")
    with pytest.raises(ValueError, match="holds shards built with"):
        train(cfg, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["DONE"]


def test_a_missing_init_checkpoint_is_named_before_any_frame_is_simulated(tmp_path):
    cfg = _config(tmp_path)
    cfg["train"]["init_checkpoint"] = str(tmp_path / "nowhere.weights.h5")
    with pytest.raises(FileNotFoundError, match=r"train\.init_checkpoint .*nowhere\.weights\.h5 is not a file"):
        train(cfg)
    assert not (tmp_path / "train").exists() and not (tmp_path / "run").exists()


def test_empty_data_set_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty data set"):
        load_dataset(tmp_path / "empty")


def test_only_the_configs_seeds_are_loaded(tmp_path):
    """A folder grown with more seeds still gives exactly the data set that a config names."""
    for seed in (5, 6, 7):
        _save_shard(tmp_path / _shard_name(seed), np.full((2, 4, 4, 3), seed, np.float16),
                    np.zeros((2, 3), np.float32), [{"seed": seed}] * 2)
    x, y, meta = load_dataset(tmp_path, seeds=range(5, 7))
    assert sorted(set(meta["seed"])) == [5, 6] and len(x) == len(y) == 4
    assert sorted(set(load_dataset(tmp_path)[2]["seed"])) == [5, 6, 7]
    with pytest.raises(ValueError, match="empty data set"):
        load_dataset(tmp_path, seeds=[8])


def test_a_resumed_build_removes_what_a_killed_one_left(tmp_path):
    """A build killed mid-frame leaves its frame folder and unfinished shard; resuming clears them."""
    _save_shard(tmp_path / _shard_name(5), np.zeros((1, 4, 4, 3), np.float16),
                np.zeros((1, 3), np.float32), [{"seed": 5}])
    (tmp_path / "frame_k1ll3d").mkdir()
    (tmp_path / "frame_k1ll3d" / "sciimg.fits").write_bytes(b"half a frame")
    (tmp_path / ".shard_000006.npz.x7q2.npz").write_bytes(b"half a shard")
    build_dataset(DatasetSpec(seeds=[5]), tmp_path)  # shard 5 is done: nothing is simulated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "shard_000005.npz"]


def test_a_data_set_folder_is_grown_only_with_the_spec_it_was_built_with(tmp_path):
    """Shards of another spec are not mixed in; more seeds of the same one are, and recorded."""
    import json

    _save_shard(tmp_path / _shard_name(5), np.zeros((1, 4, 4, 3), np.float16),
                np.zeros((1, 3), np.float32), [{"seed": 5}])
    (tmp_path / "dataset.json").write_text(json.dumps({"seeds": [5], "comets_per_frame": 24}))  # an older build's
    build_dataset(DatasetSpec(seeds=[5]), tmp_path)  # keys added since count as their defaults
    for other in (DatasetSpec(seeds=[5], comets_per_frame=3), DatasetSpec(seeds=[5], broad_seeing=0.25)):
        with pytest.raises(ValueError, match=r"holds shards built with .*(comets_per_frame=24|broad_seeing=0\.0).*"
                                             r"give this data set a folder of its own"):
            build_dataset(other, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "shard_000005.npz"]
    _save_shard(tmp_path / _shard_name(6), np.zeros((1, 4, 4, 3), np.float16),
                np.zeros((1, 3), np.float32), [{"seed": 6}])
    build_dataset(DatasetSpec(seeds=[6]), tmp_path)
    record = json.loads((tmp_path / "dataset.json").read_text())
    assert record["seeds"] == [5, 6] and record["comets_per_frame"] == 24 and record["broad_seeing"] == 0.0
    build_dataset(DatasetSpec(seeds=[5], broad_seeing_range=(4.0, 5.0)), tmp_path)  # no frame is in it
    # a folder without shards is anyone's
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "dataset.json").write_text(json.dumps({"seeds": [1], "comets_per_frame": 9}))
    build_dataset(DatasetSpec(seeds=[], comets_per_frame=3), tmp_path / "empty")
    assert json.loads((tmp_path / "empty" / "dataset.json").read_text())["comets_per_frame"] == 3


def test_frames_in_broad_seeing_are_a_property_of_their_seeds():
    seeds = np.arange(100000, 100400)
    broad = broad_seeing_frames(seeds, 0.25)
    assert not broad_seeing_frames(seeds, 0.0).any() and broad_seeing_frames(seeds, 1.0).all()
    # any run of consecutive seeds holds its share, to within one or two
    for start in range(0, 400, 100):
        assert abs(broad[start:start + 100].sum() - 25) <= 2
    assert abs(broad[:40].sum() - 10) <= 2
    # growing the data set keeps the frames it had, and a larger fraction keeps those of a smaller
    np.testing.assert_array_equal(broad_seeing_frames(seeds[:50], 0.25), broad[:50])
    assert (broad_seeing_frames(seeds, 0.5) >= broad).all()


def test_a_simulated_frame_becomes_labelled_tiles_cut_as_the_detector_cuts_them(tmp_path):
    """One frame through tails.dataset: each positive's label is a comet's nucleus, in its tile."""
    from tails.simulate import SEEING_RANGE_ARCSEC

    spec = DatasetSpec(seeds=[800000], comets_per_frame=4, negatives_per_frame=6, broad_seeing=1.0,
                       broad_seeing_range=(3.8, 4.2))
    x, y, meta = frame_to_examples(800000, spec, tmp_path)
    assert x.dtype == np.float16 and x.shape[1:] == (256, 256, 3) and np.isfinite(x).all()
    assert y.shape == (len(x), 3) and len(meta) == len(x)
    positive = y[:, 0] == 1
    assert 1 <= positive.sum() <= 4 and (~positive).sum() == 6
    for label, m in zip(y[positive], np.array(meta, dtype=object)[positive]):
        # the label is where the comet's nucleus lies in its tile, in units of the tile side
        assert abs(label[1] * 256 + m["col0"] - m["x"]) < 1e-3 and abs(label[2] * 256 + m["row0"] - m["y"]) < 1e-3
        assert m["snr"] >= spec.min_snr
    assert all(3.8 <= m["seeing"] <= 4.2 for m in meta)  # broad_seeing 1: every frame
    narrow = frame_to_examples(800000, DatasetSpec(seeds=[800000], comets_per_frame=4, negatives_per_frame=6), tmp_path)
    assert SEEING_RANGE_ARCSEC[0] <= narrow[2][0]["seeing"] <= SEEING_RANGE_ARCSEC[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the frame's folders are removed


# m3 below loads a training checkpoint's weights file into a model whose optimizer is not built
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_checkpoints_save_and_resume_exactly(tmp_path):
    """Weights, optimizer state and loop state survive a save and a load (atomically written)."""
    import keras

    from tails.efficientdet import Tails
    from tails.train import load_checkpoint, make_loss, save_checkpoint

    tiny = dict(input_shape=(128, 128, 3), width_coefficient=0.25, depth_coefficient=0.34,
                bifpn_width=16, bifpn_layers=1, head_depth=1,
                drop_connect_rate=0.0)  # no stochastic depth: a step is then a function of the state

    def compiled():
        m = Tails(**tiny)
        # eagerly: what is saved and restored is tested here, not graph tracing (95 s -> 12 s)
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss(), run_eagerly=True)
        return m

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 128, 128, 3)).astype(np.float32)
    x /= np.sqrt((x**2).sum(axis=(1, 2), keepdims=True))  # as preprocessed: unit L2 norm per channel
    y = np.array([[1, 0.2, 0.3], [0, 0, 0], [1, 0.5, 0.5], [0, 0, 0]], np.float32)
    m = compiled()
    m.train_on_batch(x, y)
    save_checkpoint(tmp_path, m, {"epoch": 1, "best": 3.0})
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "model.weights.h5", "optimizer.npz", "state.json"]  # no temporary file left
    m2 = compiled()
    assert load_checkpoint(tmp_path, m2) == {"epoch": 1, "best": 3.0}
    np.testing.assert_allclose(m2.predict_on_batch(x), m.predict_on_batch(x), atol=1e-6)
    # the next step continues the same: the optimizer's moments came back.  A model with the
    # same weights but a fresh optimizer steps elsewhere (TF on CPU is not bitwise
    # deterministic, so compare the two gaps rather than ask for equality).
    m3 = compiled()
    m3.load_weights(tmp_path / "checkpoint" / "model.weights.h5")
    for model in (m, m2, m3):
        model.train_on_batch(x, y)

    def gap(a, b):  # the largest difference between the two models' trainable weights
        return max(float(np.abs(np.asarray(u) - np.asarray(v)).max())
                   for u, v in zip(a.trainable_weights, b.trainable_weights))

    restored, fresh = gap(m2, m), gap(m3, m)
    assert restored < 0.01 * fresh, (restored, fresh)


_TRAIN_CHILD = """
import sys
import keras
from tails.config import load_config
from tails.train import train
assert keras.backend.backend() == "jax", keras.backend.backend()
train(load_config(sys.argv[1]), max_epochs=1)
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_run_trained_under_jax_carries_over_to_tensorflow(tmp_path):
    """The GPU path end to end, on CPU: ``tails train`` under KERAS_BACKEND=jax writes a checkpoint
    (weights, optimizer state, epoch) that a run under TensorFlow can resume from, and weights
    that TensorFlow loads and runs."""
    import keras
    import yaml

    from tails.efficientdet import Tails, load_model, predict_tiles
    from tails.train import load_checkpoint, make_loss

    cfg = _config(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    blob_shards(tmp_path / "train", [1, 2])
    blob_shards(tmp_path / "val", [3])
    t = cfg["train"]
    t["dataset"].update(seeds=[1, 3], val_seeds=[3, 4], processes=1)
    t.update(batch_size=4, steps_per_epoch=2, epochs=2, lr_constant_epochs=1)
    t["curriculum"]["epochs"] = 0
    t["hard_negatives"].update(fraction=0.5, pool=8, min_score=0.0, every_epochs=1)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))

    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               # XLA's optimisations cost more time here than they save (as in test_model.py)
               XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    proc = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, str(path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    log_csv = pd.read_csv(run / "log.csv")
    assert log_csv["epoch"].tolist() == [1] and np.isfinite(log_csv[["loss", "val_loss"]].to_numpy()).all()
    assert not (run / "DONE").exists()  # one epoch of two: unfinished, to be resumed
    assert (run / "best.weights.h5").is_file()

    assert keras.backend.backend() == "tensorflow"
    x, _, _ = load_dataset(tmp_path / "val")
    model = Tails(input_shape=x.shape[1:], localisation=t["localisation"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss())
    state = load_checkpoint(run, model)  # what tails train does when it resumes the run here
    assert state["epoch"] == 1 and state["best_epoch"] == 1
    assert any(np.abs(np.asarray(v)).max() > 0 for v in model.optimizer.variables[2:])  # Adam's moments came back
    best = load_model(run / "best.weights.h5", input_shape=x.shape[1:])
    out = predict_tiles(best, x.astype(np.float32))
    assert out.shape == (len(x), 3) and np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    np.testing.assert_allclose(predict_tiles(model, x.astype(np.float32)), out, atol=1e-5)  # the same epoch


def test_the_train_step_is_compiled_with_xla_under_jax_only_by_default():
    assert resolve_jit_compile("auto", "jax") is True
    assert resolve_jit_compile("auto", "tensorflow") is False and resolve_jit_compile("auto", "torch") is False
    assert resolve_jit_compile(True, "tensorflow") is True and resolve_jit_compile(False, "jax") is False


def test_the_data_set_specs_are_the_configs(tmp_path):
    """``dataset_spec`` reads the training and validation sets of a config, as ``train`` builds them."""
    from tails.train import dataset_spec

    cfg = _config(tmp_path)
    cfg["train"]["dataset"].update(seeds=[10, 13], val_seeds=[20, 22], comets_per_frame=3)
    spec, path = dataset_spec(cfg, "train")
    assert (spec.seeds, path, spec.comets_per_frame) == ([10, 11, 12], str(tmp_path / "train"), 3)
    assert spec.tile_size == cfg["tails"]["tile_size"] and spec.reproject == cfg["tails"]["reproject"]
    assert spec.broad_seeing == 0.0  # the defaults: as every bundled model was trained
    cfg["train"]["dataset"]["broad_seeing"].update(fraction=0.25, range=[3.7, 4.4])
    spec, path = dataset_spec(cfg, "train")
    assert (spec.broad_seeing, spec.broad_seeing_range) == (0.25, (3.7, 4.4))
    spec, path = dataset_spec(cfg, "val")
    assert (spec.seeds, path) == ([20, 21], str(tmp_path / "val"))
    assert spec.broad_seeing == 0.0  # validation keeps the simulator's seeing
    with pytest.raises(ValueError, match="which must be 'train' or 'val'"):
        dataset_spec(cfg, "test")


def test_no_epoch_starts_after_the_deadline(tmp_path):
    """A run whose deadline has passed once its data are loaded trains nothing and is not finished."""
    import time

    cfg = _config(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    blob_shards(tmp_path / "train", [1])
    blob_shards(tmp_path / "val", [2])
    cfg["train"]["dataset"].update(seeds=[1, 2], val_seeds=[2, 3], processes=1)
    run = train(cfg, deadline=time.time())
    assert sorted(p.name for p in run.iterdir()) == ["train.json"]  # no log, checkpoint or DONE
