"""The sentinel against loopback Kowalski, IRSA, SkyPortal, MPChecker and SkyBoT.

The model
---------
No trained model is needed for what is tested here (the plumbing: ledger, posting, crashes,
restarts).  The tests use ``tails.efficientdet.Tails()`` with freshly initialised weights saved
to a temporary ``.weights.h5``.  Such a model gives every tile the same score (about 0.505,
whatever the input), so it cannot tell a comet from an empty field; the tests therefore run
with ``score_threshold = 0``: every tile is a candidate.  The frames are 256 x 256 px, one
tile each, so every good frame yields exactly one candidate -- the stand-in for "the comet".
That the detector finds real comets is tested with the bundled model elsewhere
(tests of tails.detect / the end-to-end test of the pipeline).

Frames (one exposure, ``ztf_20191014495961_000570_zr``): c01_q1 and c01_q2 are good synthetic
frames (tests/fitsutil.py), c01_q3 has a corrupt science image; the exposure's 61 other
ccd-quadrants are not on the IRSA server (as when IPAC has not posted them yet).
"""

from __future__ import annotations

import configparser
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from tails.config import load_config
from tails.frames import expand_fileroot

from bundled import with_bundled_model
from crossmatch_servers import KnownObject, MPCheckerServer, SkyBotServer
from fitsutil import irsa_paths, write_irsa_frame
from irsa_server import IrsaServer
from kowalski_server import KowalskiServer, ztf_ops_document
from skyportal_server import SkyPortalServer

from sentinel.ledger import SQLiteLedger
from sentinel.supervisor import supervisord_conf, write_supervisord_conf
from sentinel.watcher import parse_key, task_key, window

ROOT = Path(__file__).resolve().parents[1]
FILEROOT = "ztf_20191014495961_000570_zr"
GOOD = [f"{FILEROOT}_c01_o_q1", f"{FILEROOT}_c01_o_q2"]
BAD = f"{FILEROOT}_c01_o_q3"
# a later exposure, announced after the dask cluster alone was restarted
FILEROOT2 = "ztf_20191014600000_000570_zr"
LATE = f"{FILEROOT2}_c01_o_q1"
# frames for the in-process tests (not part of the exposure the watcher sees)
SOLO = [f"ztf_20191015300000_000571_zg_c02_o_q{q}" for q in (1, 2, 3, 4)]
SHAPE = (256, 256)
STEPS = ["candidate", "annotation", "thumbnail:new", "thumbnail:ref", "thumbnail:sub",
         "comment:triplet", "comment:crossmatch", "comment:link"]


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(fresh_checkpoint) -> Path:
    """Fresh Tails() weights (see the module docstring): the session's, converted to LiteRT once."""
    return fresh_checkpoint


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("irsa")
    for i, name in enumerate(GOOD + [BAD] + SOLO + [LATE]):
        write_irsa_frame(root, name, shape=SHAPE, seed=i + 1)
    irsa_paths(root, BAD)["sci"].write_bytes(b"SIMPLE  = this is not a FITS file" + b"\0" * 3000)
    return root


def _config(tmp: Path, checkpoint: Path, irsa, kowalski, fritz, mpc, skybot, **app) -> dict:
    config = load_config()
    config["irsa"].update(url=irsa.url, timeout=10, retries=1, backoff_factor=0.1)
    config["kowalski"] = kowalski.config_section()
    config["fritz"] = fritz.config_section()
    config["crossmatch"].update(mpc_url=mpc.url, skybot_url=skybot.url, timeout=5)
    config["tails"].update(checkpoint=str(checkpoint), score_threshold=0.0, reproject="reproject", nthreads=1)
    # the untrained model's candidates lie anywhere, not on a coma: vetting would drop them all
    config["tails"]["vet"]["enabled"] = False
    a = config["sentinel"]["app"]
    a.update(post_to_fritz=True, twilight=True, cadence=2, path_base=str(tmp / "sentinel"),
             max_attempts=3, retry_after_minutes=60)
    a.update(app)
    config["sentinel"]["dask"].update(
        scheduler_port=_free_port(), dashboard_address=None, n_workers=1, threads_per_worker=1,
        memory_limit="6GiB", lifetime=None,
    )
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _near(ra=150.0, dec=30.0):
    return [KnownObject("(434) Hungaria", ra + 20 / 3600, dec, v=15.3, number=434)]


