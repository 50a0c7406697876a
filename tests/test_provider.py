"""The provider end to end: provider.py run as a process, played against as PMS plays it, over HTTP,
with the fake Stash and the fake Plex on loopback (reference/plex-provider-protocol.md, cited §N)."""
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import API_KEY, COOKIE, PLEX_TOKEN
from fakeplex import FakePlex
from fakestash import FakeStash, file_props
from harness import wait_until
from library import build_library
from provider_harness import ProviderProcess, free_port, run_once

IDENTIFIER = "tv.plex.agents.custom.plexsync"
SECRETS = (API_KEY, PLEX_TOKEN, COOKIE)
RATING_KEY = re.compile(r"[A-Za-z0-9_-]+")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


class World:
    """Fake Stash + fake Plex with a generated hostile library, and provider.py in front of them."""

    def __init__(self, n=120, **values):
        self.stash = FakeStash(api_key=API_KEY, session_cookie=COOKIE)
        self.plex = FakePlex(token=PLEX_TOKEN)
        self.stash.start()
        self.plex.start()
        self.lib = build_library(self.stash, self.plex, n)
        # One scene with what the generated library lacks: director, groups, stash-box ids, a parent studio.
        child = next(s for s in self.lib.studio_ids if self.stash.studios[s]["parent_id"])
        self.stash.update_scene(self.lib.special["sub_studio"], studio_id=child, director="Some Director",
                                group_ids=[self.stash.add_group("Series, Vol. 1"), self.stash.add_group("Boxed Set")],
                                stash_ids=[("https://stashdb.org/graphql", "0b7f5e2c-1d2e-4f00-9a55-7c1e2f3a4b5c"),
                                           ("https://theporndb.net/graphql", "bad id with spaces")])
        base = {"PLEXSYNC_STASH_URL": self.stash.url, "PLEXSYNC_STASH_API_KEY": API_KEY,
                "PLEXSYNC_PLEX_URL": self.plex.url, "PLEXSYNC_PLEX_TOKEN": PLEX_TOKEN,
                "PLEXSYNC_PATH_MAP": self.lib.path_map, "PLEXSYNC_GAP_SCHEDULE": "manual"}
        base.update(values)
        self.provider = ProviderProcess({k: v for k, v in base.items() if v is not None}).start()
        self.url = self.provider.url
        self.answers = []  # every response body seen, checked for secrets at the end

    def get(self, path, **kw):
        resp = requests.get(self.url + path, timeout=30, **kw)
        self.answers.append(resp.content)
        return resp

    def post(self, path, **kw):
        resp = requests.post(self.url + path, timeout=30, **kw)
        self.answers.append(resp.content)
        return resp

    def match(self, **body):
        resp = self.post("/library/metadata/matches", json=dict({"type": 1}, **body))
        assert resp.status_code == 200, resp.text
        return resp.json()["MediaContainer"]["Metadata"]

    def relative(self, stash_path):
        return self.lib.to_plex(stash_path)[len(self.lib.plex_root) + 1:]

    def close(self):
        code = self.provider.stop()
        self.stash.stop()
        self.plex.stop()
        return code


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.close()


def assert_json_error(resp, status, needle=""):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == status and "\n" not in body["error"] and needle in body["error"], body
    assert "Traceback" not in resp.text


# -- manifest (§2) ----------------------------------------------------------------------------------

def test_manifest_declares_the_movie_type_and_relative_feature_keys(world):
    for path in ("/", "/?includePreferences=1"):
        resp = world.get(path)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
        assert resp.json() == {"MediaProvider": {
            "identifier": IDENTIFIER, "title": "PlexSync (Stash)", "version": "1.0.0",
            "Types": [{"type": 1, "Scheme": [{"scheme": IDENTIFIER}]}],
            "Feature": [{"type": "metadata", "key": "/library/metadata"},
                        {"type": "match", "key": "/library/metadata/matches"}]}}


# -- match (§4) --------------------------------------------------------------------------------------

