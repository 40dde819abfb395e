"""Training Tails() on simulated ZTF triplets: resumable, seeded, logged.

The recipe is the original's (ZTF.md, "The original Tails", training branch):

* loss ``1.2 x BCE(p) + 1.0 x L1(x, y)``, the L1 term on positive tiles only;
* Adam, learning rate 3e-4, constant for 30 epochs and then multiplied by ``e^-0.1`` per epoch
  (config.defaults.yaml uses 1e-3, 8 and 0.2, which suit short CPU runs better);
* early stopping on the validation position error with a patience of 30 epochs;
* and, not in the original, a curriculum (``train.curriculum``): the first epochs draw only bright
  comets, without which a model trained from scratch on 2 CPU cores stayed at chance;
* also not in the original, and off by default (``train.min_snr_extended``, :func:`learnable_tiles`):
  the comets that cannot be told from a point source left out, since asteroids are taught as negatives.

An "epoch" here is a fixed number of steps (``train.steps_per_epoch``) over balanced random
batches, so that checkpoints come often on a CPU.  A run folder holds::

    checkpoint/  model.weights.h5, optimizer.npz, state.json   (the last epoch; for resuming)
    best.weights.h5     the weights of the epoch with the lowest validation loss
    log.csv             one line per epoch
    train.json          the configuration it ran with
    DONE                written when the run has finished

Everything is written atomically; an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .atomic import atomic_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "make_loss", "TileBatches", "augment_batch", "prefetched", "mine_hard_negatives",
    "recalibrate_batch_norm", "learning_rate", "track_best", "resolve_jit_compile", "learnable_tiles",
    "check_train_config", "checkpoint_state", "dataset_spec", "train", "train_command",
]

log = logging.getLogger(__name__)

#: ``best.weights.h5`` is the epoch with the smallest validation loss: the loss the model is trained
#: on (classification and position together), on held-out frames.  Choosing by position error
#: alone, as the first runs did, kept epochs whose classifier fired on 1 negative tile in 8.
BEST_BY = "val_loss"


# ----------------------------------------------------------------------------- loss & metrics
def make_loss(weight_p: float = 1.2, weight_xy: float = 1.0):
    """The original's loss: ``weight_p * BCE(p) + weight_xy * L1(x, y)`` on positives."""
    import keras
    from keras import ops

    def tails_loss(y_true, y_pred):
        p_true, p_pred = y_true[:, :1], ops.clip(y_pred[:, :1], 1e-7, 1 - 1e-7)
        bce = -(p_true * ops.log(p_pred) + (1 - p_true) * ops.log(1 - p_pred))[:, 0]
        l1 = ops.sum(ops.abs(y_true[:, 1:] - y_pred[:, 1:]), axis=-1) * y_true[:, 0]
        return weight_p * bce + weight_xy * l1

    tails_loss.__name__ = "tails_loss"
    keras.saving.register_keras_serializable("tails")(tails_loss)
    return tails_loss


def position_error_pix(y_true: np.ndarray, y_pred: np.ndarray, tile_size: int = 256) -> float:
    """Mean Euclidean offset (px) between true and predicted positions, on positives."""
    pos = y_true[:, 0] > 0.5
    if not pos.any():
        return float("nan")
    d = (y_true[pos, 1:] - y_pred[pos, 1:]) * tile_size
    return float(np.mean(np.hypot(d[:, 0], d[:, 1])))


