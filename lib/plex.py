"""Plex Media Server through python-plexapi: connect, find the item of a file, edit, upload.

Facts (reference/plex-server-api.md):
- The token travels in the ``X-Plex-Token`` header; plexapi parses XML; ``timeout`` given to
  ``PlexServer`` is reused for every request (§1). We pass requests' (connect, read) pair.
- plexapi reloads a "partial" object whenever an attribute read is None or ``[]`` (§2); an item with
  no genres would cost an extra GET. Autoreload is turned off (``PLEXAPI_PLEXAPI_AUTORELOAD``) and
  items are always fetched in their detail view, which carries every tag and the ``Field`` locks.
- The hidden ``file=`` filter of ``/library/sections/{id}/all`` is not exact (substring or same
  folder), needs ``type=1``, and PMS decodes its value twice (§7): the value is quoted twice here and
  every hit is checked against ``Part.file`` exactly by the caller.
- Paged raw listings (``X-Plex-Container-Start/Size``, ``totalSize``) index a whole section in
  ``ceil(items / 5000)`` requests (§7, approach 1).
- ``section.update(path=folder)`` asks PMS for a partial scan of a folder (§3).
- Windows PMS reports paths over 260 characters with a ``\\\\?\\`` prefix (§7), stripped here.
"""
from __future__ import annotations

import io
import os
import time
import uuid
from typing import NamedTuple
from urllib.parse import quote

from lib.gaps import PlexFiles

INDEX_PAGE = 5000      # items per listing request when indexing a section
INDEX_MAX_AGE = 300.0  # seconds before a section index is rebuilt on a miss


def configure_plexapi(data_dir: str) -> None:
    """Set plexapi's configuration through its environment variables, before it is imported:
    no autoreload, product name, and a client identifier kept in the data folder so Plex does not
    report a new device on every run. A user's own PLEXAPI_* variables win."""
    ident_path = os.path.join(data_dir, "client-id")
    try:
        with open(ident_path, encoding="ascii") as f:
            ident = f.read().strip()
    except OSError:
        ident = ""
    if not ident:
        ident = f"plexsync-{uuid.uuid4()}"
        try:
            with open(ident_path, "w", encoding="ascii") as f:
                f.write(ident)
        except OSError:
            pass
    os.environ.setdefault("PLEXAPI_PLEXAPI_AUTORELOAD", "false")
    os.environ.setdefault("PLEXAPI_HEADER_PRODUCT", "PlexSync")
    os.environ.setdefault("PLEXAPI_HEADER_IDENTIFIER", ident)


def part_file(path: str) -> str:
    """A ``Part.file`` as PMS reports it, without the Windows long-path prefix."""
    return path[4:] if path.startswith("\\\\?\\") else path


class Candidate(NamedTuple):
    rating_key: str
    section_id: int
    files: tuple   # every Part.file of the item


def candidate(video, section_id: int) -> Candidate:
    """The :class:`Candidate` of a ``<Video>`` element (list or detail view)."""
    files = tuple(part_file(p.attrib["file"]) for p in video.iter("Part") if p.attrib.get("file"))
    return Candidate(video.attrib["ratingKey"], int(video.attrib.get("librarySectionID") or section_id), files)


class SectionIndex:
    """Items of the target sections by file: ``files`` (a :class:`lib.gaps.PlexFiles` of every
    ``Part.file``) and ``by_name`` (casefolded file name -> list of (file, :class:`Candidate`))."""

    def __init__(self):
        self.files = PlexFiles()
        self.by_name: dict[str, list] = {}

    def add(self, cand: Candidate) -> None:
        for f in cand.files:
            self.files.add(cand.rating_key, f)
            self.by_name.setdefault(f.replace("\\", "/").rsplit("/", 1)[-1].casefold(), []).append((f, cand))


class PlexConfigError(Exception):
    """A setting names something this Plex server does not have (e.g. an unknown library)."""


