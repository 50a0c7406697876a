"""Stash scenes in the shapes a Plex custom metadata provider answers with.

Every fact comes from reference/plex-provider-protocol.md (cited as §N):
- The manifest is ``{"MediaProvider": {...}}`` with the identifier, the movie type (1) whose scheme is
  the identifier, and the ``metadata`` and ``match`` features; feature keys are relative to the
  provider URL, PMS concatenates them (§2).
- Answers are ``{"MediaContainer": {offset, totalSize, identifier, size, <list key>: [...]}}`` (§4.3).
- ``ratingKey`` uses ``[A-Za-z0-9_-]`` only and never changes; ``guid`` is exactly
  ``<identifier>://movie/<ratingKey>``; PMS takes the last guid segment as the ratingKey of the
  metadata call (§5, §10.1-2). Ours is ``scene-<Stash scene id>``.
- ``type`` is the string ``"movie"``; ``originallyAvailableAt`` is ``YYYY-MM-DD``; ``duration`` is
  in milliseconds (Stash's ``files.duration`` is float seconds, stash-plugin-protocol.md §10.2).
- Image URLs must be absolute and reachable by PMS, which sends no Stash credentials: every image
  points at the provider's own ``/img/...`` route (§7). Stash placeholders (``default=true``) are
  left out (§7; stash-plugin-protocol.md §11).

Text goes through the same cleaning as the plugin's push (lib/fields.py), so the provider and the
plugin show the same title, summary, date and tag names for a scene.
"""
from __future__ import annotations

import re
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from lib.fields import LIMITS, clean_line, clean_text, plex_date, scene_title, unique_names

IDENTIFIER = "tv.plex.agents.custom.plexsync"  # never change it: PMS would orphan every item (§2)
TITLE = "PlexSync (Stash)"
MOVIE = 1  # Plex's metadata type number of a movie (§2)
RATING_KEY_PREFIX = "scene-"
GUID_PREFIX = f"{IDENTIFIER}://movie/"
_RATING_KEY = re.compile(r"scene-([1-9][0-9]{0,17})")
_STASH_ID = re.compile(r"[1-9][0-9]{0,17}")
_SCHEME = re.compile(r"[^a-z0-9]")
IMAGE_KINDS = ("scene", "performer", "studio")


def manifest(version: str) -> dict:
    """The ``MediaProvider`` PMS reads when the provider is registered (§2)."""
    return {"MediaProvider": {
        "identifier": IDENTIFIER,
        "title": TITLE,
        "version": version,
        "Types": [{"type": MOVIE, "Scheme": [{"scheme": IDENTIFIER}]}],
        "Feature": [{"type": "metadata", "key": "/library/metadata"},
                    {"type": "match", "key": "/library/metadata/matches"}],
    }}


def container(items: list, key: str = "Metadata", total: Optional[int] = None, offset: int = 0) -> dict:
    """A ``MediaContainer`` holding ``items`` under ``key`` (``Metadata`` or ``Image``); ``total``
    is the size of the whole set when ``items`` is one page of it (§8)."""
    return {"MediaContainer": {"offset": offset, "totalSize": len(items) if total is None else total,
                               "identifier": IDENTIFIER, "size": len(items), key: items}}


def rating_key(scene_id: str) -> str:
    """The ratingKey of Stash scene ``scene_id``: ``scene-<id>``."""
    return RATING_KEY_PREFIX + str(scene_id)


def scene_id_of(key: str) -> str:
    """The Stash scene id in ratingKey ``key``. Raises ValueError (one line) when ``key`` is not
    one of ours (``scene-`` and a positive integer)."""
    m = _RATING_KEY.fullmatch(key or "")
    if m is None:
        raise ValueError(f"ratingKey {key!r:.60} is not one of this provider's (expected scene-<Stash scene id>)")
    return m.group(1)


def guid(key: str) -> str:
    """``<identifier>://movie/<ratingKey>`` (§5)."""
    return GUID_PREFIX + key


def scene_id_of_guid(value: object) -> Optional[str]:
    """The Stash scene id in one of our guids (sent back by PMS on refresh, §4.3), else None:
    guids of other agents (``plex://``, ``imdb://``...) are not ours to resolve."""
    if not isinstance(value, str) or not value.startswith(GUID_PREFIX):
        return None
    try:
        return scene_id_of(value[len(GUID_PREFIX):])
    except ValueError:
        return None


def is_stash_id(value: str) -> bool:
    """True for a Stash object id as the image route accepts it (a positive integer)."""
    return _STASH_ID.fullmatch(value or "") is not None


def image_url(base: str, kind: str, object_id: str, stash_url: Optional[str]) -> Optional[str]:
    """The provider URL of a Stash image: ``<base>/img/<kind>/<id>``, or None for a placeholder.

    ``stash_url`` is the image URL Stash reported (``paths.screenshot``, ``image_path``). Its
    ``t=`` (Stash's change stamp) is carried over so PMS fetches a changed image again; a URL
    with ``default=true`` is Stash's placeholder (no image), and a missing URL means no image.
    """
    if not stash_url:
        return None
    query = parse_qs(urlsplit(stash_url).query)
    if query.get("default", [""])[0] == "true":
        return None
    stamp = query.get("t", [""])[0]
    return f"{base}/img/{kind}/{object_id}" + (f"?t={stamp}" if stamp.isdigit() else "")


