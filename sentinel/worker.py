"""What runs on the dask workers: ``TailsWorker``, set up once per worker by a worker plugin.

:class:`TailsWorker` loads the model once and holds the long-lived connections: the IRSA
download client, the Fritz session (retries and time-out of ZTF.md), the MPChecker and SkyBoT
clients and the ledger.  :func:`process_frame_task` is the dask task: it claims the frame in the
ledger, runs the same :func:`tails.detect.process_frame` as the CLI, cross-matches each candidate,
posts it to Fritz step by step (each step recorded, so that nothing is posted twice; see
:mod:`sentinel.ledger`) and records the outcome.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from distributed import WorkerPlugin, get_worker

from .ledger import Ledger, open_ledger

__all__ = ["TailsWorker", "TailsWorkerPlugin", "PLUGIN_NAME", "process_frame_task", "post_candidate"]

log = logging.getLogger("sentinel.worker")

#: Name under which the plugin is registered on every worker.
PLUGIN_NAME = "tails-worker"


def post_candidate(
    fritz: Any,
    ledger: Ledger,
    detection: Mapping[str, Any],
    *,
    cutouts: Mapping[str, Any] | None,
    triplet_png: bytes | None,
    crossmatch: Mapping[str, Any],
    sci_url: str,
    diff_url: str,
    fritz_config: Mapping[str, Any],
) -> str:
    """Post one candidate to Fritz, skipping what the ledger says is already there.

    The object id is reserved in the ledger before the first request and reused by any re-run.
    Each step is marked ``sending`` before its request and ``done`` after; a step found at
    ``sending`` (a crash in mid-request) is looked up in Fritz and sent only if absent.

    Returns
    -------
    str
        The candidate's Fritz object id.

    Raises
    ------
    tails.fritz.FritzError
        If a request fails after the session's retries (the frame is then marked error and
        retried later, resuming here).
    """
    from tails.fritz import make_object_id, posting_plan

    frame = str(detection["id"])
    candid = f"{frame}_{int(detection['ni'])}"
    obj_id = ledger.reserve_object(candid, frame, make_object_id())
    steps = (ledger.post_record(candid) or {}).get("steps", {})
    plan = posting_plan(
        obj_id,
        detection,
        cutouts=cutouts,
        triplet_png=triplet_png,
        crossmatch=crossmatch,
        sci_url=sci_url,
        diff_url=diff_url,
        filter_id=fritz_config["filter_id"],
        group_id=fritz_config["group_id"],
        origin=fritz_config["origin"],
    )
    for step in plan:
        state = steps.get(step.name)
        if state == "done":
            continue
        if state == "sending" and fritz.step_done(obj_id, step):
            log.warning("%s %s: reached Fritz before a crash; not posted again", candid, step.name)
            ledger.set_step(candid, step.name, "done")
            continue
        ledger.set_step(candid, step.name, "sending")
        fritz.send(step)
        ledger.set_step(candid, step.name, "done")
        log.info("%s -> %s: posted %s", candid, obj_id, step.name)
    return obj_id


class TailsWorker:
    """Per-worker state: the model, the service clients and the ledger.

    Parameters
    ----------
    config : dict
        The checked configuration (:func:`tails.config.load_config`).
    """

    def __init__(self, config: Mapping[str, Any]):
        from tails.crossmatch import MPChecker, SkyBot
        from tails.fritz import FritzClient
        from tails.fusion import fusion_from_config
        from tails.irsa import IrsaClient
        from tails.litert import detector_from_config
        from tails.models import warn_if_experimental

        self.config = config
        app = config["sentinel"]["app"]
        self.path_base = Path(app["path_base"]).expanduser().resolve()
        self.path_base.mkdir(parents=True, exist_ok=True)
        self.post_to_fritz = bool(app["post_to_fritz"])
        self.ledger = open_ledger(config)
        self.irsa = IrsaClient.from_config(config)
        self.mpc = MPChecker.from_config(config)
        self.skybot = SkyBot.from_config(config)
        self.fritz = FritzClient.from_config(config) if self.post_to_fritz else None
        if self.fritz is not None and self.fritz.check_connection():
            log.info("Fritz connection OK")
        checkpoint = config["tails"]["checkpoint"]
        t0 = time.perf_counter()
        self.model = detector_from_config(config)
        self.fusion = fusion_from_config(config)
        self.model_name = _model_name(checkpoint)
        log.info("model %s loaded in %.1f s (pid %d)", self.model_name, time.perf_counter() - t0, os.getpid())
        warn_if_experimental(checkpoint)

    def process(self, name: str, submission: int, worker: str = "") -> dict:
        """Process one frame under one submission; never raises.

        Returns
        -------
        dict
            ``{"name", "status": success|error|skipped, "n_candidates", "error"}``.
        """
        from tails.crossmatch import crossmatch
        from tails.detect import process_frame
        from tails.fritz import read_png

        if not self.ledger.start(name, submission, worker=worker, pid=os.getpid()):
            log.info("%s: skipped (already done or superseded)", name)
            return {"name": name, "status": "skipped", "n_candidates": 0, "error": None}
        t0 = time.perf_counter()
        try:
            result = process_frame(
                name,
                model=self.model,
                config=self.config,
                base_path=self.path_base,
                client=self.irsa,
                checkpoint_name=self.model_name,
                fusion=self.fusion,
            )
        except Exception as e:  # one bad frame never stops the service
            error = f"{type(e).__name__}: {e}"
            log.error("%s: processing failed: %s", name, error)
            self.ledger.finish(name, submission, "error", error=error)
            return {"name": name, "status": "error", "n_candidates": 0, "error": error}

        n = len(result.detections)
        try:
            for i, det in enumerate(result.detections.to_dict(orient="records")):
                xmatch = crossmatch(det["ra"], det["dec"], det["jd"], self.mpc, self.skybot)
                if self.fritz is None:
                    continue
                png = result.png_paths[i] if i < len(result.png_paths) else None
                post_candidate(
                    self.fritz,
                    self.ledger,
                    det,
                    cutouts=result.cutouts[i] if i < len(result.cutouts) else None,
                    triplet_png=read_png(png),
                    crossmatch=xmatch,
                    sci_url=result.sci_url,
                    diff_url=result.diff_url,
                    fritz_config=self.config["fritz"],
                )
        except Exception as e:
            error = f"posting to Fritz failed: {type(e).__name__}: {e}"
            log.error("%s: %s", name, error)
            self.ledger.finish(name, submission, "error", n_candidates=n, error=error)
            return {"name": name, "status": "error", "n_candidates": n, "error": error}

        self.ledger.finish(name, submission, "success", n_candidates=n)
        log.info("%s: success, %d candidate(s) in %.1f s", name, n, time.perf_counter() - t0)
        return {"name": name, "status": "success", "n_candidates": n, "error": None}


def _model_name(checkpoint: str | None) -> str:
    try:
        from tails.efficientdet import model_name
    except ImportError:  # pragma: no cover - older tails
        return Path(checkpoint).stem if checkpoint else "tails"
    return model_name(checkpoint)


class TailsWorkerPlugin(WorkerPlugin):
    """Creates one :class:`TailsWorker` per dask worker when the worker starts (and again on a
    worker that dask restarts).

    Parameters
    ----------
    config : dict
        The configuration; it travels to the workers with the plugin.
    """

    name = PLUGIN_NAME

    def __init__(self, config: Mapping[str, Any]):
        self.config = dict(config)
        self.tails_worker: TailsWorker | None = None

    def setup(self, worker: Any) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.tails_worker = TailsWorker(self.config)

    def teardown(self, worker: Any) -> None:
        if self.tails_worker is not None:
            self.tails_worker.ledger.close()


def process_frame_task(name: str, submission: int) -> dict:
    """The dask task of one frame (see :meth:`TailsWorker.process`)."""
    worker = get_worker()
    plugin = worker.plugins[PLUGIN_NAME]
    if plugin.tails_worker is None:  # setup failed earlier; try again here so the error is seen
        plugin.setup(worker)
    log.info("processing %s (submission %d) on %s", name, submission, worker.address)
    return plugin.tails_worker.process(name, submission, worker=worker.address)
