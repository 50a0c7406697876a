"""End to end: plexsync.py run as Stash runs it, against the fake Stash and the fake Plex over HTTP."""
import os
import re
import sqlite3
import signal
import sys
import time

import pytest

from conftest import API_KEY, COOKIE, PLEX_TOKEN, make_world
from harness import drainer_log, drainer_pid, hook_args, stop_drainer, wait_until

SECRETS = (PLEX_TOKEN, API_KEY, COOKIE)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def tag_names(stash, table, ids):
    return [getattr(stash, table)[i]["name"] for i in ids]


def stash_view(world, scene_id):
    """What Stash says of a plain scene, in Plex's terms (computed here, not by lib/)."""
    rec = world.stash.scenes[str(scene_id)]
    studio = world.stash.studios[rec["studio_id"]]["name"] if rec.get("studio_id") else ""
    return {"title": rec["title"], "summary": rec["details"], "studio": studio,
            "genre": sorted(tag_names(world.stash, "tags", rec["tag_ids"])),
            "actor": sorted(tag_names(world.stash, "performers", rec["performer_ids"])),
            "collection": [studio] if studio else [],
            "date": rec.get("date")}


def plex_view(item):
    return {"title": item.title, "summary": item.summary, "studio": item.studio,
            "genre": sorted(item.tags.get("genre", [])), "actor": sorted(item.tags.get("actor", [])),
            "collection": item.tags.get("collection", []), "date": item.originally_available_at}


def plain_scene_ids(world):
    special = set(world.lib.special.values())
    return [s for s in world.lib.in_plex if s not in special]


def assert_clean_run(run):
    assert run.unframed == [], run.unframed
    assert run.returncode == 0


def assert_no_secrets(world, *runs):
    text = drainer_log(world.plugin_dir) + "".join(m for r in runs for _, m in r.logs)
    text += "".join(str(r.output) + str(r.error) for r in runs)
    for secret in SECRETS:
        assert secret not in text


# -- hook --------------------------------------------------------------------------------------

def test_hook_edit_reaches_plex_by_itself(world):
    sid = plain_scene_ids(world)[0]
    world.stash.update_scene(sid, title="Edited in Stash", details="New details", date="2011-02-03")
    run = world.run(hook_args(sid))
    assert_clean_run(run)
    assert run.output == f"queued scene {sid}" and run.error is None
    item = world.item(sid)
    assert wait_until(lambda: item.title == "Edited in Stash", timeout=30)
    want = stash_view(world, sid)
    assert plex_view(item) == dict(want, date="2011-02-03")
    assert {"title", "summary", "studio", "genre", "actor", "collection", "originallyAvailableAt", "thumb"} <= item.locked
    assert item.poster == world.stash.scene_cover_bytes(sid)
    assert_no_secrets(world, run)


def test_hook_touches_no_network_and_no_plexapi(world):
    from lib.lock import FileLock

    lock = FileLock(os.path.join(world.plugin_dir, "data", "drainer.lock"))
    os.makedirs(os.path.dirname(lock.path), exist_ok=True)
    assert lock.acquire(blocking=False)  # pretend a drainer runs: the hook must only queue
    try:
        stash_before, plex_before = len(world.stash.requests), len(world.plex.requests)
        run = world.run(hook_args(5))
        assert run.output == "queued scene 5"
        assert (len(world.stash.requests), len(world.plex.requests)) == (stash_before, plex_before)
        assert world.queue().counts()["due"] == 1
    finally:
        lock.release()


def test_hook_imports_neither_plexapi_nor_requests(world, tmp_path):
    import json
    import subprocess

    from harness import ENTRY, stdin_for

    from lib.lock import FileLock

    lock = FileLock(os.path.join(world.plugin_dir, "data", "drainer.lock"))
    os.makedirs(os.path.dirname(lock.path), exist_ok=True)
    lock.acquire(blocking=False)
    try:
        proc = subprocess.run([sys.executable, "-X", "importtime", ENTRY],
                              input=stdin_for(world.stash, world.plugin_dir, hook_args(3)).encode(),
                              capture_output=True, timeout=60)
    finally:
        lock.release()
    assert json.loads(proc.stdout)["output"] == "queued scene 3"
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert imported and not imported & {"plexapi", "requests", "urllib3", "subprocess"}


