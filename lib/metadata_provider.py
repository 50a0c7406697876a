"""The Plex metadata provider: what each of provider.py's routes does, without the web framework.

provider.py turns HTTP into calls of :class:`MetadataProvider` and its answers (dicts, image bytes,
:class:`ProviderError`) back into JSON; everything else happens here or in the modules this one
composes: lib/scene_match.py (which scene a file is), lib/metadata.py (the shapes PMS reads),
lib/gaps.py and lib/gap_scanner.py (gap reports), lib/cache.py, lib/stash.py, lib/plex.py.

Protocol facts are in reference/plex-provider-protocol.md (cited as §N): no match is 200 with an
empty list (§4.3); an unknown ratingKey is 404 and a malformed one 400 (§5); ``/extras`` is 200
with an empty list (§6); PMS sends no credentials, so images are fetched from Stash by the provider
with Stash's key and served by id only (§7).
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import List, Mapping, Optional, Tuple

from lib import gaps, health
from lib.cache import TTLCache
from lib.gap_scanner import GapScanner, UnmatchedLog
from lib.metadata import (IDENTIFIER, IMAGE_KINDS, container, is_stash_id, manifest, match_result, scene_id_of,
                          scene_images, scene_metadata)
from lib.paths import PathRuleError
from lib.provider_config import ProviderConfig
from lib.scene_match import SceneFinder, parse_request
from lib.stash import StashAuthError, StashError, image_type

SCENE_CACHE_ENTRIES = 50000      # scenes (and path lookups) kept at most: a whole large library's scan
IMAGE_CACHE_BYTES = 64 * 1024 * 1024
PLEX_REFRESH = 600.0             # seconds a Plex connection (and the root folders read through it) is reused
PLEX_RETRY = 60.0                # seconds before connecting to Plex again after a failure
PLEX_TIMEOUT = (3.0, 60.0)       # (connect, read) seconds for Plex
HEALTH_TIMEOUT = (2.0, 5.0)      # (connect, read) seconds for the health check of Plex
STASH_SAMPLES = 200              # Stash file paths whose round trip is checked at start-up
GAP_LISTS = ("missing_in_plex", "missing_in_stash", "unmatched_requests")
_STASH_IMAGE = {"scene": "/scene/{}/screenshot", "performer": "/performer/{}/image", "studio": "/studio/{}/image"}

logger = logging.getLogger("plexsync.provider")


class ProviderError(Exception):
    """A request answered with an HTTP error: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_status(exc: BaseException) -> Optional[Tuple[int, str]]:
    """(HTTP status, one-line message) for the errors a route may meet, None for anything else
    (a bug: answered 500 by the caller). Stash down or refusing us is 503: PMS may try again."""
    if isinstance(exc, ProviderError):
        return exc.status, exc.message
    if isinstance(exc, StashAuthError):
        return 503, "Stash refused the provider's credentials: check PLEXSYNC_STASH_API_KEY"
    if isinstance(exc, StashError):
        return 503, str(exc)
    return None


