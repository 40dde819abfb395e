"""The sentinel's ledger: what happened to every frame, and to every Fritz post.

Two backends with one interface: an embedded SQLite database (default; one file, shared safely
by the watcher and the dask worker processes through WAL mode and ``BEGIN IMMEDIATE``
transactions) and MongoDB through ``pymongo`` (as the original sentinel), chosen by
``sentinel.ledger.backend``.

Frames
    One record per ccd-quadrant frame: ``status`` (``processing``, ``success`` or ``error``),
    ``submissions`` (how often the watcher handed it to dask), ``attempts`` (how often a worker
    started it), ``submitted_at``, ``started_at``, ``finished_at`` (UTC ISO), ``worker``,
    ``pid``, ``n_candidates`` and ``error`` (the reason of the last failure).

Posts
    One record per candidate (``candid`` = ``{frame}_{ni}``): its Fritz ``obj_id`` and the state
    of each posting step (``sending`` or ``done``).

Events
    An append-only history (``submitted``, ``started``, ``success``, ``error``, ``skipped``,
    ``stale``, ``posted``) for operators and tests.

How a frame is never posted twice
---------------------------------
1. The watcher submits a frame only if the ledger holds it neither as ``processing`` nor as
   ``success`` (errors are retried up to ``sentinel.app.max_attempts`` times).  Submission and
   the ``processing`` mark are one transaction, and each submission gets its number; the dask
   task key carries it, so dask itself never runs the same submission twice at once.
2. A worker starts a frame only through :meth:`Ledger.start`, a compare-and-set that refuses a
   frame that is already ``success`` or that belongs to a newer submission.
3. Before its first post, a candidate gets its object id recorded (:meth:`Ledger.reserve_object`);
   a re-run of the frame (after a crash) reuses it.
4. Each post is recorded as ``sending`` before the request and ``done`` after the answer.  A
   re-run skips ``done`` steps.  A step left at ``sending`` -- the process died between sending
   and recording -- is looked up in Fritz (:meth:`tails.fritz.FritzClient.step_done`) and only
   sent again if Fritz does not have it.
5. Only after all posts is the frame marked ``success``; a frame whose posts failed is marked
   ``error`` and retried, resuming at the first step not ``done``.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "STATUSES",
    "NOT_YET_THERE",
    "Ledger",
    "SQLiteLedger",
    "MongoLedger",
    "open_ledger",
    "utcnow",
]

log = logging.getLogger(__name__)

STATUSES = ("processing", "success", "error")

#: Errors that mean "not at IRSA yet" (tails.irsa.NotFoundError): retried beyond max_attempts.
NOT_YET_THERE = ("NotFoundError",)


def _retry(rec: Mapping[str, Any], max_attempts: int, retry_after_minutes: float) -> bool:
    """Whether a frame in error may be submitted again now."""
    if rec["status"] != "error" or _age_minutes(rec["finished_at"]) < retry_after_minutes:
        return False
    return rec["attempts"] < max_attempts or str(rec.get("error") or "").startswith(NOT_YET_THERE)


def utcnow() -> str:
    """Now, UTC, ISO 8601 with microseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _age_minutes(iso: str | None) -> float:
    if not iso:
        return float("inf")
    then = dt.datetime.fromisoformat(iso)
    return (dt.datetime.now(dt.timezone.utc) - then).total_seconds() / 60.0


