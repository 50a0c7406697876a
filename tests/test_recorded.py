"""Recorded real PMS responses (Home Assistant fixtures, /work/shared/plex-recorded/) served
over HTTP to unmodified python-plexapi, plus attribute-shape checks that FakePlex copies
their attribute sets.

Each file is served at the URL its README table gives.  ``/library`` (not in the table,
plexapi asks for it before listing sections) gets empty_library.xml, whose identifier is
the library's.
"""
from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

RECORDED = Path(__file__).resolve().parents[2] / "shared" / "plex-recorded"
if not RECORDED.is_dir():
    pytest.skip(f"recorded PMS responses not found at {RECORDED}", allow_module_level=True)

from plexapi.exceptions import NotFound  # noqa: E402
from plexapi.library import FilteringSort, MovieSection, ShowSection  # noqa: E402
from plexapi.server import PlexServer  # noqa: E402

from fakeplex import FakePlex  # noqa: E402

NAME = "Recorded PMS"
MACHINE_ID = "unique_id_123"
TOKEN = "recorded-token"


def load(name: str) -> bytes:
    text = (RECORDED / name).read_text(encoding="utf-8")
    if name == "plex_server_base.xml":  # HA fills these with str.format
        text = text.replace("{name}", NAME).replace("{machine_identifier}", MACHINE_ID)
    return text.encode("utf-8")


def pick(path: str, query: dict[str, list[str]], headers) -> str | None:
    """README table: request -> recorded file name."""
    fixed = {
        "/": "plex_server_base.xml",
        "/library": "empty_library.xml",
        "/library/sections": "library_sections.xml",
        "/library/sections/1/collections": "library_movies_collections.xml",
        "/library/sections/1/sorts": "library_movies_sort.xml",
        "/library/sections/2/all": "library_tvshows_all.xml",
        "/library/metadata/1": "media_1.xml",
        "/library/onDeck": "empty_library.xml",
        "/clients": "empty_payload.xml",
    }
    if path == "/library/sections/1/all":
        if "includeMeta" in query:
            return "library_movies_filtertypes.xml"
        size = query.get("X-Plex-Container-Size", [headers.get("X-Plex-Container-Size")])[0]
        return "library_movies_size.xml" if size == "0" else "library_movies_all.xml"
    return fixed.get(path)


