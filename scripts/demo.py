#!/usr/bin/env python
"""`make demo`: Tails on a simulated 2I/Borisov frame, through the normal download path.

1. simulate ``ztf_20191014495961_000570_zr_c05_o_q3`` with a Borisov-like comet at
   (x, y) = (558, 2639) into a local IRSA-layout folder, ``demo/irsa``;
2. write ``demo/config.yaml``: the defaults with ``irsa.url`` pointing at that folder;
3. run ``scripts/run_tails.py`` on the frame (download -> SWarp -> tiles -> model -> CSV);
4. print the CSV and name the PNG.

    python scripts/demo.py [--checkpoint=PATH.weights.h5] [--seed=2019] [--config=CONFIG.yaml]

The model is the bundled one unless ``--checkpoint`` names another; with neither, the demo stops
at once with a message saying so.  ``--seed`` simulates another realisation of the field (its
stars, galaxies, asteroids, noise and the reference's footprint; the comet stays where it is):
``tests/test_borisov.py`` uses 3019.  ``--config`` starts from another configuration than the
defaults (``tails.vet.fusion: null``, say); its ``irsa.url`` is pointed at ``demo/irsa``.
"""

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tails.config import ConfigError, load_config  # noqa: E402
from tails.efficientdet import find_bundled_checkpoint  # noqa: E402
from tails.simulate import simulate_frame, write_frame  # noqa: E402

NAME = "ztf_20191014495961_000570_zr_c05_o_q3"
#: 2I/Borisov in this frame, as the original's test has it (ZTF.md): about r 17.5, a coma of
#: about 8" and a short tail (the tail's position angle here is illustrative).
BORISOV = {"x": 558.0, "y": 2639.0, "mag": 17.5, "coma_arcsec": 8.0, "tail_arcsec": 20.0, "pa_deg": 300.0}
SEED = 2019


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tails on a simulated 2I/Borisov frame.")
    parser.add_argument("--checkpoint", help="model weights (.weights.h5); default: the bundled model")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the simulated field (default {SEED})")
    parser.add_argument("--config", help="configuration to start from (default: config.defaults.yaml)")
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        try:
            find_bundled_checkpoint()
        except FileNotFoundError:
            print(
                "demo: no trained model in models/ (see models/README.md); fetch one with "
                "`tails fetch-models`, or train one with "
                "`tails train` and run `python scripts/demo.py --checkpoint=PATH.weights.h5`",
                file=sys.stderr,
            )
            return 2
    demo = ROOT / "demo"
    irsa = demo / "irsa"
    try:
        cfg = copy.deepcopy(load_config(args.config))
    except ConfigError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    print(f"simulating {NAME} (seed {args.seed}) with a Borisov-like comet at (558, 2639) into {irsa}")
    write_frame(simulate_frame(NAME, seed=args.seed, comets=[BORISOV]), irsa)

    cfg["irsa"]["url"] = irsa.resolve().as_uri() + "/"
    (demo / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    # no candidates of an earlier demo, and no images of its field in the download cache, which
    # would be used in place of the frame just simulated (a valid cached file is never fetched again)
    for folder in ("runs", "data"):
        shutil.rmtree(demo / folder, ignore_errors=True)
    cmd = [
        sys.executable, str(ROOT / "scripts" / "run_tails.py"),
        f"--config={demo / 'config.yaml'}", "--score_threshold=0.5", "--cleanup=none",
        f"--single_image={NAME}", f"--output_base_path={demo}",
    ] + ([f"--checkpoint={args.checkpoint}"] if args.checkpoint else [])
    print("$ " + " ".join(cmd))
    rc = subprocess.call(cmd)
    if rc:
        return rc
    csv = demo / "runs" / NAME[4:12] / f"{NAME}.csv"
    print(f"\n{csv}:")
    detections = pd.read_csv(csv)
    print(detections.to_string(index=False))
    for ni in detections["ni"]:
        print(f"triplet: {csv.parent / f'{NAME}_{ni}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
