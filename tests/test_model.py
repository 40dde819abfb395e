"""Tests of the Tails model: architecture, inference helper, weights files, backends."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tails import efficientdet  # noqa: E402
from tails.efficientdet import (  # noqa: E402
    CHECKPOINT_FILENAME,
    Tails,
    average_checkpoints,
    find_bundled_checkpoint,
    load_model,
    model_name,
    predict_tiles,
    transfer_weights,
)
from tails.layers import SoftArgmax2D

REPO = Path(__file__).resolve().parents[1]

# A small configuration for the tests where the full model is not the point.
TINY = dict(
    input_shape=(128, 128, 3),
    width_coefficient=0.25,
    depth_coefficient=0.34,
    bifpn_width=16,
    bifpn_layers=2,
    head_depth=1,
)
# P3..P7 of a 128x128 input: 16^2 + 8^2 + 4^2 + 2^2 + 1^2
TINY_HEAD_SIZE = 341


def _randomize(model: keras.Model, seed: int = 0) -> None:
    """Give every weight a random value of a sensible scale, so that outputs differ by tile."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, path = tuple(w.shape), w.path
        if "moving_variance" in path or "gamma" in path:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:  # kernels: fan-in scaled
            fan_in = np.prod(shape[:-2]) * (1 if "depthwise" in path else shape[-2])
            value = rng.normal(0.0, 2.5 / np.sqrt(fan_in), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        w.assign(value.astype("float32"))


def _run(model: keras.Model, tiles: np.ndarray) -> np.ndarray:
    """Eager inference: no tracing of a predict function, cheap for the tiny model."""
    return np.asarray(model(tiles, training=False))


def _tiles(n: int, size: int = 128, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    model = Tails(**TINY)
    _randomize(model)
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.weights.h5"
    tiny_model.save_weights(path)
    return path


def test_default_architecture():
    model = Tails()
    assert model.input_shape == (None, 256, 256, 3)
    assert model.output_shape == (None, 3)
    # the concatenated P3..P7 maps: 32^2 + 16^2 + 8^2 + 4^2 + 2^2 (ZTF.md, "The original Tails")
    assert model.get_layer("head_features").output.shape == (None, 1364)
    # the backbone's feature maps C3, C4, C5 (EfficientNet-B0)
    assert model.get_layer("block3b_add").output.shape == (None, 32, 32, 40)
    assert model.get_layer("block5c_add").output.shape == (None, 16, 16, 112)
    assert model.get_layer("block7a_project_bn").output.shape == (None, 8, 8, 320)
    # about 3.95 M parameters, as published
    assert 3_900_000 <= model.count_params() <= 4_000_000
    # no data-dependent normalisation: the inputs are preprocessed by tails.preprocess; the one
    # rescaling is the fixed factor sqrt(256 * 256) that brings unit-norm channels to unit rms
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "Normalization" not in kinds and kinds.count("Rescaling") == 1
    assert model.get_layer("unit_rms").scale == 256.0


def test_output_shape_and_range(tiny_model):
    assert tiny_model.get_layer("head_features").output.shape == (None, TINY_HEAD_SIZE)
    out = _run(tiny_model, _tiles(5))
    assert out.shape == (5, 3)
    assert np.all((out >= 0) & (out <= 1))
    assert np.isfinite(out).all()


def test_weighted_bifpn_builds():
    model = Tails(**dict(TINY, bifpn_layers=1, weighted_bifpn=True))
    out = _run(model, _tiles(2))
    assert out.shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs",
    [dict(input_shape=(100, 100, 3)), dict(input_shape=(256, 256)), dict(bifpn_width=0),
     dict(localisation="centroid")],
)
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        Tails(**kwargs)


def test_predict_tiles_matches_model(tiny_model):
    tiles = _tiles(7)
    expected = _run(tiny_model, tiles)
    out = predict_tiles(tiny_model, tiles, batch_size=3)  # batches of 3, 3 and 1
    assert out.shape == (7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.std(out[:, 0]) > 1e-3  # the tiles are told apart


def test_predict_tiles_empty_and_bad_shape(tiny_model):
    assert predict_tiles(tiny_model, np.zeros((0, 128, 128, 3), "float32")).shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        predict_tiles(tiny_model, np.zeros((2, 64, 64, 3), "float32"))
    for bad in (0, -3, 2.5, "32", True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer or null"):
            predict_tiles(tiny_model, _tiles(1), batch_size=bad)


def test_save_load_round_trip(tiny_model, tiny_checkpoint):
    model = load_model(tiny_checkpoint, **TINY)
    tiles = _tiles(4)
    np.testing.assert_allclose(_run(model, tiles), _run(tiny_model, tiles), atol=1e-6)


@pytest.mark.parametrize(
    "change", [dict(bifpn_width=24), dict(bifpn_layers=1), dict(input_shape=(256, 256, 3))]
)
def test_load_wrong_architecture(tiny_checkpoint, change):
    with pytest.raises(ValueError, match="different architecture") as info:
        load_model(tiny_checkpoint, **dict(TINY, **change))
    assert str(tiny_checkpoint) in str(info.value)


def test_the_heatmap_head_starts_from_a_dense_checkpoint_and_reloads(tiny_model, tiny_checkpoint, tmp_path):
    heat = Tails(**TINY, localisation="heatmap")
    assert heat.count_params() > tiny_model.count_params()
    assert transfer_weights(load_model(tiny_checkpoint, **TINY), heat) > 0
    tiles = _tiles(4)
    dense_out, heat_out = _run(tiny_model, tiles), _run(heat, tiles)
    assert heat_out.shape == (4, 3)
    # p_comet comes from the same, copied, layers; the position head starts uniform: the centre
    np.testing.assert_allclose(heat_out[:, 0], dense_out[:, 0], atol=1e-5)
    np.testing.assert_allclose(heat_out[:, 1:], 0.5, atol=1e-6)
    # trained, the position follows the heatmap's peak; a checkpoint finds its architecture
    _randomize(heat, seed=2)
    heat.save_weights(tmp_path / "heat.weights.h5")
    loaded = load_model(tmp_path / "heat.weights.h5", **TINY)
    np.testing.assert_allclose(_run(loaded, tiles), _run(heat, tiles), atol=1e-5)
    with pytest.raises(ValueError, match="different architecture"):
        load_model(tmp_path / "heat.weights.h5", **TINY, localisation="dense")
    with pytest.raises(ValueError, match="do not fit"):
        transfer_weights(Tails(**dict(TINY, bifpn_width=24)), heat)


def test_soft_argmax_finds_a_peak():
    logits = np.full((2, 8, 16, 1), -30.0, "float32")
    logits[0, 2, 5, 0] = 30.0  # row 2, column 5
    logits[1, 6, 10, 0] = logits[1, 6, 11, 0] = 30.0  # between columns 10 and 11
    xy = np.asarray(SoftArgmax2D()(logits))
    np.testing.assert_allclose(xy[0], [5.5 / 16, 2.5 / 8], atol=1e-6)
    np.testing.assert_allclose(xy[1], [11.0 / 16, 6.5 / 8], atol=1e-6)


def test_load_missing_or_not_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.weights.h5", **TINY)
    other = tmp_path / "model.keras"
    other.write_bytes(b"not weights")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        load_model(other, **TINY)


def test_no_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(efficientdet, "DEFAULT_MODELS_DIR", tmp_path / "models")
    with pytest.raises(FileNotFoundError) as info:
        load_model(None)
    message = str(info.value)
    assert "tails train" in message and "--checkpoint" in message


def test_bundled_model_is_newest(tmp_path, monkeypatch, tiny_checkpoint, tiny_model):
    models = tmp_path / "models"
    # a later model of the same day takes a letter, and is the newer
    for name in ("tails-20260101", "tails-20261124b", "tails-20261124", "tails-20250612"):
        (models / name).mkdir(parents=True)
        (models / name / CHECKPOINT_FILENAME).write_bytes(tiny_checkpoint.read_bytes())
    (models / "unrelated").mkdir()
    monkeypatch.setattr(efficientdet, "DEFAULT_MODELS_DIR", models)
    assert find_bundled_checkpoint() == models / "tails-20261124b" / CHECKPOINT_FILENAME
    assert model_name(None) == "tails-20261124b"
    model = load_model(None, **TINY)
    tiles = _tiles(2)
    np.testing.assert_allclose(_run(model, tiles), _run(tiny_model, tiles), atol=1e-6)


def test_model_name():
    assert model_name("/x/models/tails-20261124/tails.weights.h5") == "tails-20261124"
    assert model_name("/x/runs/best.weights.h5") == "best"
    assert model_name("ckpt/tails-e42.weights.h5") == "tails-e42"


def _other_backend() -> str | None:
    for name in ("jax", "torch"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    sys.path.insert(0, {repo!r})
    from tails.efficientdet import load_model, predict_tiles
    assert keras.backend.backend() == {backend!r}, keras.backend.backend()
    kwargs = json.loads({kwargs!r})
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    model = load_model({ckpt!r}, **kwargs)
    tiles = np.load({tiles!r})
    out = predict_tiles(model, tiles, batch_size=len(tiles))  # one compiled shape
    np.save({out!r}, out)
    """
)


@pytest.mark.skipif(_other_backend() is None, reason="neither jax nor torch is installed")
def test_weights_load_under_other_backend(tiny_model, tiny_checkpoint, tmp_path):
    backend = _other_backend()
    tiles = _tiles(5, seed=3)
    np.save(tmp_path / "tiles.npy", tiles)
    expected = _run(tiny_model, tiles)
    script = _CHILD.format(
        repo=str(REPO),
        backend=backend,
        kwargs=json.dumps(TINY),
        ckpt=str(tiny_checkpoint),
        tiles=str(tmp_path / "tiles.npy"),
        out=str(tmp_path / "out.npy"),
    )
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        # XLA's optimisations cost more time here than they save (compiles of the initialisers)
        XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_averaged_checkpoints_hold_the_mean_of_every_weight(tiny_model, tiny_checkpoint, tmp_path):
    other = Tails(**TINY)
    _randomize(other, seed=3)
    other.save_weights(tmp_path / "other.weights.h5")
    out = average_checkpoints([tiny_checkpoint, tmp_path / "other.weights.h5"], tmp_path / "soup.weights.h5", **TINY)
    soup = load_model(out, **TINY)
    for s, a, b in zip(soup.get_weights(), tiny_model.get_weights(), other.get_weights()):
        np.testing.assert_allclose(s, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.weights.h5", "soup.weights.h5"]


def test_averaging_refuses_what_cannot_be_averaged(tiny_checkpoint, tmp_path):
    heat = Tails(**TINY, localisation="heatmap")
    heat.save_weights(tmp_path / "heat.weights.h5")
    with pytest.raises(ValueError, match="two or more checkpoints"):
        average_checkpoints([tiny_checkpoint], tmp_path / "a.weights.h5", **TINY)
    with pytest.raises(ValueError, match="not the same kind of model"):
        average_checkpoints([tiny_checkpoint, tmp_path / "heat.weights.h5"], tmp_path / "a.weights.h5", **TINY)
    with pytest.raises(FileExistsError, match="exists"):
        average_checkpoints([tiny_checkpoint, tiny_checkpoint], tiny_checkpoint, **TINY)
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        average_checkpoints([tiny_checkpoint, tiny_checkpoint], tmp_path / "a.h5", **TINY)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5 does not exist"):
        average_checkpoints([tiny_checkpoint, tmp_path / "missing.weights.h5"], tmp_path / "a.weights.h5", **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.weights.h5"]


def test_tails_average_refuses_a_single_checkpoint_with_a_message(tiny_checkpoint, tmp_path, capsys):
    from tails.cli import main

    assert main(["average", str(tiny_checkpoint), f"--output={tmp_path / 'a.weights.h5'}"]) == 2
    assert "give two or more checkpoints to average, got 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
