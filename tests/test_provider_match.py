"""Matching a Plex file to a Stash scene (lib/scene_match.py), the metadata shapes (lib/metadata.py)
and the cache (lib/cache.py): pure functions directly, Stash lookups against the fake Stash over HTTP."""
import re

import pytest

from conftest import API_KEY
from fakestash import FakeStash, re2_compile
from lib.cache import TTLCache
from lib.metadata import (container, guid, image_url, rating_key, scene_id_of, scene_id_of_guid,
                          scene_metadata)
from lib.paths import PathMapper, parse_path_map
from lib.scene_match import (MatchRequest, SceneFinder, parse_request, plex_paths, relative_parts, suffix_regex,
                             trailing_match)
from lib.stash import StashClient

BASE = "http://provider.lan:8000"


# -- request parsing and candidate paths ------------------------------------------------------------

def test_parse_request_coerces_pms_values_and_merges_the_query():
    req = parse_request(b'{"type": "1", "filename": "A/b.mp4", "manual": "1", "title": 42}', {"guid": "g"})
    assert req == MatchRequest(1, "A/b.mp4", ("A", "b.mp4"), True, "g", "42")
    assert parse_request(b"", {"filename": "x.mp4", "manual": "0", "other": "y"}).parts == ("x.mp4",)
    assert parse_request(b'{"filename": "a.mp4"}', {"filename": "ignored.mp4"}).filename == "a.mp4"


@pytest.mark.parametrize("body, needle", [
    (b"nope", "not JSON"), (b'"text"', "JSON object"), (b'{"filename": ["a"]}', "filename must be a string"),
    (b'{"filename": "a/../../b"}', ".."), (b'{"manual": 3, "filename": "a"}', "manual must be 0 or 1"),
    (b'{"type": 1.5, "filename": "a"}', "type must be an integer"), (b'{"manual": 1}', "filename"),
])
def test_parse_request_rejects_bad_requests_in_one_line(body, needle):
    with pytest.raises(ValueError) as caught:
        parse_request(body, {})
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_relative_parts_normalises_separators():
    assert relative_parts("/A\\B//./c.mp4") == ("A", "B", "c.mp4")


def test_plex_paths_from_several_roots():
    parts = ("Stash", "A", "b.mp4")
    assert plex_paths("Stash/A/b.mp4", parts, ["/data/Stash", "D:\\Media\\", "\\\\nas\\share"]) == [
        "/data/Stash/Stash/A/b.mp4", "/data/Stash/A/b.mp4",          # library folder name included, or not
        "D:\\Media\\Stash\\A\\b.mp4", "\\\\nas\\share\\Stash\\A\\b.mp4"]
    assert plex_paths("/data/Stash/A/b.mp4", ("data", "Stash", "A", "b.mp4"), ["/data/Stash"])[0] == "/data/Stash/A/b.mp4"
    assert plex_paths("w\\back\\slash.mp4", ("w", "back", "slash.mp4"), ["/r"]) == [
        "/r/w\\back\\slash.mp4", "/r/w/back/slash.mp4"]             # a POSIX name may hold a backslash


@pytest.mark.parametrize("name", ["100% real_deal.mp4", "a+b (1) [x].mp4", "a.b^c$d|e{1}.mp4", "emoji 🎬.mp4",
                                  "back\\slash.mp4"])
def test_suffix_regex_matches_literally_in_re2_and_python(name):
    regex = suffix_regex(("Folder", name))
    for compiled in (re2_compile(regex), re.compile(regex)):  # Stash's RE2 (the fake's stand-in) and Python
        assert compiled.search(f"/root/Folder/{name}") and compiled.search(f"C:\\root\\Folder\\{name}")
        assert not compiled.search(f"/root/XFolder/{name}") and not compiled.search(f"/root/Folder/{name}.part")
        assert not compiled.search(f"/root/Folder/x{name}")


def test_trailing_match_counts_equal_trailing_components():
    assert trailing_match("/s/a/b/c.mp4", ("a", "b", "c.mp4")) == 3
    assert trailing_match("/s/x/b/c.mp4", ("a", "b", "c.mp4")) == 2
    assert trailing_match("D:\\s\\B\\c.mp4", ("b", "c.mp4")) == 1  # case-sensitive


# -- SceneFinder against Stash ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def stash():
    fake = FakeStash(api_key=API_KEY)
    fake.start()
    yield fake
    fake.stop()


