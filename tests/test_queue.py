"""The SQLite queue: one row per scene, generations, leases, completion only after confirmation."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lib.queue import Queue  # noqa: E402


@pytest.fixture
def queue(tmp_path):
    q = Queue(str(tmp_path / "data" / "queue.db"))
    yield q
    q.close()


def test_enqueue_twice_keeps_one_row_per_scene(queue):
    queue.enqueue([7, 8], "hook", now=100.0)
    queue.enqueue([7], "hook", now=101.0)
    assert queue.counts(now=200.0)["due"] == 2


def test_claimed_job_is_not_claimed_again_before_lease_ends(queue):
    queue.enqueue([1], "hook", now=100.0)
    assert [j.scene_id for j in queue.claim(10, 60, "a:1", now=100.0)] == [1]
    assert queue.claim(10, 60, "b:2", now=150.0) == []
    assert [j.scene_id for j in queue.claim(10, 60, "b:2", now=161.0)] == [1]


def test_complete_removes_the_job(queue):
    queue.enqueue([1], "hook", now=100.0)
    job, = queue.claim(10, 60, "a:1", now=100.0)
    assert queue.complete(job, "a:1") is True
    assert queue.next_due() is None


def test_newer_event_during_processing_keeps_the_job_due(queue):
    queue.enqueue([1], "hook", now=100.0)
    job, = queue.claim(10, 60, "a:1", now=100.0)
    queue.enqueue([1], "hook", now=101.0)
    assert queue.complete(job, "a:1") is False
    again, = queue.claim(10, 60, "a:1", now=102.0)
    assert again.generation == job.generation + 1


def test_retry_waits_the_delay(queue):
    queue.enqueue([1], "hook", now=100.0)
    job, = queue.claim(10, 60, "a:1", now=100.0)
    queue.retry(job, "a:1", 30.0, "transient", "boom", 1, now=100.0)
    assert queue.claim(10, 60, "a:1", now=129.0) == []
    retried, = queue.claim(10, 60, "a:1", now=131.0)
    assert retried.attempts == 1


def test_dead_moves_job_to_dead_letter_queue(queue):
    queue.enqueue([1], "hook", now=100.0)
    job, = queue.claim(10, 60, "a:1", now=100.0)
    queue.dead(job, "a:1", "permanent_error", "permanent", "HTTP 400", 1, now=100.0)
    counts = queue.counts(now=100.0)
    assert (counts["due"], counts["dead_letters"]) == (0, 1)


def test_claims_of_a_dead_process_are_released(queue):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    queue.enqueue([1], "hook")
    host = os.uname().nodename
    queue.claim(10, 3600, f"{host}:{proc.pid}")
    assert queue.release_dead_claims() == 1
    assert len(queue.claim(10, 60, "me:1")) == 1


def test_claims_of_a_live_process_are_kept(queue):
    queue.enqueue([1], "hook")
    queue.claim(10, 3600, f"{os.uname().nodename}:{os.getpid()}")
    assert queue.release_dead_claims() == 0


def test_clear_pending_keeps_claimed_jobs(queue):
    queue.enqueue([1, 2, 3], "hook")
    queue.claim(1, 3600, "a:1")
    assert queue.clear_pending() == 2
    assert queue.counts()["claimed"] == 1


def test_scene_state_round_trips_pushed_values(queue):
    queue.save_scene_state(5, "1001", 1, "/p/a.mp4", "aa", None, {"title": "Ünï 🎬"}, "2026-01-01T00:00:00+10:00")
    state = queue.scene_state([5])[5]
    assert (state["rating_key"], state["pushed"]["title"]) == ("1001", "Ünï 🎬")


def test_concurrent_processes_enqueue_without_losing_jobs(tmp_path):
    path = str(tmp_path / "q.db")
    Queue(path).close()
    code = ("import sys; sys.path.insert(0, %r); from lib.queue import Queue; "
            "Queue(%r).enqueue([int(sys.argv[1])], 'hook')" % (ROOT, path))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE) for i in range(40)]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert Queue(path).counts()["due"] == 40