# ----------------------------------------------------------------------------- data
def augment_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, tile_size: int = 256,
                  dtype=None):
    """Random flips and transposes (the 8 symmetries of the square), labels transformed alike.

    The label ``x`` is the column and ``y`` the row, in units of the tile side, with pixel i at
    ``i / tile_size``; a flip maps pixel i to ``tile_size - 1 - i``.  Each tile is copied once,
    through a view of its transformation, into a new array of ``dtype`` (``x``'s by default):
    for a batch of 64 float16 tiles into float32 this took 61 ms on one core here, against 79 ms
    for converting first and transforming in place.
    """
    out = np.empty(x.shape, dtype=x.dtype if dtype is None else dtype)
    y = y.copy()
    edge = (tile_size - 1) / tile_size
    for i in range(len(x)):
        pos = y[i, 0] > 0
        tile = x[i]
        if rng.random() < 0.5:  # transpose: swap rows and columns
            tile = tile.transpose(1, 0, 2)
            if pos:
                y[i, 1], y[i, 2] = y[i, 2], y[i, 1]
        if rng.random() < 0.5:  # flip columns
            tile = tile[:, ::-1]
            if pos:
                y[i, 1] = edge - y[i, 1]
        if rng.random() < 0.5:  # flip rows
            tile = tile[::-1, :]
            if pos:
                y[i, 2] = edge - y[i, 2]
        out[i] = tile
    return out, y