def finder_for(stash, path_map="media: /stash/{rest} => /plex/{rest}", ttl=60):
    return SceneFinder(StashClient.from_url(stash.url, API_KEY), parse_path_map(path_map),
                       TTLCache(ttl, 100), TTLCache(ttl, 100))


def request(filename, manual=False, guid=None, title=""):
    return MatchRequest(1, filename, relative_parts(filename), manual, guid, title)


def test_like_wildcards_and_case_twins_are_told_apart(stash):
    ids = {name: stash.add_scene(f"/stash/lk/{name}") for name in ("clip_1.mp4", "clipX1.mp4", "Case.mp4",
                                                                    "case.mp4", "50%.mp4", "50% off.mp4")}
    finder = finder_for(stash)
    for name, scene_id in ids.items():
        out = finder.find(request(f"lk/{name}"), ["/plex"])
        assert [(f.scene["id"], f.how) for f in out.results] == [(scene_id, "exact")], name


def test_a_case_insensitive_rule_finds_a_differently_cased_file_but_prefers_the_exact_one(stash):
    only = stash.add_scene("/stash/ci/Only Upper.mp4")
    finder = finder_for(stash, "media (i): /stash/{rest} => /plex/{rest}")
    assert [f.scene["id"] for f in finder.find(request("ci/only upper.mp4"), ["/plex"]).results] == [only]
    low, up = stash.add_scene("/stash/ci2/x.mp4"), stash.add_scene("/stash/ci2/X.mp4")
    assert [f.scene["id"] for f in finder.find(request("ci2/X.mp4"), ["/plex"]).results] == [up]
    assert [f.scene["id"] for f in finder.find(request("ci2/x.mp4"), ["/plex"]).results] == [low]


def test_exact_hits_under_two_roots_are_ambiguous(stash):
    a, b = stash.add_scene("/stash/r1/same.mp4"), stash.add_scene("/stash/r2/same.mp4")
    finder = finder_for(stash, "r: /stash/{root}/{rest} => /plex/{root}/{rest}")
    out = finder.find(request("same.mp4"), ["/plex/r1", "/plex/r2"])
    assert out.results == [] and out.reason == f"ambiguous: Stash scenes {a}, {b} all fit"
    manual = finder.find(request("same.mp4", manual=True), ["/plex/r1", "/plex/r2"])
    assert {f.scene["id"] for f in manual.results} == {a, b}


def test_a_path_a_rule_covers_is_never_guessed_by_name(stash):
    stash.add_scene("/elsewhere/guess/me.mp4")
    finder = finder_for(stash)
    out = finder.find(request("guess/me.mp4"), ["/plex"])
    assert out.results == [] and out.reason == "no Stash scene has a file at /stash/guess/me.mp4"
    assert out.tried == [{"plex_path": "/plex/guess/me.mp4", "stash_path": "/stash/guess/me.mp4",
                          "rule": "media", "error": None}]
    # Without roots nothing is covered: the unique suffix decides, with the lower score.
    found = finder.find(request("guess/me.mp4"), []).results
    assert [(f.how, f.score) for f in found] == [("suffix", 90)]


def test_fix_match_ranks_by_shared_trailing_folders(stash):
    full = stash.add_scene("/x/Rank/Set/Ranked.mp4")
    two = stash.add_scene("/x/Other/Set/Ranked.mp4")
    one = stash.add_scene("/x/Other/Ranked.mp4")
    out = finder_for(stash, "").find(request("Rank/Set/Ranked.mp4", manual=True), [])
    assert [(f.scene["id"], f.score) for f in out.results] == [(full, 90), (two, 60), (one, 50)]


def test_positive_answers_are_cached_and_misses_are_not(stash):
    scene_id = stash.add_scene("/stash/cache/hit.mp4")
    finder = finder_for(stash)
    finder.find(request("cache/hit.mp4"), ["/plex"])
    before = len(stash.requests)
    finder.find(request("cache/hit.mp4"), ["/plex"])
    assert finder.scene(scene_id)["id"] == scene_id
    assert len(stash.requests) == before
    finder.find(request("cache/miss.mp4"), ["/plex"])
    finder.find(request("cache/miss.mp4"), ["/plex"])
    assert len(stash.requests) == before + 2


def test_the_guid_hint_wins_over_the_filename(stash):
    a, b = stash.add_scene("/stash/g/a.mp4"), stash.add_scene("/stash/g/b.mp4")
    out = finder_for(stash).find(request("g/b.mp4", guid=guid(rating_key(a))), ["/plex"])
    assert [(f.scene["id"], f.how) for f in out.results] == [(a, "guid")]
    manual = finder_for(stash).find(request("g/b.mp4", manual=True, guid=guid(rating_key(a))), ["/plex"])
    assert [f.scene["id"] for f in manual.results][:2] == sorted([a, b], key=int)  # both 100, by id


