"""Stash's GraphQL API and image routes, through ``requests``.

Connection facts (reference/stash-plugin-protocol.md §2, §6, §11):
- ``server_connection`` gives the bind address: ``Host`` ``0.0.0.0`` or empty means 127.0.0.1,
  ``::`` means ::1. ``Scheme`` is ``https`` when Stash has TLS, often self-signed, so certificate
  checks are skipped for loopback only.
- Auth is the ``session`` cookie from ``SessionCookie``. It expires after ``max_session_age``
  (default 3600 s), so long runs also read ``configuration { general { apiKey } }`` once and send the
  ``ApiKey`` header; both are sent (the cookie keeps Stash's hook recursion guard working).
- No auth when required: GraphQL answers 401 with an empty body; image routes answer 302 to /login.
- Validation errors come back as HTTP 422, resolver errors as 200 with ``errors``.

Every query this module sends is a module constant, validated against the real schema by the tests.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator
from urllib.parse import urlsplit

import requests

from lib import log

SCENE_FIELDS = """fragment SceneSync on Scene {
  id title code details date updated_at created_at urls rating100 organized
  studio { id name parent_studio { name } image_path }
  performers { id name gender image_path }
  tags { id name }
  files { id path basename duration size width height }
  paths { screenshot preview stream }
}"""
FIND_SCENE = """query FindScene($id: ID!) { findScene(id: $id) { ...SceneSync } }
""" + SCENE_FIELDS
FIND_SCENES_BY_IDS = """query FindScenesByIds($ids: [ID!], $perPage: Int!) {
  findScenes(ids: $ids, filter: {per_page: $perPage}) { count scenes { ...SceneSync } }
}
""" + SCENE_FIELDS
SCENE_IDS_AFTER = """query SceneIdsAfter($filter: SceneFilterType!, $perPage: Int!) {
  findScenes(scene_filter: $filter, filter: {per_page: $perPage, sort: "id", direction: ASC}) { scenes { id } }
}"""
RECONCILE_FIELDS = """fragment ReconcileScene on Scene {
  id title details date updated_at
  studio { id name }
  performers { id name }
  tags { id name }
  files { path basename }
}"""
RECONCILE_SCENES_AFTER = """query ReconcileScenesAfter($filter: SceneFilterType!, $perPage: Int!) {
  findScenes(scene_filter: $filter, filter: {per_page: $perPage, sort: "id", direction: ASC}) {
    scenes { ...ReconcileScene }
  }
}
""" + RECONCILE_FIELDS
LATEST_UPDATED_AT = """query LatestUpdatedAt {
  findScenes(filter: {per_page: 1, sort: "updated_at", direction: DESC}) { scenes { updated_at } }
}"""
PLUGIN_SETTINGS = """query PluginSettings($ids: [ID!]) { configuration { plugins(include: $ids) } }"""
API_KEY = """query ApiKey { configuration { general { apiKey } } }"""
QUERIES = [FIND_SCENE, FIND_SCENES_BY_IDS, SCENE_IDS_AFTER, RECONCILE_SCENES_AFTER, LATEST_UPDATED_AT,
           PLUGIN_SETTINGS, API_KEY]

MAX_IMAGE_BYTES = 25 * 1024 * 1024
_IMAGE_MAGIC = [(b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif")]


def time_ago(stash_time: str, hours: float, now: datetime | None = None) -> str:
    """``now - hours`` written the way Stash stores ``updated_at``: RFC3339 in the offset of
    ``stash_time`` (a value Stash returned), because Stash compares these filters as strings
    (reference/stash-plugin-protocol.md §10.2)."""
    text = stash_time.strip()
    if text.endswith("Z"):
        offset = timedelta(0)
    else:
        sign = -1 if text[-6] == "-" else 1
        offset = sign * timedelta(hours=int(text[-5:-3]), minutes=int(text[-2:]))
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone(offset)) - timedelta(hours=hours)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if text.endswith("Z"):
        return stamp + "Z"
    zone = moment.strftime("%z")
    return f"{stamp}{zone[:3]}:{zone[3:]}"


class StashError(Exception):
    """Stash could not answer: unreachable, HTTP error, or GraphQL errors. ``status`` is the HTTP
    status (None when unreachable); ``transient`` tells whether a later try may succeed."""

    def __init__(self, message: str, status: int | None = None, transient: bool = True):
        super().__init__(log.redact(message))
        self.status = status
        self.transient = transient


class StashAuthError(StashError):
    """Stash refused our credentials (401): the session cookie expired and no API key is set."""


def image_type(data: bytes) -> str | None:
    """The MIME type of JPEG, PNG, GIF or WebP bytes, judged by their magic bytes, else None.

    Used so a video (Stash's ``paths.preview`` is an MP4) or an HTML login page is never uploaded
    to Plex as an image.
    """
    for magic, mime in _IMAGE_MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def base_url(conn: dict) -> str:
    """``scheme://host:port`` of Stash from a ``server_connection`` object (bind host mapped)."""
    scheme = str(conn.get("Scheme") or "http")
    host = str(conn.get("Host") or "")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = conn.get("Port") or (443 if scheme == "https" else 9999)
    return f"{scheme}://{host}:{int(port)}"


class StashClient:
    """GraphQL and image access to the Stash that started the plugin.

    ``timeout`` is (connect, read) seconds. Methods raise :class:`StashError` /
    :class:`StashAuthError`.
    """

    def __init__(self, conn: dict, timeout: tuple = (5.0, 60.0)):
        self.url = base_url(conn)
        self.timeout = timeout
        self.session = requests.Session()
        host = self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        self.session.verify = host not in ("127.0.0.1", "::1", "localhost")
        cookie = conn.get("SessionCookie") or {}
        if cookie.get("Value"):
            log.add_secret(cookie["Value"])
            self.session.cookies.set(cookie.get("Name") or "session", cookie["Value"])

    @classmethod
    def from_url(cls, url: str, api_key: str = "", timeout: tuple = (5.0, 10.0)) -> "StashClient":
        """A client for a Stash at ``url`` (``scheme://host:port``) authenticated by ``api_key``
        (empty: Stash without credentials), for programs not started by Stash (the provider)."""
        scheme, _, rest = url.rstrip("/").partition("://")
        host, _, port = rest.rpartition(":") if rest.rsplit(":", 1)[-1].isdigit() else (rest, "", "")
        client = cls({"Scheme": scheme or "http", "Host": host.strip("[]"), "Port": int(port) if port else None},
                     timeout=timeout)
        if api_key:
            log.add_secret(api_key)
            client.session.headers["ApiKey"] = api_key
        return client

    def use_api_key(self) -> bool:
        """Read Stash's API key with the cookie and send it from now on (cookies expire after an
        hour). Returns False when the user never generated a key."""
        key = (self.call(API_KEY).get("configuration") or {}).get("general", {}).get("apiKey") or ""
        if key:
            log.add_secret(key)
            self.session.headers["ApiKey"] = key
        return bool(key)

    def call(self, query: str, variables: dict | None = None) -> dict:
        """Run one GraphQL document; returns ``data``. Raises StashError on any error."""
        try:
            resp = self.session.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            raise StashError(f"Stash is unreachable at {self.url}: {type(exc).__name__}") from None
        if resp.status_code == 401:
            raise StashAuthError("Stash refused the plugin's credentials (HTTP 401): the session expired "
                                 "and Stash has no API key; the next hook or task restarts the sync", 401)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise StashError(f"Stash answered HTTP {resp.status_code} without GraphQL JSON", resp.status_code,
                             transient=resp.status_code >= 500 or resp.status_code == 429)
        if body.get("errors"):
            first = body["errors"][0]
            message = first.get("message") if isinstance(first, dict) else str(first)
            raise StashError(f"Stash GraphQL error: {message}", resp.status_code,
                             transient=resp.status_code >= 500)
        return body.get("data") or {}

    def plugin_settings(self, plugin_id: str) -> dict:
        """The values the user set for ``plugin_id`` (``{}`` when none were ever saved)."""
        plugins = (self.call(PLUGIN_SETTINGS, {"ids": [plugin_id]}).get("configuration") or {}).get("plugins") or {}
        value = plugins.get(plugin_id)
        return value if isinstance(value, dict) else {}

    def find_scenes(self, ids: list) -> dict[str, dict]:
        """Scenes by id, read now (``SceneSync`` fields): id -> scene. Unknown ids are absent.

        Stash answers ``findScenes(ids:)`` with an error for the whole list when one id is unknown
        (a deleted scene), so that case falls back to one ``findScene`` per id.
        """
        if not ids:
            return {}
        try:
            data = self.call(FIND_SCENES_BY_IDS, {"ids": [str(i) for i in ids], "perPage": -1})
            return {s["id"]: s for s in data["findScenes"]["scenes"]}
        except StashError as exc:
            if exc.status is None or "not found" not in str(exc):
                raise
        found = (self.call(FIND_SCENE, {"id": str(i)}).get("findScene") for i in ids)
        return {s["id"]: s for s in found if s}

    def scene_ids(self, since: str | None = None, refers_to: tuple | None = None,
                  page_size: int = 1000) -> Iterator[str]:
        """Scene ids in id order: every scene, or those with ``updated_at`` later than ``since`` (a
        string compared as Stash stores it, see :meth:`latest_updated_at`), or those that refer to
        ``refers_to`` = (``"performer"`` | ``"tag"`` | ``"studio"``, id)."""
        extra: dict = {}
        if since is not None:
            extra["updated_at"] = {"value": since, "modifier": "GREATER_THAN"}
        if refers_to is not None:
            kind, object_id = refers_to
            extra[kind + "s"] = {"value": [str(object_id)], "modifier": "INCLUDES"}
        for scene in self._scenes_after(SCENE_IDS_AFTER, extra, page_size):
            yield scene["id"]

    def reconcile_scenes(self, since: str | None = None, page_size: int = 1000) -> Iterator[dict]:
        """Every scene (or those updated after ``since``) with the ``ReconcileScene`` fields, in id
        order, ``page_size`` per request."""
        extra = {"updated_at": {"value": since, "modifier": "GREATER_THAN"}} if since is not None else {}
        return self._scenes_after(RECONCILE_SCENES_AFTER, extra, page_size)

    def _scenes_after(self, query: str, scene_filter: dict, page_size: int) -> Iterator[dict]:
        # Keyset paging (id > last seen), so scenes added or deleted meanwhile shift no page.
        after = 0
        while True:
            variables = {"filter": dict(scene_filter, id={"value": after, "modifier": "GREATER_THAN"}),
                         "perPage": page_size}
            scenes = self.call(query, variables)["findScenes"]["scenes"]
            yield from scenes
            if len(scenes) < page_size:
                return
            after = int(scenes[-1]["id"])

    def latest_updated_at(self) -> str | None:
        """The newest scene ``updated_at`` as Stash stores it (RFC3339 in the server's local offset,
        e.g. ``2025-06-01T12:34:56+10:00``), or None for an empty library. Stash compares
        ``updated_at`` filters as strings (§10.2), so cut-offs must be written in this offset."""
        scenes = self.call(LATEST_UPDATED_AT)["findScenes"]["scenes"]
        return scenes[0]["updated_at"] if scenes else None

    def cutoff(self, hours: float) -> str | None:
        """``now - hours`` as a ``since`` for :meth:`scene_ids` / :meth:`reconcile_scenes`, written
        in the offset of Stash's own timestamps (see :func:`time_ago`); None for an empty library."""
        latest = self.latest_updated_at()
        return time_ago(latest, hours) if latest else None

    def fetch_image(self, url: str) -> bytes | None:
        """Download an image from Stash with our credentials.

        Returns the bytes, or None when the answer is not an image (a login redirect, a video, an
        empty body, more than 25 MiB). Only the path of ``url`` is used: the request always
        goes to this Stash. Raises StashError when Stash is unreachable.
        """
        parts = urlsplit(url or "")
        if not parts.path.startswith("/"):
            return None
        # Stash builds image URLs from its external_host or our request's Host header: always ask
        # the Stash we talk to, so credentials never go to another host.
        url = self.url + parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            resp = self.session.get(url, timeout=self.timeout, allow_redirects=False, stream=True)
            data = resp.raw.read(MAX_IMAGE_BYTES + 1, decode_content=True) if resp.status_code == 200 else b""
            resp.close()
        except requests.RequestException as exc:
            raise StashError(f"Stash is unreachable at {self.url}: {type(exc).__name__}") from None
        if resp.status_code == 401 or (resp.status_code == 302 and "/login" in resp.headers.get("Location", "")):
            raise StashAuthError("Stash refused the plugin's credentials for an image", resp.status_code)
        if len(data) > MAX_IMAGE_BYTES or not resp.headers.get("Content-Type", "").startswith("image/"):
            return None
        return data if image_type(data) else None

    # -- the Plex metadata provider (provider.py) ------------------------------------------------

    def provider_scene(self, scene_id: str) -> dict | None:
        """One scene with the provider's fields (``ProviderScene``), or None when Stash has no
        scene ``scene_id`` (``findScene`` answers null for an unknown id, §10.1)."""
        return self.call(PROVIDER_FIND_SCENE, {"id": str(scene_id)}).get("findScene")

    def provider_scenes_by_path(self, path: str) -> list[dict]:
        """Scenes Stash's path ``EQUALS`` filter returns for ``path`` (``ProviderScene`` fields).

        Stash runs it as ``LIKE`` without an escape (§10.2): ``_`` and ``%`` are wildcards and ASCII
        letters match either case, so extra scenes may come back: the caller compares
        ``files[].path`` itself.
        """
        return self.call(PROVIDER_SCENES_BY_PATH, {"path": path})["findScenes"]["scenes"]

    def provider_scenes_by_path_regex(self, regex: str, limit: int) -> tuple[int, list[dict]]:
        """(count, first ``limit`` scenes) whose file path matches ``regex`` (Go RE2 syntax,
        case-sensitive, searched anywhere in ``folder + separator + basename``; a full scan, §10.2)."""
        found = self.call(PROVIDER_SCENES_BY_PATH_REGEX, {"regex": regex, "perPage": int(limit)})["findScenes"]
        return found["count"], found["scenes"]

    def provider_scenes_search(self, text: str, limit: int) -> list[dict]:
        """Up to ``limit`` scenes Stash's free-text search (``filter.q``: title, details, code,
        path) finds for ``text``, in Stash's order."""
        return self.call(PROVIDER_SCENES_SEARCH, {"q": text, "perPage": int(limit)})["findScenes"]["scenes"]

    def version(self) -> str:
        """Stash's version string (e.g. ``v0.30.1``): the cheapest authenticated call there is."""
        return ((self.call(STASH_VERSION).get("version") or {}).get("version")) or ""

    def scene_files(self, page_size: int = 1000) -> Iterator[tuple[str, str]]:
        """``(scene id, file path)`` for every file of every scene, in scene id order.

        Pages by id (``id > last seen``) rather than by page number, so scenes added or deleted
        during the listing shift nothing.
        """
        after = 0
        while True:
            scenes = self.call(SCENE_FILES_AFTER, {"after": after, "perPage": page_size})["findScenes"]["scenes"]
            for scene in scenes:
                for file in scene.get("files") or []:
                    yield scene["id"], file["path"]
            if len(scenes) < page_size:
                return
            after = int(scenes[-1]["id"])


# -- queries of the Plex metadata provider (provider.py), validated with the others ----------------

PROVIDER_SCENE_FIELDS = """fragment ProviderScene on Scene {
  id title code details director date
  studio { id name image_path parent_studio { id name image_path } }
  performers { id name image_path }
  tags { id name }
  groups { group { id name } }
  stash_ids { endpoint stash_id }
  files { path basename duration }
  paths { screenshot }
}"""
PROVIDER_FIND_SCENE = """query ProviderScene($id: ID!) { findScene(id: $id) { ...ProviderScene } }
""" + PROVIDER_SCENE_FIELDS
PROVIDER_SCENES_BY_PATH = """query ProviderScenesByPath($path: String!) {
  findScenes(scene_filter: {path: {value: $path, modifier: EQUALS}}, filter: {per_page: -1}) {
    scenes { ...ProviderScene }
  }
}
""" + PROVIDER_SCENE_FIELDS
PROVIDER_SCENES_BY_PATH_REGEX = """query ProviderScenesByPathRegex($regex: String!, $perPage: Int!) {
  findScenes(scene_filter: {path: {value: $regex, modifier: MATCHES_REGEX}}, filter: {per_page: $perPage}) {
    count scenes { ...ProviderScene }
  }
}
""" + PROVIDER_SCENE_FIELDS
PROVIDER_SCENES_SEARCH = """query ProviderScenesSearch($q: String!, $perPage: Int!) {
  findScenes(filter: {q: $q, per_page: $perPage}) { scenes { ...ProviderScene } }
}
""" + PROVIDER_SCENE_FIELDS
STASH_VERSION = """query StashVersion { version { version } }"""
SCENE_FILES_AFTER = """query SceneFilesAfter($after: Int!, $perPage: Int!) {
  findScenes(
    scene_filter: {id: {value: $after, modifier: GREATER_THAN}}
    filter: {per_page: $perPage, sort: "id", direction: ASC}
  ) { scenes { id files { path } } }
}"""
QUERIES += [PROVIDER_FIND_SCENE, PROVIDER_SCENES_BY_PATH, PROVIDER_SCENES_BY_PATH_REGEX, PROVIDER_SCENES_SEARCH,
            STASH_VERSION, SCENE_FILES_AFTER]
