"""The plugin's tasks (see plexsync.yml), each a function of (server_connection, queue) -> output.

Any task may be killed at any moment (Stash's Cancel is SIGKILL, reference/stash-plugin-protocol.md
§7): work is queued before it is done, and a job leaves the queue only after Plex confirmed it, so a
killed task loses nothing; its claimed jobs are released by the next run.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from lib import log
from lib.queue import Queue

RECENT_HOURS = 24
INDEX_FIRST = 50  # a sync of more scenes than this indexes the sections first (one listing per 5000)


class TaskError(Exception):
    """A task could not run; the message is the one line Stash shows as the error."""


def require_packages() -> None:
    """Raise TaskError naming the exact pip command when plexapi or requests is missing."""
    import importlib.util
    import os
    import sys

    missing = [m for m in ("plexapi", "requests") if importlib.util.find_spec(m) is None]
    if missing:
        req = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
        raise TaskError(f"PlexSync needs {' and '.join(missing)}, missing from the Python Stash runs "
                        f"({sys.executable}); install with: {sys.executable} -m pip install -r \"{req}\"")


def _syncer(conn: dict, queue: Queue):
    from lib.settings import SettingsError
    from lib.stash import StashClient, StashError
    from lib.plex import PlexConfigError
    from lib.sync import Halt, open_syncer

    stash = StashClient(conn)
    try:
        stash.use_api_key()  # tasks may outlive the one-hour session cookie
        return open_syncer(stash, queue)
    except SettingsError as exc:
        for problem in exc.problems:
            log.error(problem)
        more = f" (and {len(exc.problems) - 1} more, see the log)" if len(exc.problems) > 1 else ""
        raise TaskError(f"PlexSync settings are invalid: {exc.problems[0]}{more}") from None
    except (Halt, PlexConfigError, StashError) as exc:
        raise TaskError(str(exc)) from None
    except Exception as exc:
        from lib.errors import classify

        raise TaskError(f"cannot reach Plex: {classify(exc).message}") from None


def _drain(syncer, label: str, queued: int | None = None) -> str:
    from lib.sync import Halt, drain

    try:
        totals = drain(syncer, progress=True)
    except Halt as exc:
        syncer.queue.set_meta("halt_reason", str(exc))
        raise TaskError(f"{label} stopped, jobs wait: {exc}") from None
    for key, what in (("unmatched", "unmatched"), ("waiting", "waiting for Plex to index its file"),
                      ("dead", "moved to the dead letter queue")):
        for scene_id, detail in totals[key]:
            log.warning(f"scene {scene_id}: {what}: {detail}")
    counts = {k[:-6]: v for k, v in totals.items() if k.endswith("_count")}
    parts = [f"{counts.get(k, 0)} {k}" for k in ("synced", "unchanged", "unmatched", "waiting", "retry", "dead", "deleted")
             if counts.get(k)]
    head = f"{label}: " + (f"queued {queued} scenes; " if queued is not None else "")
    summary = head + (", ".join(parts) if parts else "nothing to do")
    log.info(summary)
    return summary


def sync_all(conn: dict, queue: Queue) -> str:
    """Queue every Stash scene, then process the queue in the foreground."""
    syncer = _syncer(conn, queue)
    ids = list(syncer.stash.scene_ids())
    queue.enqueue(ids, "sync_all")
    if len(ids) > INDEX_FIRST:
        syncer.plex.index()
    return _drain(syncer, "Sync All", len(ids))


def sync_recent(conn: dict, queue: Queue) -> str:
    """Queue the scenes updated in the last 24 hours, then process the queue in the foreground."""
    syncer = _syncer(conn, queue)
    latest = syncer.stash.latest_updated_at()
    ids = list(syncer.stash.scene_ids(since=cutoff(latest, RECENT_HOURS))) if latest else []
    queue.enqueue(ids, "sync_recent")
    if len(ids) > INDEX_FIRST:
        syncer.plex.index()
    return _drain(syncer, "Sync Recent", len(ids))


def cutoff(stash_time: str, hours: float, now: datetime | None = None) -> str:
    """``now - hours`` written the way Stash stores ``updated_at``: RFC3339 in the offset of
    ``stash_time`` (a value Stash returned), because Stash compares these filters as strings
    (reference/stash-plugin-protocol.md §10.2)."""
    text = stash_time.strip()
    if text.endswith("Z"):
        offset = timedelta(0)
    else:
        sign = -1 if text[-6] == "-" else 1
        offset = sign * timedelta(hours=int(text[-5:-3]), minutes=int(text[-2:]))
    zone = timezone(offset)
    moment = (now or datetime.now(timezone.utc)).astimezone(zone) - timedelta(hours=hours)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return stamp + ("Z" if text.endswith("Z") else moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:])


def process_queue(conn: dict, queue: Queue) -> str:
    """Process every due job in the foreground, with progress, until none is due."""
    queue.release_dead_claims()
    summary = _drain(_syncer(conn, queue), "Process Queue")
    waiting = queue.counts()["waiting"]
    return summary + (f"; {waiting} jobs wait for a later attempt" if waiting else "")


def queue_status(conn: dict, queue: Queue) -> str:
    """Log the queue's state: counts, oldest pending age, last sync, unmatched scenes."""
    from lib.drainer import lock_path
    from lib.lock import FileLock
    import os

    c = queue.counts()
    now = time.time()
    pending = c["due"] + c["waiting"] + c["claimed"]
    oldest = f"{(now - c['oldest_enqueued_at']) / 60:.1f} min" if c["oldest_enqueued_at"] else "none"
    last = queue.get_meta("last_success_at")
    last_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(last))) if last else "never"
    drainer_lock = FileLock(lock_path(os.path.dirname(queue.path)))
    running = f"running (pid {drainer_lock.holder_note()})" if drainer_lock.held_elsewhere() else "not running"
    lines = [
        f"pending: {pending} (due {c['due']}, waiting for retry {c['waiting']}, in progress {c['claimed']})",
        f"oldest pending: {oldest}",
        f"last successful sync: {last_text}",
        f"dead letter queue: {c['dead_letters']}",
        f"unmatched scenes: {c['unmatched']}",
        f"background drainer: {running}",
    ]
    halt = queue.get_meta("halt_reason")
    if halt:
        lines.append(f"sync stopped: {halt}")
    for scene_id, reason, path, detail, _seen in queue.unmatched(limit=100):
        lines.append(f"unmatched scene {scene_id} ({reason}): {path or ''} {detail}".rstrip())
    for line in lines:
        log.info(line)
    return "; ".join(lines[:6])


def clear_pending(conn: dict, queue: Queue) -> str:
    """Delete every pending job (jobs being processed right now finish)."""
    summary = f"Clear Pending Queue: removed {queue.clear_pending()} pending jobs"
    log.info(summary)
    return summary


TASKS = {
    "sync_all": (sync_all, True),
    "sync_recent": (sync_recent, True),
    "process_queue": (process_queue, True),
    "queue_status": (queue_status, False),
    "clear_pending": (clear_pending, False),
}  # mode -> (function, needs plexapi and requests)
