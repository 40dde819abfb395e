"""Training triplets from simulated ZTF frames, cut by the detector's own code.

Each simulated frame goes through exactly what a real one goes through in
:func:`tails.detect.process_frame`: the FITS products as IRSA serves them, :class:`tails.image.Troika`,
the SWarp re-projection of the reference, the same tessellation into 256-px tiles and the same
preprocessing.  Only the labelling is new: a tile is a positive when a comet's nucleus lies in it,
with the label ``[1, x / 256, y / 256]`` (x the column, y the row, as the model outputs).  Since
the comets are placed uniformly over the frame, they land at random positions in their tiles, as in
the original's training set.

Negatives are kept in generous proportion, hard ones first: tiles holding a confuser (asteroid,
variable star, cosmic ray, streak, ghost, bad column, bright star, nebulosity, footprint edge)
before plain sky.  Tiles that hold only part of a comet whose nucleus is in another tile are
ambiguous and are left out.

A fraction of the frames may be simulated in seeing broader than the simulator's 1.2"-3.5"
(:attr:`DatasetSpec.broad_seeing`), where asteroids are broad point sources that the detector
takes for comets more often (models/tails-20261203/MODEL.md, *In seeing beyond the simulator's*).
Which frames is a property of their seeds alone (:func:`broad_seeing_frames`), so a data set
grown by more seeds keeps the frames it had.

A data set is a folder of shards, ``shard_{seed:06d}.npz`` with ``x`` (N, 256, 256, 3) float16,
``y`` (N, 3) float32 and ``meta`` (a JSON string with the truth of each tile), plus ``dataset.json``,
the :class:`DatasetSpec` its shards were built with.  A folder is only ever grown with the spec it
was built with: a build with another refuses to mix its shards in.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .atomic import atomic_path

__all__ = [
    "DatasetSpec",
    "broad_seeing_frames",
    "label_tiles",
    "frame_to_examples",
    "build_dataset",
    "load_dataset",
]

log = logging.getLogger(__name__)


@dataclass
class DatasetSpec:
    """How to make a training set.

    Attributes
    ----------
    seeds : sequence of int
        One simulated frame per seed.  Training, validation and evaluation use disjoint seeds.
    comets_per_frame : int
        Comets per simulated frame (placed at random, at most one nucleus per tile region).
    negatives_per_frame : int
        Negative tiles kept per frame, hard ones first.
    tile_size, tile_offset : int
        As in the detector (config ``tails.tile_size`` and ``tails.tile_offset``).
    reproject : str
        ``swarp`` or ``reproject``, as in the detector.
    min_snr : float
        Comets whose expected core signal-to-noise (truth column ``snr``) is below this cannot be
        seen even in principle: their tiles are left out rather than taught as positives.
    simulate_kwargs : dict
        Passed to :func:`tails.simulate.simulate_frame` (magnitude ranges, conditions, ...).
    broad_seeing : float
        The fraction of frames (:func:`broad_seeing_frames`) simulated with their seeing drawn
        uniformly in ``broad_seeing_range`` instead of the simulator's 1.2"-3.5"; 0 for none.
    broad_seeing_range : (float, float)
        That seeing, arcsec: by default the range over 3.5" the bundled model was measured in.
    """

    seeds: Sequence[int]
    comets_per_frame: int = 24
    negatives_per_frame: int = 40
    tile_size: int = 256
    tile_offset: int = 20
    reproject: str = "swarp"
    min_snr: float = 3.0
    simulate_kwargs: dict | None = None
    broad_seeing: float = 0.0
    broad_seeing_range: Sequence[float] = (3.6, 4.5)


#: The golden ratio's fractional part: ``seed * _GOLDEN mod 1`` spreads any run of consecutive
#: seeds evenly over [0, 1) (a Weyl sequence of low discrepancy).
_GOLDEN = 0.6180339887498949


def broad_seeing_frames(seeds: Iterable[int], fraction: float) -> np.ndarray:
    """Which of ``seeds`` are frames in broad seeing, for a data set with that ``fraction`` of them.

    A frame is one when ``seed * 0.618... mod 1 < fraction``: a property of the seed alone, so
    a data set grown by more seeds keeps its frames, and any run of n consecutive seeds holds
    ``n * fraction`` of them to within one or two.

    Returns
    -------
    ndarray of bool
    """
    return np.mod(np.asarray(list(seeds), dtype=np.float64) * _GOLDEN, 1.0) < float(fraction)


def label_tiles(
    offsets: np.ndarray,
    comets: pd.DataFrame,
    tile_size: int = 256,
    margin_pix: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label tiles by the comets whose nucleus they contain.

    Parameters
    ----------
    offsets : ndarray, shape (N, 2)
        ``(row0, col0)`` of each tile.
    comets : DataFrame
        Truth with columns ``x``, ``y`` (0-based frame pixels) and ``coma_pix`` (coma radius in
        pixels, for the ambiguity test).
    tile_size : int
        Tile side.
    margin_pix : float
        Extra pixels around a comet's coma that make a tile without its nucleus ambiguous.

    Returns
    -------
    labels : ndarray, shape (N, 3), float32
        ``[has_comet, x / tile_size, y / tile_size]``; when a tile holds several nuclei, the
        brightest (first in ``comets``) is the label.
    comet_index : ndarray of int, shape (N,)
        The row of ``comets`` labelling each tile, -1 for negatives.
    ambiguous : ndarray of bool, shape (N,)
        Tiles without a nucleus that overlap a comet's coma: left out of training.
    """
    offsets = np.asarray(offsets, dtype=float).reshape(-1, 2)
    n = len(offsets)
    labels = np.zeros((n, 3), dtype=np.float32)
    index = np.full(n, -1, dtype=int)
    ambiguous = np.zeros(n, dtype=bool)
    if len(comets) == 0:
        return labels, index, ambiguous
    cx = comets["x"].to_numpy(float)
    cy = comets["y"].to_numpy(float)
    reach = comets["coma_pix"].to_numpy(float) + margin_pix if "coma_pix" in comets else np.full(len(cx), margin_pix)
    row0, col0 = offsets[:, 0:1], offsets[:, 1:2]
    xt, yt = cx[None, :] - col0, cy[None, :] - row0  # (N tiles, M comets)
    inside = (xt >= 0) & (xt < tile_size) & (yt >= 0) & (yt < tile_size)
    # distance from each nucleus to each tile's box (0 when inside)
    dx = np.maximum(np.maximum(-xt, xt - (tile_size - 1)), 0)
    dy = np.maximum(np.maximum(-yt, yt - (tile_size - 1)), 0)
    near = np.hypot(dx, dy) < reach[None, :]
    for t in range(n):
        hits = np.flatnonzero(inside[t])
        if hits.size:
            j = hits[0]
            labels[t] = (1.0, xt[t, j] / tile_size, yt[t, j] / tile_size)
            index[t] = j
        elif near[t].any():
            ambiguous[t] = True
    return labels, index, ambiguous