def test_repeated_hooks_keep_one_pending_job(world):
    from lib.lock import FileLock

    lock = FileLock(os.path.join(world.plugin_dir, "data", "drainer.lock"))
    os.makedirs(os.path.dirname(lock.path), exist_ok=True)
    lock.acquire(blocking=False)
    try:
        for _ in range(3):
            world.run(hook_args(9))
        counts = world.queue().counts()
    finally:
        lock.release()
    assert counts["due"] == 1


def test_hook_ignores_other_triggers(world):
    run = world.run({"hookContext": {"id": 3, "type": "Gallery.Update.Post"}})
    assert run.output == "ignored Gallery.Update.Post"
    assert world.queue().pending() == 0 and drainer_pid(world.plugin_dir) is None


def test_scene_create_for_unscanned_file_waits_then_syncs_after_plex_scan(world):
    sid = world.lib.missing[0]
    run = world.run(hook_args(sid, kind="Scene.Create.Post"))
    assert run.error is None
    q = world.queue()
    assert wait_until(lambda: q.counts()["waiting"] == 1, timeout=30)
    stop_drainer(world.plugin_dir, timeout=0)
    folder = os.path.dirname(world.lib.plex_path(sid))
    assert any(path == folder for _, path in world.plex.scan_requests)
    assert [r[1] for r in q.unmatched()] == ["waiting_for_plex"]
    # the fake PMS indexed the folder on request; let time pass, then the retry finds it
    with sqlite3.connect(q.path) as db:
        db.execute("UPDATE jobs SET next_attempt_at = 0")
    run = world.run({"mode": "process_queue"})
    assert "1 synced" in run.output, run.output
    item = world.plex.item_by_file(world.lib.plex_path(sid))
    assert item.title == (world.stash.scenes[sid]["title"] or item.title)
    assert q.unmatched() == []


# -- tasks -------------------------------------------------------------------------------------

def test_sync_all_reaches_every_matched_scene_and_names_the_unmatched(world):
    run = world.run({"mode": "sync_all"})
    assert_clean_run(run)
    assert run.error is None, run.error
    for sid in plain_scene_ids(world):
        assert plex_view(world.item(sid)) == dict(stash_view(world, sid), date=plex_view(world.item(sid))["date"])
    unscanned = [s for s in world.lib.missing if world.plex.item_by_file(world.lib.plex_path(s)) is None]
    warned = " ".join(m for level, m in run.logs if level == "w")
    for sid in unscanned:
        assert f"scene {sid}:" in warned
    assert run.progress and run.progress[-1] == 1.0
    assert run.progress == sorted(run.progress)
    assert_no_secrets(world, run)


