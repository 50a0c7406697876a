"""FakeStash driven only through real ``requests`` over HTTP (plus its setup API).

Facts checked here come from /work/shared/reference/stash-plugin-protocol.md (§N).
"""
from __future__ import annotations

import json
import re
import struct
import time
import zlib
from datetime import datetime, timedelta, timezone

import graphql
import pytest
import requests

from fakestash import REAL_SCHEMA_DIR, FakeStash, load_schema

KEY = "test-api-key"
COOKIE = "sess-cookie-value"

FRAGMENT = """
fragment SceneSync on Scene {
  id title code details date updated_at created_at urls rating100 organized
  studio { id name parent_studio { name } image_path }
  performers { id name gender image_path }
  tags { id name }
  files { id path basename duration size width height }
  paths { screenshot preview stream }
}
"""
Q_SINCE = """query FindScenesUpdatedSince($since: String!, $page: Int!, $perPage: Int!) {
  findScenes(
    filter: {page: $page, per_page: $perPage, sort: "updated_at", direction: ASC}
    scene_filter: {updated_at: {value: $since, modifier: GREATER_THAN}}
  ) {
    count
    scenes { ...SceneSync }
  }
}
""" + FRAGMENT
Q_SINCE_LITERAL = """query {
  findScenes(
    filter: {page: 1, per_page: 100, sort: "updated_at", direction: DESC}
    scene_filter: {updated_at: {value: "2024-01-01T00:00:00", modifier: GREATER_THAN}}
  ) {
    count
    scenes {
      id title code details date updated_at created_at urls rating100 organized
      studio { id name parent_studio { name } image_path }
      performers { id name gender image_path }
      tags { id name }
      files { id path basename duration size width height }
      paths { screenshot preview stream }
    }
  }
}"""
Q_SCENE = "query FindScene($id: ID!) { findScene(id: $id) { ...SceneSync } }\n" + FRAGMENT
Q_BY_PATH = """query FindScenesByPath($path: String!) {
  findScenes(scene_filter: {path: {value: $path, modifier: EQUALS}}, filter: {per_page: -1}) {
    count
    scenes { id files { path } }
  }
}"""
Q_BY_REGEX = """query FindScenesByPathRegex($regex: String!) {
  findScenes(scene_filter: {path: {value: $regex, modifier: MATCHES_REGEX}}, filter: {per_page: -1}) {
    count scenes { id files { path } } }
}"""
Q_INCLUDES = """query FindScenesPathIncludes($fragment: String!) {
  findScenes(scene_filter: {path: {value: $fragment, modifier: INCLUDES}}) { count scenes { id files { path } } }
}"""
Q_BY_FILE_PATH = """query FindScenesByFilePath($path: String!) {
  findScenes(scene_filter: {files_filter: {path: {value: $path, modifier: EQUALS}}}) {
    count scenes { id files { path } } }
}"""
Q_PAGE = """query Page($page: Int, $perPage: Int, $sort: String, $dir: SortDirectionEnum) {
  findScenes(filter: {page: $page, per_page: $perPage, sort: $sort, direction: $dir}) { count scenes { id title } }
}"""
Q_IDS = "query Ids($ids: [ID!]) { findScenes(ids: $ids) { count scenes { id } } }"


def _sources():
    return ["real", "minimal"] if REAL_SCHEMA_DIR.is_dir() else ["minimal"]


@pytest.fixture
def stash():
    s = FakeStash(api_key=KEY)
    with s.running():
        yield s
    assert s.invalid_queries == []


@pytest.fixture(params=_sources())
def any_stash(request):
    s = FakeStash(api_key=KEY, schema=request.param)
    assert s.schema_source == request.param
    with s.running():
        yield s


def post(stash, query, variables=None, operation_name=None, auth="key", session=None):
    headers = {}
    cookies = None
    if auth == "key":
        headers["ApiKey"] = KEY
    elif auth == "cookie":
        cookies = {"session": COOKIE}
    body = {"query": query, "variables": variables}
    if operation_name:
        body["operationName"] = operation_name
    return (session or requests).post(stash.url + "/graphql", json=body, headers=headers, cookies=cookies, timeout=10)


def data(resp):
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def scene_ids(resp, field="findScenes"):
    return [s["id"] for s in data(resp)[field]["scenes"]]


def png_ok(b: bytes) -> bool:
    """Walk the PNG chunks (CRCs), inflate IDAT and check the scanline size."""
    if not b.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    i, kinds, idat, ihdr = 8, [], b"", b""
    while i < len(b):
        (n,) = struct.unpack(">I", b[i:i + 4])
        kind, payload = b[i + 4:i + 8], b[i + 8:i + 8 + n]
        (crc,) = struct.unpack(">I", b[i + 8 + n:i + 12 + n])
        if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
            return False
        kinds.append(kind)
        idat += payload if kind == b"IDAT" else b""
        ihdr = payload if kind == b"IHDR" else ihdr
        i += 12 + n
    width, height, depth, color = struct.unpack(">IIBB", ihdr[:10])
    channels = {2: 3, 6: 4, 0: 1}[color]
    return (kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and depth == 8
            and len(zlib.decompress(idat)) == height * (1 + width * channels))


