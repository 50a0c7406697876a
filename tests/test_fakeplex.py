"""FakePlex driven only through unmodified python-plexapi and raw requests over HTTP.

State is set up with FakePlex's Python API and inspected afterwards through its Items and
request log; everything in between goes over the wire.
"""
from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest
import requests
from plexapi.exceptions import BadRequest, NotFound, Unauthorized
from plexapi.server import PlexServer

from fakeplex import FakePlex

TOKEN = "test-token"
ROOT = "/data/stash"


@pytest.fixture
def fp():
    fake = FakePlex(token=TOKEN)
    fake.add_section(1, "Stash", [ROOT])
    with fake.running():
        yield fake


@pytest.fixture
def plex(fp):
    return PlexServer(fp.url, TOKEN, timeout=5)


def get(fp, path, token=TOKEN, **kw):
    headers = kw.pop("headers", {})
    if token is not None:
        headers["X-Plex-Token"] = token
    return requests.get(fp.url + path, headers=headers, timeout=5, **kw)


def xml(resp):
    assert resp.status_code == 200, resp.status_code
    return ET.fromstring(resp.content)


def part_files(movie):
    return [p.file for p in movie.iterParts()]


# --------------------------------------------------------------------------- server, auth
def test_identity_answers_without_token(fp):
    root = xml(get(fp, "/identity", token=None))
    assert root.get("machineIdentifier") and root.get("claimed") == "1"


def test_plexserver_reads_root_attributes(plex):
    assert plex.friendlyName == "FakePlex"
    assert plex.version.startswith("1.41.")
    assert len(plex.machineIdentifier) == 40


def test_wrong_token_gets_401_with_empty_body(fp):
    resp = get(fp, "/", token="wrong")
    assert resp.status_code == 401 and resp.content == b""


def test_missing_token_gets_401(fp):
    assert get(fp, "/library/sections", token=None).status_code == 401


def test_token_accepted_as_query_parameter(fp):
    resp = get(fp, "/library/sections", token=None, params={"X-Plex-Token": TOKEN})
    assert resp.status_code == 200


def test_plexapi_raises_unauthorized_on_wrong_token(fp):
    with pytest.raises(Unauthorized):
        PlexServer(fp.url, "wrong", timeout=5)


def test_unknown_route_is_404(fp):
    assert get(fp, "/no/such/route").status_code == 404


def test_responses_are_xml_with_content_length(fp):
    resp = get(fp, "/library/sections")
    assert resp.headers["Content-Type"] == "text/xml;charset=utf-8"
    assert int(resp.headers["Content-Length"]) == len(resp.content)


def test_plexapi_session_reuses_one_keepalive_connection(fp, plex):
    plex.query("/library/sections")
    plex.query("/library")
    plex.fetchItems("/library/sections/1/all?type=1")
    assert fp.accepted_connections == 1


def test_latency_delays_each_request(fp, plex):
    fp.latency_ms = 150
    t0 = time.monotonic()
    plex.query("/library/sections")
    assert time.monotonic() - t0 >= 0.15


# --------------------------------------------------------------------------- sections, lists
def test_sections_lists_section_with_locations(fp, plex):
    fp.add_section(2, "Other", ["/data/other", "/data/more"])
    sections = plex.library.sections()
    assert [(s.key, s.title, s.type) for s in sections] == [(1, "Stash", "movie"), (2, "Other", "movie")]
    assert plex.library.sectionByID(2).locations == ["/data/other", "/data/more"]


def test_section_all_pages_with_small_container_size(fp, plex):
    for i in range(5):
        fp.add_item(1, f"{ROOT}/A/scene{i}.mp4")
    fp.clear_requests()
    movies = plex.library.sectionByID(1).all(container_size=2)
    assert sorted(m.title for m in movies) == [f"scene{i}" for i in range(5)]
    pages = [r for r in fp.requests if r.path == "/library/sections/1/all"]
    assert [r.headers["X-Plex-Container-Start"] for r in pages] == ["0", "2", "4"]


def test_paged_container_reports_size_total_size_and_offset(fp):
    for i in range(5):
        fp.add_item(1, f"{ROOT}/A/scene{i}.mp4")
    root = xml(get(fp, "/library/sections/1/all", params={"type": 1, "X-Plex-Container-Start": 3,
                                                          "X-Plex-Container-Size": 10}))
    assert (root.get("size"), root.get("totalSize"), root.get("offset")) == ("2", "5", "3")
    assert root.get("librarySectionID") == "1" and root.get("viewGroup") == "movie"


