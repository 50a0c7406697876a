"""The background drainer: one detached process per plugin folder that empties the queue.

The hook side (:func:`ensure_running`) is stdlib only and costs a lock probe plus, when no drainer
runs, one fork: Stash waits for every hook process, and for any child holding its stdout/stderr,
so the drainer gets a new session and ``/dev/null`` for stdout/stderr
(reference/stash-plugin-protocol.md §3). Its ``server_connection`` arrives on a pipe as its stdin,
so the session cookie is never written to disk. Every run of the plugin, hook or task, calls
:func:`ensure_running`: that is how work resumes after a restart or an outage with no user action.

One drainer at a time: it holds ``drainer.lock`` (an fcntl lock the kernel drops if it dies). When
no job is queued it releases the lock, looks once more (a hook may have queued a job meanwhile and
seen the lock still held), and exits. While jobs wait for a later attempt it sleeps at most
:data:`POLL` seconds between looks, so a new hook's job starts within that time. While the circuit
breaker is open it checks Plex's health on the breaker's schedule and resumes when Plex answers.
"""
from __future__ import annotations

import os
import sys
import time

from lib.lock import FileLock

POLL = 1.0              # seconds between queue looks while jobs wait
SETTINGS_TTL = 60.0     # seconds before the settings are read from Stash again
STASH_RETRY = (5.0, 60.0)  # seconds: first and longest wait for an unreachable Stash
STASH_GIVE_UP = 600.0   # seconds of unreachable Stash before the drainer exits (the next run restarts it)
ENTRY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plexsync.py")


def lock_path(data_dir: str) -> str:
    return os.path.join(data_dir, "drainer.lock")


def ensure_running(data_dir: str, stdin: bytes) -> bool:
    """Start a detached drainer unless one holds the lock; it gets ``stdin``, the object Stash
    wrote to this run (for its ``server_connection``). Returns True when one was started."""
    if FileLock(lock_path(data_dir)).held_elsewhere():
        return False
    payload = stdin
    argv = [sys.executable, ENTRY, "--drain"]
    if os.name == "posix":
        read_end, write_end = os.pipe()
        if os.fork() == 0:  # child: become the drainer
            try:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(read_end, 0)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                os.execv(sys.executable, argv)
            finally:
                os._exit(127)
        os.close(read_end)
        try:  # a payload over the pipe buffer (64 KiB) waits for the drainer to read it
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        except BrokenPipeError:
            return False  # the child could not start Python; the next run tries again
    else:
        import subprocess

        flags = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, creationflags=flags, close_fds=True)
        proc.stdin.write(payload)
        proc.stdin.close()
    return True


def run(data_dir: str, server_connection: dict, queue) -> str:
    """The drainer's main loop; returns why it stopped ("idle", "busy", "stash unreachable", or a
    halt reason).

    A halt (bad Plex token, bad settings) is stored as ``halt_reason`` in the queue's meta table,
    where hooks and Queue Status show it; the jobs stay queued.
    """
    from lib import log, reconcile
    from lib.breaker import OPEN
    from lib.errors import classify
    from lib.plex import PlexConfigError
    from lib.settings import SettingsError
    from lib.stash import StashClient, StashError
    from lib.sync import Halt, Syncer, check_plex, connect, open_breaker, read_settings

    lock = FileLock(lock_path(data_dir))
    if not lock.acquire_soon():
        return "busy"
    lock.note(str(os.getpid()))
    log.info(f"drainer {os.getpid()} started")
    queue.release_dead_claims()
    stash = StashClient(server_connection)
    settings = syncer = breaker = None
    settings_read = 0.0
    stash_wait, stash_down_since = STASH_RETRY[0], None
    while True:
        try:
            if settings is None or time.monotonic() - settings_read > SETTINGS_TTL:
                if settings is None:
                    stash.use_api_key()
                fresh = read_settings(stash)
                if settings is None or fresh.raw != settings.raw:
                    settings, syncer, breaker = fresh, None, open_breaker(fresh, data_dir)
                    queue.set_meta("halt_reason", None)
                    reconcile.schedule(queue, settings)
                settings_read = time.monotonic()
            if breaker.state == OPEN:
                if queue.next_due() is None:
                    outcomes = []
                elif breaker.claim_probe():
                    check = check_plex(settings, breaker)
                    if check.status == "unauthorized":
                        raise Halt(f"{check.detail}: set a valid X-Plex-Token in the plugin settings")
                    continue
                else:
                    time.sleep(min(POLL, max(0.05, breaker.snapshot()["next_probe_at"] - time.time())))
                    continue
            else:
                if syncer is None:
                    syncer = Syncer(settings, stash, connect(settings), queue, breaker)
                which = reconcile.due(queue)
                if which is not None:
                    reconcile.reconcile(stash, syncer.plex, queue, settings, data_dir,
                                        "24h" if which == "startup" else settings["reconcile_scope"])
                    queue.set_meta("reconcile_startup_due", None)
                outcomes = syncer.run_batch()
        except (Halt, SettingsError, PlexConfigError) as exc:
            return _halt(queue, str(exc))
        except StashError as exc:
            if exc.status == 401:
                return _halt(queue, str(exc))
            stash_down_since = stash_down_since or time.monotonic()
            if time.monotonic() - stash_down_since > STASH_GIVE_UP:
                log.warning(f"{exc}; the drainer exits, the next hook or task starts it again")
                return "stash unreachable"
            log.warning(f"{exc}; trying again in {stash_wait:.0f} s")
            time.sleep(stash_wait)
            stash_wait = min(stash_wait * 2, STASH_RETRY[1])
            continue
        except Exception as exc:  # connecting to Plex failed
            failure = classify(exc)
            if failure.kind not in ("server_down", "transient"):
                return _halt(queue, failure.message)
            breaker.record_failure(failure.message, queue.pending)
            syncer = None
            continue
        stash_wait, stash_down_since = STASH_RETRY[0], None  # Stash answered this round
        if outcomes:
            continue
        due = queue.next_due()
        if due is None:
            lock.release()
            if queue.next_due() is not None and lock.acquire_soon():
                lock.note(str(os.getpid()))
                continue
            log.info(f"drainer {os.getpid()} idle, exiting")
            return "idle"
        time.sleep(min(max(due - time.time(), 0.05), POLL))


def _halt(queue, reason: str) -> str:
    from lib import log

    queue.set_meta("halt_reason", reason)
    log.error(f"sync stopped, jobs wait: {reason}")
    return reason
