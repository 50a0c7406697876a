"""Matching a Plex match request to a Stash scene: which scene holds the file PMS is scanning.

The mirror of lib/matcher.py (a Stash scene -> its Plex item). Facts used:
- PMS sends ``filename`` relative to the library's root folder, not the absolute path; whether it
  has a leading ``/``, ``\\`` separators or the library folder's own name is unclear
  (reference/plex-provider-protocol.md §4.2, §11.2). So every plausible absolute Plex path is
  rebuilt from the known root folders, mapped to Stash with the ``path_map`` rules, and looked up.
- Stash's path ``EQUALS`` is a ``LIKE`` without escape: ``_``/``%`` are wildcards, ASCII case is
  ignored, so every hit is verified against ``files[].path`` (stash-plugin-protocol.md §10.2).
  ``MATCHES_REGEX`` is RE2, case-sensitive, searched anywhere: used for the fallbacks.
- With ``manual=0`` PMS applies the one answer without asking, so only a confident match is
  returned; ``manual=1`` (Fix Match) gets a ranked list; on refresh PMS sends the item's guid,
  which resolves directly and never drifts to another scene (§4.3). A numeric Fix Match title
  is taken as a Stash scene id, as other providers do (§4.3).

Scores (0-100, sent to PMS as ``score``): our guid or an exact mapped path 100; a scene id typed
in Fix Match 95; the whole relative filename ending exactly one Stash path, when the file may lie
where no path rule reaches (under a root no rule covers, or no root is known), 90 (the unique
path-suffix fallback); a Stash file of the same name sharing
``k`` trailing components 50 + 10 (k - 1), at most 80; a free-text title hit 40. ``manual=0``
returns a scene only when it alone reaches :data:`CONFIDENT`.
"""
from __future__ import annotations

import json
import re
from typing import Iterable, List, Mapping, NamedTuple, Optional, Tuple

from lib.cache import TTLCache
from lib.metadata import MOVIE, is_stash_id, scene_id_of_guid
from lib.paths import PathMapper, PathRule, PathRuleError

SCORE_EXACT = 100
SCORE_ID = 95
SCORE_SUFFIX = 90
SCORE_TITLE = 40
CONFIDENT = SCORE_SUFFIX
MAX_RESULTS = 10         # entries of a Fix Match list
NAME_LIMIT = 50          # Stash files of the same name considered for a Fix Match list
TITLE_LIMIT = 5          # free-text hits added to a Fix Match list
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")
_DRIVE = re.compile(r"[A-Za-z]:")


class MatchRequest(NamedTuple):
    """A match request, parsed: ``parts`` are the components of ``filename`` (empty without one)."""

    type: int
    filename: str
    parts: Tuple[str, ...]
    manual: bool
    guid: Optional[str]
    title: str


class Found(NamedTuple):
    """One candidate: the scene (``ProviderScene`` fields), its score and how it was found."""

    scene: dict
    score: int
    how: str  # guid | exact | id | suffix | name | title


class Outcome(NamedTuple):
    """What a lookup found: ``results`` best first (one entry at most for ``manual=0``),
    ``tried`` the paths looked up (``{"plex_path", "stash_path", "rule", "error"}``) and, when
    nothing is returned, ``reason`` in one line."""

    results: List[Found]
    tried: List[dict]
    reason: str


def parse_request(body: bytes, query: Mapping[str, str]) -> MatchRequest:
    """Parse PMS's match request: a JSON object body (whatever the Content-Type), with query
    parameters merged under it (PMS 1.43.4 sends some in the query, §4.1). Unknown keys are
    ignored. Raises ValueError with a one-line reason for a body that is not a JSON object, a
    field of the wrong type, a ``filename`` leaving the library (``..``, NUL), or a request with
    neither ``filename`` nor ``guid`` (nor a ``title`` in a Fix Match)."""
    try:
        data = json.loads(body.decode("utf-8") if body.strip() else "{}")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"match body is not JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"match body must be a JSON object, not {type(data).__name__}")
    fields = {k: v for k, v in query.items() if k in ("type", "manual", "filename", "guid", "title")}
    fields.update(data)
    kind = _integer(fields.get("type", MOVIE), "type")
    manual = _integer(fields.get("manual", 0), "manual")
    if manual not in (0, 1):
        raise ValueError(f"manual must be 0 or 1, not {manual}")
    filename = _text(fields.get("filename"), "filename")
    guid = _text(fields.get("guid"), "guid") or None
    title = fields.get("title")
    title = str(title).strip() if isinstance(title, (str, int)) and not isinstance(title, bool) else ""
    parts = relative_parts(filename) if filename else ()
    if not parts and not guid and not (manual and title):
        raise ValueError("match request needs a filename (or the guid of a matched item)")
    return MatchRequest(kind, filename, parts, bool(manual), guid, title)


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"{name} must be an integer, not {value!r:.40}")


