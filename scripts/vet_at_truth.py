"""Vet every simulated comet and asteroid at its true position, as the detector would vet it.

This is how vetting's settings are chosen without the model or the evaluation frames: frames
are simulated (``tails.simulate``, 6 comets each, as ``tails evaluate`` makes them), and
:func:`tails.vet.measure_candidates` measures each comet of r < 20 at its nucleus and each
asteroid of r < 20 at its centre, with the ``tails.vet`` section of the config.  The arrays are
the simulator's own (no FITS, no SWarp), so this shows what vetting does with each source, not
what the detector finds.  ``--nea-fraction=1`` makes every asteroid a near-Earth one, trailed by
up to 12 px, to measure the trail test on many trails.

The output CSV has one row per source: the simulator's truth columns and vetting's measures
(``ext_sigma``, ``ext_fraction``, ``ext_width``, ``ext_elongation``, ``ext_snr``, ``trailed``,
``extended``).
A summary is logged.

Examples
--------
    python scripts/vet_at_truth.py --seeds 300000 300040 --out=vet300.csv
    python scripts/vet_at_truth.py --seeds 700000 700042 --nea-fraction=1 --out=vet700.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import tails.simulate
from tails import vet
from tails.config import load_config
from tails.simulate import random_frame_name, simulate_frame

log = logging.getLogger("vet_at_truth")


def vet_frame(seed: int, vet_cfg: dict, n_comets: int, faintest: float = 20.0) -> pd.DataFrame:
    """The truth table's comets and asteroids brighter than ``faintest``, with vetting's measures."""
    name = random_frame_name(np.random.default_rng(seed))
    sim = simulate_frame(name, seed=seed, n_comets=n_comets)
    header = sim.header_sci
    fwhm = float(header["SEEING"]) / float(header["PIXSCALE"])
    truth = sim.truth
    truth = truth[truth["kind"].isin(["comet", "asteroid"]) & (truth["mag"] < faintest)].reset_index(drop=True)
    measured = vet.measure_candidates(truth[["x", "y"]], sim.sci, sim.diff, fwhm, vet_cfg,
                                      saturate=float(header["SATURATE"]), seed=zlib.crc32(name.encode()))
    return pd.concat([truth, measured.drop(columns=["x", "y"])], axis=1).assign(frame=name, seed=seed)


def summarise(table: pd.DataFrame) -> None:
    """Log, for comets and asteroids, how many pass the excess test and how many are trails."""
    for kind in ("comet", "asteroid"):
        rows = table[table["kind"] == kind]
        passing = rows[rows["extended"] | rows["trailed"]]  # extended = passes the excess test, not a trail
        log.info("%ss of r < 20: %d; pass the excess test: %d; of those taken for trails: %d",
                 kind, len(rows), len(passing), int(passing["trailed"].sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs=2, type=int, required=True, metavar=("START", "STOP"),
                        help="simulator seeds range(START, STOP)")
    parser.add_argument("--out", required=True, help="output CSV (refused if it exists)")
    parser.add_argument("--config", default=None, help="YAML config (default: config.defaults.yaml)")
    parser.add_argument("--nea-fraction", type=float, default=None,
                        help="fraction of asteroids that are near-Earth ones (default: the simulator's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists: give another --out, or remove it")
    if not args.seeds[0] < args.seeds[1]:
        parser.error(f"--seeds {args.seeds[0]} {args.seeds[1]}: START must be less than STOP")
    if args.nea_fraction is not None:
        if not 0 <= args.nea_fraction <= 1:
            parser.error(f"--nea-fraction must lie between 0 and 1, not {args.nea_fraction}")
        tails.simulate.NEA_FRACTION = args.nea_fraction
    config = load_config(args.config)
    vet_cfg, n_comets = config["tails"]["vet"], int(config["evaluate"]["comets_per_frame"])
    table = pd.concat([vet_frame(s, vet_cfg, n_comets) for s in tqdm(range(*args.seeds), unit="frame")])
    summarise(table)
    tmp = out.with_name(out.name + ".part")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
