"""The durable job queue: one SQLite file in the data folder, stdlib ``sqlite3`` only.

Shape (after huey's storage): a narrow set of verbs (``enqueue``, ``claim``, ``complete``, ``retry``,
``dead``, ``release``) and one :meth:`Queue.db` context manager that owns every transaction.

- **One row per scene** in ``jobs`` (``scene_id`` is the primary key). ``enqueue`` is an indexed upsert,
  so it costs the same with 100,000 queued jobs as with none. A newer event for a queued scene bumps the
  row's ``generation`` and makes it due now; it never adds a second row.
- A job holds only the scene id: the drainer reads the scene from Stash when it processes the job, so a
  later edit is never overwritten by an older snapshot.
- ``claim`` leases jobs to one worker (``host:pid``) for ``lease`` seconds. A job whose claimer died is
  claimable again once the lease ran out, or at once (:meth:`Queue.release_dead_claims`) when the
  claimer ran on this host: every claiming process holds a lock file ``workers/<pid>.lock`` beside
  the database, which the kernel releases when the process dies, even as an unreaped zombie.
- ``complete`` deletes the row only if its generation is still the one processed (nothing newer
  arrived); otherwise the row goes back to pending. So finished jobs never pile up, and a job is gone
  only after Plex confirmed the edit.
- ``scene_state`` remembers per scene what was last pushed (ratingKey, poster hash, values), which is
  what makes a no-change sync cost one read. ``unmatched`` lists scenes that could not be matched to a
  Plex item, ``dead_letters`` the dead letter queue, ``meta`` small facts (last successful sync...).

WAL mode and a busy timeout let hook processes, the drainer and tasks use the file at once.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections import namedtuple
from collections.abc import Iterable

from lib.lock import FileLock

# The hook imports this module: it avoids typing, contextlib and json (each a few milliseconds of
# a hook that should cost little more than starting Python); sqlite3 already brings collections.

SCHEMA = [  # version 1; MIGRATIONS bring it up to date
    """CREATE TABLE IF NOT EXISTS jobs (
        scene_id INTEGER PRIMARY KEY,
        generation INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL,
        enqueued_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_found_since REAL,
        claimed_by TEXT,
        lease_until REAL,
        error_class TEXT,
        last_error TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_due ON jobs(next_attempt_at)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        scene_id INTEGER PRIMARY KEY,
        reason TEXT NOT NULL,
        error_class TEXT,
        last_error TEXT,
        attempts INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        failed_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS scene_state (
        scene_id INTEGER PRIMARY KEY,
        rating_key TEXT,
        section_id INTEGER,
        plex_file TEXT,
        poster_sha TEXT,
        art_sha TEXT,
        pushed TEXT,
        stash_updated_at TEXT,
        synced_at REAL)""",
    """CREATE TABLE IF NOT EXISTS unmatched (
        scene_id INTEGER PRIMARY KEY,
        reason TEXT NOT NULL,
        path TEXT,
        detail TEXT,
        seen_at REAL NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
]
MIGRATIONS = [
    [  # version 2: renames of performers, studios and tags reach their scenes
        "ALTER TABLE scene_state ADD COLUMN refs TEXT",
        """CREATE TABLE IF NOT EXISTS object_jobs (
            kind TEXT NOT NULL,
            object_id INTEGER NOT NULL,
            op TEXT NOT NULL,
            enqueued_at REAL NOT NULL,
            PRIMARY KEY (kind, object_id))""",
    ],
]
SCHEMA_VERSION = 1 + len(MIGRATIONS)
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another writer before "database is locked"


Job = namedtuple("Job", "scene_id generation source enqueued_at attempts not_found_since")
Job.__doc__ = """A claimed job: scene_id (int), generation (int), source (str: hook, sync_all...),
enqueued_at (epoch seconds), attempts (int), not_found_since (epoch seconds or None)."""


def worker_id() -> str:
    """This process's claim token, ``<host>:<pid>``."""
    return f"{_host()}:{os.getpid()}"


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "host")


