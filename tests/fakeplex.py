"""In-process fake Plex Media Server for tests (stdlib only).

Unmodified python-plexapi (``PlexServer``, ``library.sections()``, ``fetchItem(s)``,
``edit``/``batchEdits``/``saveEdits``/``editTags``, ``uploadPoster``/``uploadArt``,
``section.update(path=...)``, ``section.all()``) and raw ``requests`` work against it.

Every behaviour mirrors a fact of ``/work/shared/reference/plex-server-api.md`` (cited as
"ref §N") or the attribute sets of the recorded real responses in
``/work/shared/plex-recorded/`` (cited as "recorded <file>").  Points the reference marks
[unverified] are implemented one plausible way and say so in their docstring.

Usage::

    fp = FakePlex(token="tok")
    fp.add_section(1, "Stash", ["/data/stash"])
    item = fp.add_item(1, "/data/stash/A/scene.mp4", tags={"genre": ["g1"]})
    with fp.running() as url:
        plex = plexapi.server.PlexServer(url, "tok")
        ...
    assert fp.items[item.rating_key].title == "..."
"""
from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakePlex", "Item", "Req", "Fault", "TAG_ELEMENTS", "LIST_TAG_LIMITS"]

MACHINE_IDENTIFIER = "f4k3p13x0000000000000000000000000000c0de"
VERSION = "1.41.3.9314-a0bfb8370"
MEDIA_TAG_PREFIX = "/system/bundle/media/flags/"
MEDIA_TAG_VERSION = "1731425367"
XML_CT = "text/xml;charset=utf-8"

#: Edit name (``genre[0].tag.tag``) -> XML element name (ref §4, §5.1).
TAG_ELEMENTS = {
    "genre": "Genre",
    "actor": "Role",
    "collection": "Collection",
    "director": "Director",
    "writer": "Writer",
    "producer": "Producer",
    "label": "Label",
    "country": "Country",
}

#: How many tags of each kind a LIST view (``/all``) carries (ref §5.4: ~2 Genre, 3 Role per
#: item).  Director/Writer/Country/Collection limits are [unverified] (values from the brief);
#: Producer and Label are [unverified] guesses, kept truncating so callers must reload.
LIST_TAG_LIMITS = {
    "genre": 2,
    "actor": 3,
    "collection": 1,
    "director": 1,
    "writer": 1,
    "producer": 1,
    "label": 1,
    "country": 2,
}

#: Edit field name (``title.value``) -> Item attribute (ref §5.1, §5.2).
EDIT_FIELDS = {
    "title": "title",
    "titleSort": "title_sort",
    "summary": "summary",
    "studio": "studio",
    "tagline": "tagline",
    "contentRating": "content_rating",
    "originallyAvailableAt": "originally_available_at",
    "year": "year",
}
# Fields that become None (attribute omitted from XML) when cleared; the others become "".
_NULLABLE_FIELDS = {"title_sort", "originally_available_at", "year"}

_TAG_SET_RE = re.compile(r"^(?P<tag>\w+)\[(?P<idx>\d+)\]\.tag\.tag$")
_TAG_DEL_RE = re.compile(r"^(?P<tag>\w+)\[\]\.tag\.tag-$")
_VALUE_RE = re.compile(r"^(?P<field>\w+)\.value$")
_LOCK_RE = re.compile(r"^(?P<field>\w+)\.locked$")


def _empty_tags() -> dict[str, list[str]]:
    return {name: [] for name in TAG_ELEMENTS}


@dataclass
class Item:
    """Plain mutable state of one indexed movie (one Media with one Part per file)."""

    rating_key: str
    section_key: int
    title: str
    files: list[str] = field(default_factory=list)
    title_sort: str | None = None
    summary: str = ""
    studio: str = ""
    tagline: str = ""
    originally_available_at: str | None = None  # "YYYY-MM-DD"
    year: int | None = None
    content_rating: str = ""
    tags: dict[str, list[str]] = field(default_factory=_empty_tags)  # keys: edit names
    locked: set[str] = field(default_factory=set)  # "title", "genre", "thumb", ...
    guids: list[str] = field(default_factory=list)  # <Guid id=..> values (extension)
    poster: bytes | None = None
    art: bytes | None = None
    poster_url: str | None = None
    art_url: str | None = None
    thumb: str = ""
    art_path: str = ""
    added_at: int = 0
    updated_at: int = 0


#: Item fields that XML views may show: the cache key of a rendered list-view <Video>.
_ITEM_KEY_FIELDS = tuple(f.name for f in dataclass_fields(Item) if f.name not in ("poster", "art"))