def test_hostile_scenes_arrive_sanitised_and_intact(world):
    run = world.run({"mode": "sync_all"})
    assert run.error is None
    sp = world.lib.special
    item = lambda label: world.item(sp[label])  # noqa: E731
    assert item("greek").title == "Καλημέρα κόσμε — Ελληνικά"
    assert item("emoji").title == "Family 👨‍👩‍👧‍👦 Pride 🏳️‍🌈 Coder 🧑🏽‍💻 🎬🔥"
    assert item("cjk").studio == world.stash.studios[world.stash.scenes[sp["cjk"]]["studio_id"]]["name"]
    assert item("percent_underscore").title == "100% Real_Deal"
    assert item("amp_hash").title == "Tom & Jerry #1 <b>bold</b> &amp;"
    assert item("quotes").title == 'He said "hi" & it\'s \'fine\''
    assert not CONTROL.search(item("control").title) and "\n" not in item("control").title
    assert not CONTROL.search(item("control").summary.replace("\n", ""))
    assert len(item("long").title) <= 255 and item("long").title.endswith("…")
    assert len(item("long").summary) <= 20000
    assert len(item("many_tags").tags["genre"]) == 150
    assert sorted(item("comma_names").tags["actor"]) == ["Doe, Jane", "Smith, John Jr."]
    assert item("year_only").originally_available_at == "2019-01-01" and item("year_only").year == 2019
    assert item("year_month").originally_available_at == "2020-07-01" and item("year_month").year == 2020
    assert item("empty_title").title == "empty title"
    assert item("like_twin_a").title == "LIKE twin A (underscore)"
    assert item("like_twin_b").title == "LIKE twin B"
    assert item("dup_basename_a").title == "Duplicate basename A"
    assert item("dup_basename_b").title == "Duplicate basename B"
    assert item("case_a").title == "Case A" and item("case_b").title == "Case B"


def test_second_sync_all_reads_once_per_scene_and_writes_nothing(world):
    world.settings(plex_request_scan=False)  # so the same scenes are in Plex both times
    world.run({"mode": "sync_all"})
    world.plex.clear_requests()
    run = world.run({"mode": "sync_all"})
    assert run.error is None
    q = world.queue()
    assert wait_until(lambda: q.counts()["claimed"] == 0)  # the drainer may hold a batch of this run
    writes = [r for r in world.plex.requests if r.is_write]
    assert writes == []
    reads = [r for r in world.plex.requests if r.path.startswith("/library/metadata/")]
    assert len(reads) == len([s for s in world.lib.scene_ids if world.plex.item_by_file(world.lib.plex_path(s))])


def test_removed_tags_and_performers_leave_plex(world):
    sid = plain_scene_ids(world)[1]
    world.run({"mode": "sync_all"})
    rec = world.stash.scenes[sid]
    world.stash.update_scene(sid, tag_ids=rec["tag_ids"][:1], performer_ids=[], studio_id=None)
    run = world.run({"mode": "sync_recent"})
    assert run.error is None
    item = world.item(sid)
    assert item.tags["genre"] == tag_names(world.stash, "tags", rec["tag_ids"][:1])
    assert item.tags.get("actor", []) == [] and item.tags.get("collection", []) == []
    assert item.studio == ""


def test_preserve_plex_edits_keeps_plex_tags_and_user_title(world):
    sid = plain_scene_ids(world)[2]
    world.settings(preserve_plex_edits=True)
    world.run({"mode": "sync_all"})
    item = world.item(sid)
    item.tags["genre"].append("Added in Plex")
    item.title = "Renamed in Plex"
    world.stash.update_scene(sid, details="changed")
    world.run({"mode": "sync_recent"})
    assert "Added in Plex" in item.tags["genre"]
    assert item.title == "Renamed in Plex"
    assert item.summary == "changed"


def test_sync_recent_queues_only_scenes_changed_in_the_last_day(world):
    old = "2020-01-01T00:00:00+10:00"
    for rec in world.stash.scenes.values():
        rec["updated_at"] = old
    a, b = plain_scene_ids(world)[:2]
    world.stash.update_scene(a, title="recent A")
    world.stash.update_scene(b, title="recent B")
    run = world.run({"mode": "sync_recent"})
    assert run.output.startswith("Sync Recent: queued 2 scenes"), run.output
    assert world.item(a).title == "recent A" and world.item(b).title == "recent B"


def test_queue_status_reports_counts_and_unmatched(world):
    world.settings(partial_library=True)
    world.run({"mode": "sync_all"})
    run = world.run({"mode": "queue_status"})
    assert run.error is None
    text = "\n".join(m for _, m in run.logs)
    assert "pending: 0" in text and "last successful sync: 2" in text
    unscanned = [s for s in world.lib.missing if world.plex.item_by_file(world.lib.plex_path(s)) is None]
    for sid in unscanned:
        assert f"unmatched scene {sid} (not_in_plex)" in text


