"""Reconciliation: find every gap between Stash and Plex and queue its repair.

Hooks miss things (Plex not scanned yet, an old failure, a hand edit in Plex, a renamed performer,
studio or tag, which fires no scene hook and leaves the scene's ``updated_at`` alone). This engine
compares both libraries in bulk, never with a request per scene: Plex's target sections as paged
list views (5,000 items per request, lib/plex.py ``Plex.listing``), Stash's scenes in pages of 1,000
with only the fields the comparison needs, and what PlexSync last pushed (the queue's
``scene_state``). Gap kinds, one per scene, in this order:

- ``missing_from_plex``: no Plex item has any of the scene's files (after path mapping);
- ``stale``: the scene's ``updated_at`` is later than the ``updated_at`` of its last successful
  sync (compared as strings, as Stash stores them: reference/stash-plugin-protocol.md §10.2);
- ``empty_metadata``: the Plex item shows none of Stash's fields (no summary, studio, date, tags);
- ``different_metadata``: title, summary, studio, date, performers, tags, collection or poster
  differ from the desired state (respecting the field toggles and ``preserve_plex_edits``);
- ``missing_from_stash``: a Plex file in a synced section that no Stash scene has (reported, never
  deleted; only when every scene was compared).

List views show at most :data:`LIST_LIMITS` tags per kind (reference/plex-server-api.md §5.4), so a
tag list is judged on what is visible and, for longer lists, on the set PlexSync last pushed: a
performer rename makes the desired set differ from the pushed one.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import NamedTuple

from lib import log
from lib.fields import desired_state
from lib.gaps import PlexFiles, unclaimed
from lib.lock import write_json
from lib.paths import PathRuleError
from lib.plex import part_file
from lib.settings import INTERVALS

KINDS = ("missing_from_plex", "stale", "empty_metadata", "different_metadata", "missing_from_stash")
REPAIRED = KINDS[:4]  # kinds a reconciliation queues by default (missing from Stash: reported only)
SCOPES = {"all": None, "24h": 24.0, "7days": 24.0 * 7}  # scope -> hours back (None = every scene)
LIST_LIMITS = {"genre": 2, "actor": 3, "collection": 1}  # tags a PMS list view shows per kind
_KINDS = {"Genre": "genre", "Role": "actor", "Collection": "collection"}  # list view element -> edit name
REPORT = "reconcile-report.json"
RECONCILE_PAGE = 2000  # Plex items per listing request: one parsed page costs ~14 KB an item
ITEMS_KEPT = 100000  # gaps of one kind listed in the report (counts are always complete)


class PlexRow(NamedTuple):
    """One Plex item as a list view shows it. Kept for every item of a 100,000-item library, so:
    the summary as a hash, repeated names interned, and ``tags`` a tuple of the visible (genre,
    actor, collection) names in :data:`LIST_LIMITS` order."""
    rating_key: str
    title: str
    summary: int
    studio: str
    date: str
    year: int | None
    tags: tuple


def _row(video) -> PlexRow:
    a = video.attrib
    year = a.get("year")
    found: dict = {}
    for child in video:
        if child.tag in _KINDS:
            found.setdefault(_KINDS[child.tag], []).append(sys.intern(child.attrib.get("tag", "")))
    return PlexRow(a["ratingKey"], a.get("title") or "", hash(a.get("summary") or ""),
                   sys.intern(a.get("studio") or ""), sys.intern(a.get("originallyAvailableAt") or ""),
                   int(year) if year and year.isdigit() else None,
                   tuple(tuple(found.get(f, ())) for f in LIST_LIMITS))


def metadata_gap(desired: dict, row: PlexRow, state: dict, settings) -> tuple[str | None, list]:
    """Compare the desired state of a scene with its Plex row. Returns (kind or None, fields)."""
    same_item = state.get("rating_key") == row.rating_key
    pushed = state.get("pushed", {}) if same_item else {}
    preserve = settings["preserve_plex_edits"]
    have = {"title": row.title, "studio": row.studio, "originallyAvailableAt": row.date, "year": row.year}
    fields = []
    for field in ("title", "summary", "studio", "originallyAvailableAt", "year"):
        if field not in desired:
            continue
        want = desired[field]
        if field == "summary":
            if hash(want) == row.summary:
                continue
            edited = preserve and row.summary != hash("") and "summary" in pushed and hash(pushed["summary"]) != row.summary
        else:
            if (want or None) == (have[field] or None):
                continue
            edited = preserve and have[field] and field in pushed and pushed[field] != have[field]
        if not edited:
            fields.append(field)
    for (field, limit), shown in zip(LIST_LIMITS.items(), row.tags):
        if field not in desired:
            continue
        want, visible = set(desired[field]), set(shown)
        known = set(pushed.get(field) or ()) if field in pushed else None
        if preserve:
            differs = bool(want - visible) and (len(visible) < limit or known is None or not want <= known)
        elif visible - want or len(visible) < min(len(want), limit):
            differs = True
        elif len(want) <= limit:
            differs = visible != want
        else:  # the list view cannot show them all: trust what we pushed, if it is this set
            differs = known != want
        if differs:
            fields.append(field)
    for kind, setting, sha in (("poster", "sync_poster", "poster_sha"), ("background", "sync_background", "art_sha")):
        if settings[setting] and not (same_item and state.get(sha)):
            fields.append(kind)
    if not fields:
        return None, []
    empty = not (row.summary != hash("") or row.studio or row.date or any(row.tags))
    return ("empty_metadata" if empty else "different_metadata"), fields


def reconcile(stash, plex, queue, settings, data_dir: str, scope: str = "all",
              queue_kinds: tuple = REPAIRED,
              progress=None) -> dict:
    """Compare, write the JSON gap report to the data folder, queue the repairs of ``queue_kinds``
    and remember the run (queue meta ``reconcile_last``). Returns the report.

    ``scope``: a key of :data:`SCOPES`. ``progress``: called with a fraction 0..1 now and then.
    Raises what the Stash and Plex clients raise.
    """
    started = time.time()
    mapper = settings.path_mapper
    files, rows = PlexFiles(), {}
    for _sid, video in plex.listing(page_size=RECONCILE_PAGE):
        row = _row(video)
        rows[row.rating_key] = row
        for part in video.iter("Part"):
            if part.attrib.get("file"):
                files.add(row.rating_key, part_file(part.attrib["file"]))
    if progress:
        progress(0.2)
    hours = SCOPES[scope]
    since = stash.cutoff(hours) if hours is not None else None
    gaps: dict = {kind: [] for kind in KINDS}
    counts = dict.fromkeys(KINDS, 0)
    claimed: set = set()
    compared = 0
    page: list = []

    def settle(scenes: list) -> None:
        states = queue.scene_state(int(s["id"]) for s in scenes)
        for scene in scenes:
            kind, item = _judge(scene, states.get(int(scene["id"]), {}), files, rows, claimed, mapper, settings)
            if kind:
                counts[kind] += 1
                if len(gaps[kind]) < ITEMS_KEPT:
                    gaps[kind].append(item)

    for scene in stash.reconcile_scenes(since=since):
        page.append(scene)
        compared += 1
        if len(page) == 1000:
            settle(page)
            page = []
            if progress:
                progress(min(0.95, 0.2 + 0.75 * compared / max(compared + 1000, len(rows))))
    settle(page)
    if hours is None:
        gaps["missing_from_stash"] = unclaimed(files, claimed, mapper)[:ITEMS_KEPT]
        counts["missing_from_stash"] = len(files.keys) - len(claimed)
    queued = sorted({int(item["scene_id"]) for kind in queue_kinds if kind != "missing_from_stash"
                     for item in gaps[kind]})
    queue.enqueue(queued, "reconcile")
    report = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scope": scope,
              "seconds": round(time.time() - started, 2), "scenes_compared": compared, "plex_items": len(rows),
              "missing_from_stash_checked": hours is None, "counts": counts, "queued": len(queued),
              "queued_kinds": list(queue_kinds), "gaps": gaps}
    write_json(os.path.join(data_dir, REPORT), report)
    queue.set_meta("reconcile_last", json.dumps({k: report[k] for k in ("generated_at", "scope", "seconds",
                                                                         "counts", "queued")}))
    queue.set_meta("reconcile_last_at", str(started))
    schedule(queue, settings)
    log.info(f"Reconcile {scope}: {describe(counts)}; queued {len(queued)} repairs" + ("" if hours is None else " (missing from Stash: checked by All only)"))
    if progress:
        progress(1.0)
    return report


def _judge(scene: dict, state: dict, files: PlexFiles, rows: dict, claimed: set, mapper, settings):
    paths = [f["path"] for f in scene.get("files") or [] if f.get("path")]
    item = {"scene_id": scene["id"], "stash_path": paths[0] if paths else None}
    hits = []
    for path in paths:
        try:
            mapped = mapper.to_plex(path)
        except PathRuleError as exc:
            item["error"] = str(exc)
            continue
        item.setdefault("plex_path", mapped.path)
        hits.extend(files.find(mapped, mapper))
    claimed.update(hits)
    if not hits:
        return "missing_from_plex", item
    row = rows[min(files.keys[hits[0]])]
    item.update(plex_path=hits[0], ratingKey=row.rating_key)
    if state.get("stash_updated_at") and (scene.get("updated_at") or "") > state["stash_updated_at"]:
        return "stale", item
    kind, fields = metadata_gap(desired_state(scene, settings), row, state, settings)
    item["fields"] = fields
    return kind, item


def describe(counts: dict) -> str:
    """Gap counts as a user reads them: ``"missing from plex: 40, stale: 3, ..."``."""
    return ", ".join(f"{kind.replace('_', ' ')}: {n}" for kind, n in counts.items())


def due(queue, now: float | None = None) -> str | None:
    """Which automatic reconciliation is due: ``"startup"`` (Stash started since the last run:
    the last 24 hours are compared), ``"scheduled"`` (``reconcile_interval`` elapsed), or None.
    Reads two meta values: cheap enough for every invocation."""
    meta = queue.get_metas("reconcile_startup_due", "reconcile_next_at")
    if meta.get("reconcile_startup_due"):
        return "startup"
    next_at = meta.get("reconcile_next_at")
    if next_at and float(next_at) <= (time.time() if now is None else now):
        return "scheduled"
    return None


def schedule(queue, settings) -> None:
    """Set when the next automatic reconciliation is due from ``reconcile_interval`` (at once when
    none ran yet; never when the interval is ``never``)."""
    interval = INTERVALS[settings["reconcile_interval"]]
    last = queue.get_meta("reconcile_last_at")
    next_at = None if interval is None else (float(last) + interval if last else time.time())
    if queue.get_meta("reconcile_next_at") != (None if next_at is None else str(next_at)):
        queue.set_meta("reconcile_next_at", None if next_at is None else str(next_at))