def _frozen(value):
    """A comparable snapshot of an Item field value (lists, sets and dicts of lists copied)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, set):
        return frozenset(value)
    if isinstance(value, dict):
        return tuple((k, tuple(v)) for k, v in value.items())
    return value


@dataclass
class Req:
    """One request as the server saw it; ``query`` is parsed once, like a server would."""

    method: str
    path: str  # percent-decoded path, no query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    body_len: int
    t: float  # time.time() on arrival
    status: int = 0  # filled in once answered (extension)

    @property
    def is_write(self) -> bool:
        return self.method in ("PUT", "POST", "DELETE")


@dataclass
class Fault:
    """An injected failure.  ``times`` None = until cleared; ``paths`` = regex searched in
    the request path (None = every path).  Subclass and override :meth:`respond` for other
    kinds of outage (hang, drop the connection, ...) and install with
    :meth:`FakePlex.add_fault`."""

    status: int
    times: int | None = None
    paths: str | None = None
    body: bytes = b""
    content_type: str = XML_CT
    methods: tuple[str, ...] | None = None  # None = every method

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.paths is None or re.search(self.paths, path) is not None

    def respond(self, handler: "_Handler") -> int:
        """Answer the request; return the status sent (0 when nothing was sent)."""
        handler._send(self.status, self.body, self.content_type)
        return self.status


class ResetFault(Fault):
    """Drop the connection with a TCP reset instead of answering: the client sees
    "connection reset by peer" (a server crashing mid-request)."""

    def __init__(self, times: int | None = None, paths: str | None = None) -> None:
        super().__init__(0, times, paths)

    def respond(self, handler: "_Handler") -> int:
        import socket
        import struct

        handler.close_connection = True
        try:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
        except OSError:
            pass
        return 0


# PMS answers 503 while it starts and loads its database (ref §8: "503 assumed by peers").
_DB_LOADING_BODY = (
    b"<html><head><title>Service Unavailable</title></head><body>"
    b"<h1>503 Service Unavailable</h1><p>Plex Media Server is starting: "
    b"the database is loading, please try again shortly.</p></body></html>"
)


class _HTTPError(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def _xml(root: ET.Element) -> bytes:
    """``ET.tostring(root, encoding="utf-8", xml_declaration=True)``, byte for byte, ~1.5x faster
    for the plain trees built here; anything else (namespaces, comments, non-string values) goes
    to ElementTree itself."""
    out = ["<?xml version='1.0' encoding='utf-8'?>\n"]
    try:
        _serialize(root, out)
    except _NotPlain:
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return "".join(out).encode("utf-8", "xmlcharrefreplace")


class _NotPlain(Exception):
    pass


def _escape_attrib(text: str) -> str:  # xml.etree.ElementTree._escape_attrib
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    if "\n" in text:
        text = text.replace("\n", "&#10;")
    if "\t" in text:
        text = text.replace("\t", "&#09;")
    return text


def _escape_cdata(text: str) -> str:  # xml.etree.ElementTree._escape_cdata
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _serialize(elem: ET.Element, out: list) -> None:
    """ElementTree's ``_serialize_xml`` for elements with plain string tags, keys and values."""
    tag = elem.tag
    if type(tag) is not str or tag[:1] == "{":
        raise _NotPlain
    parts = ["<", tag]
    for k, v in elem.items():
        if type(k) is not str or type(v) is not str or k[:1] == "{":
            raise _NotPlain
        parts.append(f' {k}="{_escape_attrib(v)}"')
    out.append("".join(parts))
    text = elem.text
    if text is not None and type(text) is not str:
        raise _NotPlain
    if text or len(elem):
        out.append(">")
        if text:
            out.append(_escape_cdata(text))
        for child in elem:
            _serialize(child, out)
        out.append(f"</{tag}>")
    else:
        out.append(" />")
    tail = elem.tail
    if tail:
        if type(tail) is not str:
            raise _NotPlain
        out.append(_escape_cdata(tail))


def _ext(path: str) -> str:
    base = re.split(r"[\\/]", path)[-1]
    return base.rsplit(".", 1)[1].lower() if "." in base else ""


def _dirname(path: str) -> str:
    """Directory part of a POSIX or Windows path ('' for a bare name)."""
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[:cut] if cut > 0 else ""


def _basename_noext(path: str) -> str:
    base = re.split(r"[\\/]", path)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