def test_clear_pending_queue_empties_the_queue(world):
    q = world.queue()
    q.enqueue([1, 2, 3], "hook")
    run = world.run({"mode": "clear_pending"})
    assert run.output == "Clear Pending Queue: removed 3 pending jobs"
    assert q.next_due() is None


def test_killed_drainer_loses_nothing(world):
    world.plex.latency_ms = 30
    q = world.queue()
    ids = [int(s) for s in plain_scene_ids(world)]
    q.enqueue(ids, "hook")
    world.run(hook_args(ids[0]))
    assert wait_until(lambda: drainer_pid(world.plugin_dir) and q.get_meta("last_success_at"), timeout=30)
    os.kill(drainer_pid(world.plugin_dir), signal.SIGKILL)
    assert wait_until(lambda: drainer_pid(world.plugin_dir) is None, timeout=10) is not False
    left = q.counts()
    assert left["due"] + left["claimed"] > 0, "the drainer finished before the kill; slow Plex down more"
    world.plex.latency_ms = 0
    run = world.run({"mode": "process_queue"})
    assert run.error is None, run.error
    assert q.counts()["due"] + q.counts()["claimed"] == 0
    for sid in ids:
        assert world.plex.items[world.lib.in_plex[str(sid)]].title == world.stash.scenes[str(sid)]["title"]


# -- settings ----------------------------------------------------------------------------------

TOGGLES = [("sync_title", lambda i: i.title == os.path.splitext(os.path.basename(i.files[0]))[0]),
           ("sync_summary", lambda i: i.summary == ""),
           ("sync_date", lambda i: i.originally_available_at is None),
           ("sync_studio", lambda i: i.studio == ""),
           ("sync_performers", lambda i: i.tags.get("actor", []) == []),
           ("sync_tags", lambda i: i.tags.get("genre", []) == []),
           ("sync_collection", lambda i: i.tags.get("collection", []) == []),
           ("sync_poster", lambda i: i.poster is None)]


@pytest.mark.parametrize("name,untouched", TOGGLES, ids=[t[0] for t in TOGGLES])
def test_each_field_toggle_off_leaves_that_field_alone(world, name, untouched):
    world.settings(**{name: False})
    sid = next(s for s in plain_scene_ids(world) if world.stash.scenes[s]["tag_ids"]
               and world.stash.scenes[s]["performer_ids"] and world.stash.scenes[s]["studio_id"]
               and world.stash.scenes[s]["date"] and world.stash.scenes[s]["details"])
    run = world.run({"mode": "sync_all"})
    assert run.error is None
    item = world.item(sid)
    assert untouched(item)
    others = [t for t in TOGGLES if t[0] != name]
    assert not any(check(item) for _, check in others)


def test_sync_background_uploads_cover_as_art(world):
    world.settings(sync_background=True)
    sid = plain_scene_ids(world)[0]
    world.run({"mode": "sync_all"})
    assert world.item(sid).art == world.stash.scene_cover_bytes(sid)
    assert "art" in world.item(sid).locked


def test_lock_fields_off_locks_nothing(world):
    world.settings(lock_fields=False)
    world.run({"mode": "sync_all"})
    assert all(not world.item(s).locked for s in plain_scene_ids(world))


def test_poster_is_uploaded_again_only_when_the_cover_changes(world):
    world.settings(plex_request_scan=False)
    sid = plain_scene_ids(world)[0]
    world.run({"mode": "sync_all"})
    world.stash.update_scene(sid, title="same cover")
    world.plex.clear_requests()
    world.run({"mode": "sync_recent"})
    assert not [r for r in world.plex.requests if r.path.endswith("/posters")]
    world.stash.update_scene(sid, cover=True)
    world.run({"mode": "sync_recent"})
    assert len([r for r in world.plex.requests if r.path.endswith("/posters")]) == 1
    assert world.item(sid).poster == world.stash.scene_cover_bytes(sid)


