#!/usr/bin/env python
"""Throughput of the sentinel: frames per minute with 1 and 2 dask workers, and memory per worker.

    python scripts/sentinel_throughput.py [--frames=6] [--workers=1,2] [--checkpoint=PATH] [--out=DIR]

It writes full-size (3080 x 3072) synthetic frames into a local IRSA-layout mirror (``file://``),
starts a dask ``LocalCluster`` with the sentinel's worker plugin (``TailsWorker``: the model loaded
once per worker), and runs the sentinel's own task (``sentinel.worker.process_frame_task``: ledger
claim, download from the mirror, SWarp, 169 tiles through the model, outputs) on distinct frame
names.  Posting to Fritz is off, so the figures are those of detection; cross-matching only happens
for candidates.  One frame per worker is run first to warm up (model loading, graph tracing) and
not counted.  Memory is the resident set size of each worker process after the run, and its peak.

The model is ``tails.checkpoint`` of the config (default: the bundled model).  If there is no
bundled model, fresh weights are used and the threshold is set to 1 (speed does not depend on the
weights; fresh weights would make every tile a candidate).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("sentinel_throughput")


def _write_mirror(root: Path, names: list[str], seed: int = 0) -> str:
    """Full-size sci/ref/diff triplets in IRSA's layout, one per name: simulated once with
    ``tails.simulate`` (or, without it, tests/fitsutil.py's stars on sky and noise) and copied
    under the other names.  Returns what made them."""
    from tails.frames import parse_frame, ref_url, sci_url
    from tails.frames import DIFF_SUFFIX, SCI_SUFFIX

    first = names[0]
    try:
        from tails.simulate import simulate_frame, write_frame

        write_frame(simulate_frame(first, seed=seed), root)
        source = "tails.simulate"
    except ImportError:
        sys.path.insert(0, str(ROOT / "tests"))
        from fitsutil import make_frame, write_irsa_frame

        write_irsa_frame(root, first, frame=make_frame(shape=(3080, 3072), n_sources=400, noise=6.6, seed=seed))
        source = "tests/fitsutil.py"

    def paths(name: str) -> list[Path]:
        f = parse_frame(name)
        return [Path(sci_url(f, str(root), SCI_SUFFIX)), Path(sci_url(f, str(root), DIFF_SUFFIX)),
                Path(ref_url(f, str(root)))]

    for name in names[1:]:
        for src, dst in zip(paths(first), paths(name)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return source


def _names(n: int, tag: int) -> list[str]:
    out = []
    for i in range(n):
        ccd, quad = divmod(i, 4)
        # a distinct field per run, so that no reference is shared through the cache
        out.append(f"ztf_20201015{300000 + tag:06d}_{700 + tag:06d}_zr_c{ccd + 1:02d}_o_q{quad + 1}")
    return out


def _rss(dask_worker=None) -> dict:
    import psutil

    p = psutil.Process()
    info = {"rss": p.memory_info().rss}
    try:
        import resource

        info["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except Exception:  # pragma: no cover
        info["peak"] = None
    return info


def measure(config: dict, n_workers: int, n_frames: int, workdir: Path, threads: int) -> dict:
    """Frames per minute and memory for one cluster size."""
    from distributed import Client, LocalCluster, wait

    from sentinel.ledger import SQLiteLedger
    from sentinel.worker import TailsWorkerPlugin, process_frame_task

    tag = n_workers * 1000 + n_frames
    names = _names(n_frames + n_workers, tag)
    mirror = workdir / f"irsa_{n_workers}"
    t0 = time.perf_counter()
    source = _write_mirror(mirror, names, seed=n_workers)
    log.info("%d frames from %s written in %.0f s", len(names), source, time.perf_counter() - t0)

    cfg = json.loads(json.dumps(config))
    cfg["irsa"]["url"] = mirror.resolve().as_uri() + "/"
    cfg["sentinel"]["app"]["path_base"] = str(workdir / f"base_{n_workers}")
    cfg["tails"]["nthreads"] = threads
    ledger = SQLiteLedger(Path(cfg["sentinel"]["app"]["path_base"]) / "ledger.sqlite")

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=cfg["sentinel"]["dask"]["memory_limit"]) as cluster, Client(cluster) as client:
        client.register_plugin(TailsWorkerPlugin(cfg))

        def run(batch: list[str]) -> float:
            subs = ledger.submit(batch)
            t = time.perf_counter()
            futures = [client.submit(process_frame_task, n, s, key=f"tails-{n}-{s}", pure=False) for n, s in subs]
            wait(futures)
            results = [f.result() for f in futures]
            bad = [r for r in results if r["status"] != "success"]
            if bad:
                raise RuntimeError(f"frames failed: {bad}")
            return time.perf_counter() - t

        warm = run(names[:n_workers])
        log.info("%d worker(s): warm-up (model load excluded, first frames) %.1f s", n_workers, warm)
        elapsed = run(names[n_workers:])
        mem = client.run(_rss)
    per_worker = [m["rss"] / 2**30 for m in mem.values()]
    peaks = [m["peak"] / 2**30 for m in mem.values() if m["peak"]]
    out = {
        "workers": n_workers,
        "frames": n_frames,
        "frames_from": source,
        "seconds": round(elapsed, 1),
        "frames_per_minute": round(60 * n_frames / elapsed, 2),
        "seconds_per_frame": round(elapsed / n_frames, 1),
        "rss_gib_per_worker": [round(x, 2) for x in per_worker],
        "peak_rss_gib_per_worker": [round(x, 2) for x in peaks],
    }
    log.info("%s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="config.yaml (default: config.defaults.yaml)")
    parser.add_argument("--frames", type=int, default=6, help="frames timed per cluster size")
    parser.add_argument("--workers", default="1,2", help="cluster sizes, comma-separated")
    parser.add_argument("--checkpoint", default=None, help="model weights (default: tails.checkpoint)")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from tails.config import load_config

    config = load_config(args.config)
    config["sentinel"]["app"]["post_to_fritz"] = False
    config["crossmatch"].update(mpc_url="http://127.0.0.1:9/", skybot_url="http://127.0.0.1:9/", timeout=1)
    workdir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tails-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from tails.benchmark import timed_checkpoint
    from tails.efficientdet import model_name

    checkpoint, fresh = timed_checkpoint(args.checkpoint, config, workdir)
    model = model_name(checkpoint)
    if fresh:  # fresh weights would make every tile a candidate
        config["tails"]["score_threshold"] = 1.0
        model = "fresh weights (no bundled model), threshold 1"
    config["tails"]["checkpoint"] = str(checkpoint)
    # a running sentinel finds the model's LiteRT conversion in its cache (made once, by the first
    # worker ever to load that model): make it here, so that the workers' memory is that of the
    # steady state
    from tails.litert import detector_from_config

    detector_from_config(config)
    cpus = os.cpu_count() or 1
    results = []
    try:
        for n in [int(w) for w in args.workers.split(",") if w]:
            results.append(measure(config, n, args.frames, workdir, threads=max(1, cpus // n)))
    finally:
        if not args.out:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {"cpus": cpus, "model": model, "checkpoint": str(checkpoint), "results": results}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
