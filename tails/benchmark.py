"""Time one full ZTF frame through Tails, stage by stage: load, align, tessellate, infer, refine, vet, write.

The frame is simulated (3080 x 3072, as IRSA serves it) into a local IRSA-layout mirror and
downloaded into the cache once; the timed runs then start from the cache, so the figures exclude
the download, as the target does.  The first run also pays for building the model's compiled
function and is reported apart.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["benchmark", "benchmark_command", "timed_checkpoint"]

log = logging.getLogger(__name__)

STAGES = ("load", "align", "tessellate", "infer", "refine", "vet", "write")
BENCH_FRAME = "ztf_20191014495961_000570_zr_c05_o_q3"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed_checkpoint(
    checkpoint: str | Path | None, config: dict, folder: str | Path, seed: int = 0
) -> tuple[Path, bool]:
    """The model to time: ``checkpoint``, else ``tails.checkpoint``, else the bundled model.

    Without any, freshly initialised weights are written to ``folder``: inference costs the same
    whatever the weights.  They are seeded, so that the same weights (converted to LiteRT once,
    :mod:`tails.litert`) come back each time.

    Returns
    -------
    path : Path
        The ``.weights.h5`` file.
    fresh : bool
        Whether it holds freshly initialised weights.
    """
    from .efficientdet import Tails, find_bundled_checkpoint

    checkpoint = checkpoint or config["tails"]["checkpoint"]
    if checkpoint is not None:
        return Path(checkpoint), False
    try:
        return find_bundled_checkpoint(), False
    except FileNotFoundError:
        import keras

        log.warning("no bundled model: timing freshly initialised weights (inference costs the same)")
        keras.utils.set_random_seed(seed)
        path = Path(folder) / "untrained.weights.h5"
        Tails().save_weights(path)
        return path, True


def benchmark(
    config: dict,
    checkpoint: str | None = None,
    repeats: int = 3,
    nthreads: int = 2,
    workdir: str | Path | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """Run :func:`tails.detect.process_frame` ``repeats + 1`` times on one simulated frame.

    Returns
    -------
    dict
        Per-stage median seconds over the timed runs, the total, the first (warm-up) run,
        peak memory (MiB) and the machine.

    Raises
    ------
    ValueError
        If ``repeats`` is negative or ``nthreads`` under 1, before anything is run.
    """
    import os

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
        raise ValueError(f"repeats must be a whole number of timed runs, 0 or more, got {repeats!r}")
    if isinstance(nthreads, bool) or not isinstance(nthreads, int) or nthreads < 1:
        raise ValueError(f"nthreads must be an integer of at least 1, got {nthreads!r}")

    import keras

    from .detect import process_frame
    from .efficientdet import model_name
    from .fusion import fusion_from_config
    from .litert import detector_from_config
    from .irsa import IrsaClient
    from .frames import parse_frame
    from .simulate import random_conditions, simulate_frame, write_frame

    with tempfile.TemporaryDirectory(dir=workdir, prefix="tails-bench-") as tmp:
        tmp = Path(tmp)
        # the common case: the reference covers the whole frame, so all 169 tiles are inferred
        rng = np.random.default_rng(seed)
        conditions = replace(random_conditions(rng, parse_frame(BENCH_FRAME).filter), ref_coverage=1.0)
        sim = simulate_frame(BENCH_FRAME, seed=seed, n_comets=3, conditions=conditions)
        write_frame(sim, tmp / "irsa")
        cfg = json.loads(json.dumps(config))
        cfg["irsa"]["url"] = (tmp / "irsa").resolve().as_uri() + "/"
        checkpoint, _ = timed_checkpoint(checkpoint, config, tmp, seed=seed)
        model, name = detector_from_config(cfg, checkpoint), model_name(checkpoint)
        fusion = fusion_from_config(cfg, checkpoint)
        client = IrsaClient.from_config(cfg)
        client.fetch_frame(BENCH_FRAME, tmp / "data")  # download excluded from the timings

        runs = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            result = process_frame(
                BENCH_FRAME, model=model, config=cfg, base_path=tmp, nthreads=nthreads,
                client=client, checkpoint_name=name, fusion=fusion,
            )
            result.timings["total"] = time.perf_counter() - t0
            runs.append(result.timings)

    timed = runs[1:] or runs
    report = {
        "frame": BENCH_FRAME,
        "model": name,
        "tiles": result.n_tiles,
        "repeats": len(timed),
        "seconds": {k: round(float(np.median([r[k] for r in timed])), 3) for k in (*STAGES, "total")},
        "first_run_seconds": {k: round(v, 3) for k, v in runs[0].items()},
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "backend": keras.backend.backend(),
            "engine": type(model).__name__,
        },
    }
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short table of the benchmark."""
    lines = [f"Tails benchmark: {report['frame']} ({report['tiles']} tiles), model {report['model']}, "
             f"{report['machine']['cpus']} CPUs, backend {report['machine']['backend']}, "
             f"engine {report['machine']['engine']}"]
    for k in (*STAGES, "total"):
        lines.append(f"  {k:<10} {report['seconds'][k]:7.2f} s")
    lines.append(f"  first run  {report['first_run_seconds']['total']:7.2f} s (includes the model's first-call set-up)")
    lines.append(f"  peak memory {report['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def benchmark_command(
    config: str | None = None,
    checkpoint: str | None = None,
    repeats: int = 3,
    nthreads: int = 2,
    output: str | None = None,
) -> str:
    """Time one full frame stage by stage (download excluded) and print a table.

    Parameters
    ----------
    config : str, optional
        YAML config; default: config.defaults.yaml.
    checkpoint : str, optional
        Model weights; default: ``tails.checkpoint``, then the bundled model, then freshly
        initialised weights (inference costs the same).
    repeats : int
        Timed runs after one warm-up run.
    nthreads : int
        Threads for SWarp.
    output : str, optional
        Also write the report as JSON there.
    """
    from .config import load_config

    report = benchmark(load_config(config), checkpoint=checkpoint, repeats=repeats, nthreads=nthreads)
    if output:
        Path(output).write_text(json.dumps(report, indent=1))
    return format_report(report)
