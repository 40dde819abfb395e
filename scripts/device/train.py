#!/usr/bin/env python
"""Train the bundled model further on a lent GPU machine, within one call of the device tool.

The machine starts bare and holds nothing of ours but the working tree and what
``scripts/device/prepare.sh`` put in ``.device/`` (``scripts/device/train.sh`` installs it and
runs this).  The training data cannot travel (a call carries 64 MiB), so they are simulated
there, on its cores, inside the same call.  In order:

1. the validation frames are simulated, one per process, which times one frame;
2. training frames are simulated in rounds of one frame per process, for as many rounds as fit
   ``--build-share`` of the time;
3. ``tails.train.train`` trains the bundled model's weights further, with the config's defaults
   but for the keys set here, and starts no epoch after the time is up;
4. the best epoch's weights (the model's variables only, 17 MB, as bundled) are left in
   ``--out`` as ``tails.weights.h5.part-aa`` and ``-ab`` of at most 15 MB each (a file that
   comes back from the machine may hold 16 MB), with the run's ``log.csv`` and ``train.json``
   (so that ``--out`` serves as the run folder of :func:`tails.models.package_model`) and a
   summary.

Here, join the parts with ``cat tails.weights.h5.part-* > tails.weights.h5`` and evaluate the
weights with ``tails evaluate --checkpoint=tails.weights.h5`` (models/README.md).

``--smoke`` makes everything tiny, for a dry run on a CPU that checks the mechanics, not the
model (models/README.md says how it was run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("tails.device")

#: At most this much per file that comes back (the device tool's limit is 16 MiB).
PART_BYTES = 15 * 2**20


def run_config(work: Path, args: argparse.Namespace, n_train: int) -> dict:
    """config.defaults.yaml, with the keys of a fine-tuning run on the machine set.

    The choices follow the bundled model's stage 4 (its MODEL.md): hard negatives
    mined by the model, a third of each batch positive, every comet of core S/N >= 3 taught,
    except those that cannot be told from a point source (``--min-snr-extended``, stage 11 of
    models/README.md); ``--broad-seeing`` of the training frames in seeing of 3.6"-4.5" (stage 13).
    """
    from tails.config import load_defaults

    config = load_defaults()
    t = config["train"]
    t["output_dir"] = str(work / "run")
    t["dataset"].update(
        path=str(work / "train"), seeds=[args.first_seed, args.first_seed + n_train],
        val_path=str(work / "val"), val_seeds=[args.first_val_seed, args.first_val_seed + args.val_frames],
        processes=args.processes,
    )
    t["dataset"]["broad_seeing"]["fraction"] = args.broad_seeing
    t.update(
        batch_size=args.batch_size, positive_fraction=0.3, curriculum={"epochs": 0, "min_snr": 30.0},
        learning_rate=args.learning_rate, lr_constant_epochs=args.lr_constant_epochs, lr_decay=0.15,
        steps_per_epoch=args.steps_per_epoch, epochs=1000, early_stopping_patience=1000,
        init_checkpoint=args.init_checkpoint, jit_compile="auto", max_hours=None,
        min_snr_extended=args.min_snr_extended,
    )
    t["hard_negatives"].update(fraction=0.5, pool=args.pool, min_score=0.2, every_epochs=2)
    return config


def build(config: dict, which: str, seeds: list[int], processes: int) -> float:
    """Simulate the shards of ``seeds`` into the config's ``which`` folder; seconds taken."""
    from dataclasses import replace

    from tails.dataset import build_dataset
    from tails.train import dataset_spec

    spec, path = dataset_spec(config, which)
    t0 = time.time()
    build_dataset(replace(spec, seeds=seeds), path, processes=processes)
    return time.time() - t0


def build_training_frames(config: dict, args: argparse.Namespace, until: float, frame_seconds: float) -> int:
    """Simulate training frames in rounds of one per process while a round fits before ``until``."""
    n = 0
    while n < args.max_frames and time.time() + frame_seconds < until:
        seeds = list(range(args.first_seed + n, args.first_seed + min(n + args.processes, args.max_frames)))
        frame_seconds = max(frame_seconds, build(config, "train", seeds, args.processes))
        n += len(seeds)
        log.info("%d training frames simulated (%.0f s a round)", n, frame_seconds)
    return n


