"""Outage resilience: failures classified once, the circuit breaker, health checks, recovery, dead
letters and concurrency, with the fake Plex made to fail in each way over real HTTP."""
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import PLEX_TOKEN
from fakeplex import FakePlex, ResetFault
from harness import ENTRY, drainer_log, drainer_pid, hook_args, stdin_for, stop_drainer, wait_until

from lib import health
from lib.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from lib.errors import classify


@pytest.fixture
def plex():
    fake = FakePlex(token=PLEX_TOKEN)
    fake.start()
    fake.add_section(1, "Movies", ["/m"])
    fake.add_item(1, "/m/a.mp4")
    yield fake
    fake.stop()


def failure_of(fake, timeout=(2, 2)):
    from plexapi.server import PlexServer

    try:
        PlexServer(fake.url, PLEX_TOKEN, timeout=timeout).fetchItem(1001)
    except Exception as exc:  # noqa: BLE001 - the point is what classify makes of it
        return classify(exc)
    return None


# -- classification --------------------------------------------------------------------------

def test_connection_refused_is_server_down(plex):
    plex.down()
    assert failure_of(plex).kind == "server_down"


def test_connection_reset_is_server_down(plex):
    plex.add_fault(ResetFault())
    assert failure_of(plex).kind == "server_down"


def test_read_timeout_is_server_down(plex):
    plex.latency_ms = 800
    assert failure_of(plex, timeout=(2, 0.3)).kind == "server_down"


def test_database_loading_503_is_server_down(plex):
    plex.fail(503)
    assert failure_of(plex) == ("server_down", "Plex answered HTTP 503")


@pytest.mark.parametrize("status,kind", [(500, "transient"), (429, "transient"), (400, "permanent"),
                                         (401, "auth"), (404, "permanent")])
def test_http_statuses_are_classified(plex, status, kind):
    plex.fail(status, paths=r"^/library/metadata/")
    assert failure_of(plex).kind == kind


def test_failure_messages_never_carry_the_token(plex):
    plex.fail(400, paths=r"^/library/metadata/")
    assert PLEX_TOKEN not in failure_of(plex).message


# -- health checks ---------------------------------------------------------------------------

def test_health_up(plex):
    assert health.check(plex.url, PLEX_TOKEN, (2, 2)).status == "up"


def test_health_tells_loading_from_up(plex):
    plex.fail(503)
    result = health.check(plex.url, PLEX_TOKEN, (2, 2))
    assert result.status == "loading" and "database" in result.detail


def test_health_deep_check_catches_a_bad_token_identity_misses(plex):
    result = health.check(plex.url, "wrong", (2, 2))
    assert result.status == "unauthorized"
    assert [r.path for r in plex.requests] == ["/identity", "/"]


def test_health_down(plex):
    plex.down()
    assert health.check(plex.url, PLEX_TOKEN, (1, 1)).status == "down"


# -- the breaker -----------------------------------------------------------------------------

def test_breaker_opens_after_threshold_failures(tmp_path):
    b = Breaker(str(tmp_path), threshold=3)
    assert [b.record_failure("x", lambda: 7) for _ in range(3)] == [False, False, True]
    assert b.state == OPEN


def test_success_resets_the_failure_count(tmp_path):
    b = Breaker(str(tmp_path), threshold=3)
    b.record_failure("x", lambda: 0)
    b.record_failure("x", lambda: 0)
    b.record_success(lambda: 0)
    assert b.record_failure("x", lambda: 0) is False


def test_open_breaker_survives_a_restart(tmp_path):
    Breaker(str(tmp_path), threshold=1).record_failure("Plex is unreachable", lambda: 3)
    assert Breaker(str(tmp_path)).state == OPEN


def test_probe_slots_are_shared_between_processes_and_back_off(tmp_path):
    a, b = Breaker(str(tmp_path), threshold=1), Breaker(str(tmp_path), threshold=1)
    a.record_failure("down", lambda: 1)
    opened = a.snapshot()["opened_at"]
    slots = [t for t in range(0, 200) if (a if t % 2 else b).claim_probe(now=opened + t)]
    assert slots == [5, 10, 20, 40, 80, 140]  # 5, then intervals 5, 10, 20, 40, 60, 60 ...


def test_health_up_half_opens_then_success_closes_and_records_the_outage(tmp_path):
    b = Breaker(str(tmp_path), threshold=1)
    b.record_failure("down", lambda: 4)
    b.record_check(health.Health("down", "refused", time.time(), 1.0))
    assert b.state == OPEN
    b.record_check(health.Health("up", "Plex answers", time.time(), 1.0))
    assert b.state == HALF_OPEN
    b.record_success(lambda: 4)
    snap = b.snapshot()
    assert snap["state"] == CLOSED and len(snap["outages"]) == 1 and snap["outages"][0]["jobs_affected"] == 4