def test_every_scene_file_matches_its_scene_and_serves_complete_metadata(world):
    """Every file of every scene (hostile names included: LIKE wildcards, case twins, duplicate
    names, scripts, emoji, backslashes) matches exactly its own scene from its relative filename."""
    checked = 0
    for scene_id in world.lib.scene_ids:
        for path in world.lib.stash_paths(scene_id):
            found = world.match(filename=world.relative(path))
            assert [m["ratingKey"] for m in found] == [f"scene-{scene_id}"], path
            assert found[0]["score"] == 100
            checked += 1
        item = world.get(f"/library/metadata/scene-{scene_id}").json()["MediaContainer"]["Metadata"][0]
        assert RATING_KEY.fullmatch(item["ratingKey"]) and item["guid"] == f"{IDENTIFIER}://movie/{item['ratingKey']}"
        assert item["key"] == f"/library/metadata/{item['ratingKey']}" and item["type"] == "movie"
        assert item["title"] and not CONTROL.search(item["title"]) and len(item["title"]) <= 255
        assert item["duration"] == round(file_props(world.stash.scenes[scene_id]["files"][0]["id"])[0] * 1000)
    assert checked > len(world.lib.scene_ids)  # multi-file scenes too


def expected_metadata(world, scene_id):
    """What Stash holds for a plain scene, in the provider's shape, computed from the fake's records."""
    rec = world.stash.scenes[scene_id]
    base = world.url
    out = {"ratingKey": f"scene-{scene_id}", "key": f"/library/metadata/scene-{scene_id}",
           "guid": f"{IDENTIFIER}://movie/scene-{scene_id}", "type": "movie", "title": rec["title"],
           "duration": round(file_props(rec["files"][0]["id"])[0] * 1000)}
    if rec["details"]:
        out["summary"] = rec["details"]
    if rec["date"]:
        out["originallyAvailableAt"], out["year"] = rec["date"], int(rec["date"][:4])
    if rec["code"]:
        out["tagline"] = rec["code"]
    cover = f"{base}/img/scene/{scene_id}?t="
    out["thumb"] = out["art"] = cover
    out["Image"] = [{"type": "coverPoster", "url": cover, "alt": "Stash cover"},
                    {"type": "background", "url": cover, "alt": "Stash cover"}]
    if rec["studio_id"]:
        studios = [world.stash.studios[rec["studio_id"]]]
        if studios[0]["parent_id"]:
            studios.append(world.stash.studios[studios[0]["parent_id"]])
        tags = [dict({"tag": s["name"]}, **({"thumb": f"{base}/img/studio/{s['id']}?t="} if s["has_image"] else {}))
                for s in studios]
        out["studio"] = studios[0]["name"]
        out["Studio"] = tags[:1]
        out["Collection"] = tags
    if rec["tag_ids"]:
        out["Genre"] = [{"tag": world.stash.tags[t]["name"]} for t in rec["tag_ids"]]
    roles = []
    for order, pid in enumerate(rec["performer_ids"], start=1):
        perf = world.stash.performers[pid]
        role = {"tag": perf["name"], "order": order}
        if perf["has_image"]:
            role["thumb"] = f"{base}/img/performer/{pid}?t="
        roles.append(role)
    if roles:
        out["Role"] = roles
    return out


def without_stamps(value):
    """Image URLs with their ``t=`` change stamp emptied (the stamp is checked separately)."""
    return json.loads(re.sub(r"\?t=\d+", "?t=", json.dumps(value)))


def test_metadata_of_plain_scenes_is_exactly_what_stash_holds(world):
    special = set(world.lib.special.values())
    plain = [s for s in world.lib.scene_ids if s not in special][:40]
    for scene_id in plain:
        item = world.get(f"/library/metadata/scene-{scene_id}").json()["MediaContainer"]["Metadata"][0]
        assert re.search(r"\?t=\d+$", item["thumb"])
        assert without_stamps(item) == expected_metadata(world, scene_id), scene_id


def test_metadata_of_hostile_scenes_is_clean(world):
    sp = world.lib.special
    meta = lambda label: world.get(f"/library/metadata/scene-{sp[label]}").json()["MediaContainer"]["Metadata"][0]  # noqa: E731
    assert (meta("year_only")["originallyAvailableAt"], meta("year_only")["year"]) == ("2019-01-01", 2019)
    assert (meta("year_month")["originallyAvailableAt"], meta("year_month")["year"]) == ("2020-07-01", 2020)
    assert meta("empty_title")["title"] == "empty title"            # falls back to the file name
    assert meta("bare")["title"] == "bare" and "summary" not in meta("bare")
    control = meta("control")
    assert not CONTROL.search(control["title"]) and not CONTROL.search(control["summary"].replace("\n", ""))
    long = meta("long")
    assert len(long["title"]) == 255 and len(long["summary"]) == 20000 and long["title"].endswith("…")
    assert len(meta("many_tags")["Genre"]) == 150
    commas = meta("comma_names")
    assert [r["tag"] for r in commas["Role"]] == ["Doe, Jane", "Smith, John Jr."]
    assert meta("whitespace")["title"] == "leading and trailing" and "summary" not in meta("whitespace")
    sub = meta("sub_studio")
    studio = world.stash.studios[world.stash.scenes[sp["sub_studio"]]["studio_id"]]
    parent = world.stash.studios[studio["parent_id"]]
    assert [c["tag"] for c in sub["Collection"]] == [studio["name"], parent["name"], "Series, Vol. 1", "Boxed Set"]
    assert sub["Director"] == [{"tag": "Some Director"}]
    assert sub["Guid"] == [{"id": "stashdb://0b7f5e2c-1d2e-4f00-9a55-7c1e2f3a4b5c"}]  # a malformed id is left out


