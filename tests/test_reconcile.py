"""Reconciliation: every gap kind detected and repaired end to end; renames reach every Plex item."""
import json
import os
import time

from harness import drainer_log, hook_args, stop_drainer, wait_until



def report(world):
    with open(os.path.join(world.plugin_dir, "data", "reconcile-report.json"), encoding="utf-8") as f:
        return json.load(f)


def plain(world):
    special = set(world.lib.special.values())
    return [s for s in world.lib.in_plex if s not in special]


def drain(world):
    """Process Queue, then let a background drainer finish the batch it may hold."""
    run = world.run({"mode": "process_queue"})
    assert run.error is None, run.error
    q = world.queue()
    assert wait_until(lambda: q.counts()["due"] + q.counts()["claimed"] == 0, timeout=30)
    return run


def test_fresh_library_shows_empty_metadata_and_reconcile_repairs_it(world):
    world.settings(plex_request_scan=False)
    run = world.run({"mode": "reconcile_all"})
    assert run.error is None, run.error
    counts = report(world)["counts"]
    assert counts["empty_metadata"] + counts["different_metadata"] == len(world.lib.in_plex)
    assert counts["empty_metadata"] >= len(plain(world)) - 5
    assert counts["missing_from_plex"] == len(world.lib.missing)
    assert f"empty metadata: {counts['empty_metadata']}" in run.output
    assert report(world)["queued"] == len(world.lib.scene_ids)
    stop_drainer(world.plugin_dir, timeout=0)
    drain(world)
    for sid in plain(world):
        assert world.item(sid).title == world.stash.scenes[sid]["title"]
    world.run({"mode": "reconcile_all"})
    again = report(world)["counts"]
    assert (again["empty_metadata"], again["different_metadata"], again["stale"]) == (0, 0, 0), report(world)["gaps"]


def synced(world):
    world.settings(plex_request_scan=False)
    assert world.run({"mode": "sync_all"}).error is None
    stop_drainer(world.plugin_dir, timeout=0)


def test_stale_scene_is_found_and_repaired(world):
    synced(world)
    sid = plain(world)[0]
    world.stash.update_scene(sid, title="Edited while the hook was off")
    world.run({"mode": "reconcile_all"})
    gaps = report(world)["gaps"]
    assert [g["scene_id"] for g in gaps["stale"]] == [sid]
    stop_drainer(world.plugin_dir, timeout=0)
    drain(world)
    assert world.item(sid).title == "Edited while the hook was off"


def test_hand_edit_in_plex_is_a_different_metadata_gap(world):
    synced(world)
    sid = plain(world)[1]
    item = world.item(sid)
    item.title = "Changed in Plex"
    item.tags["genre"] = ["Plex-only genre"] + item.tags["genre"][1:]  # visible in the list view
    world.run({"mode": "reconcile_all"})
    gap = next(g for g in report(world)["gaps"]["different_metadata"] if g["scene_id"] == sid)
    assert {"title", "genre"} <= set(gap["fields"]) and gap["ratingKey"] == item.rating_key
    assert report(world)["counts"]["different_metadata"] == 1
    stop_drainer(world.plugin_dir, timeout=0)
    drain(world)
    assert item.title == world.stash.scenes[sid]["title"] and "Plex-only genre" not in item.tags["genre"]


def test_preserve_plex_edits_does_not_count_a_hand_edit_as_a_gap(world):
    world.settings(preserve_plex_edits=True, plex_request_scan=False)
    world.run({"mode": "sync_all"})
    stop_drainer(world.plugin_dir, timeout=0)
    item = world.item(plain(world)[1])
    item.title = "Changed in Plex"
    item.tags["genre"].append("Plex-only genre")
    world.run({"mode": "reconcile_all"})
    assert report(world)["counts"]["different_metadata"] == 0