def prefetched(batches, threads: int = 4):
    """Iterate over ``batches[0]``, ``batches[1]``, ... with up to ``threads`` assembled ahead.

    Assembling a batch is numpy work that releases the GIL (a batch of 64 tiles took 61 ms on
    one core here, most of it converting float16 to float32), so threads overlap it with the
    train step and with each other.  On a GPU a step of ``Tails()`` takes less than that, and
    without them the accelerator would wait on the host.  The batches are the same, in the same
    order, as without them: each is a function of its index.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    n, threads = len(batches), max(1, int(threads))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = deque(pool.submit(batches.__getitem__, i) for i in range(min(threads, n)))
        for i in range(n):
            batch = pending.popleft().result()
            if i + threads < n:
                pending.append(pool.submit(batches.__getitem__, i + threads))
            yield batch


def learnable_tiles(y: np.ndarray, meta, min_snr_extended: float) -> np.ndarray:
    """Which tiles training may use: every negative, and the positives that are not point-like.

    A comet whose light beyond the best-fitting point source at its nucleus has a
    signal-to-noise below ``min_snr_extended`` (the truth column ``snr_extended``,
    :func:`tails.simulate.comet_snrs`) looks like an asteroid in the difference image, and
    asteroids are among the negatives.  Teaching such a comet as a positive asks the model to
    score one thing both ways; these tiles are left out altogether, neither positive nor negative.

    Parameters
    ----------
    y : ndarray (N, 3)
        Labels ``[has_comet, x, y]``.
    meta : DataFrame
        The data set's per-tile truth (:func:`tails.dataset.load_dataset`).
    min_snr_extended : float
        0 keeps every tile.

    Returns
    -------
    ndarray of bool (N,)

    Raises
    ------
    ValueError
        If ``min_snr_extended`` > 0 and the data set's positives carry no ``snr_extended`` (data
        sets built before the simulator's truth had it).
    """
    keep = np.ones(len(y), dtype=bool)
    if min_snr_extended <= 0:
        return keep
    positive = y[:, 0] > 0.5
    snr = meta["snr_extended"].to_numpy(float)[positive] if "snr_extended" in meta else None
    if snr is None or np.isnan(snr).any():
        raise ValueError(
            "train.min_snr_extended needs the truth column snr_extended in every positive tile, and "
            "this data set was built without it: build the data set again (a new train.dataset.path), "
            "or set train.min_snr_extended to 0"
        )
    keep[positive] = snr >= float(min_snr_extended)
    return keep


class TileBatches:
    """Balanced random batches of training tiles, a fixed number per epoch.

    Parameters
    ----------
    x : ndarray (N, T, T, 3), float16 or float32
    y : ndarray (N, 3)
    batch_size : int
    steps : int
        Batches per epoch.
    positive_fraction : float
        Fraction of positives in each batch.
    augment : bool
        Apply :func:`augment_batch`.
    seed : int
    easy : ndarray of bool (N,), optional
        The positives used while :attr:`curriculum` is True (e.g. the bright comets).
    hard_fraction : float
        Fraction of each batch's negatives drawn from :attr:`hard` (the negatives the model
        scored highest, :func:`mine_hard_negatives`) while that is not empty.

    Attributes
    ----------
    hard : ndarray of int
        Indices of the mined hard negatives; empty until set.
    """

    def __init__(self, x, y, batch_size, steps, positive_fraction=0.5, augment=True, seed=0, easy=None,
                 hard_fraction=0.0):
        self.x, self.y = x, y
        self.batch_size, self.steps = int(batch_size), int(steps)
        self.pos = np.flatnonzero(y[:, 0] > 0.5)
        self.neg = np.flatnonzero(y[:, 0] <= 0.5)
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise ValueError(
                f"training set needs positives and negatives, has {len(self.pos)} and {len(self.neg)}"
            )
        self.easy_pos = self.pos if easy is None else np.flatnonzero((y[:, 0] > 0.5) & np.asarray(easy, bool))
        if len(self.easy_pos) == 0:
            raise ValueError("the curriculum leaves no positives: lower train.curriculum.min_snr")
        self.curriculum = False
        self.n_pos = max(1, round(self.batch_size * positive_fraction))
        self.n_hard = round((self.batch_size - self.n_pos) * float(hard_fraction))
        self.hard = np.zeros(0, dtype=int)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        n_hard = self.n_hard if len(self.hard) else 0
        idx = np.concatenate(
            [
                rng.choice(self.easy_pos if self.curriculum else self.pos, self.n_pos),
                rng.choice(self.hard, n_hard) if n_hard else np.zeros(0, dtype=int),
                rng.choice(self.neg, self.batch_size - self.n_pos - n_hard),
            ]
        )
        x, y = self.x[idx], self.y[idx].astype(np.float32)
        if self.augment:
            return augment_batch(x, y, rng, tile_size=x.shape[1], dtype=np.float32)
        return x.astype(np.float32), y


def mine_hard_negatives(model, x: np.ndarray, negatives: np.ndarray, pool: int, min_score: float,
                        seed: int = 0, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The negatives that the model takes for comets: where to look harder next.

    A random ``pool`` of ``negatives`` is scored by ``model``; those scoring at least
    ``min_score`` are returned, highest first.  False positives on held-out frames were point-like
    star residuals and asteroids that plain random negatives show too rarely (models/README.md).

    Parameters
    ----------
    model : keras.Model
    x : ndarray (N, T, T, 3)
        The training tiles.
    negatives : ndarray of int
        Indices of the negative tiles in ``x``.
    pool : int
        How many negatives to score (all if fewer).
    min_score : float
        Keep the negatives whose comet score is at least this.
    seed : int

    Returns
    -------
    hard : ndarray of int
        Indices into ``x``, by decreasing score.
    scores : ndarray
        The scores of the whole pool (for the log: how often the model is fooled).
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(negatives, min(int(pool), len(negatives)), replace=False))
    scores = np.concatenate([
        np.asarray(model.predict_on_batch(x[chosen[i:i + batch_size]].astype(np.float32)))[:, 0]
        for i in range(0, len(chosen), batch_size)
    ])
    keep = np.flatnonzero(scores >= float(min_score))
    return chosen[keep[np.argsort(-scores[keep], kind="stable")]], scores


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_state(run_dir: str | Path) -> Path:
    """The loop state of a run folder's last checkpoint (``state.json``: its epoch, best, ...)."""
    return Path(run_dir) / "checkpoint" / "state.json"


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_checkpoint(run_dir: Path, model, state: dict) -> None:
    """Write weights, optimizer state and the loop state of the last epoch, atomically."""
    ck = run_dir / "checkpoint"
    _atomic(ck / "model.weights.h5", model.save_weights)
    opt_vars = [np.asarray(v) for v in model.optimizer.variables]
    _atomic(ck / "optimizer.npz", lambda t: np.savez(t, *opt_vars))
    _atomic(checkpoint_state(run_dir), lambda t: Path(t).write_text(json.dumps(state, indent=1)))


