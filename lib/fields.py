"""Field mapping: a Stash scene -> the desired Plex state -> the one edit that gets Plex there.

Plex facts used (reference/plex-server-api.md §5):
- ``{field}.value=V`` sets a field, ``{field}.locked=1`` locks it so an agent refresh keeps it.
- ``{tag}[N].tag.tag=name`` for N = 0.. replaces the whole tag list; ``{tag}[].tag.tag-=a,b`` removes
  (each name ``quote()``d, joined by commas: PMS decodes twice, so a name with a comma survives).
- Tag names are edit names: performers -> ``actor`` (Role), tags -> ``genre``, studio -> ``collection``.
- List views truncate tag lists: the current state must come from the item's detail view.

Text is sanitised before it reaches Plex: control characters removed (newlines and tabs kept in the
summary, folded to spaces elsewhere), surrogates dropped, whitespace trimmed, and lengths capped at
:data:`LIMITS` characters (a longer value ends with "…").
"""
from __future__ import annotations

import os
import re
from datetime import date
from functools import lru_cache
from urllib.parse import quote

LIMITS = {"title": 255, "studio": 255, "tag": 255, "summary": 20000}  # characters
TAG_FIELDS = {"actor": "sync_performers", "genre": "sync_tags", "collection": "sync_collection"}
TEXT_FIELDS = {"title": "sync_title", "summary": "sync_summary", "studio": "sync_studio"}

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\t\n\r\v\f\u2028\u2029]+")
_SPACES = re.compile(r"[ \t]+")
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def clean_line(text: object, limit: int) -> str:
    """One line of text for Plex: line breaks become spaces, control characters go, runs of spaces
    fold, and the result is cut to ``limit`` characters."""
    value = _CONTROL.sub("", _LINE_BREAKS.sub(" ", str(text or "")))
    return _cap(_SPACES.sub(" ", value).strip(), limit)


def clean_text(text: object, limit: int) -> str:
    """Multi-line text for Plex (the summary): paragraph breaks kept as ``\\n``, control characters
    removed, trailing spaces trimmed, cut to ``limit`` characters."""
    value = str(text or "").replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROL.sub("", value.replace("\t", " "))
    value = "\n".join(line.rstrip() for line in value.split("\n"))
    return _cap(re.sub(r"\n{3,}", "\n\n", value).strip(), limit)


def _cap(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 1].rstrip() + "…"


def plex_date(stash_date: str | None) -> tuple[str, int] | None:
    """Stash's ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` as Plex's (``YYYY-MM-DD``, year).

    Plex needs a full date, so a partial Stash date is padded with the first month/day (2019 ->
    2019-01-01, 2020-07 -> 2020-07-01); the year is exact. Invalid dates give None.
    """
    m = _DATE.match((stash_date or "").strip())
    if not m:
        return None
    year, month, day = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    try:
        return date(year, month, day).isoformat(), year
    except ValueError:
        return None


def scene_title(scene: dict) -> str:
    """The scene's title, or (as Stash shows an untitled scene) its file name without extension."""
    title = clean_line(scene.get("title"), LIMITS["title"])
    if title:
        return title
    files = scene.get("files") or []
    if files:
        base = files[0].get("basename") or os.path.basename(files[0].get("path") or "")
        return clean_line(os.path.splitext(base)[0], LIMITS["title"])
    return ""


@lru_cache(maxsize=65536)
def _clean_name(name: str) -> str:
    # the same performer, tag and studio names recur in thousands of scenes: clean each once
    return clean_line(name, LIMITS["tag"])


def _unique(names) -> list[str]:
    seen, out = set(), []
    for name in names:
        name = _clean_name(name or "")
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            out.append(name)
    return out


