"""A fake Stash server for PlexSync tests, the sandbox and benchmarks.

``FakeStash`` is a real HTTP server on 127.0.0.1 that the plugin (or plain
``requests``) talks to exactly as it would talk to Stash. Behaviour follows
``/work/shared/reference/stash-plugin-protocol.md`` ("the reference"); each
docstring names the section (§) whose fact it mirrors.

* GraphQL documents are validated against the real Stash schema (vendored in
  ``../shared/stash-schema/schema``), or, when that folder is missing, against
  the hand-written ``tests/stash_schema_min.graphql`` (§10).
* Filters, sorting and paging copy Stash's SQL semantics (§10.2), including the
  surprising parts: ``updated_at`` is compared as a raw string, path ``EQUALS``
  is a case-insensitive ``LIKE`` with ``_``/``%`` wildcards.
* Authentication copies §6/§11: ``/graphql`` answers 401 with an empty body,
  image routes answer 302 to ``/login``.

Mutate data only through the methods (``add_scene``, ``update_scene``, ...):
they keep the timestamps, the path index and the query cache consistent.
"""
from __future__ import annotations

import bisect
import contextlib
import functools
import glob
import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import graphql
from graphql import GraphQLError
from graphql import (FieldNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLEnumType, GraphQLList,
                     GraphQLNonNull, GraphQLObjectType, GraphQLScalarType, InlineFragmentNode, OperationType, Undefined)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.pyutils import is_iterable
from graphql.utilities import get_operation_ast

__all__ = ["FakeStash", "Req", "REAL_SCHEMA_DIR", "MIN_SCHEMA_PATH", "load_schema", "file_props", "sql_like"]

REAL_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "shared" / "stash-schema" / "schema"
MIN_SCHEMA_PATH = Path(__file__).resolve().parent / "stash_schema_min.graphql"

STASH_VERSION = {
    "version": "v0.30.1-19-gcf3489efd",
    "hash": "cf3489efd",
    "build_time": "2026-01-11 07:07:53",
}

GENDERS = ("MALE", "FEMALE", "TRANSGENDER_MALE", "TRANSGENDER_FEMALE", "INTERSEX", "NON_BINARY")

# Sort names accepted by Stash (pkg/sqlite/scene.go sceneSortOptions; CVE-2024-32231
# whitelist, §10.2). Anything else is a resolver error.
SCENE_SORTS = frozenset(
    """bitrate created_at code date file_count filesize duration file_mod_time framerate
    group_scene_number id interactive interactive_speed last_o_at last_played_at
    movie_scene_number o_counter organized performer_count play_count play_duration
    resume_time path perceptual_similarity random rating resolution studio tag_count
    title updated_at""".split()
)


# --------------------------------------------------------------------------- schema

_SCHEMA_CACHE: Dict[str, graphql.GraphQLSchema] = {}
_SCHEMA_LOCK = threading.Lock()


def load_schema(source: str = "auto") -> Tuple[graphql.GraphQLSchema, str]:
    """Build (once per process) the schema. ``source``: "auto", "real" or "minimal".

    §10: concatenate every upstream ``*.graphql`` file and call ``build_schema``.
    Returns ``(schema, "real" | "minimal")``.
    """
    if source == "auto":
        source = "real" if REAL_SCHEMA_DIR.is_dir() else "minimal"
    if source not in ("real", "minimal"):
        raise ValueError(f"unknown schema source {source!r}")
    with _SCHEMA_LOCK:
        if source not in _SCHEMA_CACHE:
            if source == "real":
                files = sorted(glob.glob(str(REAL_SCHEMA_DIR / "**" / "*.graphql"), recursive=True))
                if not files:
                    raise FileNotFoundError(f"no *.graphql under {REAL_SCHEMA_DIR}")
                text = "\n".join(Path(f).read_text(encoding="utf-8") for f in files)
            else:
                text = MIN_SCHEMA_PATH.read_text(encoding="utf-8")
            _SCHEMA_CACHE[source] = graphql.build_schema(text)
        return _SCHEMA_CACHE[source], source


# --------------------------------------------------------------------------- helpers

class Req(NamedTuple):
    """One logged HTTP request. ``path`` is the request target incl. query string;
    ``headers`` is the case-insensitive ``http.client.HTTPMessage``."""

    path: str
    method: str
    operation_name: Optional[str]
    query: Optional[str]
    variables: Optional[dict]
    headers: Any
    status: int


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def ascii_lower(s: str) -> str:
    """Lower-case ASCII letters only: SQLite's built-in LIKE folds only ASCII (§10.2)."""
    return s.translate(_ASCII_LOWER)


@functools.lru_cache(maxsize=4096)
def like_regex(pattern: str) -> "re.Pattern[str]":
    """Translate an SQLite ``LIKE`` pattern without ESCAPE clause into a regex.

    §10.2: Stash's path/string EQUALS is ``LIKE ?`` with no escape, so ``%`` matches
    any run, ``_`` exactly one character, and ASCII letters match either case
    (non-ASCII letters are case-sensitive). Use ``.fullmatch``.
    """
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch.isascii() and ch.isalpha():
            out.append("[" + ch.lower() + ch.upper() + "]")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def sql_like(value: str, pattern: str) -> bool:
    return like_regex(pattern).fullmatch(value) is not None


_RE2_UNSUPPORTED = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]|\\Z|[*+?}][+]")