def load_checkpoint(run_dir: Path, model) -> dict | None:
    """Restore a run's last checkpoint into ``model`` (compiled); None when there is none."""
    ck, state = run_dir / "checkpoint", checkpoint_state(run_dir)
    if not state.is_file():
        return None
    with warnings.catch_warnings():
        # the weights file also holds the optimizer's variables, which Keras cannot load into an
        # unbuilt optimizer; they are restored below from optimizer.npz
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(ck / "model.weights.h5")
    model.optimizer.build(model.trainable_variables)
    with np.load(ck / "optimizer.npz") as z:
        values = [z[f"arr_{i}"] for i in range(len(z.files))]
    if len(values) != len(model.optimizer.variables):
        raise ValueError(
            f"checkpoint {ck} holds {len(values)} optimizer variables, the model needs "
            f"{len(model.optimizer.variables)}: it was made for another configuration"
        )
    for var, val in zip(model.optimizer.variables, values):
        var.assign(val)
    return json.loads(state.read_text())


def recalibrate_batch_norm(model, x: np.ndarray, batch_size: int = 32, batches: int = 16,
                           seed: int = 0) -> None:
    """Re-estimate the moving statistics of every batch normalisation layer on training tiles.

    Keras keeps exponential moving averages (momentum 0.99) that start at mean 0 and variance 1;
    a few hundred steps are not enough for them to forget that start, and a model evaluated with
    them (inference mode) sees its activations shrink layer after layer. This replaces them with
    the plain average of the statistics of ``batches`` random batches ("precise BN", Wu & Johnson
    2021, arXiv:2105.07576). The weights are not touched.

    Parameters
    ----------
    model : keras.Model
    x : ndarray (N, T, T, C)
        Training tiles (preprocessed).
    batch_size, batches : int
        Size and number of the forward passes.
    seed : int
        Seed of the choice of tiles.
    """
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    statistics = _batch_statistics(model, bns)
    trainable = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    idx = np.random.default_rng(seed).permutation(len(x))[: batch_size * batches]
    sums, n = None, 0
    for start in range(0, len(idx), batch_size):
        stats, state = statistics(trainable, state, x[np.sort(idx[start:start + batch_size])].astype(np.float32))
        stats = [np.asarray(v, np.float64) for v in stats]
        sums, n = (stats if sums is None else [u + v for u, v in zip(sums, stats)]), n + 1
    for i, bn in enumerate(bns):
        bn.moving_mean.assign(sums[2 * i] / n)
        bn.moving_variance.assign(sums[2 * i + 1] / n)


#: The compiled :func:`_batch_statistics` of each model (JAX traces it once, not once an epoch).
_STATISTICS = weakref.WeakKeyDictionary()


def _batch_statistics(model, bns):
    """``f(trainable, non_trainable, batch) -> (statistics, non_trainable)`` for the layers ``bns``.

    ``statistics`` holds each layer's mean and variance over the batch in training mode.  The
    model runs statelessly (``keras.Model.stateless_call``) with the layers' momentum at 0, so
    their "moving" statistics come back as the batch's and nothing in the model changes; the
    non-trainable state that comes back (the random state of stochastic depth) is the next
    call's.  Under JAX it is compiled with ``jax.jit``: run op by op, the full model took 25 s
    for one batch of 16 tiles on 2 cores.
    """
    import keras

    if model in _STATISTICS:
        return _STATISTICS[model]
    position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    wanted = [position[id(v)] for bn in bns for v in (bn.moving_mean, bn.moving_variance)]
    names = [bn.name for bn in bns]
    held = weakref.ref(model)  # a strong reference here would keep the model in _STATISTICS for good

    def statistics(trainable, non_trainable, batch):
        model = held()
        bns = [model.get_layer(name) for name in names]
        momenta = [bn.momentum for bn in bns]
        try:
            for bn in bns:
                bn.momentum = 0.0  # moving statistics = the batch's
            _, updated = model.stateless_call(trainable, non_trainable, batch, training=True)
        finally:
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum
        return [updated[i] for i in wanted], updated

    if keras.backend.backend() == "jax":
        import jax

        statistics = jax.jit(statistics)
    _STATISTICS[model] = statistics
    return statistics