def _hardness(offsets: np.ndarray, confusers: pd.DataFrame, tile_size: int) -> np.ndarray:
    """Number of confusers in each tile (0 for plain sky)."""
    if confusers is None or len(confusers) == 0:
        return np.zeros(len(offsets), dtype=int)
    x = confusers["x"].to_numpy(float)
    y = confusers["y"].to_numpy(float)
    row0, col0 = offsets[:, 0:1], offsets[:, 1:2]
    inside = (x[None] >= col0) & (x[None] < col0 + tile_size) & (y[None] >= row0) & (y[None] < row0 + tile_size)
    return inside.sum(axis=1)


# the prefix of the temporary folder a frame is written to and cut in; a killed build's is removed
_FRAME_TMP_PREFIX = "frame_"


def frame_to_examples(
    seed: int,
    spec: DatasetSpec,
    workdir: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Simulate one frame and cut it into labelled, preprocessed training tiles.

    Returns
    -------
    x : ndarray, shape (N, T, T, 3), float16
    y : ndarray, shape (N, 3), float32
    meta : list of dict
        Per tile: frame name, seed, tile offset, and the comet's truth for positives or the
        number of confusers for negatives.
    """
    from .image import Troika
    from .preprocess import preprocess_tiles
    from .simulate import random_frame_name, simulate_frame, write_frame

    rng = np.random.default_rng(seed)
    name = random_frame_name(rng)
    kwargs = dict(spec.simulate_kwargs or {})
    if broad_seeing_frames([seed], spec.broad_seeing)[0]:
        kwargs["seeing_range"] = tuple(float(v) for v in spec.broad_seeing_range)
    sim = simulate_frame(name, seed=seed, n_comets=spec.comets_per_frame, **kwargs)
    seeing = round(float(sim.conditions.seeing), 3)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=_FRAME_TMP_PREFIX) as tmp:
        paths = write_frame(sim, tmp)
        troika = Troika.from_files(paths["sci"], paths["ref"], paths["diff"])
        ref_projected = troika.reproject_ref2sci(how=spec.reproject, nthreads=1)
        raw, offsets = troika.tiles(spec.tile_size, spec.tile_offset, ref=ref_projected)
    tiles, valid = preprocess_tiles(raw)
    del raw

    truth = sim.truth
    kind = truth["kind"] if "kind" in truth else pd.Series(["comet"] * len(truth))
    comets = truth[kind == "comet"].reset_index(drop=True)
    confusers = truth[kind != "comet"].reset_index(drop=True)
    if "coma_pix" not in comets and "coma_arcsec" in comets:
        comets = comets.assign(coma_pix=comets["coma_arcsec"] / float(sim.header_sci.get("PIXSCALE", 1.01)))
    labels, index, ambiguous = label_tiles(offsets, comets, spec.tile_size, margin_pix=4.0)
    if "snr" in comets and len(comets):
        invisible = (index >= 0) & (comets["snr"].to_numpy(float)[np.maximum(index, 0)] < spec.min_snr)
        ambiguous |= invisible
        labels[invisible] = 0.0

    pos = np.flatnonzero(valid & (labels[:, 0] > 0))
    neg_all = np.flatnonzero(valid & (labels[:, 0] == 0) & ~ambiguous)
    hard = _hardness(offsets[neg_all], confusers, spec.tile_size)
    # hard negatives first (random order among equals), then plain sky
    order = np.lexsort((rng.random(len(neg_all)), -np.minimum(hard, 1)))
    neg = neg_all[order[: spec.negatives_per_frame]]
    keep = np.concatenate([pos, neg])

    meta = []
    for t in keep:
        m = {"name": name, "seed": int(seed), "seeing": seeing, "row0": int(offsets[t, 0]), "col0": int(offsets[t, 1])}
        if index[t] >= 0:
            c = comets.iloc[index[t]]
            m.update({k: (float(c[k]) if isinstance(c[k], (int, float, np.number)) else str(c[k]))
                      for k in comets.columns})
        else:
            m["n_confusers"] = int(_hardness(offsets[t : t + 1], confusers, spec.tile_size)[0])
        meta.append(m)
    return tiles[keep].astype(np.float16), labels[keep], meta


def _shard_name(seed: int) -> str:
    """The file name of one simulated frame's shard, by its seed."""
    return f"shard_{int(seed):06d}.npz"


def _save_shard(path: Path, x: np.ndarray, y: np.ndarray, meta: list[dict]) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, x=x, y=y, meta=np.array(json.dumps(meta)))


