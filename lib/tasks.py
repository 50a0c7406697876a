"""The plugin's tasks (see plexsync.yml), each a function of (server_connection, queue, args) -> output.

Any task may be killed at any moment (Stash's Cancel is SIGKILL, reference/stash-plugin-protocol.md
§7): work is queued before it is done, and a job leaves the queue only after Plex confirmed it, so a
killed task loses nothing; its claimed jobs are released by the next run.
"""
from __future__ import annotations

import json
import os
import time

from lib import log
from lib.queue import Queue

RECENT_HOURS = 24
INDEX_FIRST = 50  # a sync of more scenes than this indexes the sections first (one listing per 5000)
OUTAGE_MARGIN = 300.0  # seconds around an outage in which dead letters count as caused by it


class TaskError(Exception):
    """A task could not run; the message is the one line Stash shows as the error."""


def require_packages() -> None:
    """Raise TaskError naming the exact pip command when plexapi or requests is missing."""
    import importlib.util
    import sys

    missing = [m for m in ("plexapi", "requests") if importlib.util.find_spec(m) is None]
    if missing:
        req = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
        raise TaskError(f"PlexSync needs {' and '.join(missing)}, missing from the Python Stash runs "
                        f"({sys.executable}); install with: {sys.executable} -m pip install -r \"{req}\"")


def _data_dir(queue: Queue) -> str:
    return os.path.dirname(queue.path)


def _settings(conn: dict):
    """(StashClient with the API key, validated settings). Raises TaskError."""
    from lib.settings import SettingsError
    from lib.stash import StashClient, StashError
    from lib.sync import read_settings

    stash = StashClient(conn)
    try:
        stash.use_api_key()  # tasks may outlive the one-hour session cookie
        return stash, read_settings(stash)
    except SettingsError as exc:
        for problem in exc.problems:
            log.error(problem)
        more = f" (and {len(exc.problems) - 1} more, see the log)" if len(exc.problems) > 1 else ""
        raise TaskError(f"PlexSync settings are invalid: {exc.problems[0]}{more}") from None
    except StashError as exc:
        raise TaskError(str(exc)) from None


def _syncer(conn: dict, queue: Queue):
    """A connected Syncer. An open breaker gets a health check first if one is due. Raises TaskError."""
    from lib.breaker import OPEN
    from lib.errors import classify
    from lib.plex import PlexConfigError
    from lib.sync import Halt, Syncer, check_plex, connect, open_breaker

    stash, settings = _settings(conn)
    breaker = open_breaker(settings, _data_dir(queue))
    if breaker.state == OPEN and breaker.claim_probe():
        check_plex(settings, breaker)
    try:
        return Syncer(settings, stash, connect(settings), queue, breaker)
    except (Halt, PlexConfigError) as exc:
        raise TaskError(str(exc)) from None
    except Exception as exc:
        failure = classify(exc)
        if failure.kind in ("server_down", "transient"):
            breaker.record_failure(failure.message, queue.pending)
        raise TaskError(f"cannot reach Plex: {failure.message}; {queue.pending()} jobs wait") from None


def _drain(syncer, label: str, queued: int | None = None) -> str:
    from lib.breaker import OPEN
    from lib.stash import StashError
    from lib.sync import Halt, drain

    try:
        totals = drain(syncer, progress=True)
    except Halt as exc:
        syncer.queue.set_meta("halt_reason", str(exc))
        raise TaskError(f"{label} stopped, jobs wait: {exc}") from None
    except StashError as exc:
        raise TaskError(f"{label} stopped, jobs wait: {exc}") from None
    for key, what in (("unmatched", "unmatched"), ("waiting", "waiting for Plex to index its file"),
                      ("dead", "moved to the dead letter queue")):
        for scene_id, detail in totals[key]:
            log.warning(f"scene {scene_id}: {what}: {detail}")
    counts = {k[:-6]: v for k, v in totals.items() if k.endswith("_count")}
    parts = [f"{counts[k]} {k}" for k in ("synced", "unchanged", "unmatched", "waiting", "retry", "paused",
                                          "dead", "deleted") if counts.get(k)]
    head = f"{label}: " + (f"queued {queued} scenes; " if queued is not None else "")
    summary = head + (", ".join(parts) if parts else "nothing to do")
    if syncer.breaker.state == OPEN:
        summary += (f"; Plex is down ({syncer.breaker.snapshot()['last_failure']}): "
                    f"{syncer.queue.pending()} jobs wait and resume by themselves when Plex answers")
    log.info(summary)
    return summary