# ----------------------------------------------------------------------------- training
def track_best(state: dict, epoch: int, val_loss: float) -> bool:
    """Record ``epoch`` in ``state`` as the best when its validation loss is the lowest so far.

    A state whose best was chosen by another measure (``best_by``, from runs begun before
    :data:`BEST_BY` changed) starts the comparison afresh.

    Returns
    -------
    bool
        True when ``epoch`` is the new best (its weights should be saved).
    """
    best = state.get("best") if state.get("best_by") == BEST_BY else None
    if not np.isfinite(val_loss) or (best is not None and val_loss >= best):
        return False
    state.update(best=float(val_loss), best_epoch=int(epoch), best_by=BEST_BY)
    return True


def learning_rate(epoch: int, base: float, constant_epochs: int, decay: float) -> float:
    """The original's schedule: constant, then ``x exp(-decay)`` per epoch."""
    return base if epoch < constant_epochs else base * math.exp(-decay * (epoch - constant_epochs + 1))


def resolve_jit_compile(value: bool | str, backend: str) -> bool:
    """Whether to compile the train step with XLA: ``train.jit_compile`` for a Keras backend.

    ``"auto"`` compiles under JAX, whose only compiled mode is XLA (without it every step runs op
    by op: on 2 CPU cores, in the run of ``tests/test_train.py`` with 128-px tiles, the first
    step took 105 s against 28 s jitted, and the second 5 s against 1.3 s), and not under
    TensorFlow, where XLA made a step of 16 tiles on 2 CPU cores take 20 s against 3.5 s
    (models/README.md), nor under PyTorch, whose ``torch.compile`` has not been measured here.
    """
    if value == "auto":
        return backend == "jax"
    return bool(value)


def check_train_config(t: dict) -> None:
    """Refuse a malformed ``train`` section, naming every bad key at once (:class:`~tails.config.ConfigError`)."""
    from .efficientdet import LOCALISATIONS

    problems = []
    for key in ("batch_size", "steps_per_epoch", "epochs"):
        if not isinstance(t[key], int) or t[key] < 1:
            problems.append(f"train.{key} must be a positive integer, got {t[key]!r}")
    if not 0 < float(t["positive_fraction"]) < 1:
        problems.append(f"train.positive_fraction must be in (0, 1), got {t['positive_fraction']!r}")
    if not float(t["learning_rate"]) > 0:
        problems.append(f"train.learning_rate must be positive, got {t['learning_rate']!r}")
    if t["jit_compile"] not in (True, False, "auto"):
        problems.append(f"train.jit_compile must be true, false or auto, got {t['jit_compile']!r}")
    if t["localisation"] not in LOCALISATIONS:
        problems.append(f"train.localisation must be one of {', '.join(LOCALISATIONS)}, got {t['localisation']!r}")
    h = t["hard_negatives"]
    if not isinstance(h["fraction"], (int, float)) or not 0 <= h["fraction"] < 1:
        problems.append(f"train.hard_negatives.fraction must be in [0, 1), got {h['fraction']!r}")
    for key in ("pool", "every_epochs"):
        if not isinstance(h[key], int) or h[key] < 1:
            problems.append(f"train.hard_negatives.{key} must be a positive integer, got {h[key]!r}")
    if not isinstance(h["min_score"], (int, float)) or not 0 <= h["min_score"] <= 1:
        problems.append(f"train.hard_negatives.min_score must be in [0, 1], got {h['min_score']!r}")
    c = t["curriculum"]
    if not isinstance(c["epochs"], int) or c["epochs"] < 0:
        problems.append(f"train.curriculum.epochs must be a non-negative integer, got {c['epochs']!r}")
    if not isinstance(c["min_snr"], (int, float)) or c["min_snr"] < 0:
        problems.append(f"train.curriculum.min_snr must be a non-negative number, got {c['min_snr']!r}")
    m = t["min_snr_extended"]
    if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0:
        problems.append(f"train.min_snr_extended must be a non-negative number, got {m!r}")
    for key, least in (("comets_per_frame", 1), ("negatives_per_frame", 0), ("processes", 1)):
        v = t["dataset"][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            problems.append(f"train.dataset.{key} must be an integer of at least {least}, got {v!r}")
    b = t["dataset"]["broad_seeing"]
    f = b["fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
        problems.append(f"train.dataset.broad_seeing.fraction must be in [0, 1], got {f!r}")
    r = b["range"]
    pair = isinstance(r, list) and len(r) == 2 and not any(isinstance(v, bool) for v in r)
    if not (pair and all(isinstance(v, (int, float)) for v in r) and 0 < r[0] < r[1]):
        problems.append(f"train.dataset.broad_seeing.range must be [low, high] arcsec with 0 < low < high, got {r!r}")
    for key in ("seeds", "val_seeds"):
        s = t["dataset"][key]
        if not (isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) for v in s) and s[0] < s[1]):
            problems.append(f"train.dataset.{key} must be [start, stop) integers with start < stop, got {s!r}")
    if problems:
        from .config import ConfigError

        raise ConfigError("; ".join(problems))