def scene_images(scene: dict, base: str) -> list:
    """``Image`` entries of a scene: its cover as ``coverPoster`` and as ``background`` (Stash has
    one cover per scene; its ``paths.preview`` is a video, never an image)."""
    url = image_url(base, "scene", scene["id"], (scene.get("paths") or {}).get("screenshot"))
    if not url:
        return []
    return [{"type": "coverPoster", "url": url, "alt": "Stash cover"},
            {"type": "background", "url": url, "alt": "Stash cover"}]


def match_result(full: dict, score: int) -> dict:
    """One entry of a match answer from the scene's full metadata (:func:`scene_metadata`): the
    fields §4.3 asks for, and ``score`` (0-100)."""
    out = {k: full[k] for k in ("ratingKey", "key", "guid", "type", "title", "year", "originallyAvailableAt",
                                "thumb", "summary") if k in full}
    out["score"] = int(score)
    return out


def scene_metadata(scene: dict, base: str) -> dict:
    """The full ``Metadata`` item of a scene (§5); ``base`` is the provider's public URL.

    ``scene`` has the ``ProviderScene`` fields (lib/stash.py). Fields Stash has no value for are
    left out rather than sent empty. ``Collection`` holds the studio, its parent studio and the
    scene's groups; ``Guid`` holds the scene's stash-box ids as ``<box>://<id>``, ``<box>`` being
    the first label of the endpoint's host (``https://stashdb.org/graphql`` -> ``stashdb``).
    """
    key = rating_key(scene["id"])
    out: dict = {"ratingKey": key, "key": f"/library/metadata/{key}", "guid": guid(key), "type": "movie",
                 "title": scene_title(scene) or key}
    summary = clean_text(scene.get("details"), LIMITS["summary"])
    if summary:
        out["summary"] = summary
    parsed = plex_date(scene.get("date"))
    if parsed:
        out["originallyAvailableAt"], out["year"] = parsed
    studio = scene.get("studio") or {}
    studio_name = clean_line(studio.get("name"), LIMITS["studio"])
    if studio_name:
        out["studio"] = studio_name
        out["Studio"] = [_tag(studio_name, image_url(base, "studio", studio.get("id"), studio.get("image_path")))]
    tagline = clean_line(scene.get("code"), LIMITS["title"])
    if tagline:
        out["tagline"] = tagline
    files = scene.get("files") or []
    if files and files[0].get("duration"):
        out["duration"] = int(round(float(files[0]["duration"]) * 1000))
    images = scene_images(scene, base)
    if images:
        out["thumb"] = out["art"] = images[0]["url"]
        out["Image"] = images
    genres = unique_names(t.get("name") for t in scene.get("tags") or [])
    if genres:
        out["Genre"] = [{"tag": name} for name in genres]
    roles = _roles(scene.get("performers") or [], base)
    if roles:
        out["Role"] = roles
    director = clean_line(scene.get("director"), LIMITS["tag"])
    if director:
        out["Director"] = [{"tag": director}]
    collections = _collections(studio, scene.get("groups") or [], base)
    if collections:
        out["Collection"] = collections
    guids = _guids(scene.get("stash_ids") or [])
    if guids:
        out["Guid"] = guids
    return out


def _tag(name: str, thumb: Optional[str]) -> dict:
    return {"tag": name, "thumb": thumb} if thumb else {"tag": name}


def _roles(performers: list, base: str) -> list:
    """``Role`` entries in Stash's order, names cleaned and de-duplicated as the plugin does."""
    first: dict = {}
    for performer in performers:
        first.setdefault(clean_line(performer.get("name"), LIMITS["tag"]).casefold(), performer)
    roles = []
    for order, name in enumerate(unique_names(p.get("name") for p in performers), start=1):
        performer = first[name.casefold()]
        role = _tag(name, image_url(base, "performer", performer.get("id"), performer.get("image_path")))
        role["order"] = order
        roles.append(role)
    return roles


def _collections(studio: dict, groups: list, base: str) -> list:
    studios = [s for s in (studio, studio.get("parent_studio") or {}) if s.get("name")]
    thumbs = {clean_line(s["name"], LIMITS["tag"]).casefold():
              image_url(base, "studio", s.get("id"), s.get("image_path")) for s in studios}
    names = unique_names([s["name"] for s in studios] + [(g.get("group") or {}).get("name") for g in groups])
    return [_tag(name, thumbs.get(name.casefold())) for name in names]


def _guids(stash_ids: list) -> list:
    out = []
    for entry in stash_ids:
        host = (urlsplit(entry.get("endpoint") or "").hostname or "").removeprefix("www.")
        scheme = _SCHEME.sub("", host.split(".")[0].lower()) if host else ""
        value = str(entry.get("stash_id") or "").strip()
        if scheme and value and all(c.isalnum() or c in "-_" for c in value):
            out.append({"id": f"{scheme}://{value}"})
    return out
