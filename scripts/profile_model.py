"""Measure the Tails model's inference and training speed on this machine.

Each configuration runs in a fresh subprocess, so that thread settings and precision policies do
not leak from one to the next. Inference is timed on 169 tiles of 256x256x3 (one ZTF
ccd-quadrant: 13 x 13 tiles, ZTF.md "The original Tails"), training as tiles per second of
``train_on_batch`` steps. The figures go to stdout as a table and, with ``--json``, to a file.

Examples
--------
    python scripts/profile_model.py                    # the default set of measurements
    python scripts/profile_model.py --only predict     # inference only
    python scripts/profile_model.py --only litert      # the bundled model in LiteRT, by batch size
    python scripts/profile_model.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_TILES = 169  # 13 x 13 tiles per ccd-quadrant


def _child(spec: dict) -> dict:
    """Run one measurement in this process (called in a subprocess)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    import keras

    if spec.get("threads"):
        import tensorflow as tf  # TF backend only: thread pools must be set before any op

        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"][0])
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"][1])
    if spec.get("policy"):
        keras.mixed_precision.set_global_policy(spec["policy"])

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tails.efficientdet import Tails, predict_tiles

    model = Tails()
    rng = np.random.default_rng(0)
    out = dict(spec)
    if spec["kind"] == "predict":
        tiles = rng.random((N_TILES, 256, 256, 3), dtype=np.float32)
        bs, how = spec["batch_size"], spec["how"]
        if how == "model.predict":
            if spec["jit_compile"]:
                model.compile(jit_compile=True)
            run = lambda: model.predict(tiles, batch_size=bs, verbose=0)  # noqa: E731
        elif how == "call":  # eager call of the model: no tracing, TF op-by-op dispatch
            def run():
                return np.concatenate(
                    [np.asarray(model(tiles[i : i + bs], training=False)) for i in range(0, N_TILES, bs)]
                )
        elif how == "predict_tiles":
            run = lambda: predict_tiles(model, tiles, batch_size=bs, jit_compile=spec["jit_compile"])  # noqa: E731
        elif how == "litert":  # the bundled model converted to LiteRT (cached), run with XNNPACK
            from tails.efficientdet import load_model
            from tails.litert import load_detector

            model, lite = load_model(None), load_detector(None, num_threads=2)
            run = lambda: predict_tiles(lite, tiles, batch_size=bs)  # noqa: E731
            out["max_abs_diff_vs_keras"] = float(
                np.abs(run() - predict_tiles(model, tiles, batch_size=bs)).max()
            )
        else:
            raise ValueError(how)
        t0 = time.perf_counter()
        run()
        out["first_s"] = time.perf_counter() - t0
        times, cpu = [], []
        for _ in range(spec.get("repeats", 3)):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out["s_per_169"] = min(times)
        out["s_per_169_median"] = float(np.median(times))
        out["cpu_s_per_169"] = min(cpu)
    else:
        bs = spec["batch_size"]
        model.compile(
            optimizer=keras.optimizers.Adam(3e-4),
            loss=["mse"],
            jit_compile=spec["jit_compile"],
        )
        x = rng.random((bs, 256, 256, 3), dtype=np.float32)
        y = rng.random((bs, 3), dtype=np.float32)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        out["first_s"] = time.perf_counter() - t0
        steps = spec.get("steps", 4)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            model.train_on_batch(x, y)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        out["tiles_per_s"] = steps * bs / dt
        out["tiles_per_cpu_s"] = steps * bs / dc
    return out


def _run(spec: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.update(spec.pop("env", {}) or {})
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        return dict(spec, error=proc.stderr.strip().splitlines()[-1:] or ["?"])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_specs(only: str | None) -> list[dict]:
    specs = []
    if only in (None, "predict"):
        for bs in (16, 32, 64, 169):
            specs.append(dict(kind="predict", how="model.predict", batch_size=bs, jit_compile=False))
        for bs in (32, 64):
            specs.append(dict(kind="predict", how="model.predict", batch_size=bs, jit_compile=True))
        for bs in (32, 64):
            for jit in (False, True):
                specs.append(dict(kind="predict", how="predict_tiles", batch_size=bs, jit_compile=jit))
        for bs in (32, 64, 169):
            specs.append(dict(kind="predict", how="call", batch_size=bs, jit_compile=False))
        specs.append(dict(kind="predict", how="predict_tiles", batch_size=64, jit_compile=False, threads=[1, 1]))
        specs.append(dict(kind="predict", how="predict_tiles", batch_size=64, jit_compile=False, threads=[2, 1]))
        specs.append(dict(kind="predict", how="predict_tiles", batch_size=64, jit_compile=False, threads=[2, 2]))
        specs.append(
            dict(kind="predict", how="predict_tiles", batch_size=64, jit_compile=False,
                 env={"TF_ENABLE_ONEDNN_OPTS": "0"}, note="oneDNN off")
        )
        specs.append(
            dict(kind="predict", how="predict_tiles", batch_size=64, jit_compile=False,
                 policy="mixed_bfloat16", repeats=1)
        )
    if only in (None, "predict", "litert"):
        for bs in (1, 2, 4, 8, 13, 32, 169):
            specs.append(dict(kind="predict", how="litert", batch_size=bs, jit_compile=False))
    if only in (None, "train"):
        for bs in (16, 32):
            for jit in (False, True):
                specs.append(dict(kind="train", batch_size=bs, jit_compile=jit))
            specs.append(dict(kind="train", batch_size=bs, jit_compile=False, policy="mixed_bfloat16"))
    return specs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["predict", "litert", "train"])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--match", help="only the specs whose JSON contains this text, e.g. '\"call\"'")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    results = []
    for spec in default_specs(args.only):
        if args.match and args.match not in json.dumps(spec):
            continue
        env_note = spec.get("note", "")
        r = _run(dict(spec))
        r.setdefault("note", env_note)
        results.append(r)
        if r["kind"] == "predict":
            print(
                f"predict {r['how']:14s} bs={r['batch_size']:<4d} jit={int(r['jit_compile'])} "
                f"threads={r.get('threads') or 'default'} policy={r.get('policy') or 'float32'} "
                f"{r.get('note', '')}: "
                + (f"{r['s_per_169']:.2f} s/169 tiles (median {r['s_per_169_median']:.2f}, "
                   f"CPU {r['cpu_s_per_169']:.2f} s, first call {r['first_s']:.1f} s)"
                   if "error" not in r else f"ERROR {r['error']}"),
                flush=True,
            )
        else:
            print(
                f"train bs={r['batch_size']:<3d} jit={int(r['jit_compile'])} policy={r.get('policy') or 'float32'}: "
                + (f"{r['tiles_per_s']:.1f} tiles/s ({r['tiles_per_cpu_s']:.1f} per CPU-s; "
                   f"first step {r['first_s']:.1f} s)"
                   if "error" not in r else f"ERROR {r['error']}"),
                flush=True,
            )
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