@pytest.fixture
def services(mirror):
    jd_now = 2440587.5 + time.time() / 86400
    with IrsaServer(mirror) as irsa, KowalskiServer(
        [ztf_ops_document(FILEROOT, jd_now - 1 / 24, "Twilight survey")]
    ) as kowalski, SkyPortalServer() as fritz, MPCheckerServer(_near()) as mpc, SkyBotServer(_near()) as skybot:
        yield irsa, kowalski, fritz, mpc, skybot


def _by_object(fritz: SkyPortalServer) -> dict[str, list[str]]:
    """Accepted posts per object id, as step names."""
    out: dict[str, list[str]] = defaultdict(list)
    for p in fritz.posts:
        b = p["body"]
        if p["kind"] == "candidate":
            out[b["id"]].append("candidate")
        elif p["kind"] == "thumbnail":
            out[b["obj_id"]].append(f"thumbnail:{b['ttype']}")
        else:
            oid = p["path"].split("/")[3]
            out[oid].append(p["kind"] if p["kind"] == "annotation" else "comment")
    return out


def _check_complete(parts: list[str]) -> None:
    assert Counter(parts) == Counter(
        ["candidate", "annotation", "thumbnail:new", "thumbnail:ref", "thumbnail:sub"] + ["comment"] * 3
    )


# -- pure parts ------------------------------------------------------------------------------
def test_task_keys_and_window():
    key = task_key(GOOD[0], 3)
    assert parse_key(key) == (GOOD[0], 3)
    assert parse_key("other-task") is None
    now = dt.datetime(2020, 11, 14, 12, tzinfo=dt.timezone.utc)
    start, stop = window(now)
    assert (now - start, stop - now) == (dt.timedelta(hours=24), dt.timedelta(hours=1))
    start, stop = window(now, "2020-11-13T00:00:00", "2020-11-13 06:00")
    assert stop - start == dt.timedelta(hours=6) and start.tzinfo is not None
    with pytest.raises(ValueError, match="after"):
        window(now, "2020-11-14", "2020-11-13")


def test_supervisord_conf_from_config(tmp_path):
    config = load_config()
    config["sentinel"]["app"]["path_base"] = str(tmp_path / "base")
    config["sentinel"]["supervisord"]["programs"]["watcher"]["command"] = "{python} -m sentinel.watcher --config {config} --x=5%"
    text = supervisord_conf(config, "cfg.yaml", python="/py", root="/repo")
    cp = configparser.RawConfigParser()
    cp.read_string(text)
    assert {"supervisord", "unix_http_server", "supervisorctl", "program:dask-cluster", "program:watcher"} <= set(cp.sections())
    cmd = cp["program:watcher"]["command"]
    assert cmd.startswith("/py -m sentinel.watcher --config ") and cmd.endswith("cfg.yaml --x=5%%")
    assert cp["program:watcher"]["stdout_logfile"] == str(tmp_path / "base" / "logs" / "watcher.log")
    assert cp["program:dask-cluster"]["autorestart"] == "true"
    assert cp["program:dask-cluster"]["directory"] == "/repo"
    path = write_supervisord_conf(config, "cfg.yaml")
    assert path.is_file() and (tmp_path / "base" / "logs").is_dir()