class Ledger(abc.ABC):
    """The interface of both backends."""

    # -- frames ------------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, name: str) -> dict | None:
        """The record of a frame, or None."""

    @abc.abstractmethod
    def frames(self, status: str | None = None) -> list[dict]:
        """All frame records (with one status)."""

    @abc.abstractmethod
    def submit(
        self, names: Iterable[str], max_attempts: int = 3, retry_after_minutes: float = 0.0
    ) -> list[tuple[str, int]]:
        """Mark as ``processing`` the frames to hand to dask now, and return them.

        A frame is taken when the ledger does not know it, or holds it as ``error`` finished at
        least ``retry_after_minutes`` ago, with fewer than ``max_attempts`` attempts -- or with
        any number of attempts when the error says that the images are not at IRSA yet
        (:data:`NOT_YET_THERE`), as IPAC posts them some time after the exposure.

        Returns
        -------
        list of (name, submission)
            The submission number goes into the dask task key and into :meth:`start`.
        """

    @abc.abstractmethod
    def resubmit(self, name: str) -> int | None:
        """Give a ``processing`` frame whose task was lost a new submission number (None if the
        frame is no longer ``processing``)."""

    @abc.abstractmethod
    def start(self, name: str, submission: int, worker: str = "", pid: int = 0) -> bool:
        """A worker's claim of a frame: True and ``attempts + 1`` if the frame is ``processing``
        under this submission; False (do not process) otherwise, e.g. when it is ``success``."""

    @abc.abstractmethod
    def finish(
        self, name: str, submission: int, status: str, n_candidates: int = 0, error: str | None = None
    ) -> bool:
        """Record the outcome of a frame (``success`` or ``error``) for this submission."""

    @abc.abstractmethod
    def clear_stale(self, live: Iterable[str] = ()) -> list[str]:
        """Forget ``processing`` marks of frames not in ``live`` (start-up clean-up); returns them.

        A forgotten frame is unknown again, so the watcher submits it anew (under a submission
        number it never had before: the history keeps the count).
        """

    # -- posts -------------------------------------------------------------------------------
    @abc.abstractmethod
    def post_record(self, candid: str) -> dict | None:
        """``{"candid", "frame", "obj_id", "steps": {step: state}}`` or None."""

    @abc.abstractmethod
    def reserve_object(self, candid: str, frame: str, obj_id: str) -> str:
        """Record ``obj_id`` for a candidate unless it has one; return the recorded id."""

    @abc.abstractmethod
    def set_step(self, candid: str, step: str, state: str) -> None:
        """Record a posting step as ``sending`` or ``done``."""

    # -- history -----------------------------------------------------------------------------
    @abc.abstractmethod
    def event(self, name: str, event: str, detail: str = "") -> None:
        """Append an event to the history."""

    @abc.abstractmethod
    def events(self, name: str | None = None, event: str | None = None) -> list[dict]:
        """The history, oldest first."""

    def counts(self) -> dict[str, int]:
        """Number of frames per status."""
        out = {s: 0 for s in STATUSES}
        for rec in self.frames():
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- SQLite ----------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    submissions INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT, started_at TEXT, finished_at TEXT,
    worker TEXT, pid INTEGER,
    n_candidates INTEGER, error TEXT
);
CREATE INDEX IF NOT EXISTS frames_status ON frames(status);
CREATE TABLE IF NOT EXISTS posts (
    candid TEXT PRIMARY KEY,
    frame TEXT NOT NULL,
    obj_id TEXT NOT NULL,
    steps TEXT NOT NULL DEFAULT '{}',
    created_at TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL, pid INTEGER, detail TEXT
);
CREATE INDEX IF NOT EXISTS events_name ON events(name);
"""

_FRAME_COLUMNS = (
    "name", "status", "submissions", "attempts", "submitted_at", "started_at", "finished_at",
    "worker", "pid", "n_candidates", "error",
)


class SQLiteLedger(Ledger):
    """The ledger in one SQLite file, safe for several processes on one machine.

    Parameters
    ----------
    path : str or Path
        Database file; its folder is created.
    timeout : float
        Seconds to wait for another process's write lock.
    """

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = float(timeout)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            for i in range(50):
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as e:  # "database is locked" past busy_timeout
                    if "locked" not in str(e) or i == 49:
                        raise
                    time.sleep(0.1)
            return self.conn

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> "SQLiteLedger._Tx":
        return self._Tx(self._conn())

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict | None:
        return None if row is None else {k: row[k] for k in row.keys()}

    def _event(self, c: sqlite3.Connection, name: str, event: str, detail: str = "") -> None:
        c.execute(
            "INSERT INTO events(name, event, at, pid, detail) VALUES (?, ?, ?, ?, ?)",
            (name, event, utcnow(), os.getpid(), detail),
        )

    # frames
    def get(self, name: str) -> dict | None:
        return self._row(self._conn().execute("SELECT * FROM frames WHERE name = ?", (name,)).fetchone())

    def frames(self, status: str | None = None) -> list[dict]:
        if status is None:
            rows = self._conn().execute("SELECT * FROM frames ORDER BY name").fetchall()
        else:
            rows = self._conn().execute("SELECT * FROM frames WHERE status = ? ORDER BY name", (status,)).fetchall()
        return [self._row(r) for r in rows]

    def submit(self, names, max_attempts=3, retry_after_minutes=0.0):
        names = list(dict.fromkeys(names))
        out: list[tuple[str, int]] = []
        now = utcnow()
        with self._tx() as c:
            for name in names:
                rec = self._row(c.execute("SELECT * FROM frames WHERE name = ?", (name,)).fetchone())
                if rec is None:
                    # numbers keep growing across clear_stale, so a task key is never reused
                    n = 1 + c.execute(
                        "SELECT COUNT(*) FROM events WHERE name = ? AND event = 'submitted'", (name,)
                    ).fetchone()[0]
                    c.execute(
                        "INSERT INTO frames(name, status, submissions, submitted_at) VALUES (?, 'processing', ?, ?)",
                        (name, n, now),
                    )
                    out.append((name, n))
                elif _retry(rec, max_attempts, retry_after_minutes):
                    n = rec["submissions"] + 1
                    c.execute(
                        "UPDATE frames SET status='processing', submissions=?, submitted_at=? WHERE name=?",
                        (n, now, name),
                    )
                    out.append((name, n))
                else:
                    continue
                self._event(c, name, "submitted", str(out[-1][1]))
        return out

    def resubmit(self, name):
        with self._tx() as c:
            rec = self._row(c.execute("SELECT * FROM frames WHERE name = ?", (name,)).fetchone())
            if rec is None or rec["status"] != "processing":
                return None
            n = rec["submissions"] + 1
            c.execute("UPDATE frames SET submissions=?, submitted_at=? WHERE name=?", (n, utcnow(), name))
            self._event(c, name, "submitted", f"{n} (task lost)")
            return n

    def start(self, name, submission, worker="", pid=0):
        with self._tx() as c:
            rec = self._row(c.execute("SELECT * FROM frames WHERE name = ?", (name,)).fetchone())
            if rec is None or rec["status"] != "processing" or rec["submissions"] != int(submission):
                why = "unknown" if rec is None else f"{rec['status']}, submission {rec['submissions']}"
                self._event(c, name, "skipped", f"submission {submission}: frame is {why}")
                return False
            c.execute(
                "UPDATE frames SET attempts=attempts+1, started_at=?, worker=?, pid=? WHERE name=?",
                (utcnow(), worker, int(pid), name),
            )
            self._event(c, name, "started", f"{worker} pid {pid}")
            return True

    def finish(self, name, submission, status, n_candidates=0, error=None):
        if status not in ("success", "error"):
            raise ValueError(f"a frame finishes as success or error, not {status!r}")
        with self._tx() as c:
            rec = self._row(c.execute("SELECT * FROM frames WHERE name = ?", (name,)).fetchone())
            if rec is None or rec["status"] != "processing" or rec["submissions"] != int(submission):
                return False
            c.execute(
                "UPDATE frames SET status=?, finished_at=?, n_candidates=?, error=? WHERE name=?",
                (status, utcnow(), int(n_candidates), error, name),
            )
            self._event(c, name, status, error or f"{n_candidates} candidate(s)")
            return True

    def clear_stale(self, live=()):
        live = set(live)
        with self._tx() as c:
            stale = [
                r["name"]
                for r in c.execute("SELECT name FROM frames WHERE status='processing'").fetchall()
                if r["name"] not in live
            ]
            for name in stale:
                c.execute("DELETE FROM frames WHERE name=?", (name,))
                self._event(c, name, "stale", "processing mark cleared at start-up")
        return stale

    # posts
    def post_record(self, candid):
        row = self._row(self._conn().execute("SELECT * FROM posts WHERE candid = ?", (candid,)).fetchone())
        if row is not None:
            row["steps"] = json.loads(row["steps"])
        return row

    def reserve_object(self, candid, frame, obj_id):
        with self._tx() as c:
            row = c.execute("SELECT obj_id FROM posts WHERE candid = ?", (candid,)).fetchone()
            if row is not None:
                return row["obj_id"]
            c.execute(
                "INSERT INTO posts(candid, frame, obj_id, steps, created_at) VALUES (?, ?, ?, '{}', ?)",
                (candid, frame, obj_id, utcnow()),
            )
            return obj_id

    def set_step(self, candid, step, state):
        if state not in ("sending", "done"):
            raise ValueError(f"a posting step is sending or done, not {state!r}")
        with self._tx() as c:
            row = c.execute("SELECT frame, steps FROM posts WHERE candid = ?", (candid,)).fetchone()
            if row is None:
                raise KeyError(f"no object id reserved for candidate {candid}")
            steps = json.loads(row["steps"])
            steps[step] = state
            c.execute("UPDATE posts SET steps=? WHERE candid=?", (json.dumps(steps), candid))
            if state == "done":
                self._event(c, row["frame"], "posted", f"{candid} {step}")

    # history
    def event(self, name, event, detail=""):
        with self._tx() as c:
            self._event(c, name, event, detail)

    def events(self, name=None, event=None):
        q, args = "SELECT * FROM events WHERE 1=1", []
        if name is not None:
            q += " AND name = ?"
            args.append(name)
        if event is not None:
            q += " AND event = ?"
            args.append(event)
        return [self._row(r) for r in self._conn().execute(q + " ORDER BY id", args).fetchall()]


# -- MongoDB ---------------------------------------------------------------------------------
class MongoLedger(Ledger):
    """The ledger in MongoDB (collections ``{collection}``, ``{collection}_posts`` and
    ``{collection}_events``), as the original sentinel kept its frames.

    Every compare-and-set is one ``find_one_and_update`` with the condition in its filter, so
    it is atomic across processes and machines.  ``client`` may be given instead of the
    connection parameters (any ``pymongo.MongoClient``-like object).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 27017,
        username: str = "",
        password: str = "",
        db: str = "tails",
        collection: str = "frames",
        timeout_ms: int = 10000,
        client: Any = None,
    ):
        if client is None:
            import pymongo

            kwargs: dict[str, Any] = {"serverSelectionTimeoutMS": int(timeout_ms)}
            if username:
                kwargs.update(username=username, password=password)
            client = pymongo.MongoClient(host=host, port=int(port), **kwargs)
        self.client = client
        self.db = self.client[db]
        self.frames_c = self.db[collection]
        self.posts_c = self.db[f"{collection}_posts"]
        self.events_c = self.db[f"{collection}_events"]
        self.frames_c.create_index("status")
        self.events_c.create_index("name")

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _frame(doc: Mapping | None) -> dict | None:
        if doc is None:
            return None
        rec = {k: doc.get(k) for k in _FRAME_COLUMNS if k != "name"}
        rec["name"] = doc["_id"]
        rec["submissions"] = rec["submissions"] or 0
        rec["attempts"] = rec["attempts"] or 0
        return rec

    def get(self, name):
        return self._frame(self.frames_c.find_one({"_id": name}))

    def frames(self, status=None):
        flt = {} if status is None else {"status": status}
        return [self._frame(d) for d in self.frames_c.find(flt).sort("_id", 1)]

    def submit(self, names, max_attempts=3, retry_after_minutes=0.0):
        from pymongo.errors import DuplicateKeyError

        out = []
        now = utcnow()
        for name in dict.fromkeys(names):
            try:
                # numbers keep growing across clear_stale, so a task key is never reused
                n = 1 + self.events_c.count_documents({"name": name, "event": "submitted"})
                self.frames_c.insert_one(
                    {"_id": name, "status": "processing", "submissions": n, "attempts": 0, "submitted_at": now}
                )
                out.append((name, n))
            except DuplicateKeyError:
                rec = self.get(name)
                if not _retry(rec, max_attempts, retry_after_minutes):
                    continue
                doc = self.frames_c.find_one_and_update(
                    {"_id": name, "status": "error", "submissions": rec["submissions"]},
                    {"$set": {"status": "processing", "submitted_at": now}, "$inc": {"submissions": 1}},
                    return_document=True,
                )
                if doc is None:
                    continue
                out.append((name, doc["submissions"]))
            self.event(name, "submitted", str(out[-1][1]))
        return out

    def resubmit(self, name):
        doc = self.frames_c.find_one_and_update(
            {"_id": name, "status": "processing"},
            {"$set": {"submitted_at": utcnow()}, "$inc": {"submissions": 1}},
            return_document=True,
        )
        if doc is None:
            return None
        self.event(name, "submitted", f"{doc['submissions']} (task lost)")
        return doc["submissions"]

    def start(self, name, submission, worker="", pid=0):
        doc = self.frames_c.find_one_and_update(
            {"_id": name, "status": "processing", "submissions": int(submission)},
            {"$set": {"started_at": utcnow(), "worker": worker, "pid": int(pid)}, "$inc": {"attempts": 1}},
        )
        if doc is None:
            self.event(name, "skipped", f"submission {submission}: frame is not processing under it")
            return False
        self.event(name, "started", f"{worker} pid {pid}")
        return True

    def finish(self, name, submission, status, n_candidates=0, error=None):
        if status not in ("success", "error"):
            raise ValueError(f"a frame finishes as success or error, not {status!r}")
        doc = self.frames_c.find_one_and_update(
            {"_id": name, "status": "processing", "submissions": int(submission)},
            {"$set": {"status": status, "finished_at": utcnow(), "n_candidates": int(n_candidates), "error": error}},
        )
        if doc is None:
            return False
        self.event(name, status, error or f"{n_candidates} candidate(s)")
        return True

    def clear_stale(self, live=()):
        live = set(live)
        stale = [d["_id"] for d in self.frames_c.find({"status": "processing"}, {"_id": 1}) if d["_id"] not in live]
        for name in stale:
            if self.frames_c.delete_one({"_id": name, "status": "processing"}).deleted_count:
                self.event(name, "stale", "processing mark cleared at start-up")
        return stale

    def post_record(self, candid):
        doc = self.posts_c.find_one({"_id": candid})
        if doc is None:
            return None
        return {"candid": candid, "frame": doc["frame"], "obj_id": doc["obj_id"], "steps": dict(doc.get("steps", {}))}

    def reserve_object(self, candid, frame, obj_id):
        doc = self.posts_c.find_one_and_update(
            {"_id": candid},
            {"$setOnInsert": {"frame": frame, "obj_id": obj_id, "steps": {}, "created_at": utcnow()}},
            upsert=True,
            return_document=True,
        )
        return doc["obj_id"]

    def set_step(self, candid, step, state):
        if state not in ("sending", "done"):
            raise ValueError(f"a posting step is sending or done, not {state!r}")
        doc = self.posts_c.find_one_and_update({"_id": candid}, {"$set": {f"steps.{step}": state}})
        if doc is None:
            raise KeyError(f"no object id reserved for candidate {candid}")
        if state == "done":
            self.event(doc["frame"], "posted", f"{candid} {step}")

    def event(self, name, event, detail=""):
        self.events_c.insert_one({"name": name, "event": event, "at": utcnow(), "pid": os.getpid(), "detail": detail})

    def events(self, name=None, event=None):
        flt: dict[str, Any] = {}
        if name is not None:
            flt["name"] = name
        if event is not None:
            flt["event"] = event
        return [{k: v for k, v in d.items() if k != "_id"} for d in self.events_c.find(flt).sort("_id", 1)]


def open_ledger(config: Mapping[str, Any]) -> Ledger:
    """The ledger that ``sentinel.ledger`` configures.

    Raises
    ------
    ValueError
        For an unknown backend.
    """
    lcfg = config["sentinel"]["ledger"]
    backend = str(lcfg["backend"]).lower()
    if backend == "sqlite":
        path = Path(lcfg["sqlite_path"]).expanduser()
        if not path.is_absolute():
            path = Path(config["sentinel"]["app"]["path_base"]).expanduser() / path
        return SQLiteLedger(path)
    if backend in ("mongo", "mongodb"):
        return MongoLedger(
            host=lcfg["mongo_host"],
            port=lcfg["mongo_port"],
            username=lcfg["mongo_username"],
            password=lcfg["mongo_password"],
            db=lcfg["mongo_db"],
            collection=lcfg["mongo_collection"],
        )
    raise ValueError(f"sentinel.ledger.backend must be sqlite or mongo, got {lcfg['backend']!r}")
