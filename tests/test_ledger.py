"""The sentinel's frame ledger: statuses, compare-and-set claims, posting state, processes."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from sentinel.ledger import MongoLedger, SQLiteLedger, open_ledger
from tails.config import load_config

NAMES = [f"ztf_20191014495961_000570_zr_c05_o_q{q}" for q in (1, 2, 3, 4)]


def _mongo():
    """The Mongo backend: against a real MongoDB at TAILS_TEST_MONGO=host:port when given,
    otherwise against mongomock's in-memory stand-in for pymongo (skipped if not installed)."""
    where = os.environ.get("TAILS_TEST_MONGO")
    collection = f"frames_{os.getpid()}"
    if where:
        host, port = where.rsplit(":", 1)
        ledger = MongoLedger(host=host, port=int(port), db="tails_test", collection=collection)
    else:
        mongomock = pytest.importorskip("mongomock", reason="no MongoDB: set TAILS_TEST_MONGO or install mongomock")
        ledger = MongoLedger(db="tails_test", collection=collection, client=mongomock.MongoClient())
    for c in (ledger.frames_c, ledger.posts_c, ledger.events_c):
        c.delete_many({})
    return ledger


@pytest.fixture(params=["sqlite", "mongo"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        led = SQLiteLedger(tmp_path / "ledger.sqlite")
    else:
        led = _mongo()
    yield led
    if request.param == "mongo":
        for c in (led.frames_c, led.posts_c, led.events_c):
            led.db.drop_collection(c.name)
    led.close()


def test_frame_life_cycle(ledger):
    assert ledger.submit(NAMES[:2]) == [(NAMES[0], 1), (NAMES[1], 1)]
    # known as processing: not submitted again
    assert ledger.submit(NAMES[:3]) == [(NAMES[2], 1)]
    assert ledger.get(NAMES[0])["status"] == "processing"

    assert ledger.start(NAMES[0], 1, worker="tcp://w1", pid=123)
    assert ledger.finish(NAMES[0], 1, "success", n_candidates=2)
    rec = ledger.get(NAMES[0])
    assert (rec["status"], rec["attempts"], rec["n_candidates"], rec["pid"]) == ("success", 1, 2, 123)
    assert rec["submitted_at"] <= rec["started_at"] <= rec["finished_at"]

    # a frame that is done is never started again
    assert not ledger.start(NAMES[0], 1)
    assert ledger.submit([NAMES[0]]) == []

    assert ledger.start(NAMES[1], 1)
    assert ledger.finish(NAMES[1], 1, "error", error="DownloadError: 404")
    assert ledger.get(NAMES[1])["error"] == "DownloadError: 404"
    assert ledger.counts() == {"processing": 1, "success": 1, "error": 1}
    with pytest.raises(ValueError):
        ledger.finish(NAMES[2], 1, "processing")


def test_errors_are_retried_up_to_max_attempts(ledger):
    name = NAMES[0]
    ledger.submit([name])
    for attempt in (1, 2):
        assert ledger.start(name, attempt)
        assert ledger.finish(name, attempt, "error", error="boom")
        assert ledger.submit([name], max_attempts=3, retry_after_minutes=60) == []  # too early
        assert ledger.submit([name], max_attempts=3, retry_after_minutes=0) == [(name, attempt + 1)]
    assert ledger.start(name, 3) and ledger.finish(name, 3, "error", error="boom")
    assert ledger.submit([name], max_attempts=3) == []  # given up


def test_frames_not_yet_at_irsa_are_retried_beyond_max_attempts(ledger):
    name = NAMES[1]
    ledger.submit([name])
    for n in (1, 2, 3):
        assert ledger.start(name, n)
        assert ledger.finish(name, n, "error", error="NotFoundError: no science image at https://irsa/...")
        assert ledger.submit([name], max_attempts=1, retry_after_minutes=30) == []  # not before its time
        assert ledger.submit([name], max_attempts=1, retry_after_minutes=0) == [(name, n + 1)]


def test_only_the_current_submission_may_start_or_finish(ledger):
    name = NAMES[0]
    ledger.submit([name])
    assert ledger.resubmit(name) == 2  # the first task was lost
    assert not ledger.start(name, 1)
    assert ledger.start(name, 2)
    assert not ledger.finish(name, 1, "success")
    assert ledger.finish(name, 2, "success")
    assert ledger.resubmit(name) is None
    assert [e["event"] for e in ledger.events(name)] == ["submitted", "submitted", "skipped", "started", "success"]


def test_worker_restarted_by_dask_may_start_the_same_submission_again(ledger):
    name = NAMES[0]
    ledger.submit([name])
    assert ledger.start(name, 1, pid=1)  # this worker gets killed
    assert ledger.start(name, 1, pid=2)  # dask reschedules the task
    assert ledger.finish(name, 1, "success")
    assert ledger.get(name)["attempts"] == 2
    assert len(ledger.events(name, "success")) == 1


def test_clear_stale_keeps_live_tasks(ledger):
    ledger.submit(NAMES)
    ledger.start(NAMES[3], 1)
    ledger.finish(NAMES[3], 1, "success")
    assert sorted(ledger.clear_stale(live=[NAMES[0]])) == NAMES[1:3]
    assert ledger.get(NAMES[1]) is None and ledger.get(NAMES[0])["status"] == "processing"
    # submission numbers are never reused, so an old dask task key cannot come back
    assert ledger.submit(NAMES) == [(NAMES[1], 2), (NAMES[2], 2)]


def test_posting_state(ledger):
    candid = NAMES[0] + "_0"
    assert ledger.post_record(candid) is None
    assert ledger.reserve_object(candid, NAMES[0], "ZTF20191014_aaaaaa") == "ZTF20191014_aaaaaa"
    assert ledger.reserve_object(candid, NAMES[0], "ZTF20191014_bbbbbb") == "ZTF20191014_aaaaaa"
    ledger.set_step(candid, "candidate", "sending")
    ledger.set_step(candid, "candidate", "done")
    ledger.set_step(candid, "annotation", "sending")
    rec = ledger.post_record(candid)
    assert rec["obj_id"] == "ZTF20191014_aaaaaa"
    assert rec["steps"] == {"candidate": "done", "annotation": "sending"}
    with pytest.raises(KeyError):
        ledger.set_step("nope_0", "candidate", "done")
    with pytest.raises(ValueError):
        ledger.set_step(candid, "candidate", "maybe")


def _submit_all(path: str, queue) -> None:
    led = SQLiteLedger(path)
    queue.put(led.submit(NAMES * 3))


def test_sqlite_is_safe_across_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    SQLiteLedger(path).close()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_submit_all, args=(path, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    submitted = [name for batch in got for name, _ in batch]
    assert sorted(submitted) == sorted(NAMES)  # each frame handed out exactly once


def test_open_ledger_from_config(tmp_path):
    config = load_config()
    config["sentinel"]["app"]["path_base"] = str(tmp_path)
    led = open_ledger(config)
    assert isinstance(led, SQLiteLedger) and led.path == tmp_path / "ledger.sqlite"
    config["sentinel"]["ledger"]["backend"] = "postgres"
    with pytest.raises(ValueError, match="sqlite or mongo"):
        open_ledger(config)