def _sentinel_cli():
    """sentinel.py, the script, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sentinel_cli", ROOT / "sentinel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_checks_config_and_dependencies(tmp_path):
    mod = _sentinel_cli()
    with pytest.raises(mod.SentinelCliError, match="copy config.defaults.yaml"):
        mod.check_config(tmp_path / "config.yaml")
    bad = load_config()
    del bad["sentinel"]["dask"]["lifetime"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(mod.SentinelCliError, match="'sentinel.dask.lifetime' is missing"):
        mod.check_config(tmp_path / "config.yaml")
    bad = load_config()
    bad["sentinel"]["app"]["typo"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(mod.SentinelCliError, match="'sentinel.app.typo' is unknown"):
        mod.check_config(tmp_path / "config.yaml")
    assert mod.check_dependencies(native=True) == []
    assert mod.main(["up", f"--config={tmp_path / 'missing.yaml'}"]) == 2


def test_cli_refuses_a_mistyped_flag_before_the_command_runs(tmp_path, capsys):
    mod = _sentinel_cli()
    cfg = tmp_path / "config.yaml"
    cfg.write_text((ROOT / "config.defaults.yaml").read_text())
    # fire would have brought the service up natively, then complained about --natve
    assert mod.main(["up", f"--config={cfg}", "--natve"]) == 2
    err = capsys.readouterr().err
    assert "sentinel.py up has no flag --natve; its flags are --config, --build, --native, --mongo" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


# -- TailsWorker in this process ---------------------------------------------------------------
@pytest.fixture
def worker_env(tmp_path, checkpoint, services):
    from sentinel.worker import TailsWorker

    irsa, kowalski, fritz, mpc, skybot = services
    config = _config(tmp_path, checkpoint, irsa, kowalski, fritz, mpc, skybot)
    tw = TailsWorker(config)
    yield tw, services
    tw.ledger.close()


def test_worker_posts_each_candidate_once_with_all_parts(worker_env):
    tw, (irsa, kowalski, fritz, mpc, skybot) = worker_env
    skybot.down = True  # a cross-match service that is down does not stop the posting
    led = tw.ledger
    assert led.submit([SOLO[0], BAD]) == [(SOLO[0], 1), (BAD, 1)]
    assert tw.process(SOLO[0], 1)["status"] == "success"
    bad = tw.process(BAD, 1)
    assert bad["status"] == "error" and "DownloadError" in bad["error"]
    assert "DownloadError" in led.get(BAD)["error"]

    (oid, parts), = _by_object(fritz).items()
    _check_complete(parts)
    assert fritz.invalid == []
    ann = fritz.posts_to("annotation")[0]["body"]["data"]
    assert ann["candid"] == f"{SOLO[0]}_0"
    assert ann["mpc_nearest_id"] == "(434) Hungaria"
    assert "503" in ann["imcce_nearest_error"]
    assert led.get(SOLO[0])["n_candidates"] == 1
    assert led.post_record(f"{SOLO[0]}_0")["steps"] == {s: "done" for s in STEPS}
    # the same submission again (a task dask re-runs): skipped, nothing posted
    assert tw.process(SOLO[0], 1)["status"] == "skipped"
    assert len(fritz.posts) == 8


def test_fritz_500s_are_absorbed_by_the_retries(worker_env):
    tw, (irsa, kowalski, fritz, mpc, skybot) = worker_env
    name = SOLO[1]
    tw.ledger.submit([name])
    fritz.fail_next(3, methods=("POST",))
    assert tw.process(name, 1)["status"] == "success"
    assert len(fritz.failed) == 3
    (parts,) = _by_object(fritz).values()
    _check_complete(parts)


def test_fritz_down_mid_posting_then_back_resumes_without_duplicates(worker_env):
    tw, (irsa, kowalski, fritz, mpc, skybot) = worker_env
    led = tw.ledger
    name = SOLO[2]
    candid = f"{name}_0"
    led.submit([name])
    # Fritz takes six posts, then stays down for longer than the session's 5 retries
    fritz.fail_next(1000, methods=("POST",), after=6)
    res = tw.process(name, 1)
    assert res["status"] == "error" and "posting to Fritz failed" in res["error"]
    assert "HTTP 500" in led.get(name)["error"]
    steps = led.post_record(candid)["steps"]
    assert steps["comment:triplet"] == "done" and steps["comment:crossmatch"] == "sending"
    assert len(fritz.posts) == 6
    # and, as if the process had died after Fritz took the sub thumbnail but before the ledger
    # recorded it: the step is left at "sending" although Fritz has it
    led.set_step(candid, "thumbnail:sub", "sending")

    fritz.fail_next(0)
    (_, n), = led.submit([name], retry_after_minutes=0)
    assert tw.process(name, n)["status"] == "success"
    # only the two comments that never reached Fritz were sent
    assert [p["body"]["text"][:3] for p in fritz.posts[6:]] == ["MPC", "[SC"]
    (parts,) = _by_object(fritz).values()
    _check_complete(parts)
    assert led.post_record(candid)["steps"] == {s: "done" for s in STEPS}


# -- the whole service under supervisord ---------------------------------------------------------
def _wait(what: str, predicate, timeout: float, logs: Path, interval: float = 0.2):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tails = []
    for log in sorted(logs.glob("*.log")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n" + "\n".join(tails))


def _supervisord(conf: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_service_under_supervisor_survives_worker_kill_restart_and_fritz_errors(tmp_path, checkpoint, services):
    irsa, kowalski, fritz, mpc, skybot = services
    config = _config(tmp_path, checkpoint, irsa, kowalski, fritz, mpc, skybot)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    conf = write_supervisord_conf(config, config_path)
    logs = Path(config["sentinel"]["app"]["path_base"]) / "logs"
    ledger = SQLiteLedger(Path(config["sentinel"]["app"]["path_base"]) / "ledger.sqlite")
    frames = expand_fileroot(FILEROOT)
    fritz.fail_next(3, methods=("POST",))  # Fritz answers 500 at first

    proc = _supervisord(conf)
    worker_pids = set()
    try:
        # 1. kill the dask worker in the middle of the first good frame
        first = GOOD[0]
        rec = _wait(f"{first} to start", lambda: (r := ledger.get(first)) and r["pid"] and r, 240, logs, 0.05)
        killed = rec["pid"]
        worker_pids.add(killed)
        os.kill(killed, signal.SIGKILL)

        # 2. once the nanny's new worker process has started on a frame, restart the whole
        #    sentinel: frames are then in the middle of processing or still queued
        _wait("a restarted worker to start a frame",
              lambda: any(e["pid"] != killed for e in ledger.events(event="started")), 240, logs, 0.05)
        _stop(proc)
        unfinished = ledger.counts()["processing"]
        assert unfinished > 0, "the restart should find unfinished frames"
        for r in ledger.frames():
            if r["pid"]:
                worker_pids.add(r["pid"])
        assert not any(_alive(p) for p in worker_pids), "worker processes outlived supervisord"
        cycles = (logs / "watcher.log").read_text().count(" submitted, ")
        proc = _supervisord(conf)

        def finished():
            recs = {r["name"]: r for r in ledger.frames()}
            return len(recs) == 64 and all(r["status"] != "processing" for r in recs.values())

        _wait("all 64 frames to be final", finished, 300, logs)
        _wait("two watcher cycles after the restart",
              lambda: (logs / "watcher.log").read_text().count(" submitted, ") >= cycles + 2, 120, logs)
        time.sleep(3)  # give a wrongly resubmitted frame the time to show up
        snapshot = {r["name"]: dict(r) for r in ledger.frames()}
        posts = len(fritz.posts)

        # 3. restart the dask cluster alone; the watcher must reconnect, give the new workers
        #    their plugin again, and process a new exposure
        ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf)]
        subprocess.run(ctl + ["restart", "dask-cluster"], check=True, capture_output=True, timeout=120)
        kowalski.add(ztf_ops_document(FILEROOT2, 2440587.5 + time.time() / 86400 - 0.5 / 24))
        _wait(f"{LATE} to succeed after the cluster restart",
              lambda: (ledger.get(LATE) or {}).get("status") == "success", 240, logs)
        _wait("the new exposure to be final", lambda: len(ledger.frames()) == 128 and ledger.counts()["processing"] == 0,
              240, logs)
    finally:
        _stop(proc)
        for r in ledger.frames():
            if r["pid"]:
                worker_pids.add(r["pid"])
    assert not any(_alive(p) for p in worker_pids)

    recs = {r["name"]: r for r in ledger.frames()}
    # the cluster restart changed nothing about the first exposure
    assert {n: recs[n] for n in frames} == snapshot
    assert set(recs) == set(frames) | set(expand_fileroot(FILEROOT2))  # no frame lost
    for name in GOOD:
        assert recs[name]["status"] == "success" and recs[name]["n_candidates"] == 1
        assert len(ledger.events(name, "success")) == 1  # processed once
    # the killed worker had started the first frame and never finished it
    started = ledger.events(GOOD[0], "started")
    assert len(started) >= 2 and started[0]["pid"] == killed
    assert ledger.events(GOOD[0], "success")[0]["pid"] != killed
    assert len(ledger.events(event="stale")) == unfinished  # cleared at the restart, then redone
    assert recs[BAD]["status"] == "error"
    assert "DownloadError" in recs[BAD]["error"] or "FITS" in recs[BAD]["error"]
    others = [n for n in frames if n not in GOOD + [BAD]]
    assert all(recs[n]["status"] == "error" and "NotFoundError" in recs[n]["error"] for n in others)

    # Fritz: two candidates, each posted once with all its parts, despite the 500s
    assert fritz.invalid == []
    assert len(fritz.failed) == 3
    per_object = _by_object(fritz)
    assert len(per_object) == 3 and len(fritz.posts) == posts + 8
    for parts in per_object.values():
        _check_complete(parts)
    origins = sorted(p["body"]["origin"] for p in fritz.posts_to("candidate"))
    assert origins == sorted(f"{n}_0" for n in GOOD + [LATE])
    ledger.close()


def test_watcher_runs_once_over_a_window(tmp_path, checkpoint, services):
    """``--utc_stop`` given: one cycle over that window, wait for its frames, exit.  A dask cluster
    in this process (threads) stands in for the sentinel's LocalCluster."""
    from distributed import Client, LocalCluster

    from sentinel.watcher import Watcher

    irsa, kowalski, fritz, mpc, skybot = services
    jd_now = 2440587.5 + time.time() / 86400
    # an old exposure of a non-Twilight programme, and the Twilight exposure of the fixture
    kowalski.add(ztf_ops_document("ztf_20191015300000_000571_zg", jd_now - 30, "MSIP all-sky"))
    config = _config(tmp_path, checkpoint, irsa, kowalski, fritz, mpc, skybot, post_to_fritz=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        watcher = Watcher(config, client=client)
        stop = dt.datetime.now(dt.timezone.utc)
        start = stop - dt.timedelta(days=40)
        # all surveys: both exposures; twilight only: the fixture's one
        names = watcher.frames_in_window(start, stop, twilight=False)
        assert len(names) == 128
        led = watcher.ledger
        watcher.run(utc_start=start.isoformat(), utc_stop=stop.isoformat(), twilight=True)
        recs = {r["name"]: r for r in led.frames()}
        assert set(recs) == set(expand_fileroot(FILEROOT))
        assert all(r["status"] in ("success", "error") for r in recs.values())
        assert [n for n, r in recs.items() if r["status"] == "success"] == GOOD

        # a frame marked processing whose task dask does not hold (lost): resubmitted
        led.submit([SOLO[1]])
        # a frame whose task was lost again and again: given up, with the reason
        led.submit([SOLO[0]])
        for _ in range(3):
            led.resubmit(SOLO[0])
        assert watcher.cycle(start, stop, twilight=True, keep=True) == [SOLO[1]]
        watcher.wait([SOLO[1]])
        assert led.get(SOLO[1])["status"] == "success"
        assert any("task lost" in e["detail"] for e in led.events(SOLO[1], "submitted"))
        assert led.get(SOLO[0])["status"] == "error" and "giving up" in led.get(SOLO[0])["error"]
        # a second run finds nothing new to do
        assert watcher.cycle(start, stop, twilight=True) == []
    assert fritz.posts == []  # post_to_fritz is off


@with_bundled_model
def test_bundled_model_finds_the_simulated_comet_and_posts_it_once(tmp_path, services):
    """With the bundled (trained) model and the simulator: a full-size frame with a Borisov-like
    comet (as scripts/demo.py) gives a candidate at the comet, posted once with all its parts;
    the same field without a comet gives none."""
    from sentinel.worker import TailsWorker
    from tails import simulate

    irsa_root = tmp_path / "irsa"
    comet_frame = "ztf_20191014495961_000570_zr_c05_o_q3"
    empty_frame = "ztf_20191014495961_000570_zr_c05_o_q4"
    borisov = {"x": 558.0, "y": 2639.0, "mag": 17.5, "coma_arcsec": 8.0, "tail_arcsec": 20.0, "pa_deg": 300.0}
    simulate.write_frame(simulate.simulate_frame(comet_frame, seed=2019, comets=[borisov]), irsa_root)
    simulate.write_frame(simulate.simulate_frame(empty_frame, seed=2020, comets=[]), irsa_root)

    irsa, kowalski, fritz, mpc, skybot = services
    with IrsaServer(irsa_root) as sim_irsa:
        config = _config(tmp_path, Path("unused"), sim_irsa, kowalski, fritz, mpc, skybot)
        config["tails"].update(checkpoint=None, score_threshold=0.5, reproject="swarp")
        config["tails"]["vet"]["enabled"] = True  # the detector's defaults, as the sentinel runs it
        tw = TailsWorker(config)
        tw.ledger.submit([comet_frame, empty_frame])
        assert tw.process(comet_frame, 1)["status"] == "success"
        assert tw.process(empty_frame, 1)["status"] == "success"
    assert tw.ledger.get(empty_frame)["n_candidates"] == 0
    n = tw.ledger.get(comet_frame)["n_candidates"]
    assert n >= 1
    anns = [p["body"]["data"] for p in fritz.posts_to("annotation")]
    near = [a for a in anns if abs(a["x"] - 558) < 10 and abs(a["y"] - 2639) < 10]
    assert len(near) == 1, anns
    per_object = _by_object(fritz)
    assert len(per_object) == n  # every candidate once
    for parts in per_object.values():
        _check_complete(parts)
    tw.ledger.close()