# -- metadata shapes -------------------------------------------------------------------------------

def test_rating_keys_and_guids_round_trip():
    assert rating_key("42") == "scene-42" and scene_id_of("scene-42") == "42"
    assert guid("scene-42") == "tv.plex.agents.custom.plexsync://movie/scene-42"
    assert scene_id_of_guid("tv.plex.agents.custom.plexsync://movie/scene-42") == "42"
    for other in ("tv.plex.agents.custom.plexsync://scene-42", "plex://movie/scene-42", None, 42,
                  "tv.plex.agents.custom.plexsync://movie/scene-x"):
        assert scene_id_of_guid(other) is None
    for bad in ("scene-", "scene-0", "scene-042", "Scene-1", "scene-1/..", "scene-" + "9" * 19):
        with pytest.raises(ValueError):
            scene_id_of(bad)


def test_image_urls_carry_the_change_stamp_and_skip_placeholders():
    assert image_url(BASE, "performer", "7", "http://stash:9999/performer/7/image?t=1700000000") == \
        f"{BASE}/img/performer/7?t=1700000000"
    assert image_url(BASE, "performer", "7", "http://stash:9999/performer/7/image?t=17&default=true") is None
    assert image_url(BASE, "scene", "1", "http://stash:9999/scene/1/screenshot?t=x%26y") == f"{BASE}/img/scene/1"
    assert image_url(BASE, "scene", "1", None) is None


def test_minimal_scene_metadata():
    scene = {"id": "5", "title": None, "details": "", "date": "2021-13-01", "files": [
        {"path": "/m/Some File.mp4", "basename": "Some File.mp4", "duration": 61.2345}], "paths": {}}
    assert scene_metadata(scene, BASE) == {
        "ratingKey": "scene-5", "key": "/library/metadata/scene-5",
        "guid": "tv.plex.agents.custom.plexsync://movie/scene-5", "type": "movie", "title": "Some File",
        "duration": 61234}


def test_duplicate_performer_names_keep_the_first_photo():
    scene = {"id": "1", "title": "t", "performers": [
        {"id": "1", "name": " Ann ", "image_path": "http://s/performer/1/image?t=5"},
        {"id": "2", "name": "ann", "image_path": "http://s/performer/2/image?t=6"},
        {"id": "3", "name": "Bo", "image_path": "http://s/performer/3/image?t=7&default=true"}]}
    assert scene_metadata(scene, BASE)["Role"] == [
        {"tag": "Ann", "thumb": f"{BASE}/img/performer/1?t=5", "order": 1}, {"tag": "Bo", "order": 2}]


def test_container_shape():
    assert container([{"a": 1}], total=10, offset=3) == {"MediaContainer": {
        "offset": 3, "totalSize": 10, "identifier": "tv.plex.agents.custom.plexsync", "size": 1, "Metadata": [{"a": 1}]}}


# -- the cache --------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_cache_entries_expire_after_ttl():
    clock = Clock()
    cache = TTLCache(10, 100, clock=clock)
    cache.put("k", "v")
    clock.now = 9.9
    assert cache.get("k") == "v"
    clock.now = 10.0
    assert cache.get("k") is None and len(cache) == 0


def test_cache_evicts_least_recently_used_by_count_and_weight():
    cache = TTLCache(60, 2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    heavy = TTLCache(60, 100, max_weight=10, weigh=len)
    heavy.put("x", b"123456")
    heavy.put("y", b"12345")
    assert heavy.get("x") is None and heavy.get("y") == b"12345"
    heavy.put("z", b"12345678901")  # heavier than the whole budget: not stored, nothing evicted
    assert heavy.get("z") is None and heavy.get("y") == b"12345"


def test_ttl_zero_disables_the_cache():
    cache = TTLCache(0, 10)
    cache.put("k", "v")
    assert cache.get("k") is None


def test_identity_mapper_with_no_roots_still_matches_by_unique_suffix(stash):
    scene_id = stash.add_scene("/srv/unique/only-here.mp4")
    finder = SceneFinder(StashClient.from_url(stash.url, API_KEY), PathMapper(), TTLCache(60, 10), TTLCache(60, 10))
    assert [f.scene["id"] for f in finder.find(request("unique/only-here.mp4"), []).results] == [scene_id]