def test_unpaged_list_returns_everything(fp):
    for i in range(7):
        fp.add_item(1, f"{ROOT}/A/scene{i}.mp4")
    root = xml(get(fp, "/library/sections/1/all", params={"type": 1}))
    assert len(root.findall("Video")) == 7 and root.get("size") == "7"


def test_list_view_truncates_tags_and_has_no_field_elements(fp):
    fp.add_item(1, f"{ROOT}/a.mp4", locked={"title", "genre"}, tags={
        "genre": list("abcd"), "actor": list("abcde"), "collection": ["c1", "c2"],
        "director": ["d1", "d2"], "writer": ["w1", "w2"], "country": ["x", "y", "z"]})
    video = xml(get(fp, "/library/sections/1/all", params={"type": 1})).find("Video")
    counts = {tag: len(video.findall(tag)) for tag in
              ("Genre", "Role", "Collection", "Director", "Writer", "Country", "Field")}
    assert counts == {"Genre": 2, "Role": 3, "Collection": 1, "Director": 1, "Writer": 1,
                      "Country": 2, "Field": 0}


def test_detail_view_has_all_tags_and_locked_fields(fp):
    item = fp.add_item(1, f"{ROOT}/a.mp4", locked={"title", "genre"},
                       tags={"genre": list("abcd"), "actor": list("abcde")})
    video = xml(get(fp, f"/library/metadata/{item.rating_key}")).find("Video")
    assert [g.get("tag") for g in video.findall("Genre")] == list("abcd")
    assert len(video.findall("Role")) == 5
    assert {(f.get("name"), f.get("locked")) for f in video.findall("Field")} == {("title", "1"), ("genre", "1")}


def test_part_is_nested_inside_media(fp):
    item = fp.add_item(1, [f"{ROOT}/a.mp4", f"{ROOT}/a2.mkv"])
    video = xml(get(fp, f"/library/metadata/{item.rating_key}")).find("Video")
    assert [p.get("file") for p in video.findall("Media/Part")] == item.files


def test_plexapi_list_object_keeps_truncated_genres_until_reload(fp, plex):
    fp.add_item(1, f"{ROOT}/a.mp4", tags={"genre": ["g1", "g2", "g3", "g4"]})
    movie = plex.library.sectionByID(1).all()[0]
    assert [g.tag for g in movie.genres] == ["g1", "g2"]
    movie.reload()
    assert [g.tag for g in movie.genres] == ["g1", "g2", "g3", "g4"]


def test_guid_elements_only_with_include_guids(fp):
    fp.add_item(1, f"{ROOT}/a.mp4", guids=["stash://scene/1"])
    plain = xml(get(fp, "/library/sections/1/all", params={"type": 1})).find("Video")
    with_guids = xml(get(fp, "/library/sections/1/all", params={"type": 1, "includeGuids": 1})).find("Video")
    assert plain.findall("Guid") == []
    assert [g.get("id") for g in with_guids.findall("Guid")] == ["stash://scene/1"]


def test_show_section_without_type_answers_500(fp, plex):
    fp.add_section(2, "Shows", ["/data/shows"], type="show")
    with pytest.raises(BadRequest, match=r"\(500\)"):
        plex.query("/library/sections/2/all")


def test_title_filter_is_case_insensitive_contains(fp, plex):
    fp.add_item(1, f"{ROOT}/a.mp4", title="The Big Scene")
    fp.add_item(1, f"{ROOT}/b.mp4", title="Other")
    found = plex.library.sectionByID(1).search(title="big")
    assert [m.title for m in found] == ["The Big Scene"]


# --------------------------------------------------------------------------- file= filter
def test_file_filter_returns_same_directory_neighbours(fp, plex):
    target = fp.add_item(1, f"{ROOT}/A/target.mp4")
    fp.add_item(1, f"{ROOT}/A/neighbour.mp4")
    fp.add_item(1, f"{ROOT}/B/elsewhere.mp4")
    found = plex.fetchItems(f"/library/sections/1/all?type=1&file={quote(target.files[0])}")
    assert sorted(m.title for m in found) == ["neighbour", "target"]
    exact = [m for m in found if target.files[0] in part_files(m)]
    assert [m.ratingKey for m in exact] == [int(target.rating_key)]


def test_file_filter_matches_basename_substring_case_insensitively(fp, plex):
    fp.add_item(1, f"{ROOT}/A/Some Scene.mp4")
    fp.add_item(1, f"{ROOT}/B/other.mp4")
    found = plex.fetchItems(f"/library/sections/1/all?type=1&file={quote('some scene')}")
    assert [m.title for m in found] == ["Some Scene"]


