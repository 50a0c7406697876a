"""Matching: which Plex item holds a Stash scene's file.

Every match has a confidence:
- ``exact``: a ``Part.file`` equals a mapped path of the scene (casefolded when the path rule has
  the ``i`` option). Only this syncs by default.
- ``weak``: no exact path, but exactly one item has a file of the same name (usually a path_map
  problem). Logged for review; synced only with ``allow_weak_match``.
- ``ambiguous``: several items have a file of that name. Never synced.
- ``none``: Plex has no such file (not scanned yet, or not in Plex at all).

Lookups, cheapest first (reference/plex-server-api.md §7): the remembered ratingKey, verified
against the item's files (1 request, which also serves as the detail read); the section index when
one is already built (0 requests); the ``file=`` filter (1 request per section holding the path);
then a fresh section index (paged listings). A hit of a non-exact filter is never trusted as is.
"""
from __future__ import annotations

import posixpath
from typing import NamedTuple

from lib.paths import Mapping, PathMapper


class Match(NamedTuple):
    confidence: str               # exact | weak | ambiguous | none
    item: object | None           # plexapi Movie in its detail view (exact, or weak when allowed)
    detail: str                   # candidates, for the log and the unmatched list


def _name(path: str) -> str:
    return posixpath.basename(path.replace("\\", "/"))


def _exact(files, mapped: list[Mapping], mapper: PathMapper) -> bool:
    return any(mapper.same_file(f, m.path, m.rule) for f in files for m in mapped)


def find_item(plex, mapper: PathMapper, mapped: list[Mapping], rating_key: str | None,
              fetch_weak: bool) -> Match:
    """Find the Plex item whose file is one of ``mapped`` (the scene's files in Plex's view).

    ``rating_key`` is the one remembered for the scene, if any. ``fetch_weak``: also fetch the item
    of a weak match. Raises what plexapi raises for transport and HTTP errors.
    """
    if rating_key:
        item = plex.fetch(rating_key)
        if item is not None and _exact([p.file for p in item.iterParts()], mapped, mapper):
            return Match("exact", item, "")
    if plex.has_index:
        hit = _from_index(plex.index(max_age=float("inf")), mapped, mapper)
        if hit:
            return Match("exact", plex.fetch(hit), "")
    for m in mapped:
        for cand in plex.lookup_file(m.path):
            if _exact(cand.files, mapped, mapper):
                item = plex.fetch(cand.rating_key)
                if item is not None:
                    return Match("exact", item, "")
    index = plex.index()
    hit = _from_index(index, mapped, mapper)
    if hit:
        return Match("exact", plex.fetch(hit), "")
    same_name = sorted({(c.rating_key, f) for m in mapped for f, c in index.by_name.get(_name(m.path).casefold(), [])})
    if not same_name:
        return Match("none", None, "")
    keys = sorted({rk for rk, _ in same_name})
    detail = "; ".join(f"ratingKey {rk}: {f}" for rk, f in same_name[:5])
    if len(keys) > 1:
        return Match("ambiguous", None, detail)
    return Match("weak", plex.fetch(keys[0]) if fetch_weak else None, detail)


def _from_index(index, mapped: list[Mapping], mapper: PathMapper) -> str | None:
    for m in mapped:
        for path in index.files.find(m, mapper):
            return min(index.files.keys[path])
    return None