@functools.lru_cache(maxsize=512)
def re2_compile(pattern: str) -> "re.Pattern[str]":
    """Python ``re`` as a stand-in for Go RE2 (§10.2 MATCHES_REGEX: case-sensitive,
    unanchored search). Constructs RE2 rejects (look-around, back-references,
    possessive quantifiers, ``\\Z``) raise like Stash would."""
    if _RE2_UNSUPPORTED.search(pattern):
        raise ValueError(f"error parsing regexp: invalid or unsupported Perl syntax: {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"error parsing regexp: {e}: {pattern!r}") from None


_NAT_SPLIT = re.compile(r"(\d+)")


def natural_ci(s: str) -> tuple:
    """Approximation of Stash's ``COLLATE NATURAL_CI`` (digits by value, text case-folded)."""
    parts = _NAT_SPLIT.split(s)
    return tuple((0, int(p), "") if i % 2 else (1, 0, p.casefold()) for i, p in enumerate(parts) if p)


def parse_offset(offset: str) -> int:
    if offset in ("Z", "z", ""):
        return 0
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", offset)
    if not m:
        raise ValueError(f"bad UTC offset {offset!r}; use e.g. '+10:00'")
    secs = int(m.group(2)) * 3600 + int(m.group(3)) * 60
    return secs if m.group(1) == "+" else -secs


def rfc3339_to_unix(s: str) -> int:
    """Unix seconds of an RFC3339 string as Stash outputs it (``...+10:00`` or ``...Z``)."""
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    return int(datetime.fromisoformat(s).timestamp())


_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def file_props(file_id: str) -> Tuple[float, int, int, int]:
    """Deterministic ``(duration seconds, size bytes, width, height)`` of a fake file
    (§10.2 Values: ``size`` Int64, ``duration`` Float seconds)."""
    fid = int(file_id)
    duration = 300.0 + (fid * 7919 % 5400) + (fid % 100) / 100.0
    big = fid % 3 != 0
    return duration, int(duration * 625_000), 1920 if big else 1280, 1080 if big else 720


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(seed: str, width: int = 64, height: int = 36) -> bytes:
    """A small, valid, deterministic RGB PNG whose pixels depend on ``seed``."""
    h = hashlib.sha256(seed.encode("utf-8")).digest()
    r0, g0, b0, r1, g1, b1 = h[:6]
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0
        for x in range(width):
            t = (x + y) / float(width + height)
            row += bytes((int(r0 + (r1 - r0) * t) & 255, int(g0 + (g1 - g0) * t) & 255,
                          int(b0 + (b1 - b0) * t + (h[6 + (x // 8) % 20] & 15)) & 255))
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + _png_chunk(b"IEND", b""))


def make_mp4(seed: str, payload: int = 2048) -> bytes:
    """Bytes that start like an ISO-BMFF/MP4 file (``....ftypisom``)."""
    ftyp = struct.pack(">I", 32) + b"ftyp" + b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    info = seed.encode("utf-8")
    free = struct.pack(">I", 8 + len(info)) + b"free" + info
    body = (hashlib.sha256(info).digest() * (payload // 32 + 1))[:payload]
    mdat = struct.pack(">I", 8 + len(body)) + b"mdat" + body
    return ftyp + free + mdat


PLACEHOLDER_PNG = make_png("stash-default-placeholder", 32, 32)

_LOGIN_HTML = b"<!doctype html><html><head><title>Login</title></head><body><form>Stash login</form></body></html>"


def _norm_id(v: Any) -> str:
    """Stash converts IDs with strconv.Atoi; "007" is scene 7."""
    s = str(v).strip()
    try:
        return str(int(s))
    except ValueError:
        raise ValueError(f'strconv.Atoi: parsing "{s}": invalid syntax') from None


class _Unsupported(Exception):
    pass


# --------------------------------------------------------------------------- views

class _Ctx:
    __slots__ = ("stash", "base")

    def __init__(self, stash: "FakeStash", base: str) -> None:
        self.stash = stash
        self.base = base


class _TagView:
    __slots__ = ("_r", "_c")

    def __init__(self, rec: dict, ctx: _Ctx) -> None:
        self._r = rec
        self._c = ctx

    id = property(lambda self: self._r["id"])
    name = property(lambda self: self._r["name"])
    sort_name = property(lambda self: None)
    description = property(lambda self: "")
    aliases = property(lambda self: [])
    ignore_auto_tag = property(lambda self: False)
    favorite = property(lambda self: False)
    stash_ids = property(lambda self: [])
    parents = property(lambda self: [])
    children = property(lambda self: [])
    parent_count = property(lambda self: 0)
    child_count = property(lambda self: 0)
    created_at = property(lambda self: self._r["created_at"])
    updated_at = property(lambda self: self._r["updated_at"])

    @property
    def image_path(self) -> str:
        r = self._r
        return f"{self._c.base}/tag/{r['id']}/image?t={rfc3339_to_unix(r['updated_at'])}&default=true"

    def scene_count(self, info, depth=None) -> int:
        return sum(1 for s in self._c.stash.scenes.values() if self._r["id"] in s["tag_ids"])


class _PerformerView:
    __slots__ = ("_r", "_c")

    def __init__(self, rec: dict, ctx: _Ctx) -> None:
        self._r = rec
        self._c = ctx

    id = property(lambda self: self._r["id"])
    name = property(lambda self: self._r["name"])
    gender = property(lambda self: self._r["gender"])
    disambiguation = property(lambda self: None)
    urls = property(lambda self: [])
    alias_list = property(lambda self: [])
    favorite = property(lambda self: False)
    ignore_auto_tag = property(lambda self: False)
    tags = property(lambda self: [])
    stash_ids = property(lambda self: [])
    groups = property(lambda self: [])
    movies = property(lambda self: [])
    custom_fields = property(lambda self: {})
    image_count = property(lambda self: 0)
    gallery_count = property(lambda self: 0)
    group_count = property(lambda self: 0)
    movie_count = property(lambda self: 0)
    performer_count = property(lambda self: 0)
    created_at = property(lambda self: self._r["created_at"])
    updated_at = property(lambda self: self._r["updated_at"])

    @property
    def image_path(self) -> str:
        """§11: ``<base>/performer/<id>/image?t=<unix>``, ``&default=true`` without image."""
        r = self._r
        url = f"{self._c.base}/performer/{r['id']}/image?t={rfc3339_to_unix(r['updated_at'])}"
        return url if r["has_image"] else url + "&default=true"

    @property
    def scene_count(self) -> int:
        return sum(1 for s in self._c.stash.scenes.values() if self._r["id"] in s["performer_ids"])


class _StudioView:
    __slots__ = ("_r", "_c")

    def __init__(self, rec: dict, ctx: _Ctx) -> None:
        self._r = rec
        self._c = ctx

    id = property(lambda self: self._r["id"])
    name = property(lambda self: self._r["name"])
    urls = property(lambda self: [])
    aliases = property(lambda self: [])
    tags = property(lambda self: [])
    ignore_auto_tag = property(lambda self: False)
    favorite = property(lambda self: False)
    stash_ids = property(lambda self: [])
    groups = property(lambda self: [])
    movies = property(lambda self: [])
    details = property(lambda self: "")
    created_at = property(lambda self: self._r["created_at"])
    updated_at = property(lambda self: self._r["updated_at"])

    @property
    def parent_studio(self) -> Optional["_StudioView"]:
        pid = self._r["parent_id"]
        p = self._c.stash.studios.get(pid) if pid else None
        return _StudioView(p, self._c) if p else None

    @property
    def child_studios(self) -> List["_StudioView"]:
        return [_StudioView(s, self._c) for s in self._c.stash.studios.values() if s["parent_id"] == self._r["id"]]

    @property
    def image_path(self) -> str:
        """§11: ``<base>/studio/<id>/image?t=<unix>``, ``&default=true`` without image."""
        r = self._r
        url = f"{self._c.base}/studio/{r['id']}/image?t={rfc3339_to_unix(r['updated_at'])}"
        return url if r["has_image"] else url + "&default=true"

    def scene_count(self, info, depth=None) -> int:
        ids = self._c.stash._studio_descendants([self._r["id"]], depth or 0)
        return sum(1 for s in self._c.stash.scenes.values() if s["studio_id"] in ids)


class _SceneView:
    """Resolves ``Scene`` fields from a stored scene dict (§10.1 SceneSync fragment)."""

    __slots__ = ("_r", "_c")

    def __init__(self, rec: dict, ctx: _Ctx) -> None:
        self._r = rec
        self._c = ctx

    id = property(lambda self: self._r["id"])
    title = property(lambda self: self._r["title"])
    code = property(lambda self: self._r["code"])
    details = property(lambda self: self._r["details"])
    # director, groups and stash_ids are set with update_scene(director=, group_ids=, stash_ids=)
    director = property(lambda self: self._r.get("director") or "")
    # §10.2 Values: urls is never null.
    urls = property(lambda self: list(self._r["urls"]))
    url = property(lambda self: self._r["urls"][0] if self._r["urls"] else None)
    date = property(lambda self: self._r["date"])
    rating100 = property(lambda self: self._r["rating100"])
    organized = property(lambda self: bool(self._r["organized"]))
    o_counter = property(lambda self: 0)
    interactive = property(lambda self: False)
    interactive_speed = property(lambda self: None)
    captions = property(lambda self: [])
    created_at = property(lambda self: self._r["created_at"])
    updated_at = property(lambda self: self._r["updated_at"])
    last_played_at = property(lambda self: None)
    resume_time = property(lambda self: 0.0)
    play_duration = property(lambda self: 0.0)
    play_count = property(lambda self: 0)
    play_history = property(lambda self: [])
    o_history = property(lambda self: [])
    scene_markers = property(lambda self: [])
    galleries = property(lambda self: [])
    movies = property(lambda self: [])
    sceneStreams = property(lambda self: [])

    @property
    def groups(self) -> List[dict]:
        """``SceneGroup`` objects: ``{group: {id, name}, scene_index}``."""
        gs = self._c.stash.groups
        return [{"group": gs[g], "scene_index": None} for g in self._r.get("group_ids", ()) if g in gs]

    @property
    def stash_ids(self) -> List[dict]:
        """``StashID`` objects ``{endpoint, stash_id, updated_at}``."""
        return [{"endpoint": e, "stash_id": i, "updated_at": self._r["updated_at"]}
                for e, i in self._r.get("stash_ids", ())]

    @property
    def files(self) -> List[dict]:
        r = self._r
        out = []
        sep = self._c.stash.path_sep
        for f in r["files"]:
            folder = f["path"][: len(f["path"]) - len(f["basename"])].rstrip(sep) or sep
            duration, size, width, height = file_props(f["id"])
            out.append({
                "id": f["id"], "path": f["path"], "basename": f["basename"],
                "parent_folder_id": f["id"], "zip_file_id": None, "zip_file": None,
                "parent_folder": {"id": f["id"], "path": folder, "mod_time": r["created_at"],
                                  "created_at": r["created_at"], "updated_at": r["created_at"]},
                "mod_time": r["created_at"], "size": size, "duration": duration,
                "width": width, "height": height, "format": "mp4",
                "video_codec": "h264", "audio_codec": "aac", "frame_rate": 29.97,
                "bit_rate": int(size * 8 / duration),
                "fingerprints": [], "created_at": r["created_at"], "updated_at": r["created_at"],
                "fingerprint": (lambda info, type, _id=f["id"]:
                                hashlib.md5(f"{type}:{_id}".encode()).hexdigest()[:16]),
            })
        return out

    @property
    def paths(self) -> dict:
        """§11: screenshot ``?t=<updated_at unix>``, preview is an MP4, stream gets
        ``?apikey=`` when an API key is configured."""
        r = self._r
        base = f"{self._c.base}/scene/{r['id']}"
        key = self._c.stash.api_key
        return {
            "screenshot": f"{base}/screenshot?t={rfc3339_to_unix(r['updated_at'])}",
            "preview": f"{base}/preview",
            "stream": f"{base}/stream" + (f"?apikey={key}" if key else ""),
            "webp": f"{base}/webp", "vtt": f"{base}/vtt/thumbs", "sprite": f"{base}/vtt/sprite",
            "funscript": f"{base}/funscript", "interactive_heatmap": f"{base}/interactive_heatmap",
            "caption": f"{base}/caption",
        }

    @property
    def studio(self) -> Optional[_StudioView]:
        sid = self._r["studio_id"]
        s = self._c.stash.studios.get(sid) if sid else None
        return _StudioView(s, self._c) if s else None

    @property
    def performers(self) -> List[_PerformerView]:
        ps = self._c.stash.performers
        return [_PerformerView(ps[i], self._c) for i in self._r["performer_ids"] if i in ps]

    @property
    def tags(self) -> List[_TagView]:
        ts = self._c.stash.tags
        return [_TagView(ts[i], self._c) for i in self._r["tag_ids"] if i in ts]


# --------------------------------------------------------------------------- resolvers

class _Root:
    """Root value: graphql-core's default resolver calls these with ``(info, **args)``."""

    def __init__(self, stash: "FakeStash") -> None:
        self._s = stash

    # ---- scenes
    def findScene(self, info, id=None, checksum=None):
        """§10.1: ``findScene(id)`` is null for unknown IDs (non-numeric → Atoi error)."""
        if id is None:
            return None
        rec = self._s.scenes.get(_norm_id(id))
        return _SceneView(rec, info.context) if rec else None

    def findScenes(self, info, scene_filter=None, scene_ids=None, ids=None, filter=None):
        """§10.2 semantics. With ``ids``/``scene_ids`` Stash calls ``FindMany``
        (internal/api/resolver_query_find_scene.go): filter and paging are ignored,
        order follows the list, and any unknown (or repeated) ID fails the whole query
        with "scene with id N not found"."""
        s = self._s
        ctx = info.context
        id_list = [_norm_id(i) for i in ids] if ids else ([_norm_id(i) for i in scene_ids] if scene_ids else [])
        if id_list:
            seen = set()
            recs = []
            for i in id_list:
                rec = s.scenes.get(i)
                if rec is None or i in seen:
                    raise ValueError(f"scene with id {i} not found")
                seen.add(i)
                recs.append(rec)
            return s._result(recs, len(recs), ctx)
        ordered = s._query_scenes(scene_filter or {}, filter or {})
        return s._result(s._page(ordered, filter or {}), len(ordered), ctx, ordered)

    # ---- performers / studios / tags
    def findPerformer(self, info, id):
        rec = self._s.performers.get(_norm_id(id))
        return _PerformerView(rec, info.context) if rec else None

    def findStudio(self, info, id):
        rec = self._s.studios.get(_norm_id(id))
        return _StudioView(rec, info.context) if rec else None

    def findTag(self, info, id):
        rec = self._s.tags.get(_norm_id(id))
        return _TagView(rec, info.context) if rec else None

    def findPerformers(self, info, performer_filter=None, filter=None, performer_ids=None, ids=None):
        recs, count = self._s._query_named(self._s.performers, performer_filter, filter, ids or performer_ids)
        return {"count": count, "performers": [_PerformerView(r, info.context) for r in recs]}

    def findStudios(self, info, studio_filter=None, filter=None, ids=None):
        recs, count = self._s._query_named(self._s.studios, studio_filter, filter, ids)
        return {"count": count, "studios": [_StudioView(r, info.context) for r in recs]}

    def findTags(self, info, tag_filter=None, filter=None, ids=None):
        recs, count = self._s._query_named(self._s.tags, tag_filter, filter, ids)
        return {"count": count, "tags": [_TagView(r, info.context) for r in recs]}

    # ---- system
    def configuration(self, info):
        """§5/§6: ``general.apiKey`` ("" if never generated); ``plugins(include)`` is
        ``{id: {key: value}}`` and omits IDs with nothing stored."""
        s = self._s

        def plugins(info, include=None):
            data = s.plugin_settings
            keys = list(data) if include is None else [k for k in include if k in data]
            return {k: json.loads(json.dumps(data[k])) for k in keys}

        return {"general": {"apiKey": s.api_key}, "ui": {}, "plugins": plugins}

    def version(self, info):
        return dict(STASH_VERSION)

    def jobQueue(self, info):
        return list(self._s.jobs)

    def plugins(self, info):
        return list(self._s.installed_plugins)

    # ---- mutations
    def sceneUpdate(self, info, input):
        """Applies a ``SceneUpdateInput`` (§2 lists its keys). Fires no hooks."""
        s = self._s
        sid = _norm_id(input["id"])
        if sid not in s.scenes:
            raise ValueError(f"scene with id {sid} not found")
        changes: Dict[str, Any] = {}
        for k in ("title", "code", "details", "date", "rating100", "organized", "studio_id",
                  "performer_ids", "tag_ids", "urls"):
            if k in input:
                changes[k] = input[k]
        if input.get("url") is not None and "urls" not in input:
            changes["urls"] = [input["url"]]
        if input.get("cover_image"):
            changes["has_cover"] = True
        s.update_scene(sid, **changes)
        return _SceneView(s.scenes[sid], info.context)

    def configurePlugin(self, info, plugin_id, input):
        """§5: ``configurePlugin`` replaces the whole map."""
        self._s.plugin_settings[plugin_id] = dict(input or {})
        return dict(input or {})


# --------------------------------------------------------------------------- fast query execution

class _Slow(Exception):
    """The fast executor does not model this: graphql-core executes the request."""


_NON_NULL, _LIST = "!", "[]"


class _FastInfo:
    """What the fake's resolvers read from graphql-core's ``GraphQLResolveInfo`` (``context``);
    any other attribute is absent, so a resolver needing one fails and graphql-core takes over."""

    __slots__ = ("context", "schema", "variables", "field_name")

    def __init__(self, context: _Ctx, schema: Any, variables: Any) -> None:
        self.context, self.schema, self.variables, self.field_name = context, schema, variables, None


def _plan_selections(schema: Any, parent: Any, selection_set: Any, fragments: dict, seen: dict) -> list:
    """[(response key, field name, field def, field node, wrappers, named type, sub-plan)] of an
    object type's selection set, fragments inlined (only on the same object type)."""
    plan: list = []
    for sel in selection_set.selections:
        if sel.directives:
            raise _Slow
        if isinstance(sel, FieldNode):
            name = sel.name.value
            response_key = sel.alias.value if sel.alias else name
            if response_key in seen:
                raise _Slow  # field merging: leave it to graphql-core
            seen[response_key] = True
            if name == "__typename":
                plan.append((response_key, name, None, sel, (), parent, None))
                continue
            if name.startswith("__"):
                raise _Slow
            fdef = parent.fields[name]
            wrappers, t = [], fdef.type
            while isinstance(t, (GraphQLNonNull, GraphQLList)):
                wrappers.append(_NON_NULL if isinstance(t, GraphQLNonNull) else _LIST)
                t = t.of_type
            if isinstance(t, (GraphQLScalarType, GraphQLEnumType)):
                sub = None
            elif isinstance(t, GraphQLObjectType) and sel.selection_set is not None and not t.is_type_of:
                sub = _plan_selections(schema, t, sel.selection_set, fragments, {})
            else:
                raise _Slow
            plan.append((response_key, name, fdef, sel, tuple(wrappers), t, sub))
        else:
            if isinstance(sel, FragmentSpreadNode):
                frag = fragments[sel.name.value]
                if frag.directives:
                    raise _Slow
                cond, inner = frag.type_condition, frag.selection_set
            elif isinstance(sel, InlineFragmentNode):
                cond, inner = sel.type_condition, sel.selection_set
            else:
                raise _Slow
            if cond is not None and cond.name.value != parent.name:
                raise _Slow
            plan.extend(_plan_selections(schema, parent, inner, fragments, seen))
    return plan


def _run_plan(plan: list, source: Any, info: _FastInfo) -> dict:
    out: Dict[str, Any] = {}
    mapping = isinstance(source, Mapping)
    for response_key, name, fdef, node, wrappers, named, sub in plan:
        if fdef is None:  # __typename
            out[response_key] = named.name
            continue
        value = source.get(name) if mapping else getattr(source, name, None)
        if callable(value):  # graphql-core's default resolver
            info.field_name = name
            args = get_argument_values(fdef, node, info.variables) if fdef.args else {}
            value = value(info, **args)
        out[response_key] = _complete(value, wrappers, 0, named, sub, info)
    return out


def _complete(value: Any, wrappers: tuple, i: int, named: Any, sub: Optional[list], info: _FastInfo) -> Any:
    if isinstance(value, Exception):
        raise _Slow
    if i < len(wrappers):
        if wrappers[i] == _NON_NULL:
            done = _complete(value, wrappers, i + 1, named, sub, info)
            if done is None:
                raise _Slow
            return done
        if value is None:
            return None
        if not is_iterable(value):
            raise _Slow
        return [_complete(v, wrappers, i + 1, named, sub, info) for v in value]
    if value is None:
        return None
    if sub is None:
        done = named.coerce_output_value(value)
        if done is None or done is Undefined:
            raise _Slow
        return done
    return _run_plan(sub, value, info)


# --------------------------------------------------------------------------- HTTP

_IMAGE_ROUTE = re.compile(r"^/(scene|performer|studio|tag)/([^/]+)/(screenshot|preview|stream|image)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # no stderr output
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeStash"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def version_string(self) -> str:
        return "FakeStash"

    # silence
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass

    @property
    def fake(self) -> "FakeStash":
        return self.server.fake  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track(self.connection, False)

    def _send(self, status: int, body: bytes = b"", ctype: Optional[str] = None,
              extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self) -> None:
        fake = self.fake
        if fake.latency_ms:
            time.sleep(fake.latency_ms / 1000.0)
        try:
            status, body, ctype, extra, log = fake._handle(self)
        except Exception as e:  # never leak a traceback to stderr
            status, body, ctype, extra = 500, json.dumps({"errors": [{"message": f"fake stash: {e!r}"}]}).encode(), "application/json", None
            log = (None, None, None)
        fake._log(Req(self.path, self.command, log[0], log[1], log[2], self.headers, status))
        self._send(status, body, ctype, extra)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch


# --------------------------------------------------------------------------- FakeStash

class FakeStash:
    """A fake Stash (v0.30.1) HTTP + GraphQL server; see the module docstring."""

    def __init__(self, api_key: str = "", session_cookie: str = "sess-cookie-value", require_auth: bool = True,
                 latency_ms: float = 0.0, offset: str = "+10:00", schema: str = "auto") -> None:
        self.api_key = api_key
        self.session_cookie = session_cookie
        self.require_auth = require_auth
        self.latency_ms = float(latency_ms)
        self.offset = offset
        self._off_s = parse_offset(offset)
        self._off_suffix = "Z" if self._off_s == 0 else (
            ("+" if self._off_s > 0 else "-") + "%02d:%02d" % divmod(abs(self._off_s) // 60, 60))
        self.schema, self.schema_source = load_schema(schema)
        self.path_sep = "/"

        self.scenes: Dict[str, dict] = {}
        self.performers: Dict[str, dict] = {}
        self.studios: Dict[str, dict] = {}
        self.tags: Dict[str, dict] = {}
        self.groups: Dict[str, dict] = {}   # id -> {"id", "name"} (scene groups, formerly movies)
        self.plugin_settings: Dict[str, dict] = {}
        self.installed_plugins: List[dict] = []
        self.jobs: List[dict] = []

        self.requests: List[Req] = []
        self.queries: List[str] = []
        self.invalid_queries: List[Tuple[str, List[str]]] = []

        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._next = {"scene": 0, "performer": 0, "studio": 0, "tag": 0, "file": 0}
        self._clock_last = 0
        self._cookie_expired = False
        self._version = 0
        self._query_cache: Dict[Any, List[dict]] = {}
        self._doc_cache: Dict[str, Tuple[Any, List[str]]] = {}
        self._plan_cache: Dict[Any, Tuple[Any, Optional[list]]] = {}
        # Queries run through _fast_execute (same data as graphql-core, ~20x faster); False: always
        # graphql-core.
        self.fast_graphql = True
        self._path_index: Optional[Dict[str, List[str]]] = None
        self._img_cache: Dict[Tuple, bytes] = {}
        self._root = _Root(self)

        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._port = 0
        self._conns: set = set()
        self.accepted_connections = 0   # TCP connections accepted (shows keep-alive reuse)
        self._conns_lock = threading.Lock()
        self.url = ""

    # ------------------------------------------------------------------ clock
    def _fmt(self, ts: int) -> str:
        """RFC3339 in the server's fixed local offset, as Stash stores ``updated_at`` (§10.2)."""
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts + self._off_s)) + self._off_suffix

    def _tick(self) -> int:
        """Strictly increasing second for each write (advances ≥1 s past the last one)."""
        t = max(int(time.time()), self._clock_last + 1)
        self._clock_last = t
        return t

    def _now(self) -> int:
        t = max(int(time.time()), self._clock_last)
        self._clock_last = t
        return t

    def advance_clock(self, seconds: int) -> None:
        """Push the fake clock forward: the next write is stamped ≥ ``seconds`` later."""
        with self._lock:
            self._clock_last = max(self._clock_last, int(time.time())) + int(seconds)

    def now_string(self) -> str:
        """The fake clock's current time as Stash would store it."""
        return self._fmt(max(int(time.time()), self._clock_last))

    def _changed(self) -> None:
        self._version += 1
        self._query_cache.clear()

    # ------------------------------------------------------------------ data API
    def add_studio(self, name: str, parent_id: Optional[str] = None, has_image: bool = True) -> str:
        with self._lock:
            if parent_id is not None and str(parent_id) not in self.studios:
                raise KeyError(f"unknown parent studio {parent_id!r}")
            self._next["studio"] += 1
            sid = str(self._next["studio"])
            ts = self._fmt(self._now())
            self.studios[sid] = {"id": sid, "name": name, "parent_id": str(parent_id) if parent_id else None,
                                 "has_image": has_image, "image_version": 1, "created_at": ts, "updated_at": ts}
            self._changed()
            return sid

    def add_performer(self, name: str, gender: Optional[str] = None, has_image: bool = True) -> str:
        if gender is not None and gender not in GENDERS:
            raise ValueError(f"gender must be one of {GENDERS} or None")
        with self._lock:
            self._next["performer"] += 1
            pid = str(self._next["performer"])
            ts = self._fmt(self._now())
            self.performers[pid] = {"id": pid, "name": name, "gender": gender, "has_image": has_image,
                                    "image_version": 1, "created_at": ts, "updated_at": ts}
            self._changed()
            return pid

    def add_group(self, name: str) -> str:
        """Create a group (``Group {id name}``); put scenes in it with ``update_scene(group_ids=)``."""
        with self._lock:
            gid = str(len(self.groups) + 1)
            self.groups[gid] = {"id": gid, "name": name}
            self._changed()
            return gid

    def add_tag(self, name: str) -> str:
        with self._lock:
            self._next["tag"] += 1
            tid = str(self._next["tag"])
            ts = self._fmt(self._now())
            self.tags[tid] = {"id": tid, "name": name, "created_at": ts, "updated_at": ts}
            self._changed()
            return tid

    def _make_files(self, files: Iterable[str]) -> List[dict]:
        """File records ``{"id", "path", "basename"}``; size/duration/resolution derive
        deterministically from the file id (see :func:`file_props`)."""
        out = []
        sep = self.path_sep
        for p in files:
            self._next["file"] += 1
            out.append({"id": str(self._next["file"]), "path": p, "basename": p.rsplit(sep, 1)[-1]})
        return out

    def _check_refs(self, studio_id=None, performer_ids=(), tag_ids=()) -> None:
        if studio_id is not None and str(studio_id) not in self.studios:
            raise KeyError(f"unknown studio {studio_id!r}")
        for p in performer_ids:
            if str(p) not in self.performers:
                raise KeyError(f"unknown performer {p!r}")
        for t in tag_ids:
            if str(t) not in self.tags:
                raise KeyError(f"unknown tag {t!r}")

    @staticmethod
    def _check_date(date: Optional[str]) -> None:
        """§10.2 Values: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (partial dates, #6359)."""
        if date is not None and not _DATE_RE.match(date):
            raise ValueError(f"invalid date {date!r}")

    def add_scene(self, files, title: str = "", details: str = "", date: Optional[str] = None,
                  studio_id: Optional[str] = None, performer_ids=(), tag_ids=(), code: str = "", urls=(),
                  rating100=None, has_cover: bool = True, organized: bool = False) -> str:
        """Create a scene; ``created_at == updated_at`` = next strictly increasing second."""
        files = [files] if isinstance(files, str) else list(files)
        self._check_date(date)
        with self._lock:
            self._check_refs(studio_id, performer_ids, tag_ids)
            return self._insert_scene(files, title, details, date, studio_id, performer_ids, tag_ids, code,
                                      urls, rating100, has_cover, organized, self._tick())

    def _insert_scene(self, files: List[str], title: str, details: str, date: Optional[str], studio_id,
                      performer_ids, tag_ids, code: str, urls, rating100, has_cover: bool, organized: bool,
                      ts: int) -> str:
        """Fast path without reference checks (used by tests/library.py for bulk builds)."""
        self._next["scene"] += 1
        sid = str(self._next["scene"])
        stamp = self._fmt(ts)
        if ts > self._clock_last:
            self._clock_last = ts
        rec = {
            "id": sid, "title": title or "", "details": details or "", "date": date, "code": code or "",
            "urls": list(urls), "rating100": rating100, "organized": bool(organized),
            "studio_id": str(studio_id) if studio_id is not None else None,
            "performer_ids": [str(p) for p in performer_ids], "tag_ids": [str(t) for t in tag_ids],
            "has_cover": bool(has_cover), "cover_version": 1,
            "files": self._make_files(files), "created_at": stamp, "updated_at": stamp,
        }
        self.scenes[sid] = rec
        if self._path_index is not None:
            self._index_add(rec)
        self._version += 1
        if self._query_cache:
            self._query_cache.clear()
        return sid

    _UPDATABLE = frozenset(("files", "title", "details", "date", "studio_id", "performer_ids", "tag_ids", "code",
                            "urls", "rating100", "has_cover", "organized", "cover",
                            "director", "group_ids", "stash_ids"))

    def update_scene(self, scene_id: str, **changes: Any) -> None:
        """Edit a scene like ``sceneUpdate``: bumps ``updated_at`` (strictly). The cover image
        changes only with ``cover=True`` (a new ``cover_image``) or a ``has_cover`` change: a title
        edit leaves the screenshot bytes as they were."""
        bad = set(changes) - self._UPDATABLE
        if bad:
            raise TypeError(f"update_scene() got unexpected keyword(s) {sorted(bad)}")
        if "date" in changes:
            self._check_date(changes["date"])
        with self._lock:
            rec = self.scenes[str(scene_id)]
            self._check_refs(changes.get("studio_id"), changes.get("performer_ids") or (), changes.get("tag_ids") or ())
            for k, v in changes.items():
                if k == "files":
                    if self._path_index is not None:
                        self._index_remove(rec)
                    rec["files"] = self._make_files([v] if isinstance(v, str) else list(v))
                    if self._path_index is not None:
                        self._index_add(rec)
                elif k in ("performer_ids", "tag_ids"):
                    rec[k] = [str(x) for x in (v or ())]
                elif k == "urls":
                    rec[k] = list(v or ())
                elif k == "studio_id":
                    rec[k] = str(v) if v is not None else None
                elif k in ("title", "details", "code"):
                    rec[k] = v or ""
                elif k != "cover":
                    rec[k] = v
            if changes.get("cover") or "has_cover" in changes:
                rec["cover_version"] += 1
            rec["updated_at"] = self._fmt(self._tick())
            self._changed()

    def _rename(self, table: Dict[str, dict], kind: str, obj_id: str, name: str) -> None:
        """§2/§12.7: renaming a performer/studio/tag leaves every scene's ``updated_at``
        unchanged (only the object's own ``updated_at`` moves)."""
        with self._lock:
            rec = table[str(obj_id)]
            rec["name"] = name
            rec["updated_at"] = self._fmt(self._tick())
            self._changed()

    def rename_performer(self, performer_id: str, name: str) -> None:
        self._rename(self.performers, "performer", performer_id, name)

    def rename_studio(self, studio_id: str, name: str) -> None:
        self._rename(self.studios, "studio", studio_id, name)

    def rename_tag(self, tag_id: str, name: str) -> None:
        self._rename(self.tags, "tag", tag_id, name)

    def delete_tag(self, tag_id: str) -> None:
        """``tagDestroy``: the tag and its scene links go; the scenes' ``updated_at`` stay as they
        were (the join rows are deleted, the scenes are not updated) [inferred, §2]."""
        with self._lock:
            self.tags.pop(str(tag_id))
            for rec in self.scenes.values():
                if str(tag_id) in rec["tag_ids"]:
                    rec["tag_ids"] = [t for t in rec["tag_ids"] if t != str(tag_id)]
            self._changed()

    def merge_tags(self, source_ids, destination_id: str) -> None:
        """``tagsMerge``: scenes of the source tags get the destination tag; the sources go."""
        sources = {str(s) for s in source_ids}
        with self._lock:
            for rec in self.scenes.values():
                if sources & set(rec["tag_ids"]):
                    kept = [t for t in rec["tag_ids"] if t not in sources]
                    rec["tag_ids"] = kept + ([] if str(destination_id) in kept else [str(destination_id)])
            for source in sources:
                self.tags.pop(source)
            self._changed()

    def set_performer_image(self, performer_id: str, has_image: bool = True) -> None:
        """Re-image a performer (§2: scenes' ``updated_at`` stays unchanged)."""
        with self._lock:
            rec = self.performers[str(performer_id)]
            rec["has_image"] = has_image
            rec["image_version"] += 1
            rec["updated_at"] = self._fmt(self._tick())
            self._changed()

    def set_studio_image(self, studio_id: str, has_image: bool = True) -> None:
        with self._lock:
            rec = self.studios[str(studio_id)]
            rec["has_image"] = has_image
            rec["image_version"] += 1
            rec["updated_at"] = self._fmt(self._tick())
            self._changed()

    def delete_scene(self, scene_id: str) -> None:
        with self._lock:
            rec = self.scenes.pop(str(scene_id))
            if self._path_index is not None:
                self._index_remove(rec)
            self._changed()

    def expire_cookie(self) -> None:
        """§6: the session cookie stops working after ``max_session_age`` → GraphQL 401."""
        self._cookie_expired = True

    # ------------------------------------------------------------------ stdin helper
    def server_connection(self, plugin_dir: str = "", config_dir: str = "") -> dict:
        """The ``server_connection`` object Stash writes on a raw plugin's stdin (§2):
        bind host ``0.0.0.0`` (clients must map it to 127.0.0.1), int port, Go
        ``http.Cookie`` JSON with ``MaxAge`` 3600, no API key field."""
        expires = datetime.fromtimestamp(time.time() + 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        return {
            "Scheme": "http",
            "Host": "0.0.0.0",
            "Port": self._port,
            "SessionCookie": {
                "Name": "session", "Value": self.session_cookie, "Quoted": False, "Path": "/", "Domain": "",
                "Expires": expires, "RawExpires": "", "MaxAge": 3600, "Secure": False, "HttpOnly": False,
                "SameSite": 2, "Partitioned": False, "Raw": "", "Unparsed": None,
            },
            "Dir": config_dir,
            "PluginDir": plugin_dir,
        }

    # ------------------------------------------------------------------ images
    def scene_cover_bytes(self, scene_id: str) -> bytes:
        """What ``/scene/{id}/screenshot`` serves now (§11: always an image; the
        placeholder when the scene has no cover)."""
        rec = self.scenes[str(scene_id)]
        if not rec["has_cover"]:
            return PLACEHOLDER_PNG
        key = ("scene", rec["id"], rec["cover_version"])
        if key not in self._img_cache:
            self._img_cache[key] = make_png(f"scene-cover-{rec['id']}-v{rec['cover_version']}")
        return self._img_cache[key]

    def performer_image_bytes(self, performer_id: str) -> bytes:
        rec = self.performers[str(performer_id)]
        if not rec["has_image"]:
            return PLACEHOLDER_PNG
        return make_png(f"performer-{rec['id']}-v{rec['image_version']}", 32, 48)

    def studio_image_bytes(self, studio_id: str) -> bytes:
        rec = self.studios[str(studio_id)]
        if not rec["has_image"]:
            return PLACEHOLDER_PNG
        return make_png(f"studio-{rec['id']}-v{rec['image_version']}", 64, 32)

    # ------------------------------------------------------------------ path index
    def _index_add(self, rec: dict) -> None:
        idx = self._path_index
        for f in rec["files"]:
            idx.setdefault(ascii_lower(f["path"]), []).append(rec["id"])

    def _index_remove(self, rec: dict) -> None:
        idx = self._path_index
        for f in rec["files"]:
            k = ascii_lower(f["path"])
            lst = idx.get(k)
            if lst and rec["id"] in lst:
                lst.remove(rec["id"])
                if not lst:
                    del idx[k]

    def _path_candidates(self, pattern: str) -> Optional[List[dict]]:
        """Index lookup for a wildcard-free LIKE (= ASCII-case-insensitive equality)."""
        if "%" in pattern or "_" in pattern:
            return None
        if self._path_index is None:
            self._path_index = {}
            for rec in self.scenes.values():
                self._index_add(rec)
        ids = self._path_index.get(ascii_lower(pattern), [])
        return [self.scenes[i] for i in sorted(set(ids), key=int)]

    # ------------------------------------------------------------------ filtering
    def _string_pred(self, crit: dict, getter: Callable[[dict], List[str]], name: str) -> Callable[[dict], bool]:
        """Stash string criteria (§10.2 path): EQUALS/NOT_EQUALS = [NOT] LIKE without
        escape; INCLUDES/EXCLUDES split on whitespace (unless "quoted") and OR the
        ``%word%`` LIKEs; [NOT_]MATCHES_REGEX = RE2 stand-in; IS_NULL/NOT_NULL. A scene
        matches when any of its rows (files) does. Other modifiers are an error."""
        mod = crit.get("modifier")
        value = crit.get("value") or ""
        if mod in ("EQUALS", "NOT_EQUALS"):
            rx = like_regex(value)
            if mod == "EQUALS":
                return lambda r: any(rx.fullmatch(v) for v in getter(r))
            return lambda r: any(not rx.fullmatch(v) for v in getter(r))
        if mod in ("INCLUDES", "EXCLUDES"):
            if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
                words = [value[1:-1]]
            else:
                words = value.split()
            rxs = [like_regex("%" + w + "%") for w in words]
            if mod == "INCLUDES":
                if not rxs:
                    return lambda r: True
                return lambda r: any(any(x.fullmatch(v) for x in rxs) for v in getter(r))
            return lambda r: any(not any(x.fullmatch(v) for x in rxs) for v in getter(r))
        if mod in ("MATCHES_REGEX", "NOT_MATCHES_REGEX"):
            rx = re2_compile(value)
            if mod == "MATCHES_REGEX":
                return lambda r: any(rx.search(v) for v in getter(r))
            return lambda r: (not getter(r)) or any(not rx.search(v) for v in getter(r))
        if mod == "IS_NULL":
            return lambda r: not any(getter(r))
        if mod == "NOT_NULL":
            return lambda r: any(getter(r))
        raise _Unsupported(f"internal system error: unsupported string filter modifier {mod} ({name})")

    def _timestamp_pred(self, crit: dict, key: str) -> Callable[[dict], bool]:
        """§10.2: ``updated_at``/``created_at`` compare the RAW value string with the
        stored RFC3339-with-local-offset text (lexicographic, no parsing)."""
        mod = crit.get("modifier")
        v = crit.get("value")
        v2 = crit.get("value2")
        if mod in ("BETWEEN", "NOT_BETWEEN") and v2 is None:
            v2 = self._fmt(int(time.time()) + 86400)  # §10.2: missing value2 = now + 1 day
        if mod == "GREATER_THAN":
            return lambda r: r[key] > v
        if mod == "LESS_THAN":
            return lambda r: r[key] < v
        if mod == "EQUALS":
            return lambda r: r[key] == v
        if mod == "NOT_EQUALS":
            return lambda r: r[key] != v
        if mod == "BETWEEN":
            return lambda r: v <= r[key] <= v2
        if mod == "NOT_BETWEEN":
            return lambda r: not (v <= r[key] <= v2)
        if mod == "IS_NULL":
            return lambda r: False
        if mod == "NOT_NULL":
            return lambda r: True
        raise _Unsupported(f"internal system error: unsupported timestamp modifier {mod} ({key})")

    @staticmethod
    def _int_pred(crit: dict, getter: Callable[[dict], Optional[int]]) -> Callable[[dict], bool]:
        mod, v, v2 = crit.get("modifier"), crit.get("value"), crit.get("value2")
        ops = {
            "EQUALS": lambda x: x == v, "NOT_EQUALS": lambda x: x != v,
            "GREATER_THAN": lambda x: x > v, "LESS_THAN": lambda x: x < v,
            "BETWEEN": lambda x: v <= x <= (v2 if v2 is not None else v),
            "NOT_BETWEEN": lambda x: not (v <= x <= (v2 if v2 is not None else v)),
        }
        if mod == "IS_NULL":
            return lambda r: getter(r) is None
        if mod == "NOT_NULL":
            return lambda r: getter(r) is not None
        if mod not in ops:
            raise _Unsupported(f"internal system error: unsupported int filter modifier {mod}")
        op = ops[mod]
        return lambda r: getter(r) is not None and op(getter(r))

    def _studio_descendants(self, ids: Iterable[str], depth: Optional[int]) -> set:
        """HierarchicalMultiCriterionInput.depth: 0/None = exact, -1 = all levels, n = n levels."""
        out = set(ids)
        depth = depth or 0
        frontier = set(out)
        level = 0
        while frontier and (depth < 0 or level < depth):
            frontier = {s["id"] for s in self.studios.values() if s["parent_id"] in frontier} - out
            out |= frontier
            level += 1
        return out

    def _multi_pred(self, crit: dict, getter: Callable[[dict], List[str]], studios: bool = False) -> Callable[[dict], bool]:
        """MultiCriterionInput / HierarchicalMultiCriterionInput: INCLUDES (any),
        INCLUDES_ALL, EXCLUDES (none), IS_NULL, NOT_NULL; ``excludes`` drops matches."""
        mod = crit.get("modifier")
        values = [_norm_id(x) for x in (crit.get("value") or [])]
        excludes = {_norm_id(x) for x in (crit.get("excludes") or [])}
        if studios:
            vals = self._studio_descendants(values, crit.get("depth"))
            excludes = self._studio_descendants(excludes, crit.get("depth")) if excludes else excludes
        else:
            vals = set(values)
        if mod == "INCLUDES":
            return lambda r: (not vals or bool(vals.intersection(getter(r)))) and not excludes.intersection(getter(r))
        if mod == "INCLUDES_ALL":
            if studios:
                return lambda r: bool(getter(r)) and all(v in vals for v in getter(r)) and len(set(values)) <= 1 \
                    and not excludes.intersection(getter(r))
            return lambda r: vals.issubset(getter(r)) and not excludes.intersection(getter(r))
        if mod == "EXCLUDES":
            return lambda r: not vals.intersection(getter(r))
        if mod == "IS_NULL":
            return lambda r: not getter(r)
        if mod == "NOT_NULL":
            return lambda r: bool(getter(r))
        raise _Unsupported(f"internal system error: unsupported multi filter modifier {mod}")

    def _file_filter_pred(self, ff: dict) -> Callable[[dict], bool]:
        """``files_filter`` (FileFilterType) evaluated per file; path = folder+sep+basename (§10.2)."""
        preds: List[Callable[[dict], bool]] = []
        sep = self.path_sep
        for key, crit in ff.items():
            if crit is None or key in ("AND", "OR", "NOT"):
                continue
            if key == "path":
                preds.append(self._string_pred(crit, lambda f: [f["path"]], "files_filter.path"))
            elif key == "basename":
                preds.append(self._string_pred(crit, lambda f: [f["basename"]], "files_filter.basename"))
            elif key == "dir":
                preds.append(self._string_pred(
                    crit, lambda f: [f["path"][: len(f["path"]) - len(f["basename"])].rstrip(sep)], "files_filter.dir"))
            else:
                raise _Unsupported(f"fake stash: files_filter.{key} is not implemented")
        base = lambda f: all(p(f) for p in preds)  # noqa: E731
        pred = base
        if ff.get("AND"):
            sub_and = self._file_filter_pred(ff["AND"])
            pred = (lambda p1, p2: lambda f: p1(f) and p2(f))(pred, sub_and)
        if ff.get("OR"):
            sub_or = self._file_filter_pred(ff["OR"])
            pred = (lambda p1, p2: lambda f: p1(f) or p2(f))(pred, sub_or)
        if ff.get("NOT"):
            sub_not = self._file_filter_pred(ff["NOT"])
            pred = (lambda p1, p2: lambda f: p1(f) and not p2(f))(pred, sub_not)
        return pred

    def _scene_pred(self, sf: dict) -> Callable[[dict], bool]:
        """Compile a SceneFilterType into a predicate. Unsupported criteria raise a
        resolver error instead of being silently ignored."""
        preds: List[Callable[[dict], bool]] = []
        for key, crit in sf.items():
            if crit is None or key in ("AND", "OR", "NOT"):
                continue
            if key == "path":
                preds.append(self._string_pred(crit, lambda r: [f["path"] for f in r["files"]], "path"))
            elif key in ("title", "code", "details"):
                preds.append(self._string_pred(crit, (lambda k: lambda r: [r[k]])(key), key))
            elif key in ("updated_at", "created_at"):
                preds.append(self._timestamp_pred(crit, key))
            elif key == "id":
                preds.append(self._int_pred(crit, lambda r: int(r["id"])))
            elif key == "rating100":
                preds.append(self._int_pred(crit, lambda r: r["rating100"]))
            elif key == "organized":
                preds.append((lambda want: lambda r: bool(r["organized"]) == want)(bool(crit)))
            elif key == "performers":
                preds.append(self._multi_pred(crit, lambda r: r["performer_ids"]))
            elif key == "tags":
                preds.append(self._multi_pred(crit, lambda r: r["tag_ids"]))
            elif key == "studios":
                preds.append(self._multi_pred(crit, lambda r: [r["studio_id"]] if r["studio_id"] else [], studios=True))
            elif key == "files_filter":
                fp = self._file_filter_pred(crit)
                preds.append(lambda r, fp=fp: any(fp(f) for f in r["files"]))
            else:
                raise _Unsupported(f"fake stash: scene_filter.{key} is not implemented")
        pred: Callable[[dict], bool] = lambda r: all(p(r) for p in preds)  # noqa: E731
        if sf.get("AND"):
            pred = (lambda p1, p2: lambda r: p1(r) and p2(r))(pred, self._scene_pred(sf["AND"]))
        if sf.get("OR"):
            pred = (lambda p1, p2: lambda r: p1(r) or p2(r))(pred, self._scene_pred(sf["OR"]))
        if sf.get("NOT"):
            pred = (lambda p1, p2: lambda r: p1(r) and not p2(r))(pred, self._scene_pred(sf["NOT"]))
        return pred

    # ------------------------------------------------------------------ sorting / paging
    def _sort_scenes(self, recs: List[dict], sort: Optional[str], direction: str) -> List[dict]:
        """§10.2 sort whitelist; tie-break ``COALESCE(title, id) NATURAL_CI ASC`` then id
        (pkg/sqlite/scene.go setSceneSort). No sort → id order (SQLite rowid order)."""
        if not sort:
            return recs
        if sort not in SCENE_SORTS and not sort.startswith("random_"):
            raise ValueError(f"invalid sort: {sort}")
        # final sort of every Stash scene query: COALESCE(scenes.title, scenes.id) NATURAL_CI ASC
        out = sorted(recs, key=lambda r: (natural_ci(r["title"] or r["id"]), int(r["id"])))
        desc = direction == "DESC"

        def first_file(r: dict) -> Optional[dict]:
            return r["files"][0] if r["files"] else None

        def nullable(v):
            return (0, v) if v is None else (1, v)

        if sort == "id":
            key = lambda r: int(r["id"])  # noqa: E731
        elif sort in ("updated_at", "created_at"):
            key = lambda r: r[sort]  # noqa: E731
        elif sort == "title":
            key = lambda r: (natural_ci(r["title"] or (first_file(r) or {}).get("basename", "")),  # noqa: E731
                             natural_ci((first_file(r) or {}).get("path", "")))
        elif sort == "path":
            key = lambda r: natural_ci((first_file(r) or {}).get("path", ""))  # noqa: E731
        elif sort == "date":
            key = lambda r: ((0, "") if not r["date"] else (1, (r["date"] + "-01-01")[:10]))  # noqa: E731
        elif sort == "rating":
            key = lambda r: ((0, 0) if r["rating100"] is None else (1, r["rating100"]))  # noqa: E731
        elif sort in ("filesize", "duration"):
            fk = 1 if sort == "filesize" else 0
            key = lambda r: nullable(file_props(r["files"][0]["id"])[fk] if r["files"] else None)  # noqa: E731
        elif sort == "code":
            key = lambda r: r["code"]  # noqa: E731
        elif sort == "organized":
            key = lambda r: bool(r["organized"])  # noqa: E731
        elif sort == "tag_count":
            key = lambda r: len(r["tag_ids"])  # noqa: E731
        elif sort == "performer_count":
            key = lambda r: len(r["performer_ids"])  # noqa: E731
        elif sort == "file_count":
            key = lambda r: len(r["files"])  # noqa: E731
        elif sort == "studio":
            key = lambda r: nullable(self.studios[r["studio_id"]]["name"] if r["studio_id"] in self.studios else None)  # noqa: E731
        elif sort.startswith("random"):
            seed = sort.split("_", 1)[1] if "_" in sort else "0"
            rnd = random.Random(seed)
            out = list(out)
            rnd.shuffle(out)
            return out
        else:  # whitelisted but not modelled: only the tie-breakers apply
            return out
        out.sort(key=key, reverse=desc)
        return out

    def _keyset_scenes(self, scene_filter: dict, find_filter: dict) -> Optional[List[dict]]:
        """Keyset paging (``id > last seen``, sorted by id) without a full scan per page: the list
        for the other criteria is cached, the id bound is a bisection of it. Same result as the
        general path (ids are unique, so the id sort is total); None when the query is not of
        this shape."""
        crit = scene_filter.get("id")
        if (not isinstance(crit, dict) or scene_filter.get("OR") or find_filter.get("sort") != "id"
                or crit.get("modifier") not in ("GREATER_THAN", "LESS_THAN") or type(crit.get("value")) is not int):
            return None
        rest = {k: v for k, v in scene_filter.items() if k != "id"}
        base = self._query_scenes(rest, find_filter)
        desc = (find_filter.get("direction") or "ASC") == "DESC"
        key = ("id keys", json.dumps(rest, sort_keys=True, default=str), desc, find_filter.get("q"),
               self._version, len(self.scenes))
        keys = self._query_cache.get(key)
        if keys is None:  # ascending sort keys of base: the ids, negated when sorted DESC
            keys = [-int(r["id"]) if desc else int(r["id"]) for r in base]
            self._query_cache[key] = keys
        v = crit["value"]
        if (crit["modifier"] == "GREATER_THAN") != desc:  # id > v ascending, or id < v descending
            return base[bisect.bisect_right(keys, -v if desc else v):]
        return base[:bisect.bisect_left(keys, -v if desc else v)]

    def _query_scenes(self, scene_filter: dict, find_filter: dict) -> List[dict]:
        """Filtered + sorted scene list (cached per filter/sort until the next write)."""
        fast = self._keyset_scenes(scene_filter, find_filter)
        if fast is not None:
            return fast
        sort = find_filter.get("sort") or None
        direction = find_filter.get("direction") or "ASC"
        q = find_filter.get("q")
        key = (json.dumps(scene_filter, sort_keys=True, default=str), sort, direction, q, self._version, len(self.scenes))
        cached = self._query_cache.get(key)
        if cached is not None:
            return cached
        pred = self._scene_pred(scene_filter)
        candidates: Optional[List[dict]] = None
        if not scene_filter.get("OR"):
            ff = scene_filter.get("files_filter") or {}
            for pc in (scene_filter.get("path"), None if ff.get("OR") else ff.get("path")):
                if pc and pc.get("modifier") == "EQUALS":
                    candidates = self._path_candidates(pc.get("value") or "")
                    if candidates is not None:
                        break
        if candidates is None:
            candidates = list(self.scenes.values())
        if q:
            # Approximation of Stash's free-text q: every word must match (LIKE %w%)
            # the title, details, code or a file path.
            words = [q[1:-1]] if len(q) >= 2 and q[0] == q[-1] == '"' else q.split()
            rxs = [like_regex("%" + w + "%") for w in words]

            def q_match(r: dict) -> bool:
                fields = [r["title"], r["details"], r["code"]] + [f["path"] for f in r["files"]]
                return all(any(x.fullmatch(v) for v in fields) for x in rxs)

            candidates = [r for r in candidates if q_match(r)]
        result = self._sort_scenes([r for r in candidates if pred(r)], sort, direction)
        if len(self._query_cache) > 32:
            self._query_cache.clear()
        self._query_cache[key] = result
        return result

    @staticmethod
    def _page(items: List[Any], find_filter: dict) -> List[Any]:
        """§10.2 paging: page is 1-based (<1 → 1); per_page default 25; negative = all."""
        per_page = find_filter.get("per_page")
        if per_page is None:
            per_page = 25
        if per_page < 0:
            return items
        page = find_filter.get("page") or 1
        if page < 1:
            page = 1
        start = (page - 1) * per_page
        return items[start:start + per_page]

    def _result(self, page: List[dict], count: int, ctx: _Ctx, all_recs: Optional[List[dict]] = None) -> dict:
        all_recs = all_recs if all_recs is not None else page

        def total(k: int) -> float:
            return float(sum(file_props(r["files"][0]["id"])[k] for r in all_recs if r["files"]))

        return {
            "count": count,
            "scenes": [_SceneView(r, ctx) for r in page],
            "duration": lambda info: total(0),
            "filesize": lambda info: total(1),
        }

    def _query_named(self, table: Dict[str, dict], obj_filter: Optional[dict], find_filter: Optional[dict],
                     ids: Optional[List[Any]]) -> Tuple[List[dict], int]:
        """Minimal findPerformers/findStudios/findTags: ids, ``name`` criterion, ``q``,
        sort by name (default) or id, paging as §10.2."""
        ff = find_filter or {}
        recs = list(table.values())
        if ids:
            want = [_norm_id(i) for i in ids]
            recs = [table[i] for i in want if i in table]
        for key, crit in (obj_filter or {}).items():
            if crit is None:
                continue
            if key != "name":
                raise _Unsupported(f"fake stash: filter.{key} is not implemented")
            pred = self._string_pred(crit, lambda r: [r["name"]], "name")
            recs = [r for r in recs if pred(r)]
        q = ff.get("q")
        if q:
            recs = [r for r in recs if q.casefold() in r["name"].casefold()]
        sort = ff.get("sort") or "name"
        if sort == "id":
            recs.sort(key=lambda r: int(r["id"]))
        elif sort == "name":
            recs.sort(key=lambda r: (natural_ci(r["name"]), int(r["id"])))
        elif sort in ("updated_at", "created_at"):
            recs.sort(key=lambda r: (r[sort], int(r["id"])))
        else:
            raise ValueError(f"invalid sort: {sort}")
        if ff.get("direction") == "DESC":
            recs.reverse()
        return self._page(recs, ff), len(recs)

    # ------------------------------------------------------------------ GraphQL
    def _parse_validate(self, text: str) -> Tuple[Any, List[str]]:
        hit = self._doc_cache.get(text)
        if hit is not None:
            return hit
        try:
            doc = graphql.parse(text)
            errors = [e.message for e in graphql.validate(self.schema, doc)]
        except GraphQLError as e:
            doc, errors = None, [e.message]
        if len(self._doc_cache) > 512:
            self._doc_cache.clear()
        self._doc_cache[text] = (doc, errors)
        return doc, errors

    def execute(self, query: str, variables: Optional[dict] = None, operation_name: Optional[str] = None,
                base: str = "http://127.0.0.1") -> Tuple[int, dict]:
        """Run one GraphQL request in-process; returns ``(http_status, body)``.

        §10 (gqlgen): parse/validation errors and bad variables → 422; resolver
        errors → 200 with ``errors`` and partial ``data``."""
        self.queries.append(query)
        doc, errors = self._parse_validate(query)
        if not errors:
            op = get_operation_ast(doc, operation_name)
            if op is None:
                errors = ["operation not found" if operation_name else "must provide operation name if query contains multiple operations"]
            else:
                coerced = get_variable_values(self.schema, op.variable_definitions or [], variables or {})
                if isinstance(coerced, list):
                    errors = [e.message for e in coerced]
        if errors:
            self.invalid_queries.append((query, errors))
            code = "GRAPHQL_PARSE_FAILED" if doc is None else "GRAPHQL_VALIDATION_FAILED"
            return 422, {"errors": [{"message": m, "extensions": {"code": code}} for m in errors], "data": None}
        with self._lock:
            ctx = _Ctx(self, base)
            data = self._fast_execute(doc, op, coerced, ctx) if self.fast_graphql else None
            if data is not None:
                return 200, {"data": data}
            result = graphql.execute_sync(self.schema, doc, root_value=self._root, context_value=ctx,
                                          variable_values=variables or {}, operation_name=operation_name)
        body: Dict[str, Any] = {}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        body["data"] = result.data
        return 200, body

    def _fast_execute(self, doc: Any, op: Any, variables: Any, ctx: _Ctx) -> Optional[dict]:
        """The ``data`` graphql-core would return for a query without errors, computed without its
        per-field machinery (a 1,000-scene page costs ~0.2 s there), or None: then graphql-core
        runs the request. Same resolvers (graphql-core's default resolver rules), same argument
        coercion, same output coercion of scalars and enums, same field order. Anything this does
        not model (mutations, directives, abstract types, repeated response keys, any error or
        null in a non-null position) returns None, so errors always come from graphql-core."""
        if op.operation != OperationType.QUERY:
            return None
        key = (id(doc), op.name.value if op.name else None)
        plan = self._plan_cache.get(key)
        if plan is None or plan[0] is not doc:
            fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
            try:
                plan = (doc, _plan_selections(self.schema, self.schema.query_type, op.selection_set, fragments, {}))
            except _Slow:
                plan = (doc, None)
            if len(self._plan_cache) > 256:
                self._plan_cache.clear()
            self._plan_cache[key] = plan
        if plan[1] is None:
            return None
        try:
            return _run_plan(plan[1], self._root, _FastInfo(ctx, self.schema, variables))
        except Exception:  # noqa: BLE001 - graphql-core reruns it and reports the error its way
            return None

    # ------------------------------------------------------------------ HTTP plumbing
    def _authorized(self, h: _Handler, query: Dict[str, List[str]]) -> bool:
        """§6: ApiKey header, ``?apikey=``, or the ``session`` cookie (until expired)."""
        if not self.require_auth:
            return True
        if self.api_key:
            if h.headers.get("ApiKey") == self.api_key or self.api_key in query.get("apikey", []):
                return True
        if not self._cookie_expired:
            for header in h.headers.get_all("Cookie") or []:
                for part in header.split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == "session" and value == self.session_cookie:
                        return True
        return False

    def _handle(self, h: _Handler):
        parts = urlsplit(h.path)
        path = parts.path
        query = parse_qs(parts.query)
        body = h._body()
        if path == "/graphql":
            if not self._authorized(h, query):
                return 401, b"", None, None, (None, None, None)   # §10: 401, empty body
            if h.command != "POST":
                return 405, b"", None, {"Allow": "POST"}, (None, None, None)
            try:
                payload = json.loads(body.decode("utf-8") or "null")
                if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
                    raise ValueError("no query")
            except Exception as e:
                out = {"errors": [{"message": f"json request body could not be decoded: {e}"}], "data": None}
                return 400, json.dumps(out).encode(), "application/json", None, (None, None, None)
            text = payload["query"]
            variables = payload.get("variables")
            op_name = payload.get("operationName") or None
            host = h.headers.get("Host") or f"127.0.0.1:{self._port}"
            base = f"http://{host}" + (h.headers.get("X-Forwarded-Prefix") or "").rstrip("/")
            status, out = self.execute(text, variables if isinstance(variables, dict) else None, op_name, base)
            if not op_name:
                doc = self._doc_cache.get(text, (None, None))[0]
                op = get_operation_ast(doc) if doc is not None else None
                op_name = op.name.value if op is not None and op.name else None
            data = json.dumps(out, ensure_ascii=False).encode("utf-8", "replace")
            return status, data, "application/json", None, (op_name, text, variables)
        if path == "/login":
            return 200, _LOGIN_HTML, "text/html; charset=utf-8", None, (None, None, None)
        m = _IMAGE_ROUTE.match(path)
        if m is None:
            return 404, b"404 page not found\n", "text/plain; charset=utf-8", None, (None, None, None)
        if not self._authorized(h, query):
            # §11: unauthenticated non-GraphQL routes redirect to the login page.
            loc = "/login?returnURL=" + quote(h.path, safe="")
            html = f'<a href="{loc}">Found</a>.\n\n'.encode()
            return 302, html, "text/html; charset=utf-8", {"Location": loc}, (None, None, None)
        kind, raw_id, what = m.groups()
        try:
            oid = _norm_id(raw_id)
        except ValueError:
            return 404, b"", None, None, (None, None, None)
        with self._lock:
            if kind == "scene" and oid in self.scenes:
                if what == "screenshot":
                    return 200, self.scene_cover_bytes(oid), "image/png", None, (None, None, None)
                if what in ("preview", "stream"):
                    rec = self.scenes[oid]
                    return 200, make_mp4(f"{what}-{oid}-{rec['cover_version']}"), "video/mp4", None, (None, None, None)
            elif kind == "performer" and what == "image" and oid in self.performers:
                return 200, self.performer_image_bytes(oid), "image/png", None, (None, None, None)
            elif kind == "studio" and what == "image" and oid in self.studios:
                return 200, self.studio_image_bytes(oid), "image/png", None, (None, None, None)
            elif kind == "tag" and what == "image" and oid in self.tags:
                return 200, PLACEHOLDER_PNG, "image/png", None, (None, None, None)
        return 404, b"", None, None, (None, None, None)

    def _log(self, req: Req) -> None:
        with self._log_lock:
            self.requests.append(req)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
                self.accepted_connections += 1
            else:
                self._conns.discard(conn)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Serve on 127.0.0.1 (the same port again after a ``stop()``); returns ``url``."""
        if self._server is not None:
            return self.url
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self  # type: ignore[attr-defined]
        self._port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self._port}"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FakeStash:{self._port}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections (clients then see errors)."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """``with stash.running() as url:`` — start, yield the URL, stop."""
        url = self.start()
        try:
            yield url
        finally:
            self.stop()

    @property
    def is_running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