class FakePlex:
    """A fake PMS on 127.0.0.1 (ThreadingHTTPServer, HTTP/1.1 keep-alive, one state lock)."""

    def __init__(self, token: str = "plex-token", latency_ms: float = 0.0):
        self.token = token
        self.latency_ms = latency_ms
        self._lock = threading.RLock()
        self._sections: dict[int, dict] = {}
        self._items: dict[str, Item] = {}
        self._unscanned: list[tuple[int, list[str], dict]] = []
        self._next_rk = 1001
        self._next_location_id = 100
        self._ids: dict[tuple, int] = {}  # (kind, name) -> stable numeric id
        self._list_cache: dict[str, tuple] = {}  # ratingKey -> (state key, list-view <Video> text)
        self._order_cache: dict[tuple, tuple] = {}  # (section, filters) -> (items, titles; items in order)
        self._next_id = {"media": 5001, "part": 9001, "tag": 101}
        self._requests: list[Req] = []
        self._scan_requests: list[tuple[int, str | None]] = []
        self._faults: list[Fault] = []
        self.errors: list[str] = []  # tracebacks of handler crashes (answered 500)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._accepted = 0

    # ------------------------------------------------------------------ state setup
    def add_section(self, key: int, title: str, locations: list[str], type: str = "movie") -> None:
        with self._lock:
            locs = []
            for path in locations:
                locs.append((self._next_location_id, path))
                self._next_location_id += 1
            self._sections[int(key)] = {
                "key": int(key),
                "title": title,
                "type": type,
                "locations": locs,
                "uuid": f"f4k3{int(key):04d}-0000-4000-8000-{int(key):012d}",
                "created_at": int(time.time()),
            }

    def add_item(self, section_key: int, files: list[str] | str, title: str | None = None, **fields) -> Item:
        """Index a movie now.  ratingKeys count up from 1001; title defaults to the first
        file's basename without extension; ``fields`` set :class:`Item` attributes."""
        files = [files] if isinstance(files, str) else list(files)
        with self._lock:
            if int(section_key) not in self._sections:
                raise KeyError(f"no section {section_key}")
            rk = str(self._next_rk)
            self._next_rk += 1
            now = int(fields.pop("added_at", time.time()))
            item = Item(
                rating_key=rk,
                section_key=int(section_key),
                title=title if title is not None else _basename_noext(files[0]) if files else rk,
                files=files,
                added_at=now,
                updated_at=now,
                thumb=f"/library/metadata/{rk}/thumb/{now}",
                art_path=f"/library/metadata/{rk}/art/{now}",
            )
            tags = fields.pop("tags", None) or {}
            unknown = set(tags) - set(item.tags)
            if unknown:
                raise ValueError(f"unknown tag kinds {sorted(unknown)}; known: {sorted(TAG_ELEMENTS)}")
            for kind, names in tags.items():
                item.tags[kind] = list(names)
            if "locked" in fields:
                fields["locked"] = set(fields["locked"])
            for name, value in fields.items():
                if not hasattr(item, name) or name in ("rating_key", "section_key", "files"):
                    raise TypeError(f"Item has no settable attribute {name!r}")
                setattr(item, name, value)
            self._items[rk] = item
            return item

    def add_unscanned(self, section_key: int, files: list[str] | str, **fields) -> None:
        """A file on disk that PMS has not indexed yet: invisible until a scan of a folder
        containing it (ref §7: "New files are invisible until PMS scans them")."""
        files = [files] if isinstance(files, str) else list(files)
        with self._lock:
            if int(section_key) not in self._sections:
                raise KeyError(f"no section {section_key}")
            self._unscanned.append((int(section_key), files, dict(fields)))

    def scan(self, section_key: int | None = None, path: str | None = None) -> list[Item]:
        """Index unscanned files of ``section_key`` (None = every section) that lie in folder
        ``path`` (None = everywhere).  What ``GET /library/sections/{sid}/refresh[?path=]``
        does (ref §3, ``section.update(path=p)`` = partial scan); runs synchronously."""
        new: list[Item] = []
        with self._lock:
            keep = []
            for sk, files, fields in self._unscanned:
                if (section_key is None or sk == int(section_key)) and (
                    path is None or any(self._in_folder(f, path) for f in files)
                ):
                    new.append(self.add_item(sk, files, **fields))
                else:
                    keep.append((sk, files, fields))
            self._unscanned = keep
        return new

    @staticmethod
    def _in_folder(file: str, folder: str) -> bool:
        folder = folder.rstrip("/\\")
        return file == folder or (file.startswith(folder) and file[len(folder):len(folder) + 1] in ("/", "\\"))

    @property
    def items(self) -> dict[str, Item]:
        """Snapshot dict ratingKey -> Item (the Items themselves are live)."""
        with self._lock:
            return dict(self._items)

    def item_by_file(self, path: str) -> Item | None:
        with self._lock:
            for item in self._items.values():
                if path in item.files:
                    return item
        return None

    def delete_item(self, rating_key: str) -> None:
        with self._lock:
            del self._items[str(rating_key)]

    # ------------------------------------------------------------------ logs
    @property
    def requests(self) -> list[Req]:
        """Snapshot of the request log (thread-safe)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def scan_requests(self) -> list[tuple[int, str | None]]:
        with self._lock:
            return list(self._scan_requests)

    @property
    def accepted_connections(self) -> int:
        """TCP connections accepted so far (extension; shows keep-alive reuse)."""
        with self._lock:
            return self._accepted

    # ------------------------------------------------------------------ faults
    def fail(self, status: int, times: int | None = None, paths: str | None = None) -> None:
        """Answer the next ``times`` requests (None = until :meth:`clear_faults`) whose path
        matches regex ``paths`` with ``status`` and an empty body; 503 carries a
        "database loading" HTML body (ref §8)."""
        if status == 503:
            self.add_fault(Fault(503, times, paths, _DB_LOADING_BODY, "text/html"))
        else:
            self.add_fault(Fault(status, times, paths))

    def add_fault(self, fault: Fault) -> None:
        """Install any :class:`Fault` (or subclass); checked in installation order."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in list(self._faults):
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ server lifecycle
    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakePlex not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> str:
        if self._server is None:
            srv = _Server(("127.0.0.1", self._port), _Handler)
            srv.fake = self
            self._port = srv.server_address[1]
            self._server = srv
            self._thread = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.02}, name="fakeplex", daemon=True
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        srv.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def down(self) -> None:
        """Stop listening and cut open keep-alive connections: clients get connection refused."""
        self.stop()

    def up(self) -> None:
        """Listen again on the same port (same :attr:`url`)."""
        self.start()

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        url = self.start()
        try:
            yield url
        finally:
            self.stop()

    # ------------------------------------------------------------------ helpers (lock held)
    def _id(self, kind: str, name) -> int:
        key = (kind, name)
        if key not in self._ids:
            counter = "tag" if kind.startswith("tag:") else kind
            self._ids[key] = self._next_id[counter]
            self._next_id[counter] += 1
        return self._ids[key]

    @staticmethod
    def _bump(item: Item) -> int:
        """New updatedAt: now, but strictly later than the previous one of this item."""
        item.updated_at = max(int(time.time()), item.updated_at + 1)
        return item.updated_at

    def _section_or_404(self, sid: str) -> dict:
        if not sid.isdigit() or int(sid) not in self._sections:
            raise _HTTPError(404)
        return self._sections[int(sid)]

    def _item_or_404(self, rk: str) -> Item:
        if not rk.isdigit() or rk not in self._items:
            raise _HTTPError(404)
        return self._items[rk]

    # ------------------------------------------------------------------ XML builders
    def _server_root(self) -> ET.Element:
        """``GET /``: attribute set of recorded plex_server_base.xml, current version."""
        attrs = {
            "size": "25", "allowCameraUpload": "0", "allowChannelAccess": "1", "allowMediaDeletion": "1",
            "allowSharing": "1", "allowSync": "1", "allowTuners": "1", "backgroundProcessing": "1",
            "certificate": "1", "companionProxy": "1", "countryCode": "usa",
            "diagnostics": "logs,databases,streaminglogs", "eventStream": "1", "friendlyName": "FakePlex",
            "hubSearch": "1", "itemClusters": "1", "livetv": "7", "machineIdentifier": MACHINE_IDENTIFIER,
            "mediaProviders": "1", "multiuser": "1", "myPlex": "0", "myPlexMappingState": "unknown",
            "myPlexSigninState": "none", "myPlexSubscription": "0", "myPlexUsername": "",
            "offlineTranscode": "1", "ownerFeatures": "", "photoAutoTag": "1", "platform": "Linux",
            "platformVersion": "22.04.4 LTS (Jammy Jellyfish)", "pluginHost": "1", "pushNotifications": "0",
            "readOnlyLibraries": "0", "requestParametersInCookie": "1", "streamingBrainABRVersion": "3",
            "streamingBrainVersion": "2", "sync": "1", "transcoderActiveVideoSessions": "0",
            "transcoderAudio": "1", "transcoderLyrics": "1", "transcoderPhoto": "1", "transcoderSubtitles": "1",
            "transcoderVideo": "1",
            "transcoderVideoBitrates": "64,96,208,320,720,1500,2000,3000,4000,8000,10000,12000,20000",
            "transcoderVideoQualities": "0,1,2,3,4,5,6,7,8,9,10,11,12",
            "transcoderVideoResolutions": "128,128,160,240,320,480,768,720,720,1080,1080,1080,1080",
            "updatedAt": str(int(time.time())), "updater": "1", "version": VERSION, "voiceSearch": "1",
        }
        root = ET.Element("MediaContainer", attrs)
        for key in ("activities", "butler", "channels", "clients", "devices", "diagnostics", "hubs",
                    "library", "livetv", "media", "metadata", "neighborhood", "playQueues", "player",
                    "playlists", "resources", "search", "server", "servers", "statistics", "system",
                    "transcode", "updater", "user"):
            ET.SubElement(root, "Directory", {"count": "1", "key": key, "title": key})
        root.set("size", str(len(root)))
        return root

    def _library_root(self) -> ET.Element:
        """``GET /library`` (ref §3: identifier + title1 "Plex Library")."""
        root = ET.Element("MediaContainer", {
            "size": "3", "allowSync": "0", "art": "/:/resources/library-art.jpg", "content": "",
            "identifier": "com.plexapp.plugins.library", "mediaTagPrefix": MEDIA_TAG_PREFIX,
            "mediaTagVersion": MEDIA_TAG_VERSION, "title1": "Plex Library", "title2": "",
        })
        for key, title in (("sections", "Library Sections"), ("recentlyAdded", "Recently Added Content"),
                           ("onDeck", "On Deck Content")):
            ET.SubElement(root, "Directory", {"key": key, "title": title})
        return root

    def _sections_root(self) -> ET.Element:
        """``GET /library/sections``: Directory attribute set of recorded library_sections.xml."""
        root = ET.Element("MediaContainer", {
            "size": str(len(self._sections)), "allowSync": "0", "identifier": "com.plexapp.plugins.library",
            "mediaTagPrefix": MEDIA_TAG_PREFIX, "mediaTagVersion": MEDIA_TAG_VERSION, "title1": "Plex Library",
        })
        for sec in self._sections.values():
            kind = sec["type"]
            d = ET.SubElement(root, "Directory", {
                "allowSync": "1", "art": f"/:/resources/{kind}-fanart.jpg",
                "composite": f"/library/sections/{sec['key']}/composite/{sec['created_at']}",
                "filters": "1", "refreshing": "0", "thumb": f"/:/resources/{kind}.png",
                "key": str(sec["key"]), "type": kind, "title": sec["title"], "agent": "tv.plex.agents.none",
                "scanner": "Plex Video Files Scanner" if kind == "movie" else "Plex TV Series",
                "language": "xn", "uuid": sec["uuid"], "updatedAt": str(sec["created_at"]),
                "createdAt": str(sec["created_at"]), "scannedAt": str(sec["created_at"]), "content": "1",
                "directory": "1", "contentChangedAt": "1", "hidden": "0",
            })
            for loc_id, path in sec["locations"]:
                ET.SubElement(d, "Location", {"id": str(loc_id), "path": path})
        return root

    def _container(self, sec: dict, **extra: str) -> ET.Element:
        attrs = {
            "size": "0", "allowSync": "1", "art": f"/:/resources/{sec['type']}-fanart.jpg",
            "identifier": "com.plexapp.plugins.library", "librarySectionID": str(sec["key"]),
            "librarySectionTitle": sec["title"], "librarySectionUUID": sec["uuid"],
            "mediaTagPrefix": MEDIA_TAG_PREFIX, "mediaTagVersion": MEDIA_TAG_VERSION,
        }
        attrs.update(extra)
        return ET.Element("MediaContainer", attrs)

    def _video(self, item: Item, detail: bool, guids: bool) -> ET.Element:
        """One ``<Video type="movie">`` (attribute set of recorded library_movies_all.xml minus
        agent ratings).  List views (detail=False) truncate tags to LIST_TAG_LIMITS and carry no
        ``Field`` (ref §5.4); detail views carry all tags and one ``Field locked="1"`` per locked
        field (ref §4).  Media/Part are nested like on a real PMS (unlike recorded media_1.xml)."""
        sec = self._sections[item.section_key]
        rk = item.rating_key
        a = {"ratingKey": rk, "key": f"/library/metadata/{rk}", "guid": f"local://{rk}"}
        if item.studio:
            a["studio"] = item.studio
        a["type"] = "movie"
        a["title"] = item.title
        if item.title_sort:
            a["titleSort"] = item.title_sort
        a.update({"librarySectionTitle": sec["title"], "librarySectionID": str(sec["key"]),
                  "librarySectionKey": f"/library/sections/{sec['key']}"})
        if item.content_rating:
            a["contentRating"] = item.content_rating
        a["summary"] = item.summary or ""
        if item.year is not None:
            a["year"] = str(item.year)
        if item.tagline:
            a["tagline"] = item.tagline
        a.update({"thumb": item.thumb, "art": item.art_path, "duration": str(60000 * max(1, len(item.files)))})
        if item.originally_available_at:
            a["originallyAvailableAt"] = item.originally_available_at
        a.update({"addedAt": str(item.added_at), "updatedAt": str(item.updated_at)})
        v = ET.Element("Video", a)
        for f in item.files:
            ext = _ext(f) or "mp4"
            m = ET.SubElement(v, "Media", {
                "id": str(self._id("media", (rk, f))), "duration": "60000", "bitrate": "4000",
                "width": "1920", "height": "1080", "aspectRatio": "1.78", "audioChannels": "2",
                "audioCodec": "aac", "videoCodec": "h264", "videoResolution": "1080", "container": ext,
                "videoFrameRate": "24p", "videoProfile": "high",
            })
            pid = self._id("part", (rk, f))
            ET.SubElement(m, "Part", {
                "id": str(pid), "key": f"/library/parts/{pid}/{item.added_at}/file.{ext}", "duration": "60000",
                "file": f, "size": "30000000", "container": ext, "videoProfile": "high",
            })
        for kind, element in TAG_ELEMENTS.items():
            names = item.tags.get(kind, [])
            if not detail:
                names = names[:LIST_TAG_LIMITS.get(kind, 0)]
            for name in names:
                tid = self._id(f"tag:{kind}", name)
                ET.SubElement(v, element, {"id": str(tid), "filter": f"{kind}={tid}", "tag": name})
        if guids or detail:
            for g in item.guids:
                ET.SubElement(v, "Guid", {"id": g})
        if detail:
            for name in sorted(item.locked):
                ET.SubElement(v, "Field", {"locked": "1", "name": name})
        return v

    # ------------------------------------------------------------------ routes (lock held)
    def _list(self, sid: str, q: dict[str, list[str]], headers) -> bytes:
        """``GET /library/sections/{sid}/all``: ``type`` required on show sections (500
        otherwise, ref §7); ``title=`` contains (ref §3); hidden ``file=`` (ref §7);
        paging by headers or query params (ref §2)."""
        sec = self._section_or_404(sid)
        first = {k: v[0] for k, v in q.items()}
        libtype = first.get("type")
        if sec["type"] == "show" and not libtype:
            raise _HTTPError(500)
        if sec["type"] != "movie" or libtype not in (None, "1"):
            matches: list[Item] = []  # only movies are modelled
        else:
            matches = [i for i in self._items.values() if i.section_key == sec["key"]]
        if "title" in first:
            needle = first["title"].casefold()
            matches = [i for i in matches if needle in i.title.casefold()]
        if "file" in first:
            matches = [i for i in matches if self._file_filter(i, first["file"])]
        for key, attr in (("addedAt", "added_at"), ("updatedAt", "updated_at")):
            # [unverified] extension: integer "is after"/"is before" filters (ref §7 approach 1)
            for op, cmp in ((">>", lambda x, y: x > y), ("<<", lambda x, y: x < y)):
                if key + op in first:
                    try:
                        bound = int(first[key + op])
                    except ValueError:
                        raise _HTTPError(400) from None
                    matches = [i for i in matches if cmp(getattr(i, attr), bound)]
        # sorted by title; the order is kept while the listed items and their titles stay the same
        order_key = [(id(i), i.title_sort, i.title) for i in matches]
        query_key = (sec["key"], tuple(sorted((k, v) for k, v in first.items() if not k.startswith("X-Plex-"))))
        cached = self._order_cache.get(query_key)
        if cached is not None and cached[0] == order_key:
            matches = list(cached[1])
        else:
            matches.sort(key=lambda i: ((i.title_sort or i.title).casefold(), int(i.rating_key)))
            if len(self._order_cache) > 64:
                self._order_cache.clear()
            self._order_cache[query_key] = (order_key, tuple(matches))

        start = headers.get("X-Plex-Container-Start") or first.get("X-Plex-Container-Start")
        size = headers.get("X-Plex-Container-Size") or first.get("X-Plex-Container-Size")
        extra = {"sortAsc": "1", "thumb": f"/:/resources/{sec['type']}.png", "title1": sec["title"],
                 "title2": "All Movies" if sec["type"] == "movie" else "All", "viewGroup": sec["type"],
                 "viewMode": "131122"}
        page = matches
        if start is not None or size is not None:
            try:
                s = max(0, int(start or 0))
                n = int(size) if size is not None else len(matches)
            except ValueError:
                raise _HTTPError(400) from None
            page = matches[s:s + max(0, n)]
            extra.update(totalSize=str(len(matches)), offset=str(s))
        root = self._container(sec, **extra)
        root.set("size", str(len(page)))
        guids = first.get("includeGuids") == "1"
        if page:
            try:  # the same bytes as _xml(root) with every <Video> appended, from cached item texts
                head = ["<?xml version='1.0' encoding='utf-8'?>\n"]
                _serialize(root, head)  # childless: [declaration, "<MediaContainer ...", " />"]
                parts = [head[0], head[1], ">"]
                parts.extend(self._list_video(item, guids) for item in page)
                parts.append("</MediaContainer>")
                return "".join(parts).encode("utf-8", "xmlcharrefreplace")
            except _NotPlain:
                pass
        for item in page:
            root.append(self._video(item, detail=False, guids=guids))
        return _xml(root)

    def _list_video(self, item: Item, guids: bool) -> str:
        """The serialized list-view ``<Video>`` of an item, re-rendered only when something it
        shows changed (a listing page of 5,000 items costs ~0.4 s to render from scratch).
        The key holds every Item field but the image bytes (which no XML view shows), so a
        direct edit of an Item (as tests do) is seen."""
        sec = self._sections[item.section_key]
        key = (guids, sec["title"], sec["key"], *(_frozen(getattr(item, f)) for f in _ITEM_KEY_FIELDS))
        hit = self._list_cache.get(item.rating_key)
        if hit is not None and hit[0] == key:
            return hit[1]
        out: list = []
        _serialize(self._video(item, detail=False, guids=guids), out)
        text = "".join(out)
        self._list_cache[item.rating_key] = (key, text)
        return text

    @staticmethod
    def _file_filter(item: Item, parsed_value: str) -> bool:
        """Hidden ``file=`` filter, NOT exact (ref §7): PMS decodes the value a second time
        (so a ``%`` in a name breaks the lookup), then matches a case-insensitive substring of
        Part@file OR the same directory (neighbours).  [unverified] whether both apply."""
        value = unquote(parsed_value)
        needle = value.casefold()
        vdir = _dirname(value)
        for f in item.files:
            if needle and needle in f.casefold():
                return True
            if vdir and _dirname(f) == vdir:
                return True
        return False

    def _detail(self, rk: str) -> bytes:
        """``GET /library/metadata/{rk}``: all tags + Field locks (ref §4); 404 if unknown."""
        item = self._item_or_404(rk)
        root = self._container(self._sections[item.section_key], size="1")
        root.append(self._video(item, detail=True, guids=True))
        return _xml(root)

    def _edit(self, sid: str, q: dict[str, list[str]]) -> None:
        """``PUT /library/sections/{sid}/all?...`` (ref §5).  ``{f}.value`` sets (empty clears,
        [unverified]); ``{f}.locked=1|0`` locks/unlocks, no auto-lock (ref §5.2 [unverified]);
        all ``{tag}[N].tag.tag`` of one request replace that list in index order (ref §5.2);
        ``{tag}[].tag.tag-=a,b`` removes, each comma piece decoded once more (ref §5.1).
        Unknown id or id of another section -> 404 and nothing changes."""
        sec = self._section_or_404(sid)
        first = {k: v[0] for k, v in q.items()}
        ids = [x for x in first.get("id", "").split(",") if x]
        if not ids:
            raise _HTTPError(400)
        items = []
        for rk in ids:
            item = self._items.get(rk)
            if item is None or item.section_key != sec["key"]:
                raise _HTTPError(404)
            items.append(item)

        values: dict[str, object] = {}
        locks: dict[str, bool] = {}
        tag_sets: dict[str, dict[int, str]] = {}
        tag_dels: dict[str, list[str]] = {}
        for key, value in first.items():
            m = _TAG_SET_RE.match(key)
            if m and m["tag"] in TAG_ELEMENTS:
                tag_sets.setdefault(m["tag"], {})[int(m["idx"])] = value
                continue
            m = _TAG_DEL_RE.match(key)
            if m and m["tag"] in TAG_ELEMENTS:
                tag_dels[m["tag"]] = [unquote(p) for p in value.split(",") if p != ""]
                continue
            m = _LOCK_RE.match(key)
            if m:
                locks[m["field"]] = value not in ("0", "")
                continue
            m = _VALUE_RE.match(key)
            if m and m["field"] in EDIT_FIELDS:
                attr = EDIT_FIELDS[m["field"]]
                if value == "":
                    values[attr] = None if attr in _NULLABLE_FIELDS else ""
                elif attr == "year":
                    try:
                        values[attr] = int(value)
                    except ValueError:
                        raise _HTTPError(400) from None
                else:
                    values[attr] = value
            # other keys (id, type, unknown fields, tag sub-keys) are accepted and ignored

        for item in items:
            for attr, value in values.items():
                setattr(item, attr, value)
            for kind, indexed in tag_sets.items():
                new: list[str] = []
                for _, name in sorted(indexed.items()):
                    if name and name not in new:
                        new.append(name)
                item.tags[kind] = new
            for kind, names in tag_dels.items():
                item.tags[kind] = [t for t in item.tags.get(kind, []) if t not in names]
            for name, on in locks.items():
                (item.locked.add if on else item.locked.discard)(name)
            self._bump(item)

    def _upload(self, rk: str, kind: str, q: dict[str, list[str]], body: bytes) -> None:
        """``POST /library/metadata/{rk}/posters|arts``: raw bytes body or ``?url=`` (ref §6;
        the fake does not download the URL).  Gives a new thumb/art path; no auto-lock."""
        item = self._item_or_404(rk)
        url = q.get("url", [None])[0]
        if not url and not body:
            raise _HTTPError(400)
        ts = self._bump(item)
        if kind == "posters":
            item.poster, item.poster_url = (None, url) if url else (body, None)
            item.thumb = f"/library/metadata/{rk}/thumb/{ts}"
        else:
            item.art, item.art_url = (None, url) if url else (body, None)
            item.art_path = f"/library/metadata/{rk}/art/{ts}"

    def _refresh(self, sid: str, q: dict[str, list[str]]) -> None:
        """``GET /library/sections/{sid|all}/refresh[?path=P][&force=1]`` (ref §3)."""
        path = q.get("path", [None])[0]
        if sid == "all":
            keys = list(self._sections)
        else:
            keys = [self._section_or_404(sid)["key"]]
        for key in keys:
            self._scan_requests.append((key, path))
            self.scan(key, path)

    def _route(self, method: str, path: str, q: dict[str, list[str]], headers, body: bytes):
        """Return (status, body, content_type).  Called with the lock held."""
        parts = [p for p in path.split("/") if p]
        n = len(parts)
        if n == 0:
            if method == "GET":
                return 200, _xml(self._server_root()), XML_CT
            raise _HTTPError(404)
        if parts[0] == "library" and n >= 1:
            if method == "GET" and n == 1:
                return 200, _xml(self._library_root()), XML_CT
            if parts[1:2] == ["sections"]:
                if method == "GET" and n == 2:
                    return 200, _xml(self._sections_root()), XML_CT
                if n == 4 and parts[3] == "all":
                    if method == "GET":
                        return 200, self._list(parts[2], q, headers), XML_CT
                    if method == "PUT":
                        self._edit(parts[2], q)
                        return 200, b"", XML_CT
                if n == 4 and parts[3] == "refresh":
                    if method == "GET":
                        self._refresh(parts[2], q)
                        return 200, b"", XML_CT
                    if method == "DELETE":  # cancelUpdate()
                        if parts[2] != "all":
                            self._section_or_404(parts[2])
                        return 200, b"", XML_CT
            if parts[1:2] == ["metadata"] and n >= 3:
                rk = parts[2]
                if method == "GET" and n == 3:
                    return 200, self._detail(rk), XML_CT
                if method == "POST" and n == 4 and parts[3] in ("posters", "arts"):
                    self._upload(rk, parts[3], q, body)
                    return 200, b"", XML_CT
                if method == "GET" and n == 5 and parts[3] in ("thumb", "art"):
                    item = self._item_or_404(rk)
                    data = item.poster if parts[3] == "thumb" else item.art
                    if data is None:
                        raise _HTTPError(404)
                    return 200, data, "image/jpeg"
                if method == "PUT" and n == 4 and parts[3] in ("refresh", "analyze"):
                    self._item_or_404(rk)
                    return 200, b"", XML_CT
        raise _HTTPError(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakePlex

    def __init__(self, *args, **kwargs):
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        with self.fake._lock:
            self.fake._accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut keep-alive connections so pooled client sockets see the server gone."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):  # never print to stderr
        self.fake.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms delayed-ACK stalls on keep-alive
    server_version = "PlexMediaServer/" + VERSION
    sys_version = ""
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = XML_CT) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Plex-Protocol", "1.0")
        self.end_headers()  # flushes the header block in one write
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        """Read body, log the Req, sleep latency, apply a fault, check auth, route."""
        fake = self.server.fake
        body = self._read_body()
        split = urlsplit(self.path)
        path = unquote(split.path) or "/"
        query = parse_qs(split.query, keep_blank_values=True)
        req = Req(self.command, path, query, dict(self.headers.items()), len(body), time.time())
        with fake._lock:
            fake._requests.append(req)
        if fake.latency_ms:
            time.sleep(fake.latency_ms / 1000.0)
        try:
            fault = fake._take_fault(self.command, path)
            if fault is not None:
                req.status = fault.respond(self)
                return
            # GET /identity needs no token (ref §3); everything else wants X-Plex-Token as
            # header or query parameter (ref §1), else 401 with an empty body.
            if path.rstrip("/") == "/identity" and self.command == "GET":
                root = ET.Element("MediaContainer", {"size": "0", "claimed": "1",
                                                     "machineIdentifier": MACHINE_IDENTIFIER, "version": VERSION})
                status, out, ctype = 200, _xml(root), XML_CT
            elif fake.token not in (self.headers.get("X-Plex-Token"), query.get("X-Plex-Token", [None])[0]):
                status, out, ctype = 401, b"", XML_CT
            else:
                try:
                    with fake._lock:
                        status, out, ctype = fake._route(self.command, path.rstrip("/") or "/", query,
                                                         self.headers, body)
                except _HTTPError as e:
                    status, out, ctype = e.status, b"", XML_CT
                except Exception:  # a bug in the fake: answer 500, keep the traceback
                    fake.errors.append(traceback.format_exc())
                    status, out, ctype = 500, b"", XML_CT
            req.status = status
            self._send(status, out, ctype)
        except OSError:  # client went away, or down() cut the socket mid-answer
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _dispatch