class _RecordedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - keep stderr quiet
        pass

    def do_GET(self):
        split = urlsplit(self.path)
        name = pick(split.path.rstrip("/") or "/", parse_qs(split.query), self.headers)
        body = load(name) if name else b""
        self.send_response(200 if name else 404)
        self.send_header("Content-Type", "text/xml;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def recorded_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordedHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def plex(recorded_url):
    return PlexServer(recorded_url, TOKEN, timeout=5)


# --------------------------------------------------------------------------- plexapi parses them
def test_server_base_gives_plexserver_attributes(plex):
    assert (plex.friendlyName, plex.machineIdentifier) == (NAME, MACHINE_ID)
    assert plex.version == "1.20.4.3517-ab5e1197c" and plex.platform == "Linux"
    assert plex.myPlexUsername == "myplexusername@email.com"


def test_sections_parse_with_types_and_locations(plex):
    sections = plex.library.sections()
    assert [(s.key, s.type, s.title) for s in sections] == [
        (1, "movie", "Movies"), (2, "show", "TV Shows"), (3, "artist", "Music")]
    assert isinstance(sections[0], MovieSection) and isinstance(sections[1], ShowSection)
    assert sections[0].locations == ["/storage/movies"]


def test_movies_list_parses_five_movies_with_list_view_tags(plex):
    movies = plex.library.sectionByID(1).all()
    assert [m.title for m in movies] == [f"Movie {i}" for i in range(1, 6)]
    first = movies[0]
    assert (first.ratingKey, first.year, first.librarySectionID) == (1, 2000, 1)
    assert [g.tag for g in first.genres] == ["Sci-Fi", "Action"]
    assert [r.tag for r in first.roles] == ["Actor 1", "Actor 2", "Actor 3"]


def test_media_1_detail_parses_but_sibling_parts_are_lost(plex):
    movie = plex.fetchItem(1)
    assert (movie.title, movie.viewOffset, movie.studio) == ("Movie 1", 555, "Studio Entertainment")
    assert movie.media[0].videoResolution == "720"
    # README: <Part> is a sibling of <Media> in this file, so plexapi finds no parts.
    assert movie.media[0].parts == []


def test_size_container_gives_total_view_size(plex):
    assert plex.library.sectionByID(1).totalViewSize() == 1


def test_filtertypes_meta_has_no_file_field(plex):
    section = plex.library.sectionByID(1)
    fields = [f.key for f in section.listFields("movie")]
    assert "title" in fields and "genre" in fields
    assert not any(key.split(".")[-1] == "file" for key in fields)
    assert "file" not in [f.filter for f in section.listFilters("movie")]


def test_search_by_file_raises_not_found_unknown_filter_field(plex):
    with pytest.raises(NotFound, match='Unknown filter field "file"'):
        plex.library.sectionByID(1).search(file="/storage/videos/video.mkv")


def test_show_list_parses_show(plex):
    shows = plex.library.sectionByID(2).all()
    assert [(s.title, s.type, s.childCount) for s in shows] == [("TV Show", "show", 5)]


def test_collections_list_parses_collection(plex):
    collections = plex.fetchItems("/library/sections/1/collections")
    assert [(c.title, c.childCount) for c in collections] == [("My Collection", 6)]


def test_sorts_parse_as_filtering_sorts(plex):
    data = plex.query("/library/sections/1/sorts")
    sorts = [FilteringSort(plex, elem) for elem in data]
    assert [s.key for s in sorts][:2] == ["titleSort", "originallyAvailableAt"] and len(sorts) == 8


def test_empty_payloads_give_empty_lists(plex):
    assert plex.clients() == []
    assert plex.library.onDeck() == []


# --------------------------------------------------------------------------- FakePlex copies shapes
def _rec(name: str) -> ET.Element:
    return ET.fromstring(load(name))


@pytest.fixture(scope="module")
def fake_xml():
    """Raw XML of FakePlex's GET /, /library/sections, a paged list and a detail view."""
    import requests

    fp = FakePlex(token=TOKEN)
    fp.add_section(1, "Stash", ["/data/stash"])
    fp.add_item(1, "/data/stash/a.mp4", title_sort="a", studio="S", tagline="T", content_rating="R",
                originally_available_at="2024-01-02", year=2024, summary="x", locked={"title"},
                tags={"genre": ["g"], "actor": ["a"], "director": ["d"], "writer": ["w"],
                      "producer": ["p"], "country": ["c"]})
    out = {}
    with fp.running() as url:
        for key, path in (("root", "/"), ("sections", "/library/sections"),
                          ("list", "/library/sections/1/all?type=1&X-Plex-Container-Start=0"
                                   "&X-Plex-Container-Size=10"),
                          ("detail", "/library/metadata/1001")):
            resp = requests.get(url + path, headers={"X-Plex-Token": TOKEN}, timeout=5)
            out[key] = ET.fromstring(resp.content)
    return out


def test_fake_root_has_recorded_server_attribute_set(fake_xml):
    assert set(fake_xml["root"].attrib) == set(_rec("plex_server_base.xml").attrib)


def test_fake_section_directory_has_recorded_attribute_set(fake_xml):
    recorded = _rec("library_sections.xml").find("Directory")
    fake = fake_xml["sections"].find("Directory")
    assert set(fake.attrib) == set(recorded.attrib)
    assert set(fake.find("Location").attrib) == set(recorded.find("Location").attrib)


def test_fake_list_container_attributes_come_from_recorded_containers(fake_xml):
    recorded = set()
    for name in ("library_movies_all.xml", "library_movies_filtertypes.xml", "library_movies_size.xml"):
        recorded |= set(_rec(name).attrib)
    assert set(fake_xml["list"].attrib) <= recorded


def test_fake_video_attributes_come_from_recorded_video(fake_xml):
    recorded = set(_rec("library_movies_all.xml").find("Video").attrib) | {"titleSort"}  # HA titles unsorted
    for view in ("list", "detail"):
        assert set(fake_xml[view].find("Video").attrib) <= recorded, view


def test_fake_media_part_and_tag_attributes_come_from_recorded_detail(fake_xml):
    rec = _rec("media_1.xml").find("Video")
    video = fake_xml["detail"].find("Video")
    assert set(video.find("Media").attrib) <= set(rec.find("Media").attrib)
    assert set(video.find("Media/Part").attrib) <= set(rec.find("Part").attrib)
    for tag in ("Genre", "Role", "Director", "Writer", "Producer", "Country"):
        assert set(video.find(tag).attrib) <= set(rec.find(tag).attrib), tag
