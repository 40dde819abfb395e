"""The ``tails`` command: run, simulate, train, reproduce, evaluate, pool, fit-fusion, average, fetch-models, benchmark.

It uses python-fire, so ``--flag=value`` and ``--flag value`` both work.  ``scripts/run_tails.py``
is the ``run`` command on its own, with the original's flags.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import inspect
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["run", "main", "run_main", "refuse_unknown_flags"]

log = logging.getLogger("tails")


#: fire's own flags, which it also takes before its ``--`` separator
#: (https://github.com/google/python-fire/blob/master/docs/using-cli.md#flags)
_FIRE_FLAGS = frozenset({"help", "h", "interactive", "i", "separator", "completion", "trace", "verbose", "v"})


class UsageError(ValueError):
    """Bad command-line input; the message says what to pass instead."""


def _setup_logging(verbose: bool = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _check_date(date: Any) -> str:
    datestr = str(date)
    try:
        _dt.datetime.strptime(datestr, "%Y%m%d")
    except ValueError:
        raise UsageError(f"--date must be a UTC date YYYYMMDD, e.g. 20201015; got {date!r}") from None
    return datestr


def _check_nthreads(nthreads: Any) -> int:
    try:
        n = int(nthreads)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(nthreads).strip() != str(n):
        raise UsageError(f"--nthreads must be a positive integer, got {nthreads!r}")
    return n


def _prefetch(names: list[str], client: Any, data_dir: Path, nthreads: int) -> dict[str, str]:
    """Download the frames' images in parallel; return {name: error} for those that failed."""
    from tqdm.auto import tqdm

    errors: dict[str, str] = {}

    def fetch(name: str) -> None:
        try:
            client.fetch_frame(name, data_dir)
        except Exception as e:  # one bad frame never stops a night
            errors[name] = f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=nthreads) as pool:
        list(tqdm(pool.map(fetch, names), total=len(names), desc="download", unit="frame"))
    return errors


def run(
    config: str | None = None,
    checkpoint: str | None = None,
    score_threshold: float | None = None,
    cleanup: str | None = None,
    single_image: str | None = None,
    date: str | None = None,
    twilight: bool = False,
    nthreads: int | None = None,
    output_base_path: str = "./",
) -> dict[str, Any]:
    """Run Tails on one frame (``--single_image``) or on a night of ZTF data (``--date``).

    Parameters
    ----------
    config : str, optional
        YAML configuration; default: ``config.defaults.yaml``.
    checkpoint : str, optional
        Model weights (``.weights.h5``); default: ``tails.checkpoint``, and when that is null the
        bundled model.
    score_threshold : float, optional
        Report detections whose score is above this (0 to 1; :func:`tails.vet.compact_score`);
        default: ``tails.score_threshold``.
    cleanup : str, optional
        Delete downloaded images after each frame: none, ref, sci or all.
    single_image : str, optional
        A ccd-quadrant frame name, e.g. ``ztf_20191014495961_000570_zr_c05_o_q3``.
    date : str, optional
        A UTC night ``YYYYMMDD``: every exposure of that night in Kowalski's ZTF_ops.
    twilight : bool
        With ``--date``, only the Twilight survey's exposures.
    nthreads : int, optional
        Threads for SWarp and for parallel downloads.
    output_base_path : str
        Downloads go to ``DIR/data``, outputs to ``DIR/runs/YYYYMMDD``.

    Returns
    -------
    dict
        A summary: frames done and failed, candidates, output folder.
    """
    from .config import load_config
    from .detect import check_run_options
    from .frames import expand_fileroot, parse_frame

    cfg = load_config(config)
    tcfg = cfg["tails"]
    threshold, cleanup = check_run_options(
        tcfg["score_threshold"] if score_threshold is None else score_threshold,
        tcfg["cleanup"] if cleanup is None else cleanup,
    )
    nthreads = _check_nthreads(tcfg["nthreads"] if nthreads is None else nthreads)
    if bool(single_image) == bool(date):
        raise UsageError("give exactly one of --single_image=NAME or --date=YYYYMMDD")
    base = Path(output_base_path).expanduser().resolve()

    if single_image:
        frame = parse_frame(str(single_image))
        names, night = [frame.name], frame.date
    else:
        from .kowalski import fileroots_for_night

        night = _check_date(date)
        fileroots = fileroots_for_night(cfg, night, twilight=bool(twilight))
        names = [n for fr in fileroots for n in expand_fileroot(fr)]
        log.info("%s: %d exposure(s), %d frame(s)", night, len(fileroots), len(names))

    from .efficientdet import model_name
    from .fusion import fusion_from_config
    from .irsa import IrsaClient
    from .litert import detector_from_config
    from .models import warn_if_experimental

    if checkpoint is None:
        checkpoint = tcfg["checkpoint"]
    model = detector_from_config(cfg, checkpoint)
    fusion = fusion_from_config(cfg, checkpoint)
    tails_v = model_name(checkpoint)
    warn_if_experimental(checkpoint)
    client = IrsaClient.from_config(cfg)

    failed: dict[str, str] = {}
    if len(names) > 1:
        failed = _prefetch(names, client, base / "data", nthreads)
        for name, err in failed.items():
            log.error("%s: download failed, skipped: %s", name, err)

    n_candidates, done = 0, 0
    t_start = time.perf_counter()
    todo = [n for n in names if n not in failed]
    from tqdm.auto import tqdm

    from .detect import process_frame

    for name in tqdm(todo, desc="frames", unit="frame", disable=len(todo) < 2):
        try:
            result = process_frame(
                name,
                model=model,
                config=cfg,
                base_path=base,
                score_threshold=threshold,
                cleanup=cleanup,
                nthreads=nthreads,
                client=client,
                checkpoint_name=tails_v,
                fusion=fusion,
            )
        except Exception as e:
            if single_image:
                raise
            failed[name] = f"{type(e).__name__}: {e}"
            log.error("%s: failed, skipped: %s", name, failed[name])
            continue
        done += 1
        n_candidates += len(result.detections)

    summary = {
        "night": night,
        "frames": len(names),
        "done": done,
        "failed": len(failed),
        "candidates": n_candidates,
        "runs": str(base / "runs" / night),
        "seconds": round(time.perf_counter() - t_start, 1),
        "model": tails_v,
    }
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"Tails {summary['model']}: {summary['done']}/{summary['frames']} frame(s) done, "
        f"{summary['failed']} failed, {summary['candidates']} candidate(s) "
        f"in {summary['seconds']} s -> {summary['runs']}"
    )