def build_dataset(spec: DatasetSpec, out_dir: str | os.PathLike, processes: int = 1) -> Path:
    """Write one shard per seed into ``out_dir``; shards already there are kept (resumable).

    What a build killed mid-frame left behind (its frame folder, an unfinished shard) is removed
    first.

    Parameters
    ----------
    spec : DatasetSpec
    out_dir : path
        The data set folder.
    processes : int
        Frames simulated in parallel.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        If ``out_dir`` holds shards built with another spec (other than by its seeds).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    _record_spec(spec, out)
    todo = [s for s in spec.seeds if not (out / _shard_name(s)).exists()]
    log.info("data set %s: %d of %d frames to simulate", out, len(todo), len(spec.seeds))
    if spec.broad_seeing:
        low, high = spec.broad_seeing_range
        log.info("%d of the %d frames in seeing of %.2f\"-%.2f\" (broad_seeing %.2f)",
                 int(broad_seeing_frames(spec.seeds, spec.broad_seeing).sum()), len(spec.seeds), low, high,
                 spec.broad_seeing)

    if processes <= 1:
        for s in tqdm(todo, desc="frames", unit="frame"):
            _build_one(s, spec, str(out))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=processes) as pool:
            futures = [pool.submit(_build_one, s, spec, str(out)) for s in todo]
            for f in tqdm(futures, desc="frames", unit="frame"):
                f.result()
    return out


def _spec_record(spec: DatasetSpec | dict) -> dict:
    """``spec`` but its seeds, as ``dataset.json`` holds it: tuples as lists, and no range of
    broad seeing when no frame is in it (shards do not depend on it then)."""
    record = asdict(spec) if isinstance(spec, DatasetSpec) else dict(spec)
    record = json.loads(json.dumps({k: v for k, v in record.items() if k != "seeds"}))
    if not record.get("broad_seeing"):
        record["broad_seeing_range"] = None
    return record


def _record_spec(spec: DatasetSpec, out: Path) -> None:
    """Write ``spec`` into ``out/dataset.json``, its seeds added to those of earlier builds.

    Raises
    ------
    ValueError
        If ``out`` holds shards and its ``dataset.json`` another spec: their tiles would be mixed
        with tiles of another kind, unseen.  Keys added to :class:`DatasetSpec` since a folder was
        built count as their defaults.
    """
    path = out / "dataset.json"
    record = _spec_record(spec)
    seeds = {int(s) for s in spec.seeds}
    if path.exists() and any(out.glob("shard_*.npz")):
        held = json.loads(path.read_text())
        seeds |= {int(s) for s in held.get("seeds", [])}
        held = _spec_record({**asdict(DatasetSpec(seeds=[])), **held})
        differ = [k for k in record if held.get(k) != record[k]]
        if differ:
            was = ", ".join(f"{k}={held.get(k)!r}" for k in differ)
            asked = ", ".join(f"{k}={record[k]!r}" for k in differ)
            raise ValueError(
                f"data set folder {out} holds shards built with {was}, not {asked}: "
                "give this data set a folder of its own (train.dataset.path or val_path), "
                "or delete that one to build it anew"
            )
    record["seeds"] = sorted(seeds)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))


def _remove_leftovers(out: Path) -> None:
    """Remove what a build killed mid-frame left in ``out``: its frame folder and unfinished shard.

    A SIGTERM or SIGKILL runs no clean-up, so a resumed build does it.  Only the names that
    :func:`frame_to_examples` and :func:`~tails.atomic.atomic_path` give their temporary files
    are touched; finished shards stay.  Two builds must therefore not share one folder at once.
    """
    stale = [*out.glob(f"{_FRAME_TMP_PREFIX}*"), *out.glob(".shard_*.npz")]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d leftovers of an interrupted build from %s", len(stale), out)


def _build_one(seed: int, spec: DatasetSpec, out: str) -> int:
    """Simulate, cut and save the shard of one seed (a top-level function, so it pickles)."""
    x, y, meta = frame_to_examples(seed, spec, out)
    _save_shard(Path(out) / _shard_name(seed), x, y, meta)
    return len(y)


def load_dataset(
    folders: str | os.PathLike | Iterable[str | os.PathLike], seeds: Iterable[int] | None = None
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Load the shards of one or more data set folders.

    Parameters
    ----------
    folders : path or iterable of paths
        Data set folders.
    seeds : iterable of int, optional
        Load only these seeds' shards, so that a folder that also holds the shards of a larger
        data set gives exactly the data set a config names. By default, every shard.

    Returns
    -------
    x : ndarray (N, T, T, 3) float16
    y : ndarray (N, 3) float32
    meta : DataFrame, one row per tile

    Raises
    ------
    ValueError
        If no shard is found: the data set is empty.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    shards = sorted(p for f in folders for p in Path(f).glob("shard_*.npz"))
    if seeds is not None:
        wanted = {_shard_name(s) for s in seeds}
        shards = [p for p in shards if p.name in wanted]
    if not shards:
        raise ValueError(
            f"empty data set: no shard_*.npz{'' if seeds is None else ' of the seeds asked for'} "
            f"in {', '.join(map(str, folders))}; "
            "build one first (tails train makes it from the config's dataset section)"
        )
    xs, ys, metas = [], [], []
    for p in shards:
        with np.load(p) as z:
            xs.append(z["x"])
            ys.append(z["y"])
            metas.extend(json.loads(str(z["meta"])))
    return np.concatenate(xs), np.concatenate(ys), pd.DataFrame(metas)