class MetadataProvider:
    """The provider's state and operations; safe to call from many threads at once.

    ``stash`` is a :class:`lib.stash.StashClient`; ``version`` the version string of the
    manifest. ``base`` arguments are the provider's public URL (``http://host:port``), the prefix
    of every image URL in an answer.
    """

    def __init__(self, config: ProviderConfig, stash, version: str):
        self.config = config
        self.stash = stash
        self.version = version
        ttl = config.cache_seconds
        self.finder = SceneFinder(stash, config.path_map, TTLCache(ttl, SCENE_CACHE_ENTRIES),
                                  TTLCache(ttl, SCENE_CACHE_ENTRIES))
        self.rendered = TTLCache(ttl, SCENE_CACHE_ENTRIES)  # (scene id, base) -> (scene, Metadata)
        self.image_cache = TTLCache(ttl, 4096, max_weight=IMAGE_CACHE_BYTES, weigh=lambda v: len(v[0]))
        self.unmatched = UnmatchedLog()
        self.scanner = GapScanner(self.scan_gaps, config.gap_interval,
                                  os.path.join(config.data_dir, "provider-gaps.json"))
        self._plex_lock = threading.Lock()
        self._plex = None
        self._plex_at = 0.0
        self._plex_error: Optional[str] = None
        self._roots: List[str] = []

    # -- routes ----------------------------------------------------------------------------------

    def manifest(self) -> dict:
        """``GET /``: the MediaProvider (§2)."""
        return manifest(self.version)

    def match(self, body: bytes, query: Mapping[str, str], base: str) -> dict:
        """``POST /library/metadata/matches``: the scenes the request names (§4). A ``manual=0``
        request that finds nothing is recorded as a gap at once. Raises ProviderError 400 for a
        malformed request."""
        try:
            request = parse_request(body, query)
        except ValueError as exc:
            raise ProviderError(400, str(exc)) from None
        outcome = self.finder.find(request, self.roots())
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("match %r manual=%d guid=%r -> %s", request.filename, request.manual, request.guid,
                         [(f.scene["id"], f.score, f.how) for f in outcome.results] or outcome.reason)
        if request.filename:
            if outcome.results:
                self.unmatched.resolve(request.filename)
            elif not request.manual:
                self.unmatched.record(request.filename, outcome.tried, outcome.reason)
        return container([match_result(self._render(f.scene, base), f.score) for f in outcome.results])

    def metadata(self, key: str, base: str) -> dict:
        """``GET /library/metadata/{ratingKey}``: the scene's full Metadata (§5)."""
        return container([self._render(self._scene(key), base)])

    def images(self, key: str, base: str) -> dict:
        """``GET /library/metadata/{ratingKey}/images``: the scene's Image entries (§6)."""
        return container(scene_images(self._scene(key), base), key="Image")

    def extras(self, key: str) -> dict:
        """``GET /library/metadata/{ratingKey}/extras``: always empty; a scene has no extras (§6)."""
        self._scene_id(key)
        return container([])

    def image(self, kind: str, object_id: str) -> Tuple[bytes, str]:
        """``GET /img/{kind}/{id}``: (bytes, MIME type) of a Stash scene cover, performer photo or
        studio image, fetched with Stash's credentials. Only these three kinds and numeric ids are
        served, always from the configured Stash: nothing in the request names a host or a path.
        Raises ProviderError 404 when there is no such image."""
        if kind not in IMAGE_KINDS or not is_stash_id(object_id):
            raise ProviderError(404, "no such image: the provider serves /img/scene|performer|studio/<Stash id>")
        cached = self.image_cache.get((kind, object_id))
        if cached is not None:
            return cached
        data = self.stash.fetch_image(_STASH_IMAGE[kind].format(object_id))
        if data is None:
            raise ProviderError(404, f"Stash has no image for {kind} {object_id}")
        answer = (data, image_type(data))
        self.image_cache.put((kind, object_id), answer)
        return answer

    def gap_report(self, query: Mapping[str, str]) -> dict:
        """``GET /gaps``: the last scan's report and the unmatched match requests, paged.

        Query: ``offset`` (default 0), ``limit`` (1-1000, default 100), ``list`` (one of
        :data:`GAP_LISTS`; default all three). Each list is ``{"total", "items"}``. Raises
        ProviderError 400 for a bad parameter.
        """
        offset = _query_int(query, "offset", 0, 0, 10 ** 9)
        limit = _query_int(query, "limit", 100, 1, 1000)
        wanted = query.get("list") or ""
        if wanted and wanted not in GAP_LISTS:
            raise ProviderError(400, f"list must be one of {', '.join(GAP_LISTS)}, not {wanted!r:.40}")
        report = self.scanner.report or {}
        unmatched = self.unmatched.items()
        lists = {"missing_in_plex": report.get("missing_in_plex") or [],
                 "missing_in_stash": report.get("missing_in_stash") or [],
                 "unmatched_requests": unmatched}
        out = {"generated_at": report.get("generated_at"), "duration_seconds": report.get("duration_seconds"),
               "counts": dict(report.get("counts") or {}, unmatched_requests=len(unmatched)),
               "scan": dict(self.scanner.status(), schedule=self.config.gap_schedule),
               "offset": offset, "limit": limit}
        for name in GAP_LISTS:
            if not wanted or wanted == name:
                out[name] = {"total": len(lists[name]), "items": lists[name][offset:offset + limit]}
        return out

    def request_scan(self) -> dict:
        """``POST /gaps/scan``: start a gap scan now. Raises ProviderError 409 without Plex (the
        comparison needs Plex's file list)."""
        if not self.config.plex_url:
            raise ProviderError(409, "gap scans need Plex: set PLEXSYNC_PLEX_URL and PLEXSYNC_PLEX_TOKEN")
        started = self.scanner.request()
        return {"scan": "started" if started else "already running", **self.scanner.status()}

    def health(self) -> dict:
        """``GET /health``: reachability of Stash and Plex, the root folders, the gap scan state.
        ``status`` is ``ok`` when Stash answers (and Plex does, when configured), else ``degraded``;
        the process itself is up whenever this answers."""
        started = time.monotonic()
        try:
            stash = {"reachable": True, "version": self.stash.version()}
        except StashError as exc:
            stash = {"reachable": False, "error": error_status(exc)[1]}
        stash.update(url=self.config.stash_url, ms=round((time.monotonic() - started) * 1000, 1))
        if self.config.plex_url:
            checked = health.check(self.config.plex_url, self.config.plex_token, HEALTH_TIMEOUT)
            plex = {"configured": True, "url": self.config.plex_url, "status": checked.status,
                    "detail": checked.detail, "ms": round(checked.elapsed_ms, 1)}
        else:
            plex = {"configured": False}
        ok = stash["reachable"] and (not plex["configured"] or plex["status"] == "up")
        return {"status": "ok" if ok else "degraded", "identifier": IDENTIFIER,
                "version": self.version, "stash": stash, "plex": plex,
                "roots": {"source": "PLEXSYNC_PLEX_ROOTS" if self.config.plex_roots else "plex",
                          "paths": self.roots(), "error": None if self.config.plex_roots else self._plex_error},
                "gaps": dict(self.scanner.status(), schedule=self.config.gap_schedule,
                             unmatched_requests=len(self.unmatched))}

    # -- start-up, Plex, scans -------------------------------------------------------------------

    def check_paths(self) -> List[str]:
        """Check that the path rules round-trip on sample paths, before traffic is accepted.

        Samples: files under every known root folder (Plex side), and the first
        :data:`STASH_SAMPLES` file paths of Stash when it answers (Stash side). Returns the
        one-line problems of lib/paths.py (each names the rule and shows the failing path); logs
        a warning for a root no rule covers while rules exist.
        """
        roots = self.roots()
        samples = []
        for root in roots:
            sep = "\\" if "\\" in root or root[1:2] == ":" else "/"
            base = root.rstrip("/\\")
            samples += [base + sep + "sample.mp4", sep.join([base, "Sample Studio", "2024", "Sample Scene [1080p].mp4"])]
            if self.config.path_map.rules and not any(_covered(self.config.path_map, p) for p in samples[-2:]):
                logger.warning("no path rule covers the Plex folder %s: its files are matched by name only", root)
        problems = self.config.path_map.check_round_trip(samples, side="plex")
        try:
            stash_paths = [path for _, path in itertools.islice(self.stash.scene_files(STASH_SAMPLES), STASH_SAMPLES)]
        except StashError as exc:
            logger.warning("path rules checked on %d Plex sample paths only: %s", len(samples), error_status(exc)[1])
            stash_paths = []
        return problems + self.config.path_map.check_round_trip(stash_paths, side="stash")

    def roots(self) -> List[str]:
        """The libraries' root folders as Plex sees them: configured, else read from Plex's movie
        sections (reread every :data:`PLEX_REFRESH` seconds); empty when neither is available."""
        if self.config.plex_roots:
            return list(self.config.plex_roots)
        self._plex_connection()
        return list(self._roots)

    def _plex_connection(self):
        """The shared Plex connection (lib/plex.py), reconnected every PLEX_REFRESH seconds, or
        None (no Plex configured, or the last attempt failed less than PLEX_RETRY seconds ago)."""
        if not self.config.plex_url:
            return None
        with self._plex_lock:
            age = time.monotonic() - self._plex_at
            if (self._plex is None and age >= PLEX_RETRY) or age >= PLEX_REFRESH:
                self._plex_at = time.monotonic()
                try:
                    self._plex = self._connect_plex()
                    self._roots = [loc for s in self._plex.sections.values() for loc in s.locations]
                    self._plex_error = None
                except Exception as exc:  # plexapi raises its own, requests' and PlexConfigError
                    self._plex = None
                    self._plex_error = f"Plex: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    logger.warning("%s (roots not read; retried in %.0f s)", self._plex_error, PLEX_RETRY)
            return self._plex

    def _connect_plex(self):
        from lib.plex import Plex

        return Plex(self.config.plex_url, self.config.plex_token, list(self.config.plex_libraries), PLEX_TIMEOUT)

    def scan_gaps(self) -> dict:
        """One bidirectional comparison (lib/gaps.py) of every Stash scene file with every part of
        the Plex movie libraries, through a fresh Plex connection. Raises what Stash and Plex
        raise (the scanner keeps the error)."""
        index = self._connect_plex().index(max_age=0)
        plex_files = ((cand.rating_key, path) for entries in index.by_name.values() for path, cand in entries)
        return gaps.compare(self.stash.scene_files(), plex_files, self.config.path_map)

    # -- helpers ---------------------------------------------------------------------------------

    def _render(self, scene: dict, base: str) -> dict:
        """The scene's Metadata, rendered once per cached copy of the scene: an entry is reused
        only while the scene cache still holds the very object it was rendered from."""
        entry = self.rendered.get((scene["id"], base))
        if entry is not None and entry[0] is scene:
            return entry[1]
        full = scene_metadata(scene, base)
        self.rendered.put((scene["id"], base), (scene, full))
        return full

    def _scene_id(self, key: str) -> str:
        try:
            return scene_id_of(key)
        except ValueError as exc:
            raise ProviderError(400, str(exc)) from None

    def _scene(self, key: str) -> dict:
        scene = self.finder.scene(self._scene_id(key))
        if scene is None:
            raise ProviderError(404, f"Stash has no scene for ratingKey {key}")
        return scene


def _covered(mapper, plex_path: str) -> bool:
    try:
        return mapper.to_stash(plex_path).rule is not None
    except PathRuleError:
        return True  # covered, wrongly: check_round_trip reports it


def _query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text in (None, ""):
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ProviderError(400, f"{name} must be a whole number from {low} to {high}, not {text!r:.40}")
    return int(text)