def _sync(conn: dict, queue: Queue, hours: float | None, source: str, label: str) -> str:
    """Queue every scene (or those updated in the last ``hours``), then process the queue."""
    syncer = _syncer(conn, queue)
    since = syncer.stash.cutoff(hours) if hours is not None else None
    ids = list(syncer.stash.scene_ids(since=since))
    queue.enqueue(ids, source)
    if len(ids) > INDEX_FIRST:
        syncer.plex.index()
    return _drain(syncer, label, len(ids))


def sync_all(conn: dict, queue: Queue, args: dict) -> str:
    """Queue every Stash scene, then process the queue in the foreground."""
    return _sync(conn, queue, None, "sync_all", "Sync All")


def sync_recent(conn: dict, queue: Queue, args: dict) -> str:
    """Queue the scenes updated in the last 24 hours, then process the queue in the foreground."""
    return _sync(conn, queue, RECENT_HOURS, "sync_recent", "Sync Recent")


def process_queue(conn: dict, queue: Queue, args: dict) -> str:
    """Process every due job in the foreground, with progress, until none is due."""
    queue.release_dead_claims()
    summary = _drain(_syncer(conn, queue), "Process Queue")
    waiting = queue.counts()["waiting"]
    return summary + (f"; {waiting} jobs wait for a later attempt" if waiting else "")


def _reconcile(conn: dict, queue: Queue, scope: str, kinds: tuple | None = None) -> str:
    from lib import reconcile

    syncer = _syncer(conn, queue)
    kinds = kinds or reconcile.REPAIRED
    report = reconcile.reconcile(syncer.stash, syncer.plex, queue, syncer.settings, _data_dir(queue), scope,
                                 kinds, progress=log.progress)
    counts = reconcile.describe({k: v for k, v in report["counts"].items()
                                 if k != "missing_from_stash" or report["missing_from_stash_checked"]})
    for item in report["gaps"]["missing_from_stash"][:50]:
        log.warning(f"missing from Stash: ratingKey {item['ratingKey']} {item['plex_path']}")
    return (f"Reconcile ({scope}): {counts}; queued {report['queued']} repairs; report in "
            f"{os.path.join(_data_dir(queue), reconcile.REPORT)}")


def reconcile_all(conn: dict, queue: Queue, args: dict) -> str:
    """Compare every scene with Plex, both ways; queue the repairs; write the JSON gap report."""
    return _reconcile(conn, queue, "all")


def reconcile_recent(conn: dict, queue: Queue, args: dict) -> str:
    """The same for the scenes updated in the last 24 hours."""
    return _reconcile(conn, queue, "24h")


def reconcile_week(conn: dict, queue: Queue, args: dict) -> str:
    """The same for the scenes updated in the last 7 days."""
    return _reconcile(conn, queue, "7days")


def reconcile_missing_metadata(conn: dict, queue: Queue, args: dict) -> str:
    """Compare every scene; queue repairs only for Plex items that show none of Stash's metadata."""
    return _reconcile(conn, queue, "all", ("empty_metadata",))


def _ago(t: float | None, now: float) -> str:
    from lib.breaker import duration_text

    return f"{duration_text(now - t)} ago" if t else "never"