def desired_state(scene: dict, settings: dict) -> dict:
    """The Plex state Stash asks for, limited to the enabled fields.

    Returns a dict with some of: ``title``, ``summary``, ``studio`` (str), ``originallyAvailableAt``
    (``YYYY-MM-DD``), ``year`` (int), ``actor``, ``genre``, ``collection`` (lists of names, Stash order,
    duplicates removed case-insensitively).
    """
    out: dict = {}
    if settings["sync_title"] and scene_title(scene):
        out["title"] = scene_title(scene)  # never blank a Plex title
    if settings["sync_summary"]:
        out["summary"] = clean_text(scene.get("details"), LIMITS["summary"])
    studio = _clean_name((scene.get("studio") or {}).get("name") or "")
    if settings["sync_studio"]:
        out["studio"] = studio
    if settings["sync_date"]:
        parsed = plex_date(scene.get("date"))
        out["originallyAvailableAt"], out["year"] = parsed if parsed else ("", None)
    if settings["sync_performers"]:
        out["actor"] = _unique(p.get("name") for p in scene.get("performers") or [])
    if settings["sync_tags"]:
        out["genre"] = _unique(t.get("name") for t in scene.get("tags") or [])
    if settings["sync_collection"]:
        out["collection"] = [studio] if studio else []
    return out


def current_state(item) -> tuple[dict, set]:
    """What a plexapi ``Movie`` (detail view, reloaded) shows: (state shaped like
    :func:`desired_state`, set of locked field names)."""
    released = item.originallyAvailableAt
    state = {
        "title": item.title or "",
        "summary": item.summary or "",
        "studio": item.studio or "",
        "originallyAvailableAt": released.strftime("%Y-%m-%d") if released else "",
        "year": item.year,
        "actor": [t.tag for t in item.roles],
        "genre": [t.tag for t in item.genres],
        "collection": [t.tag for t in item.collections],
    }
    return state, {f.name for f in item.fields if f.locked}


def plan_edit(desired: dict, current: dict, locked: set, pushed: dict, settings: dict) -> tuple[dict, dict]:
    """The raw edit parameters that turn ``current`` into ``desired`` in one PUT.

    ``pushed`` is what PlexSync wrote last time (for ``preserve_plex_edits``: a field changed in Plex
    since then is left alone, and tags are only ever added). With ``lock_fields`` every written field
    is locked, and a field already right but unlocked gets its lock.

    Returns (params for ``item.edit(**params)``, the values this edit makes true, to remember as
    ``pushed``). Empty params mean Plex already shows Stash's state.
    """
    lock = settings["lock_fields"]
    preserve = settings["preserve_plex_edits"]
    params: dict = {}
    result: dict = {}
    for field, want in desired.items():
        if field in ("actor", "genre", "collection"):
            have = current.get(field) or []
            if preserve:
                known = {h.casefold() for h in have}
                want = have + [w for w in want if w.casefold() not in known]
            result[field] = want
            if sorted(want) != sorted(have):  # Plex may list tags in its own order
                for i, name in enumerate(want):
                    params[f"{field}[{i}].tag.tag"] = name
                extra = [h for h in have if h not in want]
                if extra:
                    params[f"{field}[].tag.tag-"] = ",".join(quote(h) for h in extra)
            if lock and (sorted(want) != sorted(have) or field not in locked):
                params[f"{field}.locked"] = 1
            continue
        have = current.get(field)
        have = have if have is not None else ""
        want = want if want is not None else ""
        if preserve and have not in ("", None) and field in pushed and str(have) != str(pushed[field]) \
                and str(have) != str(want):
            continue  # changed in Plex since our last push: the user's edit wins
        result[field] = want
        if str(want) != str(have):
            params[f"{field}.value"] = want
        if lock and (str(want) != str(have) or field not in locked):
            params[f"{field}.locked"] = 1
    return params, result


def unique_names(names) -> list[str]:
    """Names as Plex gets them, in their order: each cleaned with :func:`clean_line` and capped at
    ``LIMITS["tag"]``, empty ones dropped, repeats removed case-insensitively (the first spelling
    wins). The plugin's push and the provider's metadata both list tags, performers and
    collections this way."""
    return _unique(names)