def test_filename_variants_pms_may_send_all_match(world):
    scene_id = next(s for s in world.lib.in_plex if s not in world.lib.special.values())
    rel = world.relative(world.lib.stash_path(scene_id))
    for variant in ("/" + rel, rel.replace("/", "\\"), "media/" + rel, world.lib.plex_path(scene_id), "./" + rel):
        assert [m["ratingKey"] for m in world.match(filename=variant)] == [f"scene-{scene_id}"], variant


def test_query_parameters_are_merged_and_headers_ignored(world):
    scene_id = world.lib.scene_ids[5]
    resp = world.post("/library/metadata/matches?X-Plex-Language=en-US&X-Plex-Country=US&manual=0",
                      data=json.dumps({"type": "1", "filename": world.relative(world.lib.stash_path(scene_id)),
                                       "includeAdult": 0, "includeFields": "thumb", "unknown": [1]}),
                      headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200
    assert resp.json()["MediaContainer"]["Metadata"][0]["ratingKey"] == f"scene-{scene_id}"


def test_no_match_is_an_empty_200_recorded_as_a_gap_at_once(world):
    resp = world.post("/library/metadata/matches", json={"type": 1, "filename": "nowhere/ghost file.mp4"})
    assert resp.status_code == 200
    assert resp.json() == {"MediaContainer": {"offset": 0, "totalSize": 0, "identifier": IDENTIFIER,
                                              "size": 0, "Metadata": []}}
    gaps = world.get("/gaps?list=unmatched_requests").json()["unmatched_requests"]["items"]
    ghost = next(g for g in gaps if g["filename"] == "nowhere/ghost file.mp4")
    assert ghost["plex_paths"] == ["/plex/media/nowhere/ghost file.mp4"]
    assert ghost["stash_paths"] == ["/stash/media/nowhere/ghost file.mp4"]
    assert "no Stash scene has a file at /stash/media/nowhere/ghost file.mp4" in ghost["reason"]
    assert "unmatched: nowhere/ghost file.mp4" in world.provider.log()


def test_a_later_match_removes_the_unmatched_record(world):
    path = "/stash/media/late/arrives later.mp4"
    scene_id = world.stash.add_scene(path + ".partial", title="Arrives later")
    rel = world.relative(path)
    names = lambda: [g["filename"] for g in world.get("/gaps").json()["unmatched_requests"]["items"]]  # noqa: E731
    assert world.match(filename=rel) == [] and rel in names()
    world.stash.update_scene(scene_id, files=[path])  # misses are never cached: found at once
    assert world.match(filename=rel)[0]["ratingKey"] == f"scene-{scene_id}"
    assert rel not in names()


def test_refresh_with_our_guid_resolves_directly_and_never_drifts(world):
    a, b = world.lib.scene_ids[10], world.lib.scene_ids[11]
    found = world.match(guid=f"{IDENTIFIER}://movie/scene-{a}", filename=world.relative(world.lib.stash_path(b)))
    assert [m["ratingKey"] for m in found] == [f"scene-{a}"]
    # A guid naming a scene Stash no longer has: the filename decides.
    found = world.match(guid=f"{IDENTIFIER}://movie/scene-99999999", filename=world.relative(world.lib.stash_path(b)))
    assert [m["ratingKey"] for m in found] == [f"scene-{b}"]
    # Other agents' guids are not ours to resolve.
    found = world.match(guid="plex://movie/5d776825880197001ec967c5", filename=world.relative(world.lib.stash_path(b)))
    assert [m["ratingKey"] for m in found] == [f"scene-{b}"]
    assert world.match(guid=f"{IDENTIFIER}://movie/scene-{a}")[0]["ratingKey"] == f"scene-{a}"


def test_fix_match_returns_a_ranked_list(world):
    sp = world.lib.special
    a_path = world.lib.stash_path(sp["dup_basename_a"])
    found = world.match(manual=1, filename=world.relative(a_path), title="Duplicate basename")
    keys = [m["ratingKey"] for m in found]
    assert keys[0] == f"scene-{sp['dup_basename_a']}" and found[0]["score"] == 100
    assert f"scene-{sp['dup_basename_b']}" in keys  # same file name elsewhere: a weaker candidate
    scores = [m["score"] for m in found]
    assert scores == sorted(scores, reverse=True) and len(found) <= 10
    # A numeric title is a Stash scene id.
    other = world.lib.scene_ids[20]
    found = world.match(manual=1, filename="unknown.mp4", title=other)
    assert found[0]["ratingKey"] == f"scene-{other}" and found[0]["score"] == 95
    # Title text alone (Fix Match search) finds by Stash's free-text search.
    found = world.match(manual=1, title="Child studio scene")
    assert f"scene-{sp['sub_studio']}" in [m["ratingKey"] for m in found]
    for m in found:
        assert {"ratingKey", "key", "guid", "type", "title", "score"} <= set(m)


def test_manual_zero_never_applies_an_ambiguous_or_weak_match(world):
    # The library's rule covers the path but Stash has no file there: no name-based guess.
    assert world.match(filename="elsewhere/Same Name.mp4") == []
    assert world.match(manual=1, filename="elsewhere/Same Name.mp4") != []


# -- several roots and rules; fallbacks ---------------------------------------------------------

@pytest.fixture(scope="module")
def roots_world():
    stash = FakeStash(api_key=API_KEY)
    stash.start()
    ids = {
        "media": stash.add_scene("/stash/media/Studio A/a one.mp4", title="A one"),
        "archive": stash.add_scene("/stash/archive/2019/old one.mp4", title="Old one"),
        "win": stash.add_scene("/stash/win/Folder/w one.mp4", title="W one"),
        "unmapped": stash.add_scene("/srv/elsewhere/Deep/Unique Name.mp4", title="Unmapped"),
        "dup1": stash.add_scene("/srv/elsewhere/x/Twin.mp4", title="Twin 1"),
        "dup2": stash.add_scene("/srv/elsewhere/y/Twin.mp4", title="Twin 2"),
    }
    rules = ("media: /stash/media/{rest} => /plex/media/{rest}; "
             "archive: /stash/archive/{rest} => /mnt/old/{rest}; "
             r"win (i): /stash/win/{rest} => D:\Videos\{rest}")
    provider = ProviderProcess({"PLEXSYNC_STASH_URL": stash.url, "PLEXSYNC_STASH_API_KEY": API_KEY,
                                "PLEXSYNC_PATH_MAP": rules,
                                "PLEXSYNC_PLEX_ROOTS": "/plex/media;/mnt/old;D:\\Videos;/plex/other"}).start()
    yield stash, ids, provider
    provider.stop()
    stash.stop()


def roots_match(provider, **body):
    resp = requests.post(provider.url + "/library/metadata/matches", json=dict({"type": 1}, **body), timeout=30)
    assert resp.status_code == 200, resp.text
    return [(m["ratingKey"], m["score"]) for m in resp.json()["MediaContainer"]["Metadata"]]


def test_relative_filenames_under_several_roots_and_rules(roots_world):
    stash, ids, provider = roots_world
    assert roots_match(provider, filename="Studio A/a one.mp4") == [(f"scene-{ids['media']}", 100)]
    assert roots_match(provider, filename="2019/old one.mp4") == [(f"scene-{ids['archive']}", 100)]
    assert roots_match(provider, filename="Folder\\w one.mp4") == [(f"scene-{ids['win']}", 100)]
    assert roots_match(provider, filename="FOLDER/W ONE.mp4") == [(f"scene-{ids['win']}", 100)]  # rule option i


def test_a_file_no_rule_covers_matches_a_unique_path_suffix_with_a_lower_score(roots_world):
    stash, ids, provider = roots_world
    assert roots_match(provider, filename="Deep/Unique Name.mp4") == [(f"scene-{ids['unmapped']}", 90)]
    assert roots_match(provider, filename="Twin.mp4") == []                       # two Stash files: ambiguous
    assert roots_match(provider, filename="y/Twin.mp4") == [(f"scene-{ids['dup2']}", 90)]
    gaps = requests.get(provider.url + "/gaps", timeout=10).json()["unmatched_requests"]["items"]
    assert any(g["filename"] == "Twin.mp4" and g["reason"].startswith("ambiguous") for g in gaps)


def test_without_plex_a_scan_request_is_refused_clearly(roots_world):
    _, _, provider = roots_world
    assert_json_error(requests.post(provider.url + "/gaps/scan", timeout=10), 409, "PLEXSYNC_PLEX_URL")
    health = requests.get(provider.url + "/health", timeout=10).json()
    assert health["plex"] == {"configured": False} and health["roots"]["source"] == "PLEXSYNC_PLEX_ROOTS"


# -- metadata, images, extras (§5-§7) ------------------------------------------------------------

def test_unknown_rating_key_is_404_and_malformed_is_400(world):
    assert_json_error(world.get("/library/metadata/scene-99999999"), 404, "scene-99999999")
    for bad in ("scene-abc", "12", "scene-0", "scene-1.5", "movie.123", "scene-01", "matches"):
        assert_json_error(world.get(f"/library/metadata/{bad}"), 400, "ratingKey")
        assert_json_error(world.get(f"/library/metadata/{bad}/images"), 400, "ratingKey")


def test_images_are_served_by_the_provider_and_are_real_images(world):
    sp = world.lib.special
    item = world.get(f"/library/metadata/scene-{sp['latin']}").json()["MediaContainer"]["Metadata"][0]
    listed = world.get(f"/library/metadata/scene-{sp['latin']}/images").json()["MediaContainer"]
    assert listed["Image"] == item["Image"] and listed["size"] == 2
    urls = {item["thumb"]} | {r["thumb"] for r in item["Role"] if "thumb" in r} | \
           {c["thumb"] for c in item.get("Collection", []) if "thumb" in c}
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith(world.url + "/img/")
        resp = requests.get(url, timeout=10)  # no credentials, as PMS
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
        assert resp.content.startswith(b"\x89PNG\r\n\x1a\n")
        kind, oid = re.search(r"/img/(\w+)/(\d+)", url).groups()
        want = {"scene": world.stash.scene_cover_bytes, "performer": world.stash.performer_image_bytes,
                "studio": world.stash.studio_image_bytes}[kind](oid)
        assert resp.content == want
    for label in ("latin", "comma_names"):
        for role in world.get(f"/library/metadata/scene-{sp[label]}").json()["MediaContainer"]["Metadata"][0]["Role"]:
            pid = next(p for p, r in world.stash.performers.items() if r["name"] == role["tag"])
            assert ("thumb" in role) == world.stash.performers[pid]["has_image"]  # placeholders left out


def test_public_url_sets_the_image_prefix():
    stash = FakeStash(api_key=API_KEY)
    stash.start()
    scene_id = stash.add_scene("/m/a.mp4", title="A")
    try:
        with ProviderProcess({"PLEXSYNC_STASH_URL": stash.url, "PLEXSYNC_STASH_API_KEY": API_KEY,
                              "PLEXSYNC_PUBLIC_URL": "http://192.0.2.7:8123/plexsync/"}) as provider:
            item = requests.get(f"{provider.url}/library/metadata/scene-{scene_id}", timeout=10).json()
            assert item["MediaContainer"]["Metadata"][0]["thumb"].startswith(
                f"http://192.0.2.7:8123/plexsync/img/scene/{scene_id}?t=")
    finally:
        stash.stop()


def test_the_image_route_is_no_open_proxy(world):
    before = len(world.stash.requests)
    for path in ("/img/scene/../../graphql", "/img/scene/1/../../../etc/passwd", "/img/tag/1", "/img/other/1",
                 "/img/scene/abc", "/img/scene/-1", "/img/scene/0", "/img/scene/1%2F..%2F..%2Fgraphql",
                 "/img/scene/http:%2F%2Fexample.com%2Fx.png", "/img/performer/99999999"):
        resp = world.get(path)
        assert resp.status_code in (404,), (path, resp.status_code)
        assert resp.headers["Content-Type"].startswith("application/json")
    asked = [r.path for r in world.stash.requests[before:]]
    assert asked == ["/performer/99999999/image"]  # the only well-formed request reached Stash, by id
    scene_id = world.lib.scene_ids[-2]
    resp = world.get(f"/img/scene/{scene_id}?url=http://example.com/x.png&apikey=x")
    assert resp.status_code == 200 and world.stash.requests[-1].path == f"/scene/{scene_id}/screenshot"


def test_extras_answer_200_with_an_empty_list(world):
    resp = world.get(f"/library/metadata/scene-{world.lib.scene_ids[0]}/extras?updating=1"
                     "&X-Plex-Container-Size=50&X-Plex-Container-Start=0")
    assert resp.status_code == 200
    assert resp.json() == {"MediaContainer": {"offset": 0, "totalSize": 0, "identifier": IDENTIFIER,
                                              "size": 0, "Metadata": []}}


def test_repeated_lookups_are_served_from_the_cache(world):
    scene_id = world.lib.scene_ids[30]
    rel = world.relative(world.lib.stash_path(scene_id))
    world.match(filename=rel)
    world.get(f"/library/metadata/scene-{scene_id}")
    before = len(world.stash.requests)
    for _ in range(5):
        world.match(filename=rel)
        world.get(f"/library/metadata/scene-{scene_id}")
        world.get(f"/library/metadata/scene-{scene_id}/images")
    assert len(world.stash.requests) == before


def test_cache_seconds_zero_asks_stash_every_time():
    stash = FakeStash(api_key=API_KEY)
    stash.start()
    scene_id = stash.add_scene("/m/a.mp4", title="A")
    try:
        with ProviderProcess({"PLEXSYNC_STASH_URL": stash.url, "PLEXSYNC_STASH_API_KEY": API_KEY,
                              "PLEXSYNC_CACHE_SECONDS": "0"}) as provider:
            before = len(stash.requests)
            for _ in range(3):
                requests.get(f"{provider.url}/library/metadata/scene-{scene_id}", timeout=10)
            assert len(stash.requests) == before + 3
    finally:
        stash.stop()


# -- bad input, Stash down, secrets (§8) -------------------------------------------------------------

def test_bad_match_requests_get_one_line_json_errors(world):
    cases = [(b"{bad json", 400, "not JSON"), (b"[1, 2]", 400, "JSON object"), (b"\xff\xfe", 400, "not JSON"),
             (b"{}", 400, "filename"), (b'{"type": 1}', 400, "filename"),
             (b'{"filename": 5}', 400, "filename must be a string"),
             (b'{"filename": "../../etc/passwd"}', 400, ".."), (b'{"filename": "a\\u0000b"}', 400, "NUL"),
             (b'{"filename": "a.mp4", "manual": 2}', 400, "manual"),
             (b'{"filename": "a.mp4", "type": "movie"}', 400, "type"),
             (b'{"filename": "a.mp4", "guid": 7}', 400, "guid")]
    for body, status, needle in cases:
        assert_json_error(world.post("/library/metadata/matches", data=body), status, needle)
    assert_json_error(world.post("/library/metadata/matches", data=b"{" + b" " * 100_000 + b"}"), 413, "limit")
    assert_json_error(world.get("/no/such/route"), 404, "no such route")
    assert_json_error(world.get("/library/metadata/matches/x/y"), 404)
    assert_json_error(world.post("/library/metadata/scene-1"), 405, "POST")
    assert_json_error(world.get("/gaps?limit=0"), 400, "limit")
    assert_json_error(world.get("/gaps?offset=x"), 400, "offset")
    assert_json_error(world.get("/gaps?list=everything"), 400, "list")
    # A non-movie type is not an error: nothing to offer.
    assert world.match(type=2, filename="a.mp4") == []


def test_stash_down_is_a_503_and_the_provider_recovers():
    stash = FakeStash(api_key=API_KEY)
    stash.start()
    scene_id = stash.add_scene("/m/a.mp4", title="A")
    try:
        with ProviderProcess({"PLEXSYNC_STASH_URL": stash.url, "PLEXSYNC_STASH_API_KEY": API_KEY,
                              "PLEXSYNC_PLEX_ROOTS": "/m"}) as provider:
            stash.stop()
            resp = requests.post(provider.url + "/library/metadata/matches", json={"filename": "a.mp4"}, timeout=15)
            assert_json_error(resp, 503, "Stash is unreachable")
            assert_json_error(requests.get(f"{provider.url}/library/metadata/scene-{scene_id}", timeout=15), 503)
            assert_json_error(requests.get(f"{provider.url}/img/scene/{scene_id}", timeout=15), 503)
            health = requests.get(provider.url + "/health", timeout=15)
            assert health.status_code == 200 and health.json()["status"] == "degraded"
            assert health.json()["stash"]["reachable"] is False
            stash.start()
            resp = requests.post(provider.url + "/library/metadata/matches", json={"filename": "a.mp4"}, timeout=15)
            assert resp.json()["MediaContainer"]["Metadata"][0]["ratingKey"] == f"scene-{scene_id}"
    finally:
        stash.stop()


def test_a_wrong_stash_api_key_is_a_503_naming_the_setting():
    stash = FakeStash(api_key=API_KEY)
    stash.start()
    try:
        with ProviderProcess({"PLEXSYNC_STASH_URL": stash.url, "PLEXSYNC_STASH_API_KEY": "wrong-key-123"}) as provider:
            resp = requests.get(f"{provider.url}/library/metadata/scene-1", timeout=10)
            assert_json_error(resp, 503, "PLEXSYNC_STASH_API_KEY")
            assert "wrong-key-123" not in resp.text + provider.log()
    finally:
        stash.stop()


# -- gaps and health (§6 of the issue) ------------------------------------------------------------

def test_gap_scan_reports_both_directions_paged(world):
    orphan = world.plex.add_item(1, "/plex/media/only in plex/orphan.mp4")
    resp = world.post("/gaps/scan")
    assert resp.status_code == 202 and resp.json()["scan"] in ("started", "already running")
    assert wait_until(lambda: world.get("/gaps").json()["generated_at"], timeout=30)
    report = world.get("/gaps?limit=1000").json()
    plex_files = {f for item in world.plex.items.values() for f in item.files}
    missing = [sid for sid, rec in world.stash.scenes.items()
               if not any(world.lib.to_plex(f["path"]) in plex_files for f in rec["files"])]
    assert set(world.lib.missing) <= set(missing) and len(missing) <= len(world.lib.missing) + 1
    assert report["counts"]["missing_in_plex"] == len(missing)
    assert [g["scene_id"] for g in report["missing_in_plex"]["items"]] == sorted(missing, key=int)
    first = report["missing_in_plex"]["items"][0]
    assert first["stash_paths"] == world.lib.stash_paths(first["scene_id"])
    assert first["plex_paths"] == world.lib.plex_paths(first["scene_id"])
    assert report["missing_in_stash"]["items"] == [{
        "ratingKey": orphan.rating_key, "plex_path": "/plex/media/only in plex/orphan.mp4",
        "stash_path": "/stash/media/only in plex/orphan.mp4", "rule": "media", "error": None}]
    page = world.get("/gaps?list=missing_in_plex&offset=1&limit=2").json()
    assert set(page) >= {"missing_in_plex", "counts", "generated_at"} and "missing_in_stash" not in page
    assert page["missing_in_plex"]["items"] == report["missing_in_plex"]["items"][1:3]
    assert page["missing_in_plex"]["total"] == len(missing)
    assert report["scan"]["schedule"] == "manual" and report["scan"]["last_error"] is None


def test_health_reports_stash_plex_roots_and_the_last_scan(world):
    health = world.get("/health").json()
    assert health["status"] == "ok" and health["stash"]["reachable"] is True
    assert health["plex"]["status"] == "up" and health["roots"] == {"source": "plex", "paths": ["/plex/media"],
                                                                    "error": None}
    assert set(health["gaps"]) >= {"schedule", "last_scan", "next_scan", "running", "unmatched_requests"}


def test_no_secret_in_any_answer_or_log_line(world):
    world.get("/health")
    text = b"".join(world.answers).decode("utf-8", "replace") + world.provider.log()
    for secret in SECRETS:
        assert secret not in text
    assert "DEBUG" in world.provider.log()  # the log ran at its most verbose


# -- start-up and shutdown -------------------------------------------------------------------------

def test_a_rule_that_fails_its_round_trip_stops_start_up_naming_rule_and_path():
    run = run_once({"PLEXSYNC_STASH_URL": f"http://127.0.0.1:{free_port()}", "PLEXSYNC_PLEX_ROOTS": "/plex",
                    "PLEXSYNC_PATH_MAP": "swap: /stash/{a}/{b} => /plex/{b}/{a}"})
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.startswith("plexsync provider: ")]
    assert lines and all(line.startswith("plexsync provider: PLEXSYNC_PATH_MAP: path_map rule 'swap'") for line in lines)
    assert "Serving on" not in run.stderr  # stopped before accepting traffic
    assert "/plex/Sample Studio/2024/Sample Scene [1080p].mp4" in run.stderr