def test_plex_libraries_limits_sync_to_named_sections(world):
    world.settings(plex_libraries="Other Library")
    run = world.run({"mode": "sync_all"})
    assert "plex_libraries" in run.error and "Other Library" in run.error
    world.settings(plex_libraries="stash scenes")  # titles match case-insensitively
    assert world.run({"mode": "sync_all"}).error is None


def test_partial_library_records_unmatched_instead_of_waiting(world):
    world.settings(partial_library=True, plex_request_scan=False)
    world.run({"mode": "sync_all"})
    counts = world.queue().counts()
    assert counts["waiting"] == 0 and counts["unmatched"] == len(world.lib.missing)
    assert world.plex.scan_requests == []


def test_plex_request_scan_off_sends_no_scan(world):
    world.settings(plex_request_scan=False)
    world.run({"mode": "sync_all"})
    assert world.plex.scan_requests == []
    assert world.queue().counts()["waiting"] == len(world.lib.missing)


def test_scan_wait_window_over_moves_job_to_dead_letter_queue(world):
    world.settings(plex_scan_wait_hours=0)
    run = world.run({"mode": "sync_all"})
    assert world.queue().counts()["dead_letters"] == len(world.lib.missing)
    assert "dead letter queue" in " ".join(m for _, m in run.logs)


def test_max_retries_bounds_attempts_before_the_dead_letter_queue(world):
    world.settings(max_retries=0, breaker_threshold=1000)  # keep the breaker out of this test
    world.plex.fail(500, paths=r"^/library/metadata/\d+$")
    run = world.run({"mode": "sync_all"})
    world.plex.clear_faults()
    counts = world.queue().counts()
    assert counts["dead_letters"] > 0
    assert "retries_exhausted" in " ".join(m for _, m in run.logs)
    stop_drainer(world.plugin_dir, timeout=0)
    world.settings(max_retries=3, breaker_threshold=1000)
    world.plex.fail(500, paths=r"^/library/metadata/\d+$")
    world.queue().enqueue([int(plain_scene_ids(world)[0])], "hook")
    world.run({"mode": "process_queue"})
    assert world.queue().counts()["waiting"] >= 1  # still retrying, not dead


def test_plex_timeouts_are_used(world):
    world.settings(plex_read_timeout=0.2, max_retries=0)
    world.plex.latency_ms = 600
    run = world.run({"mode": "sync_all"})
    assert run.error and "Timeout" in run.error


def test_weak_match_is_logged_not_applied_unless_allowed(world):
    sid = world.lib.special["bare"]
    rk = world.lib.in_plex[sid]
    world.plex.items[rk].files[0] = "/plex/media/elsewhere/bare.mp4"
    run = world.run({"mode": "sync_all"})
    assert world.plex.items[rk].locked == set()
    assert any(f"scene {sid}: weak match" in m for _, m in run.logs)
    stop_drainer(world.plugin_dir, timeout=0)  # a running drainer reads new settings within 60 s
    world.settings(allow_weak_match=True)
    world.queue().enqueue([int(sid)], "hook")
    world.run({"mode": "process_queue"})
    assert "title" in world.plex.items[rk].locked


def test_ambiguous_match_is_never_applied(world):
    a, b = world.lib.special["dup_basename_a"], world.lib.special["dup_basename_b"]
    world.settings(allow_weak_match=True, path_map="media: /stash/media/{rest} => /plex/media/moved/{rest}")
    world.run({"mode": "sync_all"})
    assert not world.item(a).locked and not world.item(b).locked
    assert ("ambiguous",) in [(r[1],) for r in world.queue().unmatched(1000) if str(r[0]) in (a, b)]