def dataset_spec(config: dict, which: str = "train"):
    """The :class:`~tails.dataset.DatasetSpec` and folder of a config's training or validation set.

    Parameters
    ----------
    config : dict
        A full configuration (:func:`tails.config.load_config`).
    which : {"train", "val"}
        The training set (``train.dataset.seeds`` in ``train.dataset.path``) or the validation
        set (``val_seeds`` in ``val_path``).

    Returns
    -------
    spec : tails.dataset.DatasetSpec
    path : str
        The data set folder.
    """
    from .dataset import DatasetSpec

    if which not in ("train", "val"):
        raise ValueError(f"which must be 'train' or 'val', got {which!r}")
    d = config["train"]["dataset"]
    prefix = "" if which == "train" else "val_"
    broad = d["broad_seeing"]
    spec = DatasetSpec(
        seeds=list(range(*d[f"{prefix}seeds"])),
        comets_per_frame=int(d["comets_per_frame"]),
        negatives_per_frame=int(d["negatives_per_frame"]),
        tile_size=int(config["tails"]["tile_size"]),
        tile_offset=int(config["tails"]["tile_offset"]),
        reproject=config["tails"]["reproject"],
        # the validation frames keep the simulator's seeing, as the detector's frames mostly do
        broad_seeing=float(broad["fraction"]) if which == "train" else 0.0,
        broad_seeing_range=tuple(float(v) for v in broad["range"]),
    )
    return spec, d[f"{prefix}path"]


def _dataset(config: dict, which: str, processes: int) -> tuple:
    """Build what is missing of a config's training or validation set, then load it."""
    from .dataset import build_dataset, load_dataset

    spec, path = dataset_spec(config, which)
    build_dataset(spec, path, processes=processes)
    return load_dataset(path, seeds=spec.seeds)


def _training_tiles(config: dict) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
    """The training tiles with their labels and truth, and the validation tiles with theirs,
    built or loaded (:func:`_dataset`); the point-like comets left out of both where
    ``train.min_snr_extended`` says, so that the best epoch is chosen on what the model is asked
    to learn."""
    t = config["train"]
    processes = int(t["dataset"]["processes"])
    x, y, meta = _dataset(config, "train", processes)
    xv, yv, meta_v = _dataset(config, "val", processes)
    if float(t["min_snr_extended"]) > 0:
        keep, keep_v = (learnable_tiles(a, m, float(t["min_snr_extended"])) for a, m in ((y, meta), (yv, meta_v)))
        log.info("left out as point-like (snr_extended < %g): %d of %d training positives, %d of %d validation",
                 float(t["min_snr_extended"]), int((~keep).sum()), int((y[:, 0] > 0.5).sum()),
                 int((~keep_v).sum()), int((yv[:, 0] > 0.5).sum()))
        x, y, meta = x[keep], y[keep], meta[keep].reset_index(drop=True)
        xv, yv = xv[keep_v], yv[keep_v]
    log.info("training tiles: %d (%d positive); validation: %d (%d positive)",
             len(y), int((y[:, 0] > 0.5).sum()), len(yv), int((yv[:, 0] > 0.5).sum()))
    return x, y, meta, xv, yv