def split(path: Path, out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Copy ``path`` into ``out`` as ``<name>.part-aa``, ``-ab``, ... of at most ``part_bytes``."""
    parts = []
    with open(path, "rb") as f:
        for i in range(10**6):
            chunk = f.read(part_bytes)
            if not chunk:
                break
            part = out / f"{path.name}.part-{chr(97 + i // 26)}{chr(97 + i % 26)}"
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device_out")),
                   help="folder of what comes back (the device tool's $OUT)")
    p.add_argument("--work", type=Path, default=Path("/tmp/tails-gpu"), help="data and run folder")
    p.add_argument("--minutes", type=float, default=7.5, help="time for all of it, from the start")
    p.add_argument("--build-share", type=float, default=0.4, help="share of it for simulating")
    p.add_argument("--processes", type=int, default=os.cpu_count(), help="frames simulated at once")
    p.add_argument("--max-frames", type=int, default=1024, help="training frames, at most")
    p.add_argument("--first-seed", type=int, default=100000, help="first training seed")
    p.add_argument("--first-val-seed", type=int, default=200000, help="first validation seed")
    p.add_argument("--val-frames", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3.0e-4)
    p.add_argument("--lr-constant-epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--pool", type=int, default=2000, help="negative tiles scored to mine hard ones")
    p.add_argument("--min-snr-extended", type=float, default=5.0,
                   help="leave out the comets whose S/N beyond a point source is below this (0: none)")
    p.add_argument("--broad-seeing", type=float, default=0.0,
                   help='fraction of the training frames in seeing of 3.6"-4.5" (train.dataset.broad_seeing)')
    p.add_argument("--init-checkpoint", default=None,
                   help="weights to start from (in the working tree); the bundled model by default")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for a dry run on a CPU")
    args = p.parse_args(argv)
    if args.smoke:
        args.val_frames, args.max_frames = 2, 2 * args.processes
        args.batch_size, args.steps_per_epoch, args.pool = 4, 2, 16

    start = time.time()
    deadline = start + 60 * args.minutes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    # the frames first: their processes are forked, which JAX's threads must not see
    config = run_config(args.work, args, n_train=1)
    val_seeds = list(range(args.first_val_seed, args.first_val_seed + args.val_frames))
    val_seconds = build(config, "val", val_seeds, args.processes)
    frame_seconds = val_seconds / -(-args.val_frames // args.processes)
    log.info("%d validation frames simulated in %.0f s", args.val_frames, val_seconds)
    n_train = build_training_frames(config, args, start + 60 * args.minutes * args.build_share, frame_seconds)
    if n_train == 0:
        log.error("no training frame could be simulated in %.1f minutes", args.minutes * args.build_share)
        return 1
    build_seconds = time.time() - start

    import keras

    from tails.efficientdet import find_bundled_checkpoint, load_model
    from tails.train import train

    devices = []
    if keras.backend.backend() == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    log.info("Keras %s on %s, devices %s", keras.__version__, keras.backend.backend(), devices)

    args.init_checkpoint = args.init_checkpoint or str(find_bundled_checkpoint())
    config = run_config(args.work, args, n_train)
    run_dir = Path(config["train"]["output_dir"])
    try:  # a minute for the epoch begun last to end, and for the weights to be written
        train(config, overwrite=True, deadline=deadline - 60)
    except KeyboardInterrupt:  # train.sh's time limit (SIGINT): keep the epochs that ended
        log.warning("interrupted: what the epochs that ended wrote is returned")

    history = (run_dir / "log.csv").read_text() if (run_dir / "log.csv").exists() else ""
    epochs = max(len(history.splitlines()) - 1, 0)
    summary = {
        "backend": keras.backend.backend(), "devices": devices, "processes": args.processes,
        "training_frames": n_train, "validation_frames": args.val_frames,
        "simulation_seconds": round(build_seconds, 1), "frame_seconds_per_process": round(frame_seconds, 1),
        "epochs": epochs, "steps": epochs * args.steps_per_epoch, "batch_size": args.batch_size,
        "seconds": round(time.time() - start, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "log.csv").write_text(history)
    shutil.copyfile(run_dir / "train.json", args.out / "train.json")  # as tails.models.package_model wants
    best = run_dir / "best.weights.h5"
    parts = []
    if best.exists():  # the model's variables only, as bundled: the optimizer's are twice as many
        weights = args.work / "tails.weights.h5"
        load_model(best).save_weights(weights)
        parts = split(weights, args.out)
    log.info("summary %s; %d parts in %s", summary, len(parts), args.out)
    return 0 if parts else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
