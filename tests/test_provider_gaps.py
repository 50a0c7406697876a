"""Gap detection: the pure comparison (lib/gaps.py), the scan scheduler and the unmatched log
(lib/gap_scanner.py), and a real scan fed by the fake Stash and the fake Plex over HTTP."""
import json
import os
import threading
import time

import pytest

from conftest import API_KEY, PLEX_TOKEN, make_world
from harness import wait_until
from lib.gap_scanner import GapScanner, UnmatchedLog
from lib.gaps import compare
from lib.paths import PathMapper, parse_path_map
from lib.plex import Plex
from lib.stash import StashClient

MEDIA = parse_path_map("media: /stash/{rest} => /plex/{rest}")


def test_identical_sides_have_no_gaps():
    report = compare([("1", "/stash/a.mp4"), ("2", "/stash/b.mp4")],
                     [("101", "/plex/a.mp4"), ("102", "/plex/b.mp4")], MEDIA)
    assert report["missing_in_plex"] == [] and report["missing_in_stash"] == []
    assert report["counts"] == {"stash_scenes": 2, "stash_files": 2, "plex_items": 2, "plex_files": 2,
                                "matched_scenes": 2, "matched_plex_files": 2, "missing_in_plex": 0,
                                "missing_in_stash": 0, "unmappable": 0}


def test_both_directions_list_paths_on_both_sides():
    report = compare([("7", "/stash/only in stash.mp4"), ("8", "/stash/both.mp4")],
                     [("201", "/plex/both.mp4"), ("202", "/plex/only in plex.mp4")], MEDIA)
    assert report["missing_in_plex"] == [{"scene_id": "7", "stash_paths": ["/stash/only in stash.mp4"],
                                          "plex_paths": ["/plex/only in stash.mp4"], "rules": ["media"],
                                          "errors": []}]
    assert report["missing_in_stash"] == [{"ratingKey": "202", "plex_path": "/plex/only in plex.mp4",
                                           "stash_path": "/stash/only in plex.mp4", "rule": "media",
                                           "error": None}]


def test_a_scene_is_in_plex_when_any_of_its_files_is():
    report = compare([("3", "/stash/x.mp4"), ("3", "/stash/x (alt).mkv")], [("301", "/plex/x (alt).mkv")], MEDIA)
    assert report["counts"]["matched_scenes"] == 1 and report["missing_in_plex"] == []
    assert report["counts"]["stash_files"] == 2


def test_every_part_of_a_plex_item_is_checked():
    report = compare([("3", "/stash/x.mp4")], [("301", "/plex/x.mp4"), ("301", "/plex/x part 2.mp4")], MEDIA)
    assert [g["plex_path"] for g in report["missing_in_stash"]] == ["/plex/x part 2.mp4"]
    assert report["counts"]["plex_items"] == 1 and report["counts"]["plex_files"] == 2


def test_case_matters_unless_the_rule_says_i():
    stash = [("1", "/stash/Mixed/Case.mp4")]
    plex = [("101", "/plex/mixed/case.mp4")]
    assert compare(stash, plex, MEDIA)["counts"]["matched_scenes"] == 0
    icase = parse_path_map("media (i): /stash/{rest} => /plex/{rest}")
    assert compare(stash, plex, icase)["counts"]["matched_scenes"] == 1


def test_windows_plex_paths_are_compared_after_mapping():
    mapper = parse_path_map(r"win: /stash/{rest} => D:\Media\{rest}")
    report = compare([("1", "/stash/A/b.mp4")], [("101", r"D:\Media\A\b.mp4")], mapper)
    assert report["counts"]["matched_scenes"] == 1 and report["missing_in_stash"] == []


def test_without_rules_paths_must_be_equal():
    report = compare([("1", "/media/a.mp4")], [("101", "/media/a.mp4"), ("102", "/other/a.mp4")], PathMapper())
    assert report["counts"]["matched_scenes"] == 1
    assert report["missing_in_stash"][0]["rule"] is None and report["missing_in_stash"][0]["stash_path"] == "/other/a.mp4"


def test_a_rule_that_fails_its_round_trip_is_reported_not_raised():
    # {b} on the stash side is not last there, so it cannot take a '/' back: the trip fails.
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    report = compare([("1", "/s/x/y/z.mp4")], [("101", "/p/q/r/s.mp4")], mapper)
    assert report["counts"]["unmappable"] == 2
    assert report["missing_in_plex"][0]["plex_paths"] == [None] and "swap" in report["missing_in_plex"][0]["errors"][0]
    assert report["missing_in_stash"][0]["stash_path"] is None and "swap" in report["missing_in_stash"][0]["error"]


def test_lists_are_sorted_and_repeats_count_once():
    stash = [("10", "/stash/j.mp4"), ("9", "/stash/i.mp4"), ("10", "/stash/j.mp4")]
    plex = [("2", "/plex/b.mp4"), ("1", "/plex/a.mp4"), ("1", "/plex/a.mp4")]
    report = compare(iter(stash), iter(plex), MEDIA)
    assert [g["scene_id"] for g in report["missing_in_plex"]] == ["9", "10"]
    assert [g["plex_path"] for g in report["missing_in_stash"]] == ["/plex/a.mp4", "/plex/b.mp4"]
    assert report["counts"]["stash_files"] == 2 and report["counts"]["plex_files"] == 2