# --------------------------------------------------------------------------- auth (§6, §11)

def test_session_cookie_is_accepted(stash):
    assert data(post(stash, "{ version { version } }", auth="cookie"))["version"]["version"]


def test_apikey_header_and_query_param_are_accepted(stash):
    assert data(post(stash, "{ configuration { general { apiKey } } }", auth="key")) == \
        {"configuration": {"general": {"apiKey": KEY}}}
    r = requests.post(stash.url + "/graphql?apikey=" + KEY, json={"query": "{ version { hash } }"}, timeout=5)
    assert r.status_code == 200


def test_no_credentials_gives_401_with_empty_body(stash):
    r = post(stash, "{ version { version } }", auth=None)
    assert r.status_code == 401 and r.content == b"" and r.headers["Content-Length"] == "0"
    r = requests.post(stash.url + "/graphql", json={"query": "{ version { version } }"},
                      headers={"ApiKey": "wrong"}, cookies={"session": "wrong"}, timeout=5)
    assert r.status_code == 401


def test_empty_api_key_never_authenticates():
    s = FakeStash(api_key="")
    with s.running():
        r = requests.post(s.url + "/graphql", json={"query": "{ version { version } }"}, headers={"ApiKey": ""},
                          timeout=5)
        assert r.status_code == 401


def test_expired_cookie_gives_401_but_apikey_still_works(stash):
    assert post(stash, "{ version { version } }", auth="cookie").status_code == 200
    stash.expire_cookie()
    r = post(stash, "{ version { version } }", auth="cookie")
    assert r.status_code == 401 and r.content == b""
    # §6 fix: read the API key while the cookie is valid, then send both
    r = requests.post(stash.url + "/graphql", json={"query": "{ version { version } }"},
                      headers={"ApiKey": KEY}, cookies={"session": COOKIE}, timeout=5)
    assert r.status_code == 200