def test_missing_from_plex_and_missing_from_stash_are_reported_both_ways(world):
    synced(world)
    extra = world.plex.add_item(1, "/plex/media/not-in-stash/orphan.mp4")
    world.run({"mode": "reconcile_all"})
    rep = report(world)
    missing = {g["scene_id"]: g for g in rep["gaps"]["missing_from_plex"]}
    assert set(missing) == set(world.lib.missing)
    assert all(g["plex_path"] == world.lib.plex_path(s) for s, g in missing.items())
    orphan, = rep["gaps"]["missing_from_stash"]
    assert orphan == {"ratingKey": extra.rating_key, "plex_path": "/plex/media/not-in-stash/orphan.mp4",
                      "stash_path": "/stash/media/not-in-stash/orphan.mp4", "rule": "media", "error": None}
    assert extra.rating_key in world.plex.items  # reported, never deleted


def test_scoped_reconcile_compares_only_recent_scenes(world):
    synced(world)
    for rec in world.stash.scenes.values():
        rec["updated_at"] = "2020-01-01T00:00:00+10:00"
    sid = plain(world)[2]
    world.stash.update_scene(sid, details="recent change")
    run = world.run({"mode": "reconcile_recent"})
    rep = report(world)
    assert rep["scope"] == "24h" and rep["scenes_compared"] == 1 and not rep["missing_from_stash_checked"]
    assert "missing from stash" not in run.output
    assert world.run({"mode": "reconcile_week"}).error is None and report(world)["scope"] == "7days"


def test_missing_metadata_only_queues_only_empty_items(world):
    synced(world)
    q = world.queue()
    before = q.pending()  # the files Plex has not indexed wait in the queue
    item = world.item(plain(world)[3])
    item.title, item.summary, item.studio, item.originally_available_at = "bare", "", "", None
    item.tags = {}
    world.item(plain(world)[4]).title = "hand edit"
    world.run({"mode": "reconcile_missing_metadata"})
    rep = report(world)
    assert rep["counts"]["empty_metadata"] == 1 and rep["counts"]["different_metadata"] == 1
    assert rep["queued"] == 1 and rep["queued_kinds"] == ["empty_metadata"]
    assert q.pending() == before + 1


def scenes_with_performer(world, performer_id):
    return [s for s, rec in world.stash.scenes.items() if performer_id in rec["performer_ids"]]


def test_performer_rename_hook_reaches_every_affected_plex_item(world):
    synced(world)
    many = world.lib.special["many_tags"]  # 12 performers: more than a list view shows
    performer_id = world.stash.scenes[many]["performer_ids"][0]
    affected = [s for s in scenes_with_performer(world, performer_id) if s in world.lib.in_plex]
    assert len(affected) >= 2
    before = world.stash.scenes[affected[0]]["updated_at"]
    world.stash.rename_performer(performer_id, "Renamed Performer ✨")
    assert world.stash.scenes[affected[0]]["updated_at"] == before
    run = world.run(hook_args(int(performer_id), kind="Performer.Update.Post"))
    assert run.output == f"queued the scenes of performer {performer_id}"
    assert wait_until(lambda: all("Renamed Performer ✨" in world.item(s).tags["actor"] for s in affected), timeout=30)
    assert all(not any(a == "Renamed Performer ✨" for a in world.plex.items[rk].tags.get("actor", []))
               for s, rk in world.lib.in_plex.items() if s not in affected)
    assert f"performer {performer_id} update: queued its {len(scenes_with_performer(world, performer_id))} scenes" \
        in drainer_log(world.plugin_dir)


def test_rename_without_a_hook_is_found_by_reconciliation(world):
    synced(world)
    many = world.lib.special["many_tags"]
    performer_id = world.stash.scenes[many]["performer_ids"][5]  # beyond what the list view shows
    world.stash.rename_performer(performer_id, "Quietly Renamed")
    world.run({"mode": "reconcile_all"})
    gaps = {g["scene_id"]: g for g in report(world)["gaps"]["different_metadata"]}
    affected = {s for s in scenes_with_performer(world, performer_id) if s in world.lib.in_plex}
    assert affected <= set(gaps) and all("actor" in gaps[s]["fields"] for s in affected)
    stop_drainer(world.plugin_dir, timeout=0)
    drain(world)
    assert all("Quietly Renamed" in world.item(s).tags["actor"] for s in affected)