def queue_status(conn: dict, queue: Queue, args: dict) -> str:
    """Log the queue's state: counts, oldest pending age, last sync, unmatched scenes."""
    from lib.drainer import lock_path
    from lib.reconcile import describe
    from lib.lock import FileLock

    c = queue.counts()
    now = time.time()
    pending = queue.pending()
    oldest = f"{(now - c['oldest_enqueued_at']) / 60:.1f} min" if c["oldest_enqueued_at"] else "none"
    last = queue.get_meta("last_success_at")
    last_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(last))) if last else "never"
    drainer_lock = FileLock(lock_path(_data_dir(queue)))
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
    last = json.loads(queue.get_meta("reconcile_last") or "null")
    if last:
        lines.append(f"last reconciliation: {last['generated_at']} ({last['scope']}): "
                     f"{describe(last['counts'])}; queued {last['queued']}")
    else:
        lines.append("last reconciliation: never")
    next_at = queue.get_meta("reconcile_next_at")
    lines.append("next automatic reconciliation: " + (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(next_at)))
                                                      if next_at else "not scheduled (reconcile_interval is never)"))
    for scene_id, reason, path, detail, _seen in queue.unmatched(limit=100):
        lines.append(f"unmatched scene {scene_id} ({reason}): {path or ''} {detail}".rstrip())
    for line in lines:
        log.info(line)
    return "; ".join(lines[:6])


def clear_pending(conn: dict, queue: Queue, args: dict) -> str:
    """Delete every pending job (jobs being processed right now finish)."""
    summary = f"Clear Pending Queue: removed {queue.clear_pending()} pending jobs"
    log.info(summary)
    return summary


def health_check(conn: dict, queue: Queue, args: dict) -> str:
    """Check Plex now (identity, then an authenticated call) and show the breaker and the queue."""
    from lib.breaker import OPEN, duration_text
    from lib.sync import check_plex, open_breaker

    _stash, settings = _settings(conn)
    breaker = open_breaker(settings, _data_dir(queue))
    previous = (breaker.snapshot().get("last_check") or {}).get("at")
    result = check_plex(settings, breaker)
    snap = breaker.snapshot()
    now = time.time()
    c = queue.counts()
    if snap["state"] == OPEN:
        next_due = f"in {duration_text(max(0.0, snap['next_probe_at'] - now))} (by the background drainer)"
    else:
        next_due = "when a sync fails (the breaker is not open)"
    lines = [
        f"Plex: {result.status} ({result.detail}, {result.elapsed_ms:.0f} ms)",
        f"circuit breaker: {snap['state']}" + (f", open since {_ago(snap['opened_at'], now)}" if snap["opened_at"] else "")
        + (f", {snap['failures']} failures in a row" if snap["failures"] else ""),
        f"queue: {queue.pending()} pending, {c['dead_letters']} dead letters, "
        f"{c['unmatched']} unmatched",
        f"previous check: {_ago(previous, now)}; next check: {next_due}",
    ]
    for line in lines:
        log.info(line)
    return "; ".join(lines)


def outage_summary(conn: dict, queue: Queue, args: dict) -> str:
    """The last outages of Plex with MTTR, MTBF and availability since PlexSync started watching."""
    from lib.breaker import Breaker, duration_text

    snap = Breaker(_data_dir(queue)).snapshot()
    now = time.time()
    outages = list(snap["outages"])
    ongoing = snap["opened_at"] if snap["state"] != "closed" else None
    for o in outages[-10:]:
        log.info(f"outage {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(o['start']))}: "
                 f"{duration_text(o['duration'])}, {o['jobs_affected']} jobs affected")
    if ongoing:
        log.info(f"outage in progress since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ongoing))}")
    observed = max(1.0, now - snap["observed_since"])
    down = sum(o["duration"] for o in outages) + (now - ongoing if ongoing else 0.0)
    count = len(outages) + (1 if ongoing else 0)
    if not count:
        summary = f"Outage Summary: no Plex outage in {duration_text(observed)}; availability 100%"
    else:
        mttr = sum(o["duration"] for o in outages) / len(outages) if outages else now - ongoing
        mtbf = (observed - down) / count
        summary = (f"Outage Summary: {count} outages in {duration_text(observed)} (last {len(outages)} kept); "
                   f"MTTR {duration_text(mttr)}, MTBF {duration_text(mtbf)}, "
                   f"availability {100 * (1 - down / observed):.3f}%")
    log.info(summary)
    return summary