def test_image_route_without_auth_redirects_to_login(stash):
    sid = stash.add_scene("/m/a.mp4")
    r = requests.get(f"{stash.url}/scene/{sid}/screenshot?t=1", allow_redirects=False, timeout=5)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?returnURL=")
    # a redirect-following client ends on an HTML page with 200 (§11: check Content-Type)
    r = requests.get(f"{stash.url}/scene/{sid}/screenshot", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")


def test_require_auth_false_is_open():
    s = FakeStash(require_auth=False)
    with s.running():
        sid = s.add_scene("/m/a.mp4")
        assert requests.post(s.url + "/graphql", json={"query": "{ version { version } }"}, timeout=5).status_code == 200
        r = requests.get(f"{s.url}/scene/{sid}/screenshot", allow_redirects=False, timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"


# --------------------------------------------------------------------------- validation (§10, §10.1)

NEGATIVE = [
    ("modifier GREATER", 'query { findScenes(scene_filter: {updated_at: {value: "2024-01-01", modifier: GREATER}}) '
                         "{ count } }", None),
    ("Scene.rating", 'query { findScene(id: "1") { id rating } }', None),
    ("parent_studio without selection", 'query { findScene(id: "1") { studio { parent_studio } } }', None),
    ("path on Scene", 'query { findScene(id: "1") { id path } }', None),
    ("PluginSetting.displayName", "query { plugins { settings { name displayName } } }", None),
    ("$since: 5", Q_SINCE, {"since": 5, "page": 1, "perPage": 10}),
    ('$perPage: "x"', Q_SINCE, {"since": "2024-01-01", "page": 1, "perPage": "x"}),
    ("sceneUpdate input without id (literal)", 'mutation { sceneUpdate(input: {title: "x"}) { id } }', None),
    ("sceneUpdate input without id (variable)",
     "mutation SceneUpdate($input: SceneUpdateInput!) { sceneUpdate(input: $input) { id updated_at urls } }",
     {"input": {"title": "x"}}),
    ("syntax error", "query { findScenes( { count } }", None),
]


@pytest.mark.parametrize("label,query,variables", NEGATIVE, ids=[n[0] for n in NEGATIVE])
def test_invalid_documents_get_422_and_are_recorded(any_stash, label, query, variables):
    r = post(any_stash, query, variables)
    assert r.status_code == 422, (label, r.text)
    body = r.json()
    assert body["errors"] and body["errors"][0]["message"] and body.get("data") is None
    assert len(any_stash.invalid_queries) == 1
    doc, messages = any_stash.invalid_queries[0]
    assert doc == query and messages
    assert any_stash.requests[-1].status == 422


def test_reference_queries_validate_and_return_data(any_stash):
    s = any_stash
    st = s.add_studio("Net")
    sub = s.add_studio("Sub", st)
    p = s.add_performer("Jane", "FEMALE")
    t = s.add_tag("Drama")
    sid = s.add_scene("/media/a/one.mp4", title="One", studio_id=sub, performer_ids=[p], tag_ids=[t],
                      date="2024-02-03", urls=["https://x.test/1"], rating100=80, code="C1")
    s.plugin_settings["StashPlexSync"] = {"plex_url": "http://plex:32400", "dry_run": True}

    got = data(post(s, Q_SINCE, {"since": "2000-01-01T00:00:00", "page": 1, "perPage": 100}))["findScenes"]
    assert got["count"] == 1
    scene = got["scenes"][0]
    assert scene["studio"] == {"id": sub, "name": "Sub", "parent_studio": {"name": "Net"},
                               "image_path": scene["studio"]["image_path"]}
    assert scene["performers"][0]["gender"] == "FEMALE" and scene["tags"] == [{"id": t, "name": "Drama"}]
    assert scene["urls"] == ["https://x.test/1"] and scene["rating100"] == 80 and scene["code"] == "C1"
    assert scene["files"][0]["path"] == "/media/a/one.mp4" and scene["files"][0]["basename"] == "one.mp4"
    assert isinstance(scene["files"][0]["size"], int) and isinstance(scene["files"][0]["duration"], float)
    assert data(post(s, Q_SINCE_LITERAL))["findScenes"]["count"] == 1
    assert data(post(s, Q_SCENE, {"id": sid}))["findScene"]["id"] == sid
    assert data(post(s, Q_BY_PATH, {"path": "/media/a/one.mp4"}))["findScenes"]["count"] == 1
    assert data(post(s, Q_BY_REGEX, {"regex": "^" + re.escape("/media/a/one.mp4") + "$"}))["findScenes"]["count"] == 1
    assert data(post(s, Q_INCLUDES, {"fragment": "one"}))["findScenes"]["count"] == 1
    assert data(post(s, Q_BY_FILE_PATH, {"path": "/media/a/one.mp4"}))["findScenes"]["count"] == 1
    assert data(post(s, "query PluginSettings { configuration { plugins } }"))["configuration"]["plugins"] == \
        {"StashPlexSync": {"plex_url": "http://plex:32400", "dry_run": True}}
    got = data(post(s, "query PluginSettings($ids: [ID!]) { configuration { plugins(include: $ids) } }",
                    {"ids": ["StashPlexSync", "Other"]}))
    assert got["configuration"]["plugins"] == {"StashPlexSync": {"plex_url": "http://plex:32400", "dry_run": True}}
    got = data(post(s, "query PluginSettings($ids: [ID!]) { configuration { plugins(include: $ids) } }",
                    {"ids": ["Other"]}))
    assert got["configuration"]["plugins"] == {}   # §5: nothing stored -> omitted
    v = data(post(s, "query { version { version hash build_time } }"))["version"]
    assert v["version"].startswith("v0.") and v["hash"] and v["build_time"]
    assert data(post(s, "query { configuration { general { apiKey } } }"))["configuration"]["general"]["apiKey"] == KEY
    assert data(post(s, "query { jobQueue { id status description progress } }"))["jobQueue"] == []
    got = data(post(s, "mutation SceneUpdate($input: SceneUpdateInput!) { sceneUpdate(input: $input) "
                       "{ id updated_at urls } }", {"input": {"id": sid, "urls": ["https://y.test"]}}))
    assert got["sceneUpdate"]["urls"] == ["https://y.test"] and s.scenes[sid]["urls"] == ["https://y.test"]
    assert data(post(s, "query { plugins { id name version enabled tasks { name description } hooks { name hooks } "
                        "settings { name display_name type } } }"))["plugins"] == []
    assert s.invalid_queries == []
    assert all(r.status == 200 for r in s.requests)


def test_minimal_schema_is_a_compatible_subset_of_the_real_one():
    """Every type/field/argument in tests/stash_schema_min.graphql exists with the same
    type in Stash's schema, and no required input field is left out."""
    if not REAL_SCHEMA_DIR.is_dir():
        pytest.skip("real schema not available")
    real, _ = load_schema("real")
    mini, _ = load_schema("minimal")
    problems = []
    for name, mt in mini.type_map.items():
        if name.startswith("__"):
            continue
        rt = real.type_map.get(name)
        if rt is None or type(rt) is not type(mt):
            problems.append(f"{name}: missing or different kind")
            continue
        if isinstance(mt, graphql.GraphQLEnumType):
            problems += [f"{name}.{v}" for v in mt.values if v not in rt.values]
        if isinstance(mt, (graphql.GraphQLObjectType, graphql.GraphQLInputObjectType)):
            for fname, mf in mt.fields.items():
                rf = rt.fields.get(fname)
                if rf is None or str(rf.type) != str(mf.type):
                    problems.append(f"{name}.{fname}: {mf.type} vs {rf.type if rf else None}")
                    continue
                for aname, ma in getattr(mf, "args", {}).items():
                    ra = rf.args.get(aname)
                    if ra is None or str(ra.type) != str(ma.type):
                        problems.append(f"{name}.{fname}({aname})")
            if isinstance(mt, graphql.GraphQLInputObjectType):
                for fname, rf in rt.fields.items():
                    if graphql.is_non_null_type(rf.type) and rf.default_value is graphql.Undefined \
                            and fname not in mt.fields:
                        problems.append(f"{name}.{fname} required in real schema")
    assert problems == []


def test_resolver_error_is_200_with_partial_data(stash):
    sid = stash.add_scene("/m/a.mp4", title="A")
    r = post(stash, f'query {{ a: findScene(id: "{sid}") {{ id title }} b: findScene(id: "x1") {{ id }} }}')
    assert r.status_code == 200
    body = r.json()
    assert body["data"] == {"a": {"id": sid, "title": "A"}, "b": None}
    assert "invalid syntax" in body["errors"][0]["message"] and body["errors"][0]["path"] == ["b"]
    # an error in a non-null root field nulls the whole data (gqlgen does the same)
    r = post(stash, 'query { findScenes(filter: {sort: "updated_at; DROP TABLE"}) { count } }')
    assert r.status_code == 200 and r.json()["data"] is None and "invalid sort" in r.json()["errors"][0]["message"]


def test_sort_outside_whitelist_is_an_error(stash):
    stash.add_scene("/m/a.mp4")
    r = post(stash, Q_PAGE, {"sort": "title DESC, id"})
    assert r.status_code == 200 and r.json()["data"] is None and r.json()["errors"]
    for ok in ("id", "updated_at", "created_at", "title", "path", "date", "random", "rating"):
        data(post(stash, Q_PAGE, {"sort": ok}))


# --------------------------------------------------------------------------- filters (§10.2)

def test_path_equals_is_a_case_insensitive_like_with_wildcards(stash):
    a = stash.add_scene("/media/clip_1.mp4")
    b = stash.add_scene("/media/clipX1.mp4")          # `_` matches one character
    c = stash.add_scene("/MEDIA/CLIP_1.MP4")          # ASCII case-insensitive
    stash.add_scene("/media/clip__1.mp4")             # `_` is exactly one character
    d = stash.add_scene("/media/Élan.mp4")
    stash.add_scene("/media/élan.mp4")                # non-ASCII letters are case-sensitive
    got = data(post(stash, Q_BY_PATH, {"path": "/media/clip_1.mp4"}))["findScenes"]
    assert [s["id"] for s in got["scenes"]] == [a, b, c] and got["count"] == 3
    exact = [s["id"] for s in got["scenes"] if any(f["path"] == "/media/clip_1.mp4" for f in s["files"])]
    assert exact == [a]
    assert scene_ids(post(stash, Q_BY_FILE_PATH, {"path": "/media/clip_1.mp4"})) == [a, b, c]
    assert scene_ids(post(stash, Q_BY_PATH, {"path": "/media/Élan.mp4"})) == [d]
    assert len(scene_ids(post(stash, Q_BY_PATH, {"path": "/media/%"}))) == 6   # `%` is a wildcard too


def test_path_matches_every_file_of_a_scene(stash):
    two = stash.add_scene(["/m/a/first.mp4", "/m/b/second.mkv"])
    assert scene_ids(post(stash, Q_BY_PATH, {"path": "/m/b/second.mkv"})) == [two]
    got = data(post(stash, Q_BY_PATH, {"path": "/m/b/second.mkv"}))["findScenes"]["scenes"][0]
    assert [f["path"] for f in got["files"]] == ["/m/a/first.mp4", "/m/b/second.mkv"]


def test_path_includes_regex_and_not_equals(stash):
    a = stash.add_scene("/m/red apple.mp4")
    b = stash.add_scene("/m/green pear.mp4")
    c = stash.add_scene("/m/Red Pear.mp4")
    assert scene_ids(post(stash, Q_INCLUDES, {"fragment": "apple pear"})) == [a, b, c]     # words ORed
    assert scene_ids(post(stash, Q_INCLUDES, {"fragment": '"red pear"'})) == [c]           # quoted phrase
    assert scene_ids(post(stash, Q_BY_REGEX, {"regex": "Red"})) == [c]                     # case-sensitive
    assert scene_ids(post(stash, Q_BY_REGEX, {"regex": "^" + re.escape("/m/red apple.mp4") + "$"})) == [a]
    q = 'query($v: String!) { findScenes(scene_filter: {path: {value: $v, modifier: NOT_EQUALS}}) { scenes { id } } }'
    assert scene_ids(post(stash, q, {"v": "/m/red apple.mp4"})) == [b, c]
    bad = post(stash, 'query($v: String!) { findScenes(scene_filter: {path: {value: $v, modifier: GREATER_THAN}}) '
                      "{ count } }", {"v": "x"})
    assert bad.status_code == 200 and bad.json()["errors"]                             # unsupported modifier
    bad = post(stash, Q_BY_REGEX, {"regex": "(?=x)"})                                  # not RE2 syntax
    assert bad.status_code == 200 and bad.json()["errors"]


def test_updated_at_greater_than_is_a_raw_string_compare(stash):
    a = stash.add_scene("/m/a.mp4")
    b = stash.add_scene("/m/b.mp4")
    ua, ub = stash.scenes[a]["updated_at"], stash.scenes[b]["updated_at"]
    assert ua.endswith("+10:00") and ua < ub
    since = 'query($v: String!) { findScenes(scene_filter: {updated_at: {value: $v, modifier: GREATER_THAN}}, ' \
            'filter: {per_page: -1, sort: "updated_at"}) { scenes { id updated_at } } }'
    assert scene_ids(post(stash, since, {"v": ua})) == [b]
    # naive value of the same second sorts before "...+10:00": that second is included
    assert scene_ids(post(stash, since, {"v": ua[:19]})) == [a, b]
    # a UTC "Z" value for an instant one hour AFTER both scenes still returns both
    later_utc = (datetime.fromisoformat(ub) + timedelta(hours=1)).astimezone(timezone.utc)
    assert scene_ids(post(stash, since, {"v": later_utc.strftime("%Y-%m-%dT%H:%M:%SZ")})) == [a, b]
    # the output keeps the stored offset
    assert data(post(stash, since, {"v": ""}))["findScenes"]["scenes"][0]["updated_at"] == ua
    less = since.replace("GREATER_THAN", "LESS_THAN")
    assert scene_ids(post(stash, less, {"v": ub})) == [a]
    between = 'query($v: String!, $w: String) { findScenes(scene_filter: {updated_at: {value: $v, value2: $w, ' \
              'modifier: BETWEEN}}) { scenes { id } } }'
    assert scene_ids(post(stash, between, {"v": ua, "w": ua})) == [a]
    assert scene_ids(post(stash, between, {"v": ua})) == [a, b]      # value2 missing = now + 1 day


def test_updates_are_strictly_increasing_within_one_second(stash):
    sid = stash.add_scene("/m/a.mp4")
    stamps = [stash.scenes[sid]["updated_at"]]
    for i in range(5):
        stash.update_scene(sid, title=f"t{i}")
        stamps.append(stash.scenes[sid]["updated_at"])
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stash.scenes[sid]["created_at"] == stamps[0]
    got = data(post(stash, Q_SCENE, {"id": sid}))["findScene"]
    assert got["updated_at"] == stamps[-1] and got["title"] == "t4"
    t = int(datetime.fromisoformat(stamps[-1]).timestamp())
    assert got["paths"]["screenshot"].endswith(f"/scene/{sid}/screenshot?t={t}")


def test_other_offsets_are_used_verbatim():
    s = FakeStash(require_auth=False, offset="-05:30")
    sid = s.add_scene("/m/a.mp4")
    assert s.scenes[sid]["updated_at"].endswith("-05:30")
    assert FakeStash(offset="Z").now_string().endswith("Z")


def test_paging_count_and_per_page_all(stash):
    ids = [stash.add_scene(f"/m/{i:03d}.mp4", title=f"T{i:03d}") for i in range(60)]
    got = data(post(stash, Q_PAGE, {}))["findScenes"]
    assert got["count"] == 60 and [s["id"] for s in got["scenes"]] == ids[:25]      # default per_page 25
    got = data(post(stash, Q_PAGE, {"page": 3, "perPage": 25}))["findScenes"]
    assert got["count"] == 60 and [s["id"] for s in got["scenes"]] == ids[50:]
    got = data(post(stash, Q_PAGE, {"page": 9, "perPage": 25}))["findScenes"]
    assert got["count"] == 60 and got["scenes"] == []
    got = data(post(stash, Q_PAGE, {"perPage": -1, "page": 2}))["findScenes"]       # -1 = all, page ignored
    assert len(got["scenes"]) == 60
    got = data(post(stash, Q_PAGE, {"perPage": 10, "sort": "id", "dir": "DESC"}))["findScenes"]
    assert [s["id"] for s in got["scenes"]] == ids[::-1][:10]
    got = data(post(stash, Q_PAGE, {"perPage": 5, "sort": "title", "dir": "DESC"}))["findScenes"]
    assert [s["title"] for s in got["scenes"]] == ["T059", "T058", "T057", "T056", "T055"]


def test_find_scenes_by_ids_follows_stash_find_many(stash):
    a, b, c = (stash.add_scene(f"/m/{x}.mp4") for x in "abc")
    assert scene_ids(post(stash, Q_IDS, {"ids": [c, a]})) == [c, a]                  # order kept
    q = "query($ids: [Int!]) { findScenes(scene_ids: $ids, filter: {per_page: 1}) { count scenes { id } } }"
    assert scene_ids(post(stash, q, {"ids": [int(b), int(a)]})) == [b, a]            # paging ignored
    stash.delete_scene(b)
    r = post(stash, Q_IDS, {"ids": [a, b]})
    assert r.status_code == 200 and r.json()["data"] is None
    assert r.json()["errors"][0]["message"] == f"scene with id {b} not found"
    assert data(post(stash, Q_SCENE, {"id": b}))["findScene"] is None                # findScene: null


def test_performer_tag_studio_filters(stash):
    net = stash.add_studio("Net")
    child = stash.add_studio("Child", net)
    p1, p2 = stash.add_performer("P1"), stash.add_performer("P2")
    t1, t2 = stash.add_tag("T1"), stash.add_tag("T2")
    a = stash.add_scene("/m/a.mp4", studio_id=net, performer_ids=[p1], tag_ids=[t1, t2])
    b = stash.add_scene("/m/b.mp4", studio_id=child, performer_ids=[p1, p2], tag_ids=[t2])
    c = stash.add_scene("/m/c.mp4")
    q = "query($f: SceneFilterType) { findScenes(scene_filter: $f, filter: {per_page: -1}) { scenes { id } } }"

    def ids(f):
        return scene_ids(post(stash, q, {"f": f}))

    assert ids({"performers": {"value": [p2], "modifier": "INCLUDES"}}) == [b]
    assert ids({"performers": {"value": [p1, p2], "modifier": "INCLUDES_ALL"}}) == [b]
    assert ids({"performers": {"value": [p2], "modifier": "EXCLUDES"}}) == [a, c]
    assert ids({"tags": {"value": [t1, t2], "modifier": "INCLUDES"}}) == [a, b]
    assert ids({"tags": {"modifier": "IS_NULL"}}) == [c]
    assert ids({"studios": {"value": [net], "modifier": "INCLUDES"}}) == [a]
    assert ids({"studios": {"value": [net], "modifier": "INCLUDES", "depth": -1}}) == [a, b]
    assert ids({"performers": {"value": [p1], "modifier": "INCLUDES"},
                "OR": {"studios": {"modifier": "IS_NULL"}}}) == [a, b, c]
    r = post(stash, q, {"f": {"is_missing": "cover"}})
    assert r.status_code == 200 and "not implemented" in r.json()["errors"][0]["message"]


def test_partial_dates_round_trip(stash):
    y = stash.add_scene("/m/y.mp4", date="2019")
    ym = stash.add_scene("/m/ym.mp4", date="2020-07")
    full = stash.add_scene("/m/f.mp4", date="2021-01-02")
    none = stash.add_scene("/m/n.mp4")
    got = {s["id"]: s["date"] for s in data(post(stash, "{ findScenes(filter: {per_page: -1, sort: \"date\"}) "
                                                          "{ scenes { id date } } }"))["findScenes"]["scenes"]}
    assert got == {y: "2019", ym: "2020-07", full: "2021-01-02", none: None}
    assert list(got) == [none, y, ym, full]                                           # NULL first in ASC
    with pytest.raises(ValueError):
        stash.add_scene("/m/bad.mp4", date="2019-7")


def test_rename_performer_studio_tag_leaves_scene_updated_at_unchanged(stash):
    p = stash.add_performer("Old Name", "MALE")
    st = stash.add_studio("Old Studio")
    t = stash.add_tag("Old Tag")
    sid = stash.add_scene("/m/a.mp4", performer_ids=[p], studio_id=st, tag_ids=[t])
    before = stash.scenes[sid]["updated_at"]
    stash.rename_performer(p, "New Name")
    stash.rename_studio(st, "New Studio")
    stash.rename_tag(t, "New Tag")
    assert stash.scenes[sid]["updated_at"] == before
    got = data(post(stash, Q_SCENE, {"id": sid}))["findScene"]
    assert got["updated_at"] == before
    assert (got["performers"][0]["name"], got["studio"]["name"], got["tags"][0]["name"]) == \
        ("New Name", "New Studio", "New Tag")
    # so an incremental query by updated_at does NOT see the rename (§12.7)
    assert data(post(stash, Q_SINCE, {"since": before, "page": 1, "perPage": 50}))["findScenes"]["count"] == 0


def test_scene_urls_use_the_request_host(stash):
    sid = stash.add_scene("/m/a.mp4")
    p = stash.add_performer("With image")
    q = stash.add_performer("No image", has_image=False)
    stash.update_scene(sid, performer_ids=[p, q])
    r = requests.post(stash.url + "/graphql", headers={"ApiKey": KEY, "Host": "stash.local:9999"},
                      json={"query": Q_SCENE, "variables": {"id": sid}}, timeout=5)
    got = data(r)["findScene"]
    assert got["paths"]["preview"] == f"http://stash.local:9999/scene/{sid}/preview"
    assert got["paths"]["stream"] == f"http://stash.local:9999/scene/{sid}/stream?apikey={KEY}"
    assert re.fullmatch(rf"http://stash\.local:9999/performer/{p}/image\?t=\d+", got["performers"][0]["image_path"])
    assert got["performers"][1]["image_path"].endswith("&default=true")


# --------------------------------------------------------------------------- images (§11)

def test_images_are_real_png_and_mp4_with_content_types(stash):
    sid = stash.add_scene("/m/a.mp4")
    bare = stash.add_scene("/m/b.mp4", has_cover=False)
    p = stash.add_performer("P")
    st = stash.add_studio("S", has_image=False)
    h = {"ApiKey": KEY}
    r = requests.get(f"{stash.url}/scene/{sid}/screenshot?t=123", headers=h, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert png_ok(r.content) and r.content == stash.scene_cover_bytes(sid)
    assert int(r.headers["Content-Length"]) == len(r.content)
    first = r.content
    stash.update_scene(sid, title="new cover version", cover=True)
    r = requests.get(f"{stash.url}/scene/{sid}/screenshot", headers=h, timeout=5)
    assert png_ok(r.content) and r.content != first and r.content == stash.scene_cover_bytes(sid)
    ph = requests.get(f"{stash.url}/scene/{bare}/screenshot", headers=h, timeout=5)
    assert ph.status_code == 200 and png_ok(ph.content) and ph.content == stash.scene_cover_bytes(bare)
    r = requests.get(f"{stash.url}/scene/{sid}/preview", cookies={"session": COOKIE}, timeout=5)
    assert r.headers["Content-Type"] == "video/mp4" and r.content[4:12] == b"ftypisom"
    r = requests.get(f"{stash.url}/performer/{p}/image?t=1", headers=h, timeout=5)
    assert r.headers["Content-Type"] == "image/png" and png_ok(r.content)
    r = requests.get(f"{stash.url}/studio/{st}/image?t=1&default=true", headers=h, timeout=5)
    assert r.status_code == 200 and png_ok(r.content)
    assert requests.get(f"{stash.url}/scene/999/screenshot", headers=h, timeout=5).status_code == 404
    assert requests.get(f"{stash.url}/performer/999/image", headers=h, timeout=5).status_code == 404


# --------------------------------------------------------------------------- stdin, log, server

def test_server_connection_matches_stash_stdin(stash):
    conn = stash.server_connection(plugin_dir="/p/StashPlexSync", config_dir="/root/.stash")
    json.dumps(conn)
    assert conn["Scheme"] == "http" and conn["Host"] == "0.0.0.0" and conn["Port"] == stash.port
    assert isinstance(conn["Port"], int) and conn["Dir"] == "/root/.stash" and conn["PluginDir"] == "/p/StashPlexSync"
    ck = conn["SessionCookie"]
    assert (ck["Name"], ck["Value"], ck["Path"], ck["MaxAge"]) == ("session", COOKIE, "/", 3600)
    assert "ApiKey" not in json.dumps(conn)
    host = "127.0.0.1" if conn["Host"] in ("", "0.0.0.0") else conn["Host"]
    r = requests.post(f"{conn['Scheme']}://{host}:{conn['Port']}/graphql", json={"query": "{ version { version } }"},
                      cookies={ck["Name"]: ck["Value"]}, timeout=5)
    assert r.status_code == 200


def test_request_log_and_keep_alive(stash):
    sess = requests.Session()
    for _ in range(5):
        post(stash, Q_SINCE, {"since": "", "page": 1, "perPage": 5}, session=sess)
    post(stash, "query { version { version } }", session=sess)
    assert stash.accepted_connections == 1
    reqs = stash.requests
    assert [r.operation_name for r in reqs] == ["FindScenesUpdatedSince"] * 5 + [None]
    assert reqs[0].path == "/graphql" and reqs[0].method == "POST" and reqs[0].status == 200
    assert reqs[0].variables == {"since": "", "page": 1, "perPage": 5} and reqs[0].headers["apikey"] == KEY
    assert stash.queries[0] == Q_SINCE


def test_latency_stop_and_restart_on_same_port():
    s = FakeStash(api_key=KEY, latency_ms=150)
    url = s.start()
    try:
        t = time.monotonic()
        post(s, "{ version { version } }")
        assert time.monotonic() - t >= 0.15
        s.latency_ms = 0
        sess = requests.Session()
        post(s, "{ version { version } }", session=sess)
        s.stop()
        assert not s.is_running
        with pytest.raises(requests.ConnectionError):
            post(s, "{ version { version } }", session=sess)
        assert s.start() == url
        assert post(s, "{ version { version } }", session=sess).status_code == 200
    finally:
        s.stop()


def test_hostile_text_round_trips_exactly(stash):
    title = "Tab\t|NUL\x00|ESC\x1b|DEL\x7f|👨‍👩‍👧‍👦|שלום|%_\\\"'"
    sid = stash.add_scene("/m/100% real_deal.mp4", title=title, details="x" * 50000)
    got = data(post(stash, Q_SCENE, {"id": sid}))["findScene"]
    assert got["title"] == title and len(got["details"]) == 50000


# --------------------------------------------------------------------------- library

def _fakeplex():
    return pytest.importorskip("fakeplex").FakePlex


def test_build_library_300_is_consistent():
    from library import build_library

    FakePlex = _fakeplex()
    s, plex = FakeStash(api_key=KEY), FakePlex()
    lib = build_library(s, plex, 300, seed=7)
    assert len(lib.scene_ids) == len(s.scenes) == 300 and len(set(lib.scene_ids)) == 300
    assert set(lib.in_plex) | set(lib.missing) == set(lib.scene_ids) and not set(lib.in_plex) & set(lib.missing)
    assert lib.path_map == "media: /stash/media/{rest} => /plex/media/{rest}"
    items = plex.items
    for sid, rk in lib.in_plex.items():
        item = items[rk]
        assert item.files == lib.plex_paths(sid) and lib.plex_path(sid) in item.files
        assert all(p.startswith("/stash/media/") for p in lib.stash_paths(sid))
        base = lib.plex_path(sid).rsplit("/", 1)[-1]
        if "\\" not in base:   # FakePlex also splits file names on "\\" (Windows paths)
            assert item.title == base.rsplit(".", 1)[0]
        assert item.summary == "" and item.studio == "" and item.originally_available_at is None
        assert not any(item.tags.values())
    for sid in lib.missing:
        assert plex.item_by_file(lib.plex_path(sid)) is None
    assert len(items) == len(lib.in_plex)
    # hostile specials are all there
    for label in ("control", "emoji", "long", "many_tags", "like_twin_a", "like_twin_b", "case_a", "case_b",
                  "dup_basename_a", "dup_basename_b", "year_only", "year_month", "empty_title", "bare",
                  "two_files", "comma_names", "percent_underscore", "cjk", "arabic"):
        assert label in lib.special, label
    sc = s.scenes
    assert len(sc[lib.special["many_tags"]]["tag_ids"]) == 150
    assert len(sc[lib.special["long"]]["title"]) == 1000 and len(sc[lib.special["long"]]["details"]) == 50000
    assert sc[lib.special["year_only"]]["date"] == "2019" and sc[lib.special["year_month"]]["date"] == "2020-07"
    assert any(ord(ch) < 32 for ch in sc[lib.special["control"]]["title"])
    assert "\u200d" in sc[lib.special["emoji"]]["title"]
    assert lib.stash_path(lib.special["case_a"]).lower() == lib.stash_path(lib.special["case_b"]).lower()
    assert lib.stash_path(lib.special["case_a"]) != lib.stash_path(lib.special["case_b"])
    bare = sc[lib.special["bare"]]
    assert bare["studio_id"] is None and bare["performer_ids"] == [] and bare["tag_ids"] == []
    assert any("," in p["name"] for p in s.performers.values()) and any("," in t["name"] for t in s.tags.values())
    assert any(st["parent_id"] for st in s.studios.values())
    # deterministic for a seed
    s2 = FakeStash()
    lib2 = build_library(s2, FakePlex(), 300, seed=7)
    assert [s2.scenes[i]["title"] for i in lib2.scene_ids] == [sc[i]["title"] for i in lib.scene_ids]
    assert lib2.missing == lib.missing
    # and the data is served over HTTP without validation problems
    with s.running():
        twin = lib.stash_path(lib.special["like_twin_a"])
        got = scene_ids(post(s, Q_BY_PATH, {"path": twin}))
        assert got == sorted([lib.special["like_twin_a"], lib.special["like_twin_b"]], key=int)
        for label in ("control", "long", "emoji", "many_tags"):
            scene = data(post(s, Q_SCENE, {"id": lib.special[label]}))["findScene"]
            assert scene["title"] == sc[lib.special[label]]["title"]
        total = data(post(s, Q_SINCE, {"since": "", "page": 1, "perPage": 1000}))["findScenes"]
        assert total["count"] == 300 and len(total["scenes"]) == 300
        assert s.invalid_queries == []


def test_build_library_100k_scenes_benchmark_under_10s():
    """Benchmark-size library: 100,000 scenes with FakePlex in well under ~10 s."""
    from library import build_library

    FakePlex = _fakeplex()
    s, plex = FakeStash(), FakePlex()
    t = time.monotonic()
    lib = build_library(s, plex, 100_000)
    elapsed = time.monotonic() - t
    assert len(s.scenes) == 100_000 and len(lib.in_plex) + len(lib.missing) == 100_000
    assert 0.03 < len(lib.missing) / 100_000 < 0.07
    assert elapsed < 10, elapsed
