"""The job store: one SQLite file (`<job_store>/jobs.sqlite`, WAL mode) plus per-job folders.

Layout: `data/<id>/data.npz` holds a job's preprocessed spectra until the job ends (then it is
removed after `retention_s`), `work/<id>/` its checkpoints while it trains.
Every write is one short transaction; `BEGIN IMMEDIATE` makes claims atomic across processes, so
any number of API processes and workers may share the file: on one host in WAL mode, across
hosts only in "delete" journal mode on a volume with working POSIX locks (see JOURNAL_MODES).
Each change of state bumps a global `seq`, which watchers poll.
A record never disappears: the API can restart at any time and find every job.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.records import JobRecord, death_reason
from finetune.schemas import TERMINAL, JobSpec

DB_FILE = "jobs.sqlite"
JOURNAL_MODES = ("wal", "delete")
"""WAL (the default) needs every process on one host (it shares memory through the -shm file);
"delete" works on a volume several nodes mount, if that volume's POSIX locks work."""
MAX_LOG_LINES = 5000
MAX_MESSAGE = 2000
PUBLISH_STAGES = ("exporting", "done")
"""Progress stages of a running job that is writing its version: a cancel is too late then."""
PUBLISHING = "publishing"
"""`request_cancel`'s answer for such a job (the cancel is refused, the job finishes)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    seq INTEGER NOT NULL,
    spec TEXT NOT NULL,
    data TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    data_removed_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_seq ON jobs (seq);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    at REAL NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, line)
);
"""
NEXT_SEQ = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs)"