def refuse_unknown_flags(argv: Sequence[str], name: str, *funcs: Callable[..., Any]) -> None:
    """Refuse a ``--flag`` that none of ``funcs`` takes, before anything runs.

    fire applies the flags a command does not consume to its *result*, after calling it with its
    defaults: a mistyped flag of ``tails train`` would otherwise start a default training run.

    Raises
    ------
    UsageError
        Naming the flag and the flags the command has.
    """
    params = {k: p for f in funcs for k, p in inspect.signature(f).parameters.items()
              if k != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for arg in argv:
        if arg == "--":  # fire's own flags (--help, --trace, ...) follow
            return
        if not arg.startswith("--"):
            continue
        flag = arg[2:].split("=", 1)[0].replace("-", "_")
        if flag in params or flag in _FIRE_FLAGS or (flag.startswith("no") and flag[2:] in params):
            continue
        raise UsageError(f"{name} has no flag --{flag}; its flags are " + ", ".join(f"--{p}" for p in params))


def _guarded(func: Callable[..., Any], argv: list[str] | None, name: str = "tails") -> int:
    """Run a fire command; turn known input errors into a one-line message and exit code 2."""
    import fire

    from .config import ConfigError
    from .evaluate import EvaluationError
    from .irsa import DownloadError
    from .kowalski import KowalskiError
    from .models import ModelFetchError

    expected = (UsageError, ConfigError, ValueError, FileNotFoundError, FileExistsError,
                DownloadError, KowalskiError, ModelFetchError, EvaluationError)
    try:
        refuse_unknown_flags(sys.argv[1:] if argv is None else argv, name, func)
        fire.Fire(func, command=argv, name=name)
    except expected as e:
        print(f"tails: error: {e}", file=sys.stderr)
        return 2
    except fire.core.FireExit as e:  # --help and fire's own usage errors
        return int(e.code or 0)
    return 0


@functools.wraps(run)
def _run_and_summarise(*args: Any, **kwargs: Any) -> None:
    """``run``, then the short summary; exit 1 when frames were asked for and none was done."""
    summary = run(*args, **kwargs)
    _print_summary(summary)
    if summary["frames"] and not summary["done"]:
        raise SystemExit(1)


def run_main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/run_tails.py``: the ``run`` command with the original's flags."""
    _setup_logging()
    return _guarded(_run_and_summarise, argv, name="run_tails.py")


def _average(*checkpoints: str, output: str) -> str:
    """Average checkpoints of one model into one weights file (see
    tails.efficientdet.average_checkpoints)."""
    from .efficientdet import average_checkpoints

    return str(average_checkpoints(checkpoints, output))


#: The ``tails`` sub-commands: the module and function each runs.  A command's module is
#: imported only when it runs (``tails simulate`` need not load Keras), and fire is handed the
#: function itself, so that ``--help`` shows its own flags and docstring.
_COMMANDS = {
    "run": ("tails.cli", "_run_and_summarise"),
    "simulate": ("tails.simulate", "simulate_command"),
    "train": ("tails.train", "train_command"),
    "reproduce": ("tails.recipe", "reproduce_command"),
    "evaluate": ("tails.evaluate", "evaluate_command"),
    "pool": ("tails.evaluate", "pool_command"),
    "fit-fusion": ("tails.fusion", "fit_fusion_command"),
    "average": ("tails.cli", "_average"),
    "fetch-models": ("tails.models", "fetch_models"),
    "benchmark": ("tails.benchmark", "benchmark_command"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tails`` command."""
    _setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("fetch_models",):
        argv = ["fetch-models", *argv[1:]]
    if not argv or argv[0] not in _COMMANDS:
        print("usage: tails {" + ",".join(_COMMANDS) + "} [--flag=value ...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, function = _COMMANDS[argv[0]]
    return _guarded(getattr(importlib.import_module(module), function), argv[1:], name=f"tails {argv[0]}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
