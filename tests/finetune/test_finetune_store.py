"""The job store (SQLite, WAL), its fault handling, the watcher and the runners (no torch)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import finetune.store
from finetune.publish import ACTIVE_FILE, version_lock, write_active
from finetune.records import worker_id
from finetune.runner import (
    ExternalRunner,
    JobEvent,
    JobSupervisor,
    JobWatcher,
    KubectlRunner,
    count_transition,
)
from finetune.schemas import Hyperparameters, JobSpec
from finetune.store import JobStore
from finetune.worker import Worker, parse_args

SPEC = JobSpec(base_model="m", base_version="1", output_model="m", val_fraction=0.2,
               activate=False, hyperparameters=Hyperparameters(epochs=3))  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs")
    s.init()
    return s


def add(store: JobStore, job_id: str, max_queued: int = 100) -> bool:
    return store.create(job_id, SPEC, {"spectra": 4}, max_queued)


def test_store_is_lazy_and_uses_wal(tmp_path: Path) -> None:
    lazy = JobStore(tmp_path / "never")
    assert lazy.jobs() == [] and lazy.counts() == {} and lazy.get("x") is None
    assert not (tmp_path / "never").exists()
    assert add(lazy, "a")
    con = sqlite3.connect(lazy.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_lifecycle_and_records_survive_a_new_store_object(store: JobStore) -> None:
    assert add(store, "a")
    job = store.claim_next("host:1")
    assert job is not None and job.state == "running" and job.attempts == 1
    store.set_progress("a", {"epoch": 2, "val_accuracy": 0.5})
    store.set_result("a", {"model": "m", "version": "2", "activated": False})
    assert store.finish("a", "succeeded")
    assert not store.finish("a", "failed", "too late")  # a terminal state is final
    again = JobStore(store.root).get("a")  # e.g. after an API restart
    assert again is not None and again.state == "succeeded" and again.progress["epoch"] == 2
    assert again.result == {"model": "m", "version": "2", "activated": False}
    assert [m for _, _, m in store.log_lines("a")] == ["queued", "running on host:1", "succeeded"]


def test_claims_are_atomic_across_threads(store: JobStore) -> None:
    for i in range(3):
        add(store, f"j{i}")
    won: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        job = store.claim_next(worker_id())
        if job is not None:
            with lock:
                won.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == ["j0", "j1", "j2"]  # each job once, no job twice
    assert store.claim("j0", "other:1") is None


def test_queue_bound(store: JobStore) -> None:
    assert add(store, "a", max_queued=1)
    assert not add(store, "b", max_queued=1)
    assert store.get("b") is None


def test_cancel_paths(store: JobStore) -> None:
    add(store, "q")
    assert store.request_cancel("q") == "queued"
    assert store.get("q").state == "cancelled"  # type: ignore[union-attr]
    add(store, "r")
    store.claim("r", "h:1")
    assert store.request_cancel("r") == "running"
    assert store.cancel_requested("r") and store.get("r").state == "running"  # type: ignore[union-attr]
    assert not store.requeue("r", "stop")  # a job being cancelled is not requeued
    assert store.request_cancel("q") == "cancelled" and store.request_cancel("nope") is None


def test_a_cancel_and_the_start_of_the_export_exclude_each_other(store: JobStore) -> None:
    """Whichever comes first wins: a cancel flagged before the export starts stops it (nothing
    is registered); once the export has started the cancel is refused and the job finishes."""
    exporting = {"stage": "exporting", "epoch": 3}
    add(store, "a")
    store.claim("a", "h:1")
    assert store.request_cancel("a") == "running"
    assert not store.begin_export("a", exporting)
    assert store.get("a").progress == {"stage": "starting"}  # type: ignore[union-attr]
    add(store, "b")
    store.claim("b", "h:1")
    assert store.begin_export("b", exporting)
    assert store.get("b").progress == exporting  # type: ignore[union-attr]
    assert store.request_cancel("b") == finetune.store.PUBLISHING
    assert not store.cancel_requested("b") and store.get("b").state == "running"  # type: ignore[union-attr]
    assert store.log_lines("b")[-1][2] == "cancel refused: the version is being registered"
    assert not store.begin_export("q-never-claimed", exporting)


def test_requeue_after_a_clean_stop(store: JobStore) -> None:
    add(store, "a")
    store.claim("a", "h:1")
    assert store.requeue("a", "worker stopped")
    job = store.claim_next("h:2")
    assert job is not None and job.id == "a" and job.attempts == 2 and job.worker == "h:2"


def test_reap_by_heartbeat_and_by_dead_pid(store: JobStore) -> None:
    add(store, "silent")
    add(store, "dead")
    add(store, "alive")
    store.claim("silent", "elsewhere:1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.claim("dead", f"{socket.gethostname()}:{dead.pid}")
    store.claim("alive", worker_id())
    time.sleep(1.0)
    store.heartbeat("alive")
    assert store.reap(60.0, socket.gethostname()) == ["dead"]
    assert "process" in (store.get("dead").error or "")  # type: ignore[union-attr]
    assert store.reap(0.8, socket.gethostname()) == ["silent"]
    assert "no heartbeat" in (store.get("silent").error or "")  # type: ignore[union-attr]
    assert store.get("alive").state == "running"  # type: ignore[union-attr]


def test_purge_data_after_retention(store: JobStore) -> None:
    add(store, "a")
    store.data_dir("a").mkdir(parents=True)
    (store.data_dir("a") / "data.npz").write_bytes(b"x")
    assert store.purge_data(0.0) == []  # still queued: data kept
    store.finish("a", "failed", "x")
    assert store.purge_data(3600.0) == []  # ended, but retention not over
    assert store.purge_data(0.0) == ["a"]
    assert not store.data_dir("a").exists() and store.get("a").data_removed_at  # type: ignore[union-attr]


def test_log_is_bounded(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finetune.store, "MAX_LOG_LINES", 20)
    add(store, "a")
    for i in range(25):
        store.log("a", f"line {i}")
    lines = store.log_lines("a", after=18, limit=10)
    assert [n for n, _, _ in lines] == [19, 20]


def test_watcher_reports_transitions_and_skips_history(store: JobStore) -> None:
    add(store, "old")
    store.finish("old", "failed", "x")
    add(store, "live")
    watcher = JobWatcher(store, heartbeat_timeout_s=60.0)
    first = watcher.poll()
    assert [(e.job.id, e.old, e.job.state) for e in first] == [("live", None, "queued")]
    store.claim("live", worker_id())
    store.finish("live", "succeeded")
    add(store, "new")
    events = [(e.job.id, e.old, e.job.state) for e in watcher.poll()]
    assert events == [("live", "queued", "succeeded"), ("new", None, "queued")]
    assert watcher.poll() == []


def test_a_job_ending_between_mark_start_and_the_first_poll_is_reported(store: JobStore) -> None:
    # an API restarting while a job finishes: the job ends while the models load, before the
    # first poll; without the mark it was taken for history and its new version never served
    add(store, "old")
    store.finish("old", "failed", "x")
    add(store, "finishing")
    store.claim("finishing", worker_id())
    watcher = JobWatcher(store, heartbeat_timeout_s=60.0)
    watcher.mark_start()
    store.finish("finishing", "succeeded")  # while the models load
    events = [(e.job.id, e.old, e.job.state) for e in watcher.poll()]
    assert events == [("finishing", None, "succeeded")]  # "old" is still history
    assert JobStore(store.root).last_seq() == watcher.seq


def test_a_training_process_that_dies_early_leaves_its_output_in_the_job_log(
    store: JobStore,
) -> None:
    # e.g. an API environment without torch: the child failed at import, and the job's log
    # said only "training process exited with code 1"
    worker = Worker(parse_args(["--job-store", str(store.root), "--once"]))
    crash = "import sys; sys.exit('ModuleNotFoundError: No module named torch')"  # code 1
    worker._command = lambda job_id: [sys.executable, "-c", crash]  # type: ignore[method-assign]
    add(store, "a")
    job = store.claim_next(worker_id())
    assert job is not None
    worker.run_one(job)
    done = store.get("a")
    assert done is not None and done.state == "failed" and "code 1" in str(done.error)
    log = "\n".join(m for _, _, m in store.log_lines("a"))
    assert "last output" in log and "No module named torch" in log


def test_a_stopping_worker_lets_a_job_that_is_exporting_finish(store: JobStore) -> None:
    # SIGTERM during the export used to kill the child; a job killed after its version was
    # written but before `succeeded` was queued again and registered a second version
    worker = Worker(parse_args(["--job-store", str(store.root), "--once"]))
    finish = (f"import time; from finetune.store import JobStore; time.sleep(1.0); "
              f"JobStore({str(store.root)!r}).finish('a', 'succeeded')")  # fmt: skip
    worker._command = lambda job_id: [sys.executable, "-c", finish]  # type: ignore[method-assign]
    add(store, "a")
    job = store.claim_next(worker_id())
    assert job is not None
    store.set_progress("a", {"stage": "exporting"})
    worker.stopping = True  # SIGTERM arrived
    worker.run_one(job)
    done = store.get("a")
    assert done is not None and done.state == "succeeded" and done.attempts == 1


def test_a_failing_event_handler_loses_no_other_event_of_the_round(store: JobStore) -> None:
    add(store, "a")
    add(store, "b")
    handled: list[str] = []

    async def on_event(event: JobEvent) -> None:
        if event.job.id == "a":
            raise RuntimeError("a reload failed oddly")
        handled.append(event.job.id)

    supervisor = JobSupervisor(store, ExternalRunner(), 60.0, 0.0, 0.01, on_event)
    asyncio.run(supervisor.step())
    assert handled == ["b"]


def test_kubectl_runner_renders_the_template(tmp_path: Path) -> None:
    template = tmp_path / "job.yaml"
    template.write_text("name: $JOB_NAME\nargs: [--job-id, $JOB_ID]\nkeep: ${OTHER}\n")
    out = tmp_path / "applied.yaml"
    runner = KubectlRunner(template, ["sh", "-c", f"cat > {out}"])
    runner.submit("abc123")
    assert (
        out.read_text() == "name: raman-finetune-abc123\nargs: [--job-id, abc123]\nkeep: ${OTHER}\n"
    )
    with pytest.raises(RuntimeError, match="refused"):
        KubectlRunner(template, ["sh", "-c", "echo refused >&2; exit 1"]).submit("x")
    ExternalRunner().submit("x")  # nothing to do: external workers poll the store


def test_write_active_and_version_lock(tmp_path: Path) -> None:
    (tmp_path / "m" / "3").mkdir(parents=True)
    with version_lock(tmp_path, "m"):
        write_active(tmp_path, "m", "3")
    assert (tmp_path / "m" / ACTIVE_FILE).read_text() == "3\n"
    with pytest.raises(FileNotFoundError):
        write_active(tmp_path, "m", "4")


def test_metric_transitions_fill_in_missed_states(store: JobStore) -> None:
    seen: list[tuple[str | None, str | None]] = []
    add(store, "a")
    store.claim("a", worker_id())
    store.finish("a", "succeeded")
    job = store.get("a")
    assert job is not None
    count_transition(lambda old, new: seen.append((old, new)), JobEvent(job, "queued"))
    assert seen == [("queued", "running"), ("running", "succeeded"), ("succeeded", None)]
    seen.clear()
    count_transition(lambda old, new: seen.append((old, new)), JobEvent(job, None))
    assert seen[0] == (None, "queued") and seen[-1] == ("succeeded", None)