def test_percent_in_file_name_breaks_file_filter(fp, plex):
    path = f"{ROOT}/50%41 off/scene.mp4"
    fp.add_item(1, path)
    assert plex.fetchItems(f"/library/sections/1/all?type=1&file={quote(path)}") == []
    # escaping for the second decode finds it
    found = plex.fetchItems(f"/library/sections/1/all?type=1&file={quote(quote(path))}")
    assert [part_files(m) for m in found] == [[path]]


# --------------------------------------------------------------------------- edits
def test_batched_edit_sends_one_put_with_fields_tags_and_locks(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4", tags={"genre": ["old"]})
    movie = plex.fetchItem(int(item.rating_key))
    movie.genres  # noqa: B018 - load the tag list editTags builds on
    fp.clear_requests()
    movie.batchEdits()
    movie.editTitle("T2").editSummary("S2").editField("studio", "Studio X", locked=False)
    movie.addGenre("new")
    movie.saveEdits()
    writes = [r for r in fp.requests if r.is_write]
    assert [(r.method, r.path) for r in writes] == [("PUT", "/library/sections/1/all")]
    assert (item.title, item.summary, item.studio) == ("T2", "S2", "Studio X")
    assert item.tags["genre"] == ["old", "new"]
    assert item.locked == {"title", "summary", "genre"}


def test_request_log_parses_query_once(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    plex.fetchItem(int(item.rating_key)).edit(**{"genre[0].tag.tag": "x y", "genre.locked": 1})
    put = [r for r in fp.requests if r.method == "PUT"][-1]
    assert put.query["genre[0].tag.tag"] == ["x y"]
    assert put.query["id"] == [item.rating_key] and put.query["type"] == ["1"]


def test_edit_without_locked_key_does_not_lock(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    plex.fetchItem(int(item.rating_key)).edit(**{"tagline.value": "Witty"})
    assert item.tagline == "Witty" and item.locked == set()


def test_unlock_removes_field_element(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4", locked={"title"})
    movie = plex.fetchItem(int(item.rating_key))
    assert movie.isLocked("title")
    movie.edit(**{"title.locked": 0})
    movie.reload()
    assert not movie.isLocked("title") and item.locked == set()


def test_tag_edit_replaces_whole_list(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4", tags={"genre": ["a", "b", "c"]})
    plex.fetchItem(int(item.rating_key)).edit(**{"genre[1].tag.tag": "y", "genre[0].tag.tag": "x"})
    assert item.tags["genre"] == ["x", "y"]


def test_tag_removal_handles_comma_in_name(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4", tags={"genre": ["Drama", "Action, Adventure", "Keep"]})
    plex.fetchItem(int(item.rating_key)).removeGenre(["Action, Adventure", "Drama"])
    assert item.tags["genre"] == ["Keep"]


def test_actor_edit_maps_to_role_elements(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    movie = plex.fetchItem(int(item.rating_key))
    movie.editTags("actor", ["Ann", "Bob"])
    movie.reload()
    assert [r.tag for r in movie.roles] == ["Ann", "Bob"] and movie.isLocked("actor")


def test_empty_value_clears_field(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4", summary="old", originally_available_at="2024-01-02", year=2024)
    plex.fetchItem(int(item.rating_key)).edit(**{"summary.value": "", "originallyAvailableAt.value": "",
                                                 "year.value": ""})
    assert (item.summary, item.originally_available_at, item.year) == ("", None, None)


def test_year_value_is_stored_as_int(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    plex.fetchItem(int(item.rating_key)).edit(**{"year.value": "2021"})
    assert item.year == 2021


def test_edit_bumps_updated_at(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    before = item.updated_at
    plex.fetchItem(int(item.rating_key)).editSummary("x")
    assert item.updated_at > before


def test_edit_of_several_ids_in_one_put(fp):
    a = fp.add_item(1, f"{ROOT}/a.mp4")
    b = fp.add_item(1, f"{ROOT}/b.mp4")
    resp = requests.put(f"{fp.url}/library/sections/1/all?type=1&id={a.rating_key},{b.rating_key}"
                        "&studio.value=S&studio.locked=1", headers={"X-Plex-Token": TOKEN}, timeout=5)
    assert resp.status_code == 200
    assert (a.studio, b.studio) == ("S", "S")


def test_edit_of_unknown_id_is_404(fp):
    resp = requests.put(f"{fp.url}/library/sections/1/all?type=1&id=9999&title.value=x",
                        headers={"X-Plex-Token": TOKEN}, timeout=5)
    assert resp.status_code == 404


def test_edit_of_id_in_other_section_is_404_and_changes_nothing(fp):
    fp.add_section(2, "Other", ["/data/other"])
    item = fp.add_item(2, "/data/other/a.mp4")
    resp = requests.put(f"{fp.url}/library/sections/1/all?type=1&id={item.rating_key}&title.value=x",
                        headers={"X-Plex-Token": TOKEN}, timeout=5)
    assert resp.status_code == 404 and item.title == "a"


# --------------------------------------------------------------------------- posters, art
def test_upload_poster_from_file_object_stores_bytes_and_new_thumb(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    old_thumb = item.thumb
    plex.fetchItem(int(item.rating_key)).uploadPoster(filepath=io.BytesIO(b"\xff\xd8poster"))
    assert item.poster == b"\xff\xd8poster"
    assert item.thumb != old_thumb and item.thumb.startswith(f"/library/metadata/{item.rating_key}/thumb/")


def test_uploaded_poster_is_served_at_new_thumb_path(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    movie = plex.fetchItem(int(item.rating_key))
    movie.uploadPoster(filepath=io.BytesIO(b"JPEGDATA"))
    movie.reload()
    resp = get(fp, movie.thumb)
    assert resp.content == b"JPEGDATA" and resp.headers["Content-Type"] == "image/jpeg"


def test_upload_art_by_url_records_url(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    plex.fetchItem(int(item.rating_key)).uploadArt(url="http://stash:9999/scene/1/screenshot?t=1&x=a b")
    assert item.art_url == "http://stash:9999/scene/1/screenshot?t=1&x=a b" and item.art is None


# --------------------------------------------------------------------------- errors, faults
def test_unknown_rating_key_raises_not_found(plex):
    with pytest.raises(NotFound):
        plex.fetchItem(9999)


def test_non_numeric_rating_key_is_404(fp):
    assert get(fp, "/library/metadata/abc").status_code == 404


def test_fail_503_raises_bad_request_once_then_recovers(fp, plex):
    fp.fail(503, times=1)
    with pytest.raises(BadRequest, match=r"\(503\).*database is loading"):
        plex.query("/library/sections")
    assert plex.query("/library/sections") is not None


def test_fail_only_hits_matching_paths(fp, plex):
    fp.fail(500, paths=r"/refresh$")
    assert plex.query("/library/sections") is not None
    with pytest.raises(BadRequest, match=r"\(500\)"):
        plex.library.sectionByID(1).update()


def test_fail_without_times_lasts_until_cleared(fp):
    fp.fail(502)
    assert [get(fp, "/identity", token=None).status_code for _ in range(3)] == [502, 502, 502]
    fp.clear_faults()
    assert get(fp, "/identity", token=None).status_code == 200


def test_down_refuses_connections_and_up_serves_same_url(fp):
    url = fp.url
    fp.down()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/identity", timeout=2)
    fp.up()
    assert fp.url == url
    assert requests.get(url + "/identity", timeout=2).status_code == 200


def test_down_cuts_keepalive_connections_of_plexapi_session(fp, plex):
    plex.query("/library/sections")  # open a pooled connection
    fp.down()
    with pytest.raises(requests.exceptions.ConnectionError):
        plex.query("/library/sections")
    fp.up()
    assert plex.query("/library/sections") is not None


# --------------------------------------------------------------------------- scanning
def test_unscanned_file_visible_only_after_folder_scan(fp, plex):
    path = f"{ROOT}/new/fresh.mp4"
    fp.add_unscanned(1, path, title="Fresh")
    query = f"/library/sections/1/all?type=1&file={quote(path)}"
    assert plex.fetchItems(query) == [] and fp.item_by_file(path) is None
    plex.library.sectionByID(1).update(path=f"{ROOT}/new")
    assert fp.scan_requests == [(1, f"{ROOT}/new")]
    assert [m.title for m in plex.fetchItems(query)] == ["Fresh"]
    assert fp.item_by_file(path).title == "Fresh"


def test_scan_of_other_folder_leaves_file_unindexed(fp, plex):
    fp.add_unscanned(1, f"{ROOT}/new/fresh.mp4")
    plex.library.sectionByID(1).update(path=f"{ROOT}/newer")
    assert fp.item_by_file(f"{ROOT}/new/fresh.mp4") is None


def test_full_section_scan_indexes_every_unscanned_file(fp, plex):
    fp.add_unscanned(1, f"{ROOT}/x/one.mp4")
    fp.add_unscanned(1, f"{ROOT}/y/two.mp4")
    plex.library.sectionByID(1).update()
    assert fp.scan_requests == [(1, None)]
    assert sorted(m.title for m in plex.library.sectionByID(1).all()) == ["one", "two"]


def test_deleted_item_disappears(fp, plex):
    item = fp.add_item(1, f"{ROOT}/a.mp4")
    fp.delete_item(item.rating_key)
    with pytest.raises(NotFound):
        plex.fetchItem(int(item.rating_key))