def test_failed_trial_reopens_with_a_longer_interval(tmp_path):
    b = Breaker(str(tmp_path), threshold=1)
    b.record_failure("down", lambda: 1)
    assert b.claim_probe(now=time.time() + 6)
    b.record_check(health.Health("up", "ok", time.time(), 1.0))
    b.record_failure("still failing", lambda: 1)
    snap = b.snapshot()
    assert snap["state"] == OPEN and snap["probe_interval"] == 10
    assert 9 < snap["next_probe_at"] - time.time() <= 10


def test_recovery_ramp_rates_then_unlimited(tmp_path):
    b = Breaker(str(tmp_path), threshold=1, rates=(5, 10, 20), step=60)
    b.record_failure("down", lambda: 1)
    b.record_check(health.Health("up", "ok", time.time(), 1.0))
    b.record_success(lambda: 1)
    start = b.snapshot()["ramp_started_at"]
    assert [b.rate(now=start + t) for t in (0, 61, 121, 181)] == [5, 10, 20, None]


def test_error_during_ramp_starts_it_again(tmp_path):
    b = Breaker(str(tmp_path), threshold=5, rates=(5, 10), step=60)
    b.record_failure("down", lambda: 1)
    for _ in range(4):
        b.record_failure("down", lambda: 1)
    b.record_check(health.Health("up", "ok", time.time(), 1.0))
    b.record_success(lambda: 1)
    b._write(dict(b.snapshot(), ramp_started_at=time.time() - 70))
    assert b.rate() == 10
    b.record_failure("blip", lambda: 1)
    assert b.rate() == 5


def test_breaker_file_is_written_atomically_and_only_on_change(tmp_path):
    b = Breaker(str(tmp_path))
    b.record_success(lambda: 0)
    assert not os.path.exists(b.path)  # a success while closed writes nothing
    b.record_failure("x", lambda: 0)
    assert json.load(open(b.path))["failures"] == 1
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


# -- end to end ------------------------------------------------------------------------------

def test_sync_all_while_plex_is_down_fails_clearly(world):
    world.plex.down()
    run = world.run({"mode": "sync_all"})
    assert run.error.startswith("PlexSync: cannot reach Plex: Plex is unreachable: ConnectionError")


def test_plex_down_pauses_without_dead_letters_and_recovers_by_itself(world):
    world.settings(breaker_threshold=3, recovery_rates="50")
    world.plex.down()
    q = world.queue()
    q.enqueue([int(s) for s in world.lib.in_plex], "hook")
    data = os.path.join(world.plugin_dir, "data")
    assert world.run(hook_args(next(iter(world.lib.in_plex)))).error is None  # starts the drainer
    assert wait_until(lambda: Breaker(data).state == OPEN, timeout=30)
    world.plex.up()
    assert wait_until(lambda: q.counts()["due"] + q.counts()["claimed"] == 0, timeout=60)
    assert q.counts()["dead_letters"] == 0
    for sid in world.lib.in_plex:
        assert world.item(sid).locked, sid
    log = drainer_log(world.plugin_dir)
    assert "Plex looks down" in log and "Plex answers again" in log and "Plex is back after" in log
    assert Breaker(data).snapshot()["outages"][0]["jobs_affected"] >= len(world.lib.in_plex) - 1


def test_plex_failing_mid_sync_spends_no_attempts(world):
    world.settings(breaker_threshold=2)
    world.plex.fail(503, paths=r"^/library/metadata/")
    world.run({"mode": "sync_all"})
    q = world.queue()
    stop_drainer(world.plugin_dir, timeout=0)
    with sqlite3.connect(q.path) as db:
        attempts = db.execute("SELECT MAX(attempts) FROM jobs").fetchone()[0]
    assert attempts == 0 and q.counts()["dead_letters"] == 0


def test_bad_token_halts_with_one_line_and_jobs_wait(world):
    world.stash.plugin_settings["plexsync"]["plex_token"] = "wrong"
    run = world.run({"mode": "health_check"})
    assert run.error is None and "Plex: unauthorized" in run.output


def test_health_check_task_reports_everything(world):
    run = world.run({"mode": "health_check"})
    out = run.output
    assert out.startswith("Plex: up") and "circuit breaker: closed" in out and "next check:" in out
    assert "previous check: never" in out
    assert "previous check: 0 s ago" in world.run({"mode": "health_check"}).output


def test_health_check_task_sees_database_loading(world):
    world.plex.fail(503)
    assert world.run({"mode": "health_check"}).output.startswith("Plex: loading")


def test_outage_summary_reports_mttr_mtbf_availability(world):
    b = Breaker(os.path.join(world.plugin_dir, "data"))
    os.makedirs(os.path.dirname(b.path), exist_ok=True)
    now = time.time()
    b._write(dict(b.snapshot(), observed_since=now - 1000, outages=[
        {"start": now - 900, "end": now - 800, "duration": 100, "jobs_affected": 3},
        {"start": now - 500, "end": now - 400, "duration": 100, "jobs_affected": 5}]))
    out = world.run({"mode": "outage_summary"}).output
    assert "2 outages" in out and "MTTR 1 min 40 s" in out and "MTBF 6 min 40 s" in out
    assert "availability 80.0" in out