class JobStore:
    """All reads and writes of job state. Cheap to build: nothing touches disk until used."""

    def __init__(self, root: Path, journal: str = "wal") -> None:
        if journal not in JOURNAL_MODES:
            raise ValueError(f"journal must be one of {JOURNAL_MODES}, not {journal!r}")
        self.root = Path(root)
        self.journal = journal
        self.db_path = self.root / DB_FILE
        self._local = threading.local()

    # --- plumbing ---

    def exists(self) -> bool:
        """Whether the database has been created (no job was ever posted otherwise)."""
        return self.db_path.is_file()

    def init(self) -> None:
        """Create folders and tables; switch the database to WAL mode (idempotent)."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "work").mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            con.execute(f"PRAGMA journal_mode={self.journal}")
            con.executescript(SCHEMA)
        finally:
            con.close()

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        con = self._connection()
        if not write:
            yield con
            return
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: no lock-upgrade deadlocks
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread, kept open: opening one per call would checkpoint the WAL
        # (and fsync) every time the last connection closes, ~25 ms per write.
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None or self._local.pid != os.getpid():
            con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con, self._local.pid = con, os.getpid()
        return con

    def data_dir(self, job_id: str) -> Path:
        """Folder holding the job's preprocessed spectra (`data.npz`)."""
        return self.root / "data" / job_id

    def work_dir(self, job_id: str) -> Path:
        """Folder for the job's checkpoints while it trains."""
        return self.root / "work" / job_id

    # --- reads ---

    def get(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        if not self.exists():
            return None
        with self._connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first, optionally of one state."""
        if not self.exists():
            return []
        query, args = "SELECT * FROM jobs", []
        if state is not None:
            query, args = query + " WHERE state = ?", [state]
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY created_at DESC LIMIT ?", (*args, limit))
            return [JobRecord.from_row(r) for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        if not self.exists():
            return {}
        with self._connect() as con:
            rows = con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: n for state, n in rows}

    def last_seq(self) -> int:
        """The latest change's `seq` (0 for an empty or missing store)."""
        if not self.exists():
            return 0
        with self._connect() as con:
            return int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0])

    def changed_since(self, seq: int) -> list[JobRecord]:
        """Jobs whose state changed after `seq`, oldest change first."""
        if not self.exists():
            return []
        with self._connect() as con:
            rows = con.execute("SELECT * FROM jobs WHERE seq > ? ORDER BY seq", (seq,))
            return [JobRecord.from_row(r) for r in rows.fetchall()]

    def log_lines(
        self, job_id: str, after: int = 0, limit: int = 1000
    ) -> list[tuple[int, float, str]]:
        """Log lines numbered above `after`: (line, unix time, message)."""
        if not self.exists():
            return []
        with self._connect() as con:
            rows = con.execute(
                "SELECT line, at, message FROM job_logs WHERE job_id = ? AND line > ? "
                "ORDER BY line LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [(int(n), float(at), str(msg)) for n, at, msg in rows]

    # --- writes ---

    def create(self, job_id: str, spec: JobSpec, data: dict[str, Any], max_queued: int) -> bool:
        """Insert a queued job; False (nothing written) when `max_queued` jobs already wait."""
        self.init()
        with self._connect(write=True) as con:
            (queued,) = con.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
            if queued >= max_queued:
                return False
            con.execute(
                f"INSERT INTO jobs (id, state, seq, spec, data, created_at) "
                f"VALUES (?, 'queued', {NEXT_SEQ}, ?, ?, ?)",
                (job_id, spec.model_dump_json(), json.dumps(data), time.time()),
            )
            self._log(con, job_id, "queued")
        return True

    def claim_next(self, worker: str) -> JobRecord | None:
        """Atomically move the oldest queued job to running for `worker`."""
        if not self.exists():
            return None
        with self._connect(write=True) as con:
            row = con.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._start(con, row["id"], worker)
        return self.get(row["id"])

    def claim(self, job_id: str, worker: str) -> JobRecord | None:
        """Move this queued job to running for `worker`; None if it is not queued."""
        with self._connect(write=True) as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != "queued":
                return None
            self._start(con, job_id, worker)
        return self.get(job_id)

    def _start(self, con: sqlite3.Connection, job_id: str, worker: str) -> None:
        now = time.time()
        con.execute(
            f"UPDATE jobs SET state = 'running', seq = {NEXT_SEQ}, worker = ?, started_at = ?, "
            "heartbeat_at = ?, attempts = attempts + 1, progress = ? WHERE id = ?",
            (worker, now, now, json.dumps({"stage": "starting"}), job_id),
        )
        self._log(con, job_id, f"running on {worker}")

    def set_worker(self, job_id: str, worker: str) -> None:
        """Record the process that now runs the job (and beat once)."""
        self._update(job_id, "worker = ?, heartbeat_at = ?", (worker, time.time()))

    def heartbeat(self, job_id: str) -> None:
        """Tell watchers the job's process is alive."""
        self._update(job_id, "heartbeat_at = ?", (time.time(),), only_running=True)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Replace the progress document (also a heartbeat)."""
        values = (json.dumps(progress, allow_nan=False), time.time())
        self._update(job_id, "progress = ?, heartbeat_at = ?", values, only_running=True)

    def set_result(self, job_id: str, result: dict[str, Any]) -> None:
        """Record the registered version (before the job is marked succeeded)."""
        self._update(job_id, "result = ?", (json.dumps(result, allow_nan=False),))

    def _update(
        self, job_id: str, assignments: str, values: tuple[Any, ...], only_running: bool = False
    ) -> None:
        guard = " AND state = 'running'" if only_running else ""
        with self._connect(write=True) as con:
            con.execute(f"UPDATE jobs SET {assignments} WHERE id = ?{guard}", (*values, job_id))

    def finish(self, job_id: str, state: str, error: str | None = None) -> bool:
        """Move a queued or running job to a terminal state; False if it had already ended."""
        assert state in TERMINAL, state
        with self._connect(write=True) as con:
            cur = con.execute(
                f"UPDATE jobs SET state = ?, seq = {NEXT_SEQ}, error = ?, finished_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (state, error, time.time(), job_id),
            )
            if cur.rowcount:
                self._log(con, job_id, state + (f": {error}" if error else ""))
        return bool(cur.rowcount)

    def requeue(self, job_id: str, reason: str) -> bool:
        """Put a running job back in the queue (its worker is stopping cleanly)."""
        with self._connect(write=True) as con:
            cur = con.execute(
                f"UPDATE jobs SET state = 'queued', seq = {NEXT_SEQ}, worker = NULL, "
                "progress = '{}' WHERE id = ? AND state = 'running' AND cancel_requested = 0",
                (job_id,),
            )
            if cur.rowcount:
                self._log(con, job_id, f"requeued: {reason}")
        return bool(cur.rowcount)

    def request_cancel(self, job_id: str) -> str | None:
        """Cancel a queued job at once, flag a running one; returns the state before (None: no
        such job), or PUBLISHING for a running job already writing its version, which is left
        to finish (`begin_export` and this are one transaction each: exactly one of them wins).
        Jobs that have ended are left alone."""
        with self._connect(write=True) as con:
            row = con.execute("SELECT state, progress FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["state"] == "queued":
                con.execute(
                    f"UPDATE jobs SET state = 'cancelled', seq = {NEXT_SEQ}, cancel_requested = 1,"
                    " finished_at = ? WHERE id = ?",
                    (time.time(), job_id),
                )
                self._log(con, job_id, "cancelled before it started")
            elif row["state"] == "running":
                if json.loads(row["progress"]).get("stage") in PUBLISH_STAGES:
                    self._log(con, job_id, "cancel refused: the version is being registered")
                    return PUBLISHING
                con.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                self._log(con, job_id, "cancel requested")
        return str(row["state"])

    def begin_export(self, job_id: str, progress: dict[str, Any]) -> bool:
        """Set the progress of a running job that starts writing its version (its stage one of
        PUBLISH_STAGES), unless a cancel was asked for first: then False, and nothing is set."""
        with self._connect(write=True) as con:
            row = con.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ? AND state = 'running'", (job_id,)
            ).fetchone()
            if row is None or row["cancel_requested"]:
                return False
            con.execute(
                "UPDATE jobs SET progress = ?, heartbeat_at = ? WHERE id = ?",
                (json.dumps(progress, allow_nan=False), time.time(), job_id),
            )
        return True

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a cancel was asked for (cheap: the worker polls it)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return bool(row and row[0])

    def log(self, job_id: str, message: str) -> None:
        """Append a line to the job's log."""
        with self._connect(write=True) as con:
            self._log(con, job_id, message)

    def _log(self, con: sqlite3.Connection, job_id: str, message: str) -> None:
        con.execute(
            "INSERT INTO job_logs (job_id, line, at, message) SELECT ?, n + 1, ?, ? FROM "
            "(SELECT COALESCE(MAX(line), 0) AS n FROM job_logs WHERE job_id = ?) WHERE n < ?",
            (job_id, time.time(), message[:MAX_MESSAGE], job_id, MAX_LOG_LINES),
        )

    # --- faults and housekeeping ---

    def reap(self, heartbeat_timeout_s: float, host: str | None = None) -> list[str]:
        """Fail running jobs whose process is gone: silent for `heartbeat_timeout_s`, or (when
        `host` is this machine's name) whose recorded pid no longer exists here."""
        if not self.exists():
            return []
        now, dead = time.time(), []
        for job in self.jobs("running", limit=10_000):
            reason = death_reason(job, now, heartbeat_timeout_s, host)
            if reason and self.finish(job.id, "failed", reason):
                dead.append(job.id)
        return dead

    def purge_data(self, retention_s: float) -> list[str]:
        """Remove the data and work folders of jobs that ended over `retention_s` ago."""
        if not self.exists():
            return []
        cutoff, purged = time.time() - retention_s, []
        with self._connect() as con:
            rows = con.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at <= ? "
                "AND data_removed_at IS NULL",
                (cutoff,),
            ).fetchall()
        for (job_id,) in rows:
            shutil.rmtree(self.data_dir(job_id), ignore_errors=True)
            shutil.rmtree(self.work_dir(job_id), ignore_errors=True)
            self._update(job_id, "data_removed_at = ?", (time.time(),))
            purged.append(job_id)
        return purged
