"""Gap detection: Stash scenes whose file Plex lacks, and Plex files no Stash scene owns.

The comparison is pure: it takes what each side holds and the ``path_map`` rules and returns a
report; it reads nothing and writes nothing, so the provider (``GET /gaps``) and the plugin's
reconciliation can both feed it from wherever they list files.

How a Stash file and a Plex file are the same file: the Stash path mapped with
:meth:`lib.paths.PathMapper.to_plex` equals the Plex ``Part.file`` exactly, or case-insensitively
when the rule that mapped it has the ``i`` option (:meth:`PathMapper.same_file`). A scene counts as
present in Plex when any one of its files is; a Plex item with several parts is checked per part.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Set, Tuple

from lib.paths import PathMapper, PathRuleError

__all__ = ["PlexFiles", "compare", "unclaimed"]


class PlexFiles:
    """Plex's ``Part.file`` paths, to find the one a mapped Stash path names.

    ``add(rating_key, path)`` records a part; ``find(mapped, mapper)`` returns the recorded paths
    equal to ``mapped.path`` (a :class:`lib.paths.Mapping`), compared case-insensitively when the
    rule that mapped it has the ``i`` option. ``keys[path]`` is the set of ratingKeys of a path.
    Built for 100,000 items: the case-folded view is made only when a rule asks for it.
    """

    def __init__(self) -> None:
        self.keys: Dict[str, Set[str]] = {}
        self._folded: Optional[Dict[str, List[str]]] = None

    def add(self, rating_key: str, path: str) -> None:
        keys = self.keys.get(path)
        if keys is None:
            self.keys[path] = {str(rating_key)}
            if self._folded is not None:
                self._folded.setdefault(path.casefold(), []).append(path)
        else:
            keys.add(str(rating_key))

    def find(self, mapped, mapper: PathMapper) -> List[str]:
        if mapped.path in self.keys:
            return [mapped.path]
        if mapped.rule is not None and mapped.rule.ignore_case:
            if self._folded is None:
                self._folded = {}
                for path in self.keys:
                    self._folded.setdefault(path.casefold(), []).append(path)
            return [p for p in self._folded.get(mapped.path.casefold(), [])
                    if mapper.same_file(p, mapped.path, mapped.rule)]
        return []


def compare(stash_files: Iterable[Tuple[str, str]], plex_files: Iterable[Tuple[str, str]],
            mapper: PathMapper) -> dict:
    """Compare Stash's files with Plex's, in both directions.

    ``stash_files``: ``(scene id, Stash file path)`` pairs, one per file of every scene (a scene with
    two files gives two pairs). ``plex_files``: ``(ratingKey, Part.file)`` pairs, one per part of
    every Plex item compared. ``mapper``: the ``path_map`` rules (identity when there are none).
    Pairs may come in any order; repeated pairs count once.

    Returns a dict::

        {"counts": {"stash_scenes", "stash_files", "plex_items", "plex_files", "matched_scenes",
                    "matched_plex_files", "missing_in_plex", "missing_in_stash", "unmappable"},
         "missing_in_plex":  [{"scene_id", "stash_paths": [...], "plex_paths": [...],
                               "rules": [...], "errors": [...]}, ...],   # by scene id
         "missing_in_stash": [{"ratingKey", "plex_path", "stash_path", "rule", "error"}, ...]}

    ``missing_in_plex`` lists scenes none of whose files Plex has, with the Plex paths they were
    expected at (``None`` where a rule fails its round trip; the message is in ``errors``).
    ``missing_in_stash`` lists Plex files no Stash file maps to, with the Stash path they would have
    (``None`` and ``error`` likewise). ``rules`` / ``rule`` name the ``path_map`` rule used, None for
    a path no rule covers. ``unmappable`` counts the paths on either side whose rule failed.
    """
    files = PlexFiles()
    for rating_key, path in plex_files:
        files.add(rating_key, path)
    exact = files.keys

    scenes: Dict[str, dict] = {}
    claimed: Set[str] = set()
    unmappable = 0
    seen: Set[Tuple[str, str]] = set()
    for scene_id, stash_path in stash_files:
        scene_id = str(scene_id)
        if (scene_id, stash_path) in seen:
            continue
        seen.add((scene_id, stash_path))
        entry = scenes.setdefault(scene_id, {"scene_id": scene_id, "stash_paths": [], "plex_paths": [],
                                             "rules": [], "errors": [], "matched": False})
        entry["stash_paths"].append(stash_path)
        try:
            mapped = mapper.to_plex(stash_path)
        except PathRuleError as exc:
            unmappable += 1
            entry["plex_paths"].append(None)
            entry["rules"].append(None)
            entry["errors"].append(str(exc))
            continue
        entry["plex_paths"].append(mapped.path)
        entry["rules"].append(mapped.rule.name if mapped.rule else None)
        hits = files.find(mapped, mapper)
        if hits:
            entry["matched"] = True
            claimed.update(hits)

    missing_in_plex = []
    for entry in sorted(scenes.values(), key=lambda e: _id_order(e["scene_id"])):
        if not entry.pop("matched"):
            missing_in_plex.append(entry)

    missing_in_stash = unclaimed(files, claimed, mapper)
    unmappable += sum(1 for entry in missing_in_stash if entry["error"] is not None)

    plex_items = {rk for keys in exact.values() for rk in keys}
    counts = {
        "stash_scenes": len(scenes),
        "stash_files": len(seen),
        "plex_items": len(plex_items),
        "plex_files": len(exact),
        "matched_scenes": len(scenes) - len(missing_in_plex),
        "matched_plex_files": len(claimed),
        "missing_in_plex": len(missing_in_plex),
        "missing_in_stash": len(missing_in_stash),
        "unmappable": unmappable,
    }
    return {"counts": counts, "missing_in_plex": missing_in_plex, "missing_in_stash": missing_in_stash}


def unclaimed(files: PlexFiles, claimed: Set[str], mapper: PathMapper) -> List[dict]:
    """Plex files no Stash file mapped to (``claimed`` holds those that were), each as
    ``{"ratingKey", "plex_path", "stash_path", "rule", "error"}`` with the Stash path it would have."""
    out = []
    for path in sorted(p for p in files.keys if p not in claimed):
        stash_path, rule, error = _to_stash(mapper, path)
        for rating_key in sorted(files.keys[path], key=_id_order):
            out.append({"ratingKey": rating_key, "plex_path": path, "stash_path": stash_path,
                        "rule": rule, "error": error})
    return out


def _to_stash(mapper: PathMapper, plex_path: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    try:
        mapped = mapper.to_stash(plex_path)
    except PathRuleError as exc:
        return None, None, str(exc)
    return mapped.path, (mapped.rule.name if mapped.rule else None), None


def _id_order(value: str) -> tuple:
    """Numeric ids in numeric order, anything else after them in text order."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)
