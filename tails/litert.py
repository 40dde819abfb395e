"""Inference with LiteRT: the Tails model converted once to a TensorFlow Lite flatbuffer.

On CPUs the same network runs two to three times as fast in LiteRT (the successor of TensorFlow
Lite, ``pip install ai-edge-litert``) with its XNNPACK kernels as in Keras on TensorFlow, and gives
the same outputs to about 1e-6.  Measured with ``scripts/profile_model.py`` on the 2-core
development machine: 169 tiles (one ccd-quadrant) in 3.6 s against 7.9 s in batches of 32, and in
2.2 s in LiteRT's best batches, of 2 (:attr:`LiteRTModel.preferred_batch_size`).

The conversion (a SavedModel export, then ``tf.lite.TFLiteConverter``) takes half a minute to a
minute, so its result is cached, keyed by the checksum of the weights file: a model is converted
once per machine, and the detector then needs neither the Keras model nor its weights.

:func:`load_detector` is what the CLI, the evaluation and the sentinel call; it gives either a
:class:`LiteRTModel` or the Keras model, which :func:`tails.efficientdet.predict_tiles` runs alike.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_path

__all__ = ["ENGINES", "LiteRTModel", "convert", "default_cache_dir", "detector_from_config", "load_detector", "litert_unavailable"]

log = logging.getLogger(__name__)

#: The inference engines of ``tails.engine``.
ENGINES = ("litert", "keras")


def litert_unavailable() -> str | None:
    """Why LiteRT cannot be used here, or None when it can.

    It needs the ``ai-edge-litert`` package to run a model, and Keras on its TensorFlow backend to
    convert one.
    """
    try:
        importlib.import_module("ai_edge_litert.interpreter")
    except ImportError:
        return "the LiteRT runtime is not installed (pip install ai-edge-litert)"
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"converting to LiteRT needs the tensorflow Keras backend, not {keras.backend.backend()!r}"
    return None


def convert(model, path: str | os.PathLike) -> Path:
    """Convert a Keras model to a LiteRT flatbuffer at ``path`` (written atomically).

    The batch dimension stays dynamic: :class:`LiteRTModel` resizes it per call.

    Parameters
    ----------
    model : keras.Model
        A built model, e.g. :func:`tails.efficientdet.Tails`.
    path : str or Path
        The ``.tflite`` file to write.

    Returns
    -------
    Path
        ``path``.
    """
    import tensorflow as tf

    path = Path(path)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tails-litert-") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        flat = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    with atomic_path(path) as tmp_path:
        tmp_path.write_bytes(flat)
    log.info("converted %s to LiteRT in %.0f s: %s (%.1f MB)", model.name, time.perf_counter() - t0, path,
             len(flat) / 1e6)
    return path


class LiteRTModel:
    """A converted Tails model, run by the LiteRT interpreter with XNNPACK.

    It offers what :func:`tails.efficientdet.predict_tiles` uses of a Keras model:
    ``input_shape``, ``jit_compile`` and ``predict_on_batch``.  Calls are serialised by a lock
    (an interpreter is not thread-safe).

    Parameters
    ----------
    path : str or Path
        A ``.tflite`` file written by :func:`convert`.
    num_threads : int, optional
        CPU threads of the interpreter; default: the cores this process may use.
    name : str
        The model's name, for logs.
    """

    jit_compile = False

    #: Tiles per interpreter call that :func:`tails.efficientdet.predict_tiles` uses by default.
    #: XNNPACK is fastest on small batches: on 2 cores, 169 tiles took 2.17 s in batches of 2,
    #: 2.23 s of 1, 2.46 s of 4, 3.09 s of 13 and 3.62 s of 32 (best of 3;
    #: ``python scripts/profile_model.py --only litert``, bundled model, 2026-11-25).
    preferred_batch_size = 2

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, name: str = "tails"):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.name = name
        self.num_threads = int(num_threads or len(os.sched_getaffinity(0)))
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
        (inp,), (out,) = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        self._in, self._out = inp["index"], out["index"]
        self.input_shape = (None, *(int(d) for d in inp["shape_signature"][1:]))
        self._batch = None
        self._lock = threading.Lock()

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for one batch, shape (N, 3)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            if self._batch != len(x):
                self._interpreter.resize_tensor_input(self._in, [len(x), *x.shape[1:]])
                self._interpreter.allocate_tensors()
                self._batch = len(x)
            self._interpreter.set_tensor(self._in, x)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._out).copy()

    def __repr__(self) -> str:
        return f"LiteRTModel({str(self.path)!r}, num_threads={self.num_threads})"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tails/litert``, by default ``~/.cache/tails/litert``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "tails" / "litert"


def load_detector(
    checkpoint: str | os.PathLike | None = None,
    engine: str = "litert",
    cache_dir: str | os.PathLike | None = None,
    num_threads: int | None = None,
):
    """The Tails model for detection, run by the chosen inference engine.

    Parameters
    ----------
    checkpoint : str or Path, optional
        A ``.weights.h5`` file; None means the bundled model.
    engine : {"litert", "keras"}
        ``litert`` converts the model once (cached in ``cache_dir``) and runs it in LiteRT; when
        LiteRT cannot be used (:func:`litert_unavailable`) it warns once and falls back to Keras.
    cache_dir : str or Path, optional
        Where converted models are kept, named ``{model name}-{sha256 of the weights}.tflite``;
        default: :func:`default_cache_dir`.
    num_threads : int, optional
        LiteRT's CPU threads; default: the cores this process may use.

    Returns
    -------
    LiteRTModel or keras.Model
        Either runs in :func:`tails.efficientdet.predict_tiles`.

    Raises
    ------
    ValueError
        For an unknown engine, or a checkpoint that does not fit (see
        :func:`tails.efficientdet.load_model`).
    FileNotFoundError
        If the checkpoint does not exist.
    """
    from .efficientdet import find_bundled_checkpoint, load_model, model_name
    from .models import sha256sum

    if engine not in ENGINES:
        raise ValueError(f"tails.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "keras":
        return load_model(checkpoint)
    why = litert_unavailable()
    if why is not None:
        log.warning("%s: running the model in Keras instead (about twice as slow)", why)
        return load_model(checkpoint)

    path = find_bundled_checkpoint() if checkpoint is None else Path(checkpoint)
    name = model_name(path)
    if not path.is_file():
        return load_model(path)  # raises its clear FileNotFoundError
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    cached = cache_dir / f"{name}-{sha256sum(path)[:16]}.tflite"
    if not cached.is_file():
        log.info("converting %s to LiteRT, once (about a minute); cached as %s", name, cached)
        convert(load_model(path), cached)  # load_model checks that the weights fit
    model = LiteRTModel(cached, num_threads=num_threads, name=name)
    log.info("model %s runs in LiteRT (%d threads) from %s", name, model.num_threads, cached)
    return model


def detector_from_config(config, checkpoint: str | os.PathLike | None = None):
    """:func:`load_detector` with the engine and cache of the ``tails`` section of a config.

    ``checkpoint`` None means ``tails.checkpoint``, and when that is null too, the bundled model.
    """
    tcfg = config["tails"]
    return load_detector(
        tcfg["checkpoint"] if checkpoint is None else checkpoint,
        engine=tcfg["engine"],
        cache_dir=tcfg["litert_cache"],
    )
