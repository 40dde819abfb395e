"""The LiteRT inference engine: same outputs as Keras, converted once, a clear fallback."""

from __future__ import annotations

import logging
import subprocess
import sys

import keras
import numpy as np
import pytest

from tails.efficientdet import Tails, load_model, predict_tiles
from tails.litert import LiteRTModel, convert, default_cache_dir, load_detector, litert_unavailable

needs_litert = pytest.mark.skipif(litert_unavailable() is not None, reason=str(litert_unavailable()))

SMALL = dict(input_shape=(128, 128, 3), width_coefficient=0.25, depth_coefficient=0.34, bifpn_width=16,
             bifpn_layers=1, head_depth=1, drop_connect_rate=0.0)


def _tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


@needs_litert
def test_the_converted_model_gives_the_keras_outputs(tmp_path):
    keras.utils.set_random_seed(3)
    model = Tails(**SMALL)
    path = convert(model, tmp_path / "small.tflite")
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    lite = LiteRTModel(path, num_threads=1)
    assert lite.input_shape == (None, 128, 128, 3)
    tiles = _tiles(7, 128)
    # batches of 3, 3 and 1: the interpreter is resized between calls
    got = predict_tiles(lite, tiles, batch_size=3)
    want = predict_tiles(model, tiles, batch_size=3)
    assert got.shape == (7, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5)
    # a second pass after the resizes gives the same
    np.testing.assert_array_equal(predict_tiles(lite, tiles, batch_size=3), got)
    # by default, the interpreter's own batches (of 2 here: 2, 2, 2 and 1)
    assert lite.preferred_batch_size == 2
    np.testing.assert_allclose(predict_tiles(lite, tiles), got, atol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(N, 128, 128, 3\)"):
        predict_tiles(lite, _tiles(2, 256), batch_size=3)


@needs_litert
def test_a_checkpoint_is_converted_once_and_then_read_from_the_cache(fresh_checkpoint, caplog):
    caplog.set_level(logging.INFO, logger="tails.litert")
    first = load_detector(fresh_checkpoint)  # may reuse a conversion made earlier in the session
    assert isinstance(first, LiteRTModel)
    cached = list(default_cache_dir().glob("fresh-*.tflite"))
    assert [first.path] == cached
    caplog.clear()
    mtime = first.path.stat().st_mtime_ns
    second = load_detector(fresh_checkpoint)
    assert second.path == first.path and first.path.stat().st_mtime_ns == mtime
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    tiles = _tiles(2, 256, seed=1)
    np.testing.assert_allclose(predict_tiles(second, tiles), predict_tiles(load_model(fresh_checkpoint), tiles),
                               atol=2e-5)


def test_the_keras_engine_and_bad_engines(fresh_checkpoint, tmp_path):
    assert isinstance(load_detector(fresh_checkpoint, engine="keras"), keras.Model)
    with pytest.raises(ValueError, match="tails.engine must be one of litert, keras"):
        load_detector(fresh_checkpoint, engine="onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector(tmp_path / "nope.weights.h5")


def test_without_the_litert_runtime_it_warns_and_runs_in_keras(fresh_checkpoint):
    code = (
        "import sys; sys.modules['ai_edge_litert'] = None\n"  # as if the package were not installed
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from tails.litert import load_detector\n"
        f"print(type(load_detector({str(fresh_checkpoint)!r})).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "Functional"
    assert "pip install ai-edge-litert" in r.stderr and "running the model in Keras instead" in r.stderr