def test_path_map_with_case_option_matches_case_different_plex_paths(world):
    sid = plain_scene_ids(world)[0]
    rk = world.lib.in_plex[sid]
    world.plex.items[rk].files[0] = world.plex.items[rk].files[0].upper().replace("/PLEX/MEDIA", "/plex/media")
    world.settings(path_map="media (i): /stash/media/{rest} => /plex/media/{rest}")
    world.run({"mode": "sync_all"})
    assert world.plex.items[rk].title == world.stash.scenes[sid]["title"]


# -- bad input ---------------------------------------------------------------------------------

def test_malformed_stdin_gives_one_line_error(world):
    from harness import run_plugin

    run = run_plugin("{not json")
    assert run.error.startswith("PlexSync: stdin is not the JSON object Stash sends") and "\n" not in run.error
    assert run_plugin("[]").error.startswith("PlexSync: stdin has no server_connection")


@pytest.mark.parametrize("values,needle", [
    ({"plex_url": None}, "setting plex_url: required"),
    ({"plex_url": "ftp://x"}, "setting plex_url: must start with http"),
    ({"plex_token": None}, "setting plex_token: required"),
    ({"max_retries": "many"}, "setting max_retries: expected number"),
    ({"plex_read_timeout": -1}, "setting plex_read_timeout: -1 is outside"),
    ({"path_map": "broken: /a/{x => /b/{x}"}, "path_map rule 'broken'"),
])
def test_broken_settings_get_a_clear_error_and_keep_the_queue(world, values, needle):
    q = world.queue()
    q.enqueue([1, 2], "hook")
    world.settings(**values)
    run = world.run({"mode": "process_queue"})
    assert needle in run.error and "\n" not in run.error
    assert q.counts()["due"] == 2


def test_bad_plex_token_stops_and_keeps_jobs(world):
    world.stash.plugin_settings["plexsync"]["plex_token"] = "wrong-token"
    q = world.queue()
    q.enqueue([1], "hook")
    run = world.run({"mode": "process_queue"})
    assert "plex_token" in run.error and "wrong-token" not in run.error
    assert q.counts()["due"] == 1


def test_hook_reports_a_stopped_sync(world):
    world.stash.plugin_settings["plexsync"]["plex_token"] = "wrong-token"
    world.run(hook_args(plain_scene_ids(world)[0]))
    q = world.queue()
    assert wait_until(lambda: q.get_meta("halt_reason"), timeout=30)
    stop_drainer(world.plugin_dir, timeout=5)
    run = world.run(hook_args(plain_scene_ids(world)[1]))
    assert any(level == "w" and "plex_token" in m for level, m in run.logs)
    assert q.counts()["due"] == 2


def test_unknown_task_mode(world):
    assert "unknown task mode 'nope'" in world.run({"mode": "nope"}).error


def test_missing_packages_name_the_pip_command(world):
    run = world.run({"mode": "sync_all"}, python=None) if False else None  # noqa: F841
    from harness import ENTRY, stdin_for
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-S", ENTRY], input=stdin_for(world.stash, world.plugin_dir,
                          {"mode": "sync_all"}).encode(), capture_output=True, timeout=60)
    error = json.loads(proc.stdout)["error"]
    assert "needs plexapi and requests" in error and f"{sys.executable} -m pip install -r" in error
    assert "Traceback" not in proc.stderr.decode()


def test_stash_cookie_expiry_is_survived_with_the_api_key(world):
    world.stash.expire_cookie()
    run = world.run({"mode": "sync_all"})
    assert "401" in run.error or "credentials" in run.error  # no valid cookie, no key yet: clear error


def test_plugin_runs_without_fcntl(world, tmp_path):
    import subprocess

    from harness import ROOT

    code = ("import sys; sys.modules['fcntl'] = None; sys.modules['msvcrt'] = None; sys.path.insert(0, %r);"
            "from lib.lock import FileLock, HAVE_LOCKS; l = FileLock(%r); assert l.acquire(False);"
            "assert not HAVE_LOCKS; print('ok')" % (ROOT, str(tmp_path / "x.lock")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