def test_scan_of_a_generated_library_over_http_finds_exactly_the_planted_gaps(tmp_path):
    world = make_world(tmp_path, n=300)
    try:
        extra = world.plex.add_item(1, "/plex/media/not in stash/orphan.mp4")
        stash = StashClient.from_url(world.stash.url, API_KEY)
        plex = Plex(world.plex.url, PLEX_TOKEN, [], (5, 30))
        index = plex.index(max_age=0)
        report = compare(stash.scene_files(page_size=64),
                         ((c.rating_key, f) for entries in index.by_name.values() for f, c in entries),
                         parse_path_map(world.lib.path_map))
        assert [g["scene_id"] for g in report["missing_in_plex"]] == sorted(world.lib.missing, key=int)
        assert [(g["ratingKey"], g["stash_path"]) for g in report["missing_in_stash"]] == [
            (extra.rating_key, "/stash/media/not in stash/orphan.mp4")]
        assert report["counts"]["stash_scenes"] == 300
    finally:
        world.stash.stop()
        world.plex.stop()


# -- the scheduler -------------------------------------------------------------------------------

class CountingScan:
    """A real scan function that counts its runs (and fails while ``fail`` is set)."""

    def __init__(self):
        self.runs = 0
        self.fail = None

    def __call__(self):
        self.runs += 1
        if self.fail:
            raise RuntimeError(self.fail)
        return compare([("1", "/a.mp4")], [], PathMapper())


def test_scheduled_scans_repeat_at_the_interval():
    scan = CountingScan()
    scanner = GapScanner(scan, interval=0.2, first_delay=0.0)
    scanner.start()
    try:
        assert wait_until(lambda: scan.runs >= 3, timeout=10)
    finally:
        scanner.stop()
    assert scanner.report["counts"]["missing_in_plex"] == 1 and scanner.report["generated_at"].endswith("Z")


def test_manual_schedule_scans_only_on_request():
    scan = CountingScan()
    scanner = GapScanner(scan, interval=None, first_delay=0.0)
    scanner.start()
    try:
        time.sleep(0.3)
        assert scan.runs == 0 and scanner.status()["next_scan"] is None
        assert scanner.request() is True
        assert wait_until(lambda: scanner.report is not None, timeout=10)
        assert scan.runs == 1
    finally:
        scanner.stop()


def test_a_second_request_while_one_runs_is_refused():
    gate = threading.Event()
    scanner = GapScanner(lambda: gate.wait(10) and compare([], [], PathMapper()), interval=None)
    scanner.start()
    try:
        assert scanner.request() is True
        assert wait_until(lambda: scanner.status()["running"], timeout=5)
        assert scanner.request() is False
        gate.set()
        assert wait_until(lambda: scanner.report is not None, timeout=5)
        assert scanner.request() is True
    finally:
        gate.set()
        scanner.stop()


def test_a_failed_scan_keeps_the_last_report_and_says_why():
    scan = CountingScan()
    scanner = GapScanner(scan, interval=None)
    scanner.start()
    try:
        scanner.request()
        assert wait_until(lambda: scanner.report is not None, timeout=5)
        first = scanner.report
        scan.fail = "Stash is unreachable at http://127.0.0.1:9: ConnectionError"
        scanner.request()
        assert wait_until(lambda: scanner.status()["last_error"], timeout=5)
        assert scanner.report is first and "unreachable" in scanner.status()["last_error"]
    finally:
        scanner.stop()


def test_the_report_survives_a_restart_and_sets_the_next_scan(tmp_path):
    state = str(tmp_path / "gaps.json")
    scan = CountingScan()
    first = GapScanner(scan, interval=None, state_path=state)
    first.start()
    first.request()
    assert wait_until(lambda: first.report is not None, timeout=5)
    first.stop()
    with open(state, encoding="utf-8") as f:
        assert json.load(f)["counts"]["missing_in_plex"] == 1
    again = GapScanner(scan, interval=3600, state_path=state)
    again.start()
    try:
        assert again.report == first.report
        assert again.status()["next_scan"] > first.report["generated_at"]
        time.sleep(0.3)
        assert scan.runs == 1  # not due before an hour after the saved report
    finally:
        again.stop()


def test_an_unreadable_saved_report_is_ignored(tmp_path):
    state = tmp_path / "gaps.json"
    state.write_text("{not json", encoding="utf-8")
    assert GapScanner(CountingScan(), interval=None, state_path=str(state)).report is None


# -- unmatched match requests ----------------------------------------------------------------------

def test_unmatched_requests_are_counted_listed_newest_first_and_resolved():
    log = UnmatchedLog(limit=2)
    tried = [{"plex_path": "/plex/a.mp4", "stash_path": "/stash/a.mp4"}]
    log.record("a.mp4", tried, "no scene")
    log.record("b.mp4", [{"plex_path": "/plex/b.mp4", "stash_path": None}], "no rule")
    log.record("a.mp4", tried, "no scene")
    items = log.items()
    assert [i["filename"] for i in items] == ["a.mp4", "b.mp4"]
    assert items[0]["count"] == 2 and items[0]["stash_paths"] == ["/stash/a.mp4"] and items[1]["stash_paths"] == []
    log.record("c.mp4", [], "x")
    assert [i["filename"] for i in log.items()] == ["c.mp4", "a.mp4"]  # limit 2: b went
    log.resolve("a.mp4")
    assert len(log) == 1


@pytest.mark.parametrize("schedule", ["hourly", "daily", "weekly"])
def test_first_scheduled_scan_comes_soon_after_start_without_a_saved_report(schedule):
    from lib.gap_scanner import FIRST_SCAN_DELAY, SCHEDULES, iso

    start = time.time()
    scanner = GapScanner(CountingScan(), SCHEDULES[schedule], clock=lambda: start)
    scanner.start()
    try:
        assert scanner.status()["next_scan"] == iso(start + FIRST_SCAN_DELAY)
    finally:
        scanner.stop()
    assert not os.path.exists("provider-gaps.json")