class Queue:
    """The queue database at ``path`` (created with its folder on first use).

    Raises ``sqlite3.DatabaseError`` when the file is not a usable SQLite database.
    """

    def __init__(self, path: str):
        self.path = path
        self._workers = os.path.join(os.path.dirname(path) or ".", "workers")
        self._alive: FileLock | None = None
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        if self._conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with self.db() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for ddl in SCHEMA:
                        conn.execute(ddl)
                    version = 1
                for step in MIGRATIONS[version - 1:]:
                    for ddl in step:
                        conn.execute(ddl)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()
        if self._alive is not None:
            self._alive.release()
            try:
                os.unlink(self._alive.path)
            except OSError:
                pass

    def _worker_lock(self, pid: int | str) -> FileLock:
        return FileLock(os.path.join(self._workers, f"{pid}.lock"))

    def db(self) -> "_Transaction":
        """One write transaction: ``with queue.db() as conn:`` runs ``BEGIN IMMEDIATE`` ...
        ``COMMIT``, or ``ROLLBACK`` when the block raises."""
        return _Transaction(self._conn)

    # -- jobs ---------------------------------------------------------------------------------

    def enqueue(self, scene_ids: Iterable[int], source: str, now: float | None = None) -> int:
        """Queue each scene (one row per scene; a queued scene is refreshed and made due now).

        Returns how many scene ids were given.
        """
        now = time.time() if now is None else now
        rows = [(int(s), source, now, now, now) for s in scene_ids]
        with self.db() as conn:
            conn.executemany(
                "INSERT INTO jobs(scene_id, source, enqueued_at, updated_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(scene_id) DO UPDATE SET generation = generation + 1,"
                " source = excluded.source, updated_at = excluded.updated_at,"
                " next_attempt_at = excluded.next_attempt_at, attempts = 0",
                rows)
        return len(rows)

    def enqueue_object(self, kind: str, object_id: int, op: str) -> None:
        """Record that a performer, studio or tag (``kind``) changed (``op``: update, destroy,
        merge): the drainer queues every scene that refers to it. One row per object."""
        now = time.time()
        with self.db() as conn:
            conn.execute("INSERT OR REPLACE INTO object_jobs(kind, object_id, op, enqueued_at) VALUES (?, ?, ?, ?)",
                         (kind, int(object_id), op, now))

    def object_jobs(self, limit: int = 100) -> list[tuple]:
        """Changed objects waiting to be expanded into scene jobs: (kind, object_id, op, enqueued_at)."""
        return self._conn.execute("SELECT kind, object_id, op, enqueued_at FROM object_jobs"
                                  " ORDER BY enqueued_at LIMIT ?", (limit,)).fetchall()

    def expand_object(self, kind: str, object_id: int, enqueued_at: float, scene_ids: Iterable[int]) -> int:
        """Queue ``scene_ids`` for a changed object and drop its row, in one transaction (unless the
        object changed again meanwhile: then the row stays for another pass). Returns how many."""
        now = time.time()
        rows = [(int(s), f"{kind}:{object_id}", now, now, now) for s in scene_ids]
        with self.db() as conn:
            conn.executemany(
                "INSERT INTO jobs(scene_id, source, enqueued_at, updated_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(scene_id) DO UPDATE SET generation = generation + 1, source = excluded.source,"
                " updated_at = excluded.updated_at, next_attempt_at = excluded.next_attempt_at, attempts = 0",
                rows)
            conn.execute("DELETE FROM object_jobs WHERE kind = ? AND object_id = ? AND enqueued_at = ?",
                         (kind, int(object_id), enqueued_at))
        return len(rows)

    def scenes_referring(self, kind: str, object_id: int) -> list[int]:
        """Scenes whose last push named this performer/studio/tag (even if Stash no longer links
        them, e.g. after a destroy)."""
        token = f"% {kind[0]}{int(object_id)} %"
        return [r[0] for r in self._conn.execute("SELECT scene_id FROM scene_state WHERE refs LIKE ?", (token,))]

    def claim(self, limit: int, lease: float, worker: str, now: float | None = None) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``worker`` for ``lease`` seconds, oldest due first."""
        now = time.time() if now is None else now
        if self._alive is None and worker == worker_id():
            os.makedirs(self._workers, exist_ok=True)
            self._alive = self._worker_lock(os.getpid())
            self._alive.acquire()
        with self.db() as conn:
            rows = conn.execute(
                "SELECT scene_id, generation, source, enqueued_at, attempts, not_found_since"
                " FROM jobs WHERE next_attempt_at <= ? AND (claimed_by IS NULL OR lease_until < ?)"
                " ORDER BY next_attempt_at LIMIT ?", (now, now, limit)).fetchall()
            conn.executemany("UPDATE jobs SET claimed_by = ?, lease_until = ? WHERE scene_id = ?",
                             [(worker, now + lease, r[0]) for r in rows])
        return [Job(*r) for r in rows]

    def complete(self, job: Job, worker: str) -> bool:
        """Finish a job Plex confirmed. Returns False when a newer event arrived meanwhile: the
        row then stays, pending and due, to be processed again."""
        with self.db() as conn:
            gone = conn.execute("DELETE FROM jobs WHERE scene_id = ? AND generation = ? AND claimed_by = ?",
                                (job.scene_id, job.generation, worker)).rowcount
            if not gone:
                conn.execute("UPDATE jobs SET claimed_by = NULL, lease_until = NULL, attempts = 0,"
                             " not_found_since = NULL WHERE scene_id = ? AND claimed_by = ?",
                             (job.scene_id, worker))
        return bool(gone)

    def retry(self, job: Job, worker: str, delay: float, error_class: str, error: str,
              attempts: int, not_found_since: float | None = None, now: float | None = None) -> None:
        """Put a claimed job back to wait ``delay`` seconds (due at once if a newer event arrived)."""
        now = time.time() if now is None else now
        with self.db() as conn:
            conn.execute(
                "UPDATE jobs SET claimed_by = NULL, lease_until = NULL, attempts = ?,"
                " next_attempt_at = CASE WHEN generation = ? THEN ? ELSE ? END,"
                " error_class = ?, last_error = ?, not_found_since = ?"
                " WHERE scene_id = ? AND claimed_by = ?",
                (attempts, job.generation, now + delay, now, error_class, error[:2000],
                 not_found_since, job.scene_id, worker))

    def dead(self, job: Job, worker: str, reason: str, error_class: str, error: str,
             attempts: int, now: float | None = None) -> None:
        """Move a claimed job to the dead letter queue (unless a newer event arrived for it)."""
        now = time.time() if now is None else now
        with self.db() as conn:
            gone = conn.execute("DELETE FROM jobs WHERE scene_id = ? AND generation = ? AND claimed_by = ?",
                                (job.scene_id, job.generation, worker)).rowcount
            if gone:
                conn.execute(
                    "INSERT OR REPLACE INTO dead_letters(scene_id, reason, error_class, last_error,"
                    " attempts, enqueued_at, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job.scene_id, reason, error_class, error[:2000], attempts, job.enqueued_at, now))
            else:
                conn.execute("UPDATE jobs SET claimed_by = NULL, lease_until = NULL, attempts = 0"
                             " WHERE scene_id = ? AND claimed_by = ?", (job.scene_id, worker))

    def release(self, worker: str, scene_ids: Iterable[int] | None = None) -> int:
        """Give claimed jobs back without spending an attempt (all of ``worker``'s, or those ids)."""
        with self.db() as conn:
            if scene_ids is None:
                return conn.execute("UPDATE jobs SET claimed_by = NULL, lease_until = NULL"
                                    " WHERE claimed_by = ?", (worker,)).rowcount
            return sum(conn.execute("UPDATE jobs SET claimed_by = NULL, lease_until = NULL"
                                    " WHERE claimed_by = ? AND scene_id = ?", (worker, int(s))).rowcount
                       for s in scene_ids)

    def release_dead_claims(self) -> int:
        """Release jobs claimed by processes of this host that no longer run (e.g. SIGKILLed by
        Stash's Cancel): their worker lock is free. Returns how many jobs were released."""
        host = _host()
        dead = []
        for (claimer,) in self._conn.execute("SELECT DISTINCT claimed_by FROM jobs WHERE claimed_by IS NOT NULL"):
            name, _, pid = claimer.rpartition(":")
            if name != host or not pid.isdigit() or int(pid) == os.getpid():
                continue
            lock = self._worker_lock(pid)
            if not os.path.exists(lock.path) or not lock.held_elsewhere():
                dead.append(claimer)
                try:
                    os.unlink(lock.path)
                except OSError:
                    pass
        return sum(self.release(c) for c in dead)

    def clear_pending(self) -> int:
        """Delete every job not claimed right now; returns how many."""
        with self.db() as conn:
            return conn.execute("DELETE FROM jobs WHERE claimed_by IS NULL OR lease_until < ?",
                                (time.time(),)).rowcount

    def next_due(self) -> float | None:
        """When the earliest unclaimed job is due (epoch seconds; a changed object is due at once),
        or None when none is queued."""
        row = self._conn.execute(
            "SELECT MIN(t) FROM (SELECT MIN(next_attempt_at) AS t FROM jobs WHERE claimed_by IS NULL OR lease_until < ?"
            " UNION ALL SELECT MIN(enqueued_at) FROM object_jobs)", (time.time(),)).fetchone()
        return row[0]

    def counts(self, now: float | None = None) -> dict:
        """Queue figures: ``due``, ``waiting`` (retry later), ``claimed``, ``dead_letters``,
        ``unmatched`` (counts) and ``oldest_enqueued_at`` (epoch seconds or None)."""
        now = time.time() if now is None else now
        due, waiting, claimed, oldest = self._conn.execute(
            "SELECT COALESCE(SUM(free AND next_attempt_at <= ?), 0), COALESCE(SUM(free AND next_attempt_at > ?), 0),"
            " COALESCE(SUM(NOT free), 0), MIN(enqueued_at) FROM (SELECT *,"
            " (claimed_by IS NULL OR lease_until < ?) AS free FROM jobs)", (now, now, now)).fetchone()
        dead = self._conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        unmatched = self._conn.execute("SELECT COUNT(*) FROM unmatched").fetchone()[0]
        return {"due": due, "waiting": waiting, "claimed": claimed, "dead_letters": dead,
                "unmatched": unmatched, "oldest_enqueued_at": oldest}

    def pending(self) -> int:
        """Jobs in the queue, whatever their state (due, waiting, claimed), changed objects included."""
        return self._conn.execute("SELECT (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM object_jobs)").fetchone()[0]

    # -- dead letter queue --------------------------------------------------------------------

    def dead_letters(self, error_classes: Iterable[str] | None = None, since: float | None = None,
                     until: float | None = None, limit: int = 1000) -> list[dict]:
        """Dead letters, newest first, optionally filtered by error class and failure time (epoch
        seconds): dicts of scene_id, reason, error_class, last_error, attempts, enqueued_at, failed_at."""
        sql = ("SELECT scene_id, reason, error_class, last_error, attempts, enqueued_at, failed_at"
               " FROM dead_letters WHERE 1 = 1")
        args: list = []
        if error_classes is not None:
            classes = list(error_classes)
            sql += f" AND error_class IN ({','.join('?' * len(classes))})"
            args += classes
        if since is not None:
            sql += " AND failed_at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND failed_at <= ?"
            args.append(until)
        rows = self._conn.execute(sql + " ORDER BY failed_at DESC LIMIT ?", args + [limit]).fetchall()
        keys = ("scene_id", "reason", "error_class", "last_error", "attempts", "enqueued_at", "failed_at")
        return [dict(zip(keys, r)) for r in rows]

    def requeue_dead(self, scene_ids: Iterable[int], source: str) -> int:
        """Move dead letters back into the queue (one transaction: running it twice queues nothing
        twice). Returns how many moved."""
        now = time.time()
        moved = 0
        with self.db() as conn:
            for scene_id in scene_ids:
                if conn.execute("DELETE FROM dead_letters WHERE scene_id = ?", (int(scene_id),)).rowcount:
                    conn.execute(
                        "INSERT INTO jobs(scene_id, source, enqueued_at, updated_at, next_attempt_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(scene_id) DO UPDATE SET"
                        " generation = generation + 1, next_attempt_at = excluded.next_attempt_at",
                        (int(scene_id), source, now, now, now))
                    moved += 1
        return moved

    def purge_dead(self, older_than: float | None = None) -> int:
        """Delete dead letters that failed before ``older_than`` (epoch seconds; None = all)."""
        with self.db() as conn:
            if older_than is None:
                return conn.execute("DELETE FROM dead_letters").rowcount
            return conn.execute("DELETE FROM dead_letters WHERE failed_at < ?", (older_than,)).rowcount

    # -- per-scene state ------------------------------------------------------------------------

    def scene_state(self, scene_ids: Iterable[int]) -> dict[int, dict]:
        """What was last pushed for these scenes: scene_id -> {rating_key, section_id, plex_file,
        poster_sha, art_sha, pushed (dict), stash_updated_at, synced_at}."""
        import json

        ids = [int(s) for s in scene_ids]
        out = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            cur = self._conn.execute(
                "SELECT scene_id, rating_key, section_id, plex_file, poster_sha, art_sha, pushed,"
                f" stash_updated_at, synced_at FROM scene_state WHERE scene_id IN ({','.join('?' * len(chunk))})",
                chunk)
            for row in cur:
                state = dict(zip(("scene_id", "rating_key", "section_id", "plex_file", "poster_sha",
                                  "art_sha", "pushed", "stash_updated_at", "synced_at"), row))
                state["pushed"] = json.loads(state["pushed"] or "{}")
                out[row[0]] = state
        return out

    def save_scene_state(self, scene_id: int, rating_key: str, section_id: int, plex_file: str,
                         poster_sha: str | None, art_sha: str | None, pushed: dict,
                         stash_updated_at: str | None, refs: str = "", now: float | None = None) -> None:
        """Record a confirmed push (and clear the scene from ``unmatched``). ``refs``: the objects
        the scene refers to, ``" p12 t5 s3 "`` (performer, tag, studio ids)."""
        import json

        now = time.time() if now is None else now
        with self.db() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO scene_state(scene_id, rating_key, section_id, plex_file, poster_sha,"
                " art_sha, pushed, stash_updated_at, synced_at, refs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scene_id, rating_key, section_id, plex_file, poster_sha, art_sha,
                 json.dumps(pushed, ensure_ascii=False, sort_keys=True), stash_updated_at, now, refs))
            conn.execute("DELETE FROM unmatched WHERE scene_id = ?", (scene_id,))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_success_at', ?)", (str(now),))

    def forget_scene(self, scene_id: int) -> None:
        """Drop what is remembered of a scene (its Plex item is gone or no longer matches)."""
        with self.db() as conn:
            conn.execute("DELETE FROM scene_state WHERE scene_id = ?", (scene_id,))

    def mark_unmatched(self, scene_id: int, reason: str, path: str | None, detail: str = "") -> None:
        """Record why a scene has no Plex item (reasons: see lib/sync.py)."""
        with self.db() as conn:
            conn.execute("INSERT OR REPLACE INTO unmatched(scene_id, reason, path, detail, seen_at)"
                         " VALUES (?, ?, ?, ?, ?)", (scene_id, reason, path, detail[:2000], time.time()))

    def clear_unmatched(self, scene_id: int) -> None:
        with self.db() as conn:
            conn.execute("DELETE FROM unmatched WHERE scene_id = ?", (scene_id,))

    def unmatched(self, limit: int = 50) -> list[tuple]:
        """Unmatched scenes, newest first: (scene_id, reason, path, detail, seen_at)."""
        return self._conn.execute("SELECT scene_id, reason, path, detail, seen_at FROM unmatched"
                                  " ORDER BY seen_at DESC LIMIT ?", (limit,)).fetchall()

    # -- meta -----------------------------------------------------------------------------------

    def get_metas(self, *keys: str) -> dict:
        """Several meta values at once: key -> value (absent keys are missing)."""
        return dict(self._conn.execute(f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(keys))})",
                                       keys).fetchall())

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        """Store (or, with None, delete) a small fact such as ``halt_reason``."""
        with self.db() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, value, traceback) -> None:
        self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")