def test_round_trip_is_also_checked_on_stash_paths():
    stash = FakeStash(require_auth=False)
    stash.start()
    stash.add_scene("/stash/x/y/z.mp4")
    try:
        run = run_once({"PLEXSYNC_STASH_URL": stash.url, "PLEXSYNC_PATH_MAP": "swap: /stash/{a}/{b} => /plex/{b}/{a}"})
    finally:
        stash.stop()
    assert run.returncode == 2 and "rule 'swap'" in run.stderr and "/stash/x/y/z.mp4" in run.stderr


@pytest.mark.parametrize("values, needle", [
    ({"PLEXSYNC_PORT": "http"}, "PLEXSYNC_PORT"),
    ({"PLEXSYNC_STASH_URL": "localhost:9999"}, "PLEXSYNC_STASH_URL"),
    ({"PLEXSYNC_PLEX_URL": "http://plex:32400"}, "PLEXSYNC_PLEX_TOKEN: required"),
    ({"PLEXSYNC_PATH_MAP": "a => b => c"}, "PLEXSYNC_PATH_MAP: path_map rule 'rule 1'"),
    ({"PLEXSYNC_GAP_SCHEDULE": "hourly"}, "PLEXSYNC_GAP_SCHEDULE"),
    ({"PLEXSYNC_STASH_APIKEY": "x"}, "PLEXSYNC_STASH_APIKEY: unknown setting"),
])
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(values, needle):
    run = run_once(dict({"PLEXSYNC_STASH_URL": "http://127.0.0.1:9"}, **values))
    assert run.returncode == 2 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], run.stderr