class Plex:
    """One connection to PMS, limited to the target movie sections.

    ``libraries``: section titles (case-insensitive, as plexapi's ``library.section()``); empty =
    every movie section. ``timeout``: (connect, read) seconds. Raises plexapi's ``Unauthorized``
    for a bad token, requests' exceptions when PMS is unreachable, :class:`PlexConfigError` for an
    unknown library title.
    """

    def __init__(self, url: str, token: str, libraries: list, timeout: tuple):
        from plexapi.server import PlexServer

        self.server = PlexServer(url, token, timeout=timeout)
        movie = [s for s in self.server.library.sections() if s.type == "movie"]
        if libraries:
            wanted = {t.casefold(): t for t in libraries}
            movie = [s for s in movie if s.title.casefold() in wanted]
            missing = set(wanted) - {s.title.casefold() for s in movie}
            if missing:
                names = ", ".join(sorted(wanted[m] for m in missing))
                raise PlexConfigError(f"setting plex_libraries: Plex has no movie library named {names}")
        if not movie:
            raise PlexConfigError("Plex has no movie library to sync into")
        self.sections = {int(s.key): s for s in movie}
        self._index: dict | None = None
        self._index_built = 0.0

    def fetch(self, rating_key) -> object | None:
        """The item's detail view (plexapi ``Movie``), or None when PMS has no such ratingKey or it
        lies outside the target sections."""
        from plexapi.exceptions import NotFound

        try:
            item = self.server.fetchItem(int(rating_key))
        except NotFound:
            return None
        if getattr(item, "TYPE", None) != "movie" or int(item.librarySectionID or 0) not in self.sections:
            return None
        return item

    def sections_for(self, path: str) -> list[int]:
        """Target sections whose folders contain ``path`` (all of them when none does)."""
        norm = path.replace("\\", "/").casefold()
        hits = [sid for sid, s in self.sections.items()
                if any(norm.startswith(loc.replace("\\", "/").rstrip("/").casefold() + "/") for loc in s.locations)]
        return hits or list(self.sections)

    def lookup_file(self, path: str) -> list[Candidate]:
        """Items the ``file=`` filter returns for ``path`` in its sections (not exact: check files)."""
        value = quote(quote(path, safe=""), safe="")  # PMS decodes this value twice
        out = []
        for sid in self.sections_for(path):
            elem = self.server.query(f"/library/sections/{sid}/all?type=1&file={value}")
            out.extend(candidate(video, sid) for video in elem.iter("Video"))
        return out

    @property
    def has_index(self) -> bool:
        """True once :meth:`index` has been built (a lookup in it costs no request)."""
        return self._index is not None

    def listing(self, page_size: int = INDEX_PAGE):
        """Yield (section id, ``<Video>`` element) for every movie of the target sections, from
        paged raw list views (``page_size`` items per request). List views truncate tag lists."""
        for sid in self.sections:
            start = 0
            while True:
                elem = self.server.query(f"/library/sections/{sid}/all?type=1&includeGuids=0", headers={
                    "X-Plex-Container-Start": str(start), "X-Plex-Container-Size": str(page_size)})
                videos = list(elem.iter("Video"))
                for video in videos:
                    yield sid, video
                start += page_size
                total = int(elem.attrib.get("totalSize") or elem.attrib.get("size") or 0)
                if not videos or start >= total:
                    break

    def index(self, max_age: float = INDEX_MAX_AGE) -> "SectionIndex":
        """Every item of the target sections by file, from :meth:`listing`; rebuilt when older
        than ``max_age`` seconds."""
        if self._index is None or time.monotonic() - self._index_built > max_age:
            index = SectionIndex()
            for sid, video in self.listing():
                index.add(candidate(video, sid))
            self._index, self._index_built = index, time.monotonic()
        return self._index

    def scan_folder(self, path: str) -> None:
        """Ask PMS to scan the folder holding ``path`` in each section it may belong to."""
        folder = path.replace("\\", "/").rsplit("/", 1)[0] if ("/" in path or "\\" in path) else path
        if "\\" in path:
            folder = folder.replace("/", "\\")
        for sid in self.sections_for(path):
            self.sections[sid].update(path=folder)

    @staticmethod
    def upload(item, kind: str, data: bytes) -> None:
        """Upload image bytes as the item's ``poster`` or ``art`` (one POST of the raw bytes)."""
        if kind == "poster":
            item.uploadPoster(filepath=io.BytesIO(data))
        else:
            item.uploadArt(filepath=io.BytesIO(data))