def test_studio_rename_hook_updates_studio_and_collection(world):
    synced(world)
    sid = next(s for s in plain(world) if world.stash.scenes[s]["studio_id"])
    studio_id = world.stash.scenes[sid]["studio_id"]
    world.stash.rename_studio(studio_id, "New Studio Name")
    world.run(hook_args(int(studio_id), kind="Studio.Update.Post"))
    item = world.item(sid)
    assert wait_until(lambda: item.studio == "New Studio Name", timeout=30)
    assert item.tags["collection"] == ["New Studio Name"]


def test_tag_destroy_hook_removes_the_tag_from_plex_through_remembered_links(world):
    synced(world)
    sid = next(s for s in plain(world) if world.stash.scenes[s]["tag_ids"])
    tag_id = world.stash.scenes[sid]["tag_ids"][0]
    name = world.stash.tags[tag_id]["name"]
    world.stash.delete_tag(tag_id)  # Stash no longer links any scene to it
    world.run(hook_args(int(tag_id), kind="Tag.Destroy.Post"))
    assert wait_until(lambda: name not in world.item(sid).tags.get("genre", []), timeout=30)


def test_tag_merge_hook_queues_scenes_of_source_and_destination(world):
    synced(world)
    sid = next(s for s in plain(world) if world.stash.scenes[s]["tag_ids"])
    source = world.stash.scenes[sid]["tag_ids"][0]
    destination = next(t for t in world.stash.tags if t != source and t not in world.stash.scenes[sid]["tag_ids"])
    old = world.stash.tags[source]["name"]
    world.stash.merge_tags([source], destination)
    run = world.run({"hookContext": {"id": int(destination), "type": "Tag.Merge.Post",
                                     "input": {"source": [source], "destination": destination}}})
    assert run.output == f"queued the scenes of tag {destination}, {source}"
    item = world.item(sid)
    assert wait_until(lambda: world.stash.tags[destination]["name"] in item.tags["genre"], timeout=30)
    assert old not in item.tags["genre"]


def test_automatic_reconciliation_runs_on_schedule(world):
    synced(world)
    world.settings(reconcile_interval="hourly", plex_request_scan=False)
    q = world.queue()
    q.set_meta("reconcile_last_at", str(time.time() - 3700))
    q.set_meta("reconcile_next_at", str(time.time() - 100))
    world.item(plain(world)[0]).title = "drifted"
    world.run(hook_args(int(plain(world)[1])))
    assert wait_until(lambda: q.get_meta("reconcile_last") and world.item(plain(world)[0]).title != "drifted",
                      timeout=30)
    assert report(world)["scope"] == "all"
    assert float(q.get_meta("reconcile_next_at")) > time.time() + 3000
    status = world.run({"mode": "queue_status"})
    assert any(m.startswith("last reconciliation: ") and "different metadata: 1" in m for _, m in status.logs)


def test_no_automatic_reconciliation_when_interval_is_never(world):
    synced(world)
    q = world.queue()
    world.run(hook_args(int(plain(world)[1])))
    stop_drainer(world.plugin_dir, timeout=20)
    assert q.get_meta("reconcile_last") is None and q.get_meta("reconcile_next_at") is None


def test_first_run_after_stash_starts_reconciles_the_last_day(world):
    synced(world)
    q = world.queue()
    q.set_meta("stash_instance", "1:0")  # a Stash that has since stopped
    world.run(hook_args(int(plain(world)[1])))
    assert wait_until(lambda: q.get_meta("reconcile_last"), timeout=30)
    assert report(world)["scope"] == "24h" and q.get_meta("reconcile_startup_due") is None