def _text(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    return value


def relative_parts(filename: str) -> Tuple[str, ...]:
    """The components of PMS's ``filename``: ``\\`` read as ``/``, leading and repeated
    separators and ``.`` dropped. Raises ValueError for ``..`` or a NUL character."""
    if "\x00" in filename:
        raise ValueError("filename contains a NUL character")
    parts = tuple(p for p in filename.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError("filename must stay inside the library folder (no '..' component)")
    return parts


def plex_paths(filename: str, parts: Tuple[str, ...], roots: Iterable[str]) -> List[str]:
    """Absolute Plex paths ``filename`` may stand for, most likely first, without repeats.

    For each root folder: root + parts; and root + parts[1:] when the first part is the root's own
    folder name (PMS may include it, §4.2). A ``filename`` that already starts with a root is
    also taken as it is. A root with ``\\`` or a drive letter is a Windows folder: joined with
    ``\\``. Under a POSIX root a ``\\`` may be part of a file name, so ``filename`` with its
    backslashes kept is tried first.
    """
    out: List[str] = []
    for root in roots:
        windows = "\\" in root or bool(_DRIVE.match(root))
        sep = "\\" if windows else "/"
        base = root.rstrip("/\\")
        if filename.startswith(base + sep) or (windows and filename.startswith(base + "/")):
            out.append(filename.replace("/", "\\") if windows else filename)
        if not windows and "\\" in filename:
            out.append(base + "/" + filename.lstrip("/"))
        out.append(base + sep + sep.join(parts))
        folder = re.split(r"[\\/]", base)[-1]
        if len(parts) > 1 and folder and parts[0].casefold() == folder.casefold():
            out.append(base + sep + sep.join(parts[1:]))
    return list(dict.fromkeys(out))


def suffix_regex(parts: Tuple[str, ...]) -> str:
    """An RE2 regex matching a Stash path that ends with ``parts`` on a component boundary, with
    either separator (``(^|[/\\\\])a[/\\\\]b\\.mp4$``)."""
    literal = ["".join("\\" + c if c in _RE2_SPECIAL else c for c in part) for part in parts]
    return r"(^|[/\\])" + r"[/\\]".join(literal) + "$"


def trailing_match(path: str, parts: Tuple[str, ...]) -> int:
    """How many trailing components of ``path`` equal the last ones of ``parts`` (case-sensitive)."""
    have = re.split(r"[\\/]", path)
    k = 0
    while k < len(parts) and k < len(have) and have[-1 - k] == parts[-1 - k]:
        k += 1
    return k


class SceneFinder:
    """Finds the Stash scenes of a match request, with a short-lived cache of positive answers.

    ``stash`` is a :class:`lib.stash.StashClient`; ``mapper`` the ``path_map`` rules; ``scenes``
    caches scene id -> scene and ``paths`` caches (Stash path, case-insensitive) -> scene ids.
    Methods raise :class:`lib.stash.StashError` when Stash cannot answer.
    """

    def __init__(self, stash, mapper: PathMapper, scenes: TTLCache, paths: TTLCache):
        self.stash = stash
        self.mapper = mapper
        self.scenes = scenes
        self.paths = paths

    def scene(self, scene_id: str) -> Optional[dict]:
        """Scene ``scene_id`` (cached), or None when Stash has no such scene."""
        scene = self.scenes.get(scene_id)
        if scene is None:
            scene = self.stash.provider_scene(scene_id)
            self._remember([scene] if scene else [])
        return scene

    def find(self, request: MatchRequest, roots: List[str]) -> Outcome:
        """The scenes ``request`` names, best first; see the module docstring for the rules."""
        if request.type != MOVIE:
            return Outcome([], [], f"type {request.type} is not a movie (this provider serves movies only)")
        found: List[Found] = []
        hinted = scene_id_of_guid(request.guid)
        if hinted:
            scene = self.scene(hinted)
            if scene is not None:
                found.append(Found(scene, SCORE_EXACT, "guid"))
                if not request.manual:
                    return Outcome(found, [], "")
        tried: List[dict] = []
        covered = False
        if request.parts:
            candidates = plex_paths(request.filename, request.parts, roots)
            exact, tried = self._exact(candidates)
            # Fall back on names only when the file may lie where no rule reaches (a root no
            # rule covers, or no root known): under a rule, a missing path is a real gap.
            covered = bool(tried) and all(t["rule"] is not None for t in tried)
            found += exact
            if request.manual:
                found += self._by_name(request.parts)
            elif not exact and not covered:
                found += self._by_suffix(request.parts)
        if request.manual and request.title:
            found += self._by_title(request.title)
        ranked = _rank(found)
        if request.manual:
            return Outcome(ranked[:MAX_RESULTS], tried, "" if ranked else "no candidate in Stash")
        best = [f for f in ranked if f.score >= CONFIDENT]
        if len(best) == 1 or (best and best[0].score > best[1].score):
            return Outcome(best[:1], tried, "")
        return Outcome([], tried, _reason(best, tried, covered, request))

    def _remember(self, scenes: Iterable[dict]) -> None:
        for scene in scenes:
            self.scenes.put(scene["id"], scene)

    def _exact(self, candidates: List[str]) -> Tuple[List[Found], List[dict]]:
        found: List[Found] = []
        tried: List[dict] = []
        for plex_path in candidates:
            try:
                mapped = self.mapper.to_stash(plex_path)
            except PathRuleError as exc:
                tried.append({"plex_path": plex_path, "stash_path": None, "rule": None, "error": str(exc)})
                continue
            tried.append({"plex_path": plex_path, "stash_path": mapped.path,
                          "rule": mapped.rule.name if mapped.rule else None, "error": None})
            found += [Found(s, SCORE_EXACT, "exact") for s in self._at_path(mapped.path, mapped.rule)]
        return found, tried

    def _at_path(self, stash_path: str, rule: Optional[PathRule]) -> List[dict]:
        """Scenes with a file at ``stash_path``: exactly equal, else equal ignoring case when the
        rule has the ``i`` option."""
        key = (stash_path, bool(rule and rule.ignore_case))
        ids = self.paths.get(key)
        if ids is not None:
            scenes = [self.scene(i) for i in ids]
            if all(scenes):
                return scenes
        hits = self.stash.provider_scenes_by_path(stash_path)
        self._remember(hits)
        same = [s for s in hits if any(f["path"] == stash_path for f in s.get("files") or [])]
        if not same and key[1]:
            same = [s for s in hits if any(self.mapper.same_file(f["path"], stash_path, rule)
                                           for f in s.get("files") or [])]
        if same:
            self.paths.put(key, [s["id"] for s in same])
        return same

    def _by_suffix(self, parts: Tuple[str, ...]) -> List[Found]:
        count, hits = self.stash.provider_scenes_by_path_regex(suffix_regex(parts), 2)
        self._remember(hits)
        return [Found(s, SCORE_SUFFIX, "suffix") for s in hits
                if any(trailing_match(f["path"], parts) == len(parts) for f in s.get("files") or [])]

    def _by_name(self, parts: Tuple[str, ...]) -> List[Found]:
        _, hits = self.stash.provider_scenes_by_path_regex(suffix_regex(parts[-1:]), NAME_LIMIT)
        self._remember(hits)
        out = []
        for scene in hits:
            k = max((trailing_match(f["path"], parts) for f in scene.get("files") or []), default=0)
            if k == len(parts):
                out.append(Found(scene, SCORE_SUFFIX, "suffix"))
            elif k:
                out.append(Found(scene, min(50 + 10 * (k - 1), 80), "name"))
        return out

    def _by_title(self, title: str) -> List[Found]:
        out: List[Found] = []
        if is_stash_id(title):
            scene = self.scene(title)
            if scene is not None:
                out.append(Found(scene, SCORE_ID, "id"))
        hits = self.stash.provider_scenes_search(title, TITLE_LIMIT)
        self._remember(hits)
        return out + [Found(s, SCORE_TITLE, "title") for s in hits]


def _rank(found: List[Found]) -> List[Found]:
    """Best score per scene, ordered by score (highest first) then scene id."""
    best: dict = {}
    for f in found:
        if f.scene["id"] not in best or f.score > best[f.scene["id"]].score:
            best[f.scene["id"]] = f
    return sorted(best.values(), key=lambda f: (-f.score, int(f.scene["id"])))


def _reason(best: List[Found], tried: List[dict], covered: bool, request: MatchRequest) -> str:
    if best:
        ids = ", ".join(f.scene["id"] for f in best[:5])
        return f"ambiguous: Stash scenes {ids} all fit"
    errors = [t["error"] for t in tried if t["error"]]
    if errors:
        return errors[0]
    if not request.parts:
        return "the guid names no Stash scene and there is no filename"
    if covered:
        paths = "; ".join(t["stash_path"] for t in tried)
        return f"no Stash scene has a file at {paths}"
    if not tried:
        return (f"no Plex library folder is known (set PLEXSYNC_PLEX_ROOTS or PLEXSYNC_PLEX_URL) and no "
                f"single Stash file ends with {'/'.join(request.parts)}")
    uncovered = next(t["plex_path"] for t in tried if t["rule"] is None)
    return f"no path rule covers {uncovered} and no single Stash file ends with {'/'.join(request.parts)}"