def dead_letters_view(conn: dict, queue: Queue, args: dict) -> str:
    """The dead letter queue by error class, with up to three examples each."""
    letters = queue.dead_letters(limit=100000)
    by_class: dict = {}
    for d in letters:
        by_class.setdefault(d["error_class"] or "unknown", []).append(d)
    for kind, items in sorted(by_class.items(), key=lambda kv: -len(kv[1])):
        log.info(f"{kind}: {len(items)}")
        for d in items[:3]:
            log.info(f"  scene {d['scene_id']} ({d['reason']}, {d['attempts']} attempts, failed "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['failed_at']))}): {d['last_error']}")
    summary = "Dead letters: " + (", ".join(f"{k}: {len(v)}" for k, v in sorted(by_class.items())) or "none")
    log.info(summary)
    return summary


def recover_outage_jobs(conn: dict, queue: Queue, args: dict) -> str:
    """Re-queue dead letters whose error was of the given classes (``args.classes``, default
    ``server_down``) and happened during the last outage (± 5 min). Plex must be healthy first, and
    only scenes that still exist in Stash are re-queued. Idempotent."""
    from lib.breaker import Breaker

    classes = [c.strip() for c in str(args.get("classes") or "server_down").split(",") if c.strip()]
    snap = Breaker(_data_dir(queue)).snapshot()
    if snap["state"] != "closed":
        raise TaskError("Plex is still down (circuit breaker open): nothing re-queued; try again when it is back")
    if not snap["outages"]:
        return _said("Recover Outage Jobs: no outage recorded, nothing to recover")
    last = snap["outages"][-1]
    letters = queue.dead_letters(classes, since=last["start"] - OUTAGE_MARGIN, until=last["end"] + OUTAGE_MARGIN)
    if not letters:
        return _said(f"Recover Outage Jobs: no dead letter of class {', '.join(classes)} in the last outage")
    stash, settings = _settings(conn)
    from lib.sync import check_plex, open_breaker

    check = check_plex(settings, open_breaker(settings, _data_dir(queue)))
    if check.status != "up":
        raise TaskError(f"Plex is not healthy ({check.detail}): nothing re-queued")
    existing = set(stash.find_scenes([d["scene_id"] for d in letters]))
    keep = [d["scene_id"] for d in letters if str(d["scene_id"]) in existing]
    moved = queue.requeue_dead(keep, "recover_outage")
    gone = len(letters) - len(keep)
    return _said(f"Recover Outage Jobs: re-queued {moved} scenes" +
                 (f"; {gone} no longer exist in Stash and stay in the dead letter queue" if gone else ""))


def clear_dead_letters(conn: dict, queue: Queue, args: dict) -> str:
    return _said(f"Clear Dead Letters: removed {queue.purge_dead()} entries")


def purge_dead_letters(conn: dict, queue: Queue, args: dict) -> str:
    """Delete dead letters older than ``args.days`` days (default 30)."""
    try:
        days = float(args.get("days") or 30)
    except ValueError:
        raise TaskError(f"days must be a number, got {args.get('days')!r:.40}") from None
    removed = queue.purge_dead(time.time() - days * 86400)
    return _said(f"Purge Dead Letters: removed {removed} entries older than {days:g} days")


def _said(summary: str) -> str:
    log.info(summary)
    return summary


TASKS = {
    "sync_all": (sync_all, True),
    "sync_recent": (sync_recent, True),
    "process_queue": (process_queue, True),
    "queue_status": (queue_status, False),
    "clear_pending": (clear_pending, False),
    "health_check": (health_check, True),
    "outage_summary": (outage_summary, False),
    "dead_letters": (dead_letters_view, False),
    "recover_outage_jobs": (recover_outage_jobs, True),
    "clear_dead_letters": (clear_dead_letters, False),
    "purge_dead_letters": (purge_dead_letters, False),
    "reconcile_all": (reconcile_all, True),
    "reconcile_recent": (reconcile_recent, True),
    "reconcile_week": (reconcile_week, True),
    "reconcile_missing_metadata": (reconcile_missing_metadata, True),
}  # mode -> (function, needs plexapi and requests)