def test_start_up_without_stash_serves_and_reports_it():
    with ProviderProcess({"PLEXSYNC_STASH_URL": f"http://127.0.0.1:{free_port()}"}) as provider:
        assert requests.get(provider.url + "/", timeout=5).status_code == 200
        health = requests.get(provider.url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["stash"]["reachable"] is False
        assert "path rules checked on 0 Plex sample paths only" in provider.log()


def test_sigterm_stops_it_cleanly_and_fast():
    with ProviderProcess({"PLEXSYNC_STASH_URL": f"http://127.0.0.1:{free_port()}"}) as provider:
        started = time.monotonic()
        provider.proc.send_signal(signal.SIGTERM)
        assert provider.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        assert provider.log().rstrip().endswith("stopped")


def test_config_file_settings_and_the_environment_wins(tmp_path):
    stash = FakeStash(api_key=API_KEY)
    stash.start()
    scene_id = stash.add_scene("/m/a.mp4", title="A")
    config = tmp_path / "provider.env"
    config.write_text(f"# provider settings\nPLEXSYNC_STASH_URL={stash.url}\nPLEXSYNC_STASH_API_KEY={API_KEY}\n"
                      "PLEXSYNC_PUBLIC_URL=http://from-file:1\n", encoding="utf-8")
    try:
        with ProviderProcess({"PLEXSYNC_CONFIG": str(config), "PLEXSYNC_PUBLIC_URL": "http://from-env:2"}) as provider:
            item = requests.get(f"{provider.url}/library/metadata/scene-{scene_id}", timeout=10).json()
            assert item["MediaContainer"]["Metadata"][0]["thumb"].startswith("http://from-env:2/img/")
    finally:
        stash.stop()


def test_the_threads_setting_bounds_requests_served_at_once():
    blackhole = socket.socket()  # accepts connections, never answers: Stash calls wait for their timeout
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    stash_url = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    try:
        for threads, blocked in (("1", True), ("4", False)):
            with ProviderProcess({"PLEXSYNC_STASH_URL": stash_url, "PLEXSYNC_THREADS": threads,
                                  "PLEXSYNC_STASH_TIMEOUT": "2"}) as provider:
                slow = threading.Thread(target=requests.get, args=(provider.url + "/library/metadata/scene-1",),
                                        kwargs={"timeout": 20})
                slow.start()
                time.sleep(0.3)
                started = time.monotonic()
                assert requests.get(provider.url + "/", timeout=20).status_code == 200
                waited = time.monotonic() - started
                slow.join()
                assert (waited > 1.0) is blocked, (threads, waited)  # 1 thread: busy with the slow request
    finally:
        blackhole.close()


def test_the_gap_report_is_saved_in_the_data_dir(world):
    path = os.path.join(world.provider.data_dir, "provider-gaps.json")
    world.post("/gaps/scan")
    assert wait_until(lambda: os.path.exists(path), timeout=30)
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["counts"]["stash_scenes"] == len(world.stash.scenes)