def dead(q, scene_id, error_class, failed_at):
    with q.db() as db:
        db.execute("INSERT INTO dead_letters(scene_id, reason, error_class, last_error, attempts, enqueued_at,"
                   " failed_at) VALUES (?, 'retries_exhausted', ?, 'boom', 3, ?, ?)",
                   (scene_id, error_class, failed_at, failed_at))


def test_dead_letter_tasks_view_recover_idempotently_clear_and_purge(world):
    q = world.queue()
    now = time.time()
    b = Breaker(os.path.join(world.plugin_dir, "data"))
    b._write(dict(b.snapshot(), outages=[{"start": now - 100, "end": now - 50, "duration": 50, "jobs_affected": 2}]))
    dead(q, 1, "server_down", now - 80)
    dead(q, 2, "transient", now - 80)
    dead(q, 3, "server_down", now - 90000)  # long before the outage
    dead(q, 99999, "server_down", now - 70)  # no longer in Stash
    view = world.run({"mode": "dead_letters"}).output
    assert view == "Dead letters: server_down: 3, transient: 1"
    first = world.run({"mode": "recover_outage_jobs", "classes": "server_down"}).output
    assert first.startswith("Recover Outage Jobs: re-queued 1 scenes") and "1 no longer exist" in first
    second = world.run({"mode": "recover_outage_jobs", "classes": "server_down"}).output
    assert "re-queued 0 scenes" in second
    assert "re-queued 1 scenes" in world.run({"mode": "recover_outage_jobs", "classes": "server_down,transient"}).output
    assert world.run({"mode": "purge_dead_letters", "days": "0.5"}).output.startswith("Purge Dead Letters: removed 1")
    assert world.run({"mode": "clear_dead_letters"}).output == "Clear Dead Letters: removed 1 entries"


def test_recover_refuses_while_plex_is_down(world):
    q = world.queue()
    Breaker(os.path.join(world.plugin_dir, "data"), threshold=1).record_failure("down", q.pending)
    assert "still down" in world.run({"mode": "recover_outage_jobs"}).error


def test_two_hundred_simultaneous_hooks_lose_nothing_and_start_one_drainer(world):
    world.plex.latency_ms = 20
    ids = [int(s) for s in world.lib.scene_ids][:50] * 4  # 200 hooks, 50 scenes, 4 edits each
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(ENTRY)))
    procs = [subprocess.Popen([sys.executable, ENTRY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) for _ in ids]
    outs = [p.communicate(stdin_for(world.stash, world.plugin_dir, hook_args(i)).encode(), timeout=120)
            for p, i in zip(procs, ids)]
    results = [json.loads(o[0]) for o in outs]
    assert [r["output"] for r in results] == [f"queued scene {i}" for i in ids]
    assert not any(b"locked" in o[1] for o in outs)
    assert drainer_log(world.plugin_dir).count("started") == 1
    q = world.queue()
    assert wait_until(lambda: q.counts()["due"] + q.counts()["claimed"] == 0, timeout=60)
    special = set(world.lib.special.values())
    for sid in {str(i) for i in ids} & set(world.lib.in_plex) - special:
        assert world.item(sid).title == world.stash.scenes[sid]["title"]


def test_two_tasks_at_once_never_process_a_job_twice(world):
    world.plex.latency_ms = 10
    q = world.queue()
    q.enqueue([int(s) for s in world.lib.in_plex], "test")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(ENTRY)))
    procs = [subprocess.Popen([sys.executable, ENTRY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) for _ in range(2)]
    for p in procs:
        p.stdin.write(stdin_for(world.stash, world.plugin_dir, {"mode": "process_queue"}).encode())
        p.stdin.close()
    outputs = [json.loads(p.stdout.read())["output"] for p in procs]
    for p in procs:
        p.wait(timeout=120)
    edits = [r.query.get("id", [""])[0] for r in world.plex.requests if r.method == "PUT"]
    assert len(edits) == len(set(edits)) == len(world.lib.in_plex), outputs


def test_stash_down_keeps_jobs_waiting_and_the_drainer_resumes_when_it_is_back(world):
    sid = next(s for s in world.lib.in_plex if s not in set(world.lib.special.values()))
    world.run(hook_args(int(sid)))  # a drainer starts and syncs this scene
    q = world.queue()
    assert wait_until(lambda: q.pending() == 0 or q.counts()["waiting"] == q.pending(), timeout=30)
    world.stash.stop()
    world.stash.scenes[sid]["title"] = "edited while Stash restarts"
    assert world.run(hook_args(int(sid))).output == f"queued scene {sid}"  # the hook needs no Stash
    assert wait_until(lambda: "Stash is unreachable" in drainer_log(world.plugin_dir), timeout=30)
    assert q.counts()["dead_letters"] == 0 and q.pending() >= 1
    world.stash.start()
    assert wait_until(lambda: world.item(sid).title == "edited while Stash restarts", timeout=60)
