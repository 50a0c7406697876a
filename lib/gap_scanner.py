"""The provider's gap reports: unmatched match requests as they happen, and scheduled full scans.

Two sources:
- :class:`UnmatchedLog`: every match request that found no scene is recorded at once (and logged),
  so a file Plex could not match is visible without waiting for a scan. A later successful match
  of the same filename removes it.
- :class:`GapScanner`: a background thread runs the bidirectional comparison (lib/gaps.py) on a
  schedule (hourly, daily, weekly or manual) or when asked, and keeps the last report, also on
  disk so a restart neither loses it nor postpones the next scan.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Callable, List, Optional

from lib.lock import write_json

SCHEDULES = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400, "manual": None}  # seconds
FIRST_SCAN_DELAY = 60.0   # seconds after start-up before a scheduled scan with no report on disk
RETRY_AFTER = 900.0       # seconds before a failed scheduled scan is tried again (at most the interval)
UNMATCHED_LIMIT = 10000   # unmatched filenames kept; the oldest go first

logger = logging.getLogger("plexsync.provider")


def iso(epoch: Optional[float]) -> Optional[str]:
    """``2025-06-01T12:34:56Z`` (UTC, seconds) for an epoch time, None for None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class UnmatchedLog:
    """Match requests that found no scene, by filename; thread-safe, at most ``limit`` entries.

    Entries: ``{"filename", "plex_paths", "stash_paths", "reason", "first_seen", "last_seen",
    "count"}`` (times in ISO 8601 UTC).
    """

    def __init__(self, limit: int = UNMATCHED_LIMIT, clock: Callable[[], float] = time.time):
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: "OrderedDict[str, dict]" = OrderedDict()

    def record(self, filename: str, tried: List[dict], reason: str) -> None:
        """Record (and log at WARNING) that ``filename`` matched nothing; ``tried`` holds the paths
        looked up (``plex_path``/``stash_path`` pairs)."""
        now = iso(self._clock())
        with self._lock:
            entry = self._entries.pop(filename, None) or {"filename": filename, "first_seen": now, "count": 0}
            entry.update(plex_paths=[t["plex_path"] for t in tried],
                         stash_paths=[t["stash_path"] for t in tried if t["stash_path"]],
                         reason=reason, last_seen=now, count=entry["count"] + 1)
            self._entries[filename] = entry
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)
        logger.warning("unmatched: %s: %s", filename, reason)

    def resolve(self, filename: str) -> None:
        """Forget ``filename``: a match request for it found a scene."""
        with self._lock:
            self._entries.pop(filename, None)

    def items(self) -> List[dict]:
        """Every entry, the most recently seen first."""
        with self._lock:
            return [dict(e) for e in reversed(self._entries.values())]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class GapScanner:
    """Runs ``scan()`` (returning a lib/gaps.py report) on a schedule and on request.

    ``interval``: seconds between scans, None for manual only. ``state_path``: JSON file keeping
    the last report across restarts (None: memory only). The next scheduled scan is due
    ``interval`` after the last report, or :data:`FIRST_SCAN_DELAY` after :meth:`start` when
    there is none; a failed scan is retried after ``min(interval, RETRY_AFTER)``. One scan runs at
    a time; exceptions of ``scan`` are logged and kept in :meth:`status`, never raised.
    """

    def __init__(self, scan: Callable[[], dict], interval: Optional[float], state_path: Optional[str] = None,
                 clock: Callable[[], float] = time.time, first_delay: float = FIRST_SCAN_DELAY):
        self._scan = scan
        self.interval = interval
        self._state_path = state_path
        self._clock = clock
        self._first_delay = first_delay
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._requested = False
        self._running = False
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[float] = None
        self._next: Optional[float] = None
        self.report: Optional[dict] = self._load()

    def start(self) -> None:
        """Start the scheduler thread (a daemon: it never holds the process up)."""
        if self.interval is not None:
            done = (self.report or {}).get("generated_epoch")
            self._next = done + self.interval if done else self._clock() + self._first_delay
        self._thread = threading.Thread(target=self._loop, name="gap-scanner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the scheduler; a scan in progress is left to finish in the background."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self) -> bool:
        """Ask for a scan now, whatever the schedule. False when one is already running or asked."""
        with self._lock:
            if self._running or self._requested:
                return False
            self._requested = True
        self._wake.set()
        return True

    def status(self) -> dict:
        """``{"schedule_seconds", "running", "requested", "last_scan", "next_scan", "last_error",
        "last_error_at"}``; ``last_scan`` is the last report's time, the others ISO 8601 UTC."""
        with self._lock:
            return {"schedule_seconds": self.interval, "running": self._running, "requested": self._requested,
                    "last_scan": (self.report or {}).get("generated_at"), "next_scan": iso(self._next),
                    "last_error": self._last_error, "last_error_at": iso(self._last_error_at)}

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = None if self._next is None else max(0.0, self._next - self._clock())
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                return
            with self._lock:
                due = self._requested or (self._next is not None and self._clock() >= self._next)
            if due:
                self._run_once()

    def _run_once(self) -> None:
        with self._lock:
            self._running, self._requested = True, False
        started = self._clock()
        logger.info("gap scan started")
        try:
            report = self._scan()
        except Exception as exc:  # a scan fails as a whole (Stash or Plex down): keep the old report
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.warning("gap scan failed: %s", message)
            with self._lock:
                self._running = False
                self._last_error, self._last_error_at = message, self._clock()
                if self.interval is not None:
                    self._next = self._clock() + min(self.interval, RETRY_AFTER)
            return
        report = dict(report, generated_at=iso(self._clock()), generated_epoch=self._clock(),
                      duration_seconds=round(self._clock() - started, 3))
        self._save(report)
        counts = report.get("counts", {})
        logger.info("gap scan done in %.1f s: %s Stash scenes missing in Plex, %s Plex files missing in Stash",
                    report["duration_seconds"], counts.get("missing_in_plex"), counts.get("missing_in_stash"))
        with self._lock:
            self.report = report
            self._running = False
            self._last_error = self._last_error_at = None
            if self.interval is not None:
                self._next = report["generated_epoch"] + self.interval

    def _load(self) -> Optional[dict]:
        if not self._state_path:
            return None
        try:
            with open(self._state_path, encoding="utf-8") as f:
                report = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignored the saved gap report %s: %s", self._state_path, exc)
            return None
        return report if isinstance(report, dict) and "counts" in report else None

    def _save(self, report: dict) -> None:
        if not self._state_path:
            return
        try:
            write_json(self._state_path, report)
        except OSError as exc:
            logger.warning("could not save the gap report to %s: %s", self._state_path, exc)