def _validate(model: Any, loss: Any, xv: np.ndarray, yv: np.ndarray) -> tuple[float, float, float]:
    """The validation loss, the accuracy at 0.5 and the mean position error in px."""
    pred = model.predict(xv.astype(np.float32), batch_size=64, verbose=0)
    val_loss = float(np.mean(np.asarray(loss(yv, pred))))
    acc = float(np.mean((pred[:, 0] > 0.5) == (yv[:, 0] > 0.5)))
    return val_loss, acc, position_error_pix(yv, pred, tile_size=xv.shape[1])


#: Columns of a run's ``log.csv``, one row an epoch.
LOG_FIELDS = ["epoch", "lr", "loss", "val_loss", "val_accuracy", "val_position_error_pix", "seconds"]


def _append_row(log_path: Path, row: dict) -> None:
    """Append an epoch's row to ``log.csv``, with the header when the file is new."""
    new = not log_path.exists()
    with open(log_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def train(config: dict, overwrite: bool = False, max_epochs: int | None = None,
          deadline: float | None = None) -> Path:
    """Train Tails() as the config's ``train`` section says; resume an unfinished run.

    Parameters
    ----------
    config : dict
        A full configuration (:func:`tails.config.load_config`).
    overwrite : bool
        Start afresh even when ``train.output_dir`` holds a finished run.
    max_epochs : int, optional
        Stop after this many more epochs (for short sessions).
    deadline : float, optional
        Start no epoch after this time (seconds since the epoch, as :func:`time.time`); the
        config's ``train.max_hours``, counted from the first epoch's start, holds as well.  For
        a run that must end by a given time, the data set's building and loading included
        (``scripts/device/train.py``).

    Returns
    -------
    Path
        The run folder; ``best.weights.h5`` in it is the model to ship.

    Raises
    ------
    tails.config.ConfigError
        For a malformed ``train`` section.
    FileExistsError
        If the output folder holds a finished run and ``overwrite`` is False.
    ValueError
        If the data set is empty, or if ``train.min_snr_extended`` is set and the data set's truth
        lacks ``snr_extended``.
    """
    import keras

    from .efficientdet import Tails, load_model, transfer_weights

    t = config["train"]
    check_train_config(t)
    run_dir = Path(t["output_dir"])
    if (run_dir / "DONE").exists() and not overwrite:
        raise FileExistsError(
            f"{run_dir} holds a finished training run; choose another train.output_dir "
            "or pass --overwrite to replace it"
        )
    resumes = checkpoint_state(run_dir).is_file() and not (run_dir / "DONE").exists()
    if t["init_checkpoint"] and not resumes and not Path(t["init_checkpoint"]).is_file():
        # found now, not after the data sets are built
        raise FileNotFoundError(
            f"train.init_checkpoint {t['init_checkpoint']} is not a file: give the path of a "
            ".weights.h5 file to start from, or null to start from random weights"
        )

    keras.utils.set_random_seed(int(t["seed"]))
    x, y, meta, xv, yv = _training_tiles(config)
    # the run folder only once the data are there: a data set refused leaves no run behind,
    # and a finished run is replaced (--overwrite) only by one that can start
    if (run_dir / "DONE").exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.json").write_text(json.dumps(t, indent=1))

    model = Tails(input_shape=x.shape[1:], localisation=t["localisation"])
    loss = make_loss(float(t["loss_weight_p"]), float(t["loss_weight_xy"]))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(t["learning_rate"])),
        loss=loss,
        jit_compile=resolve_jit_compile(t["jit_compile"], keras.backend.backend()),
    )
    state = load_checkpoint(run_dir, model)
    if state is not None:
        log.info("resuming %s at epoch %d", run_dir, state["epoch"])
    else:
        state = {"epoch": 0, "best": None, "best_epoch": None, "best_by": BEST_BY, "seconds": 0.0}
        if t["init_checkpoint"]:
            transfer_weights(load_model(t["init_checkpoint"], input_shape=x.shape[1:]), model)
            log.info("starting from the weights of %s", t["init_checkpoint"])

    # curriculum: the first epochs see only the comets bright enough to learn from at once
    easy = None
    if int(t["curriculum"]["epochs"]) > 0 and "snr" in meta:
        easy = np.nan_to_num(meta["snr"].to_numpy(float), nan=0.0) >= float(t["curriculum"]["min_snr"])
    batches = TileBatches(
        x, y, t["batch_size"], t["steps_per_epoch"], t["positive_fraction"], bool(t["augment"]), int(t["seed"]),
        easy=easy, hard_fraction=float(t["hard_negatives"]["fraction"]),
    )
    hard = t["hard_negatives"]
    last = int(t["epochs"]) if max_epochs is None else min(int(t["epochs"]), state["epoch"] + int(max_epochs))
    stop = time.time() + 3600 * float(t["max_hours"]) if t["max_hours"] else math.inf
    stop = min(stop, math.inf if deadline is None else float(deadline))
    log_path = run_dir / "log.csv"

    stopped_early = False
    while state["epoch"] < last and time.time() < stop:
        epoch = state["epoch"]
        lr = learning_rate(epoch, float(t["learning_rate"]), int(t["lr_constant_epochs"]), float(t["lr_decay"]))
        model.optimizer.learning_rate.assign(lr)
        t0 = time.time()
        batches.epoch = epoch
        batches.curriculum = epoch < int(t["curriculum"]["epochs"])
        if batches.n_hard and (not len(batches.hard) or epoch % int(hard["every_epochs"]) == 0):
            batches.hard, scores = mine_hard_negatives(
                model, x, batches.neg, int(hard["pool"]), float(hard["min_score"]), seed=int(t["seed"]) + epoch
            )
            log.info("hard negatives: %d of %d scored >= %.2f (%.1f %% over 0.5)", len(batches.hard),
                     len(scores), float(hard["min_score"]), 100 * float(np.mean(scores > 0.5)))
        losses = []
        # train_on_batch in a plain loop: on 2 cores it took half the time per step of
        # model.fit on a keras PyDataset (2.9 s against 5.5 to 6.5 s per batch of 16)
        with tqdm(prefetched(batches), total=len(batches), desc=f"epoch {epoch + 1}", unit="step",
                  leave=False) as bar:
            for batch in bar:
                losses.append(float(model.train_on_batch(*batch)))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        recalibrate_batch_norm(model, x, seed=int(t["seed"]) + epoch)
        val_loss, acc, err = _validate(model, loss, xv, yv)
        state["seconds"] += time.time() - t0
        state["epoch"] = epoch + 1
        row = {
            "epoch": epoch + 1, "lr": lr, "loss": float(np.mean(losses)), "val_loss": val_loss,
            "val_accuracy": acc, "val_position_error_pix": err, "seconds": round(state["seconds"], 1),
        }
        _append_row(log_path, row)
        log.info("epoch %d: loss %.4f, val loss %.4f, val acc %.4f, val position error %.2f px",
                 epoch + 1, row["loss"], val_loss, acc, err)
        if track_best(state, epoch + 1, val_loss):
            _atomic(run_dir / "best.weights.h5", model.save_weights)
        save_checkpoint(run_dir, model, state)
        if state["epoch"] - (state["best_epoch"] or 0) >= int(t["early_stopping_patience"]):
            log.info("early stopping: no improvement for %d epochs", t["early_stopping_patience"])
            stopped_early = True
            break

    if stopped_early or state["epoch"] >= int(t["epochs"]):
        (run_dir / "DONE").write_text(json.dumps(state))
    return run_dir


def train_command(config: str = "config.defaults.yaml", overwrite: bool = False,
                  max_epochs: int | None = None) -> str:
    """Train Tails() from a YAML config (its ``train`` section); resumes unfinished runs.

    Parameters
    ----------
    config : str
        A YAML config with the keys of config.defaults.yaml.
    overwrite : bool
        Replace a finished run in ``train.output_dir``.
    max_epochs : int, optional
        Train at most this many more epochs now (resume later).
    """
    from .config import load_config

    run_dir = train(load_config(config), overwrite=overwrite, max_epochs=max_epochs)
    return str(run_dir)
