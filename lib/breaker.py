"""The circuit breaker between the queue and Plex, persisted so that it survives restarts.

States (after pybreaker): ``closed`` (work flows), ``open`` (Plex is down: no job is tried, so none
spends an attempt or reaches the dead letter queue because of the outage), ``half_open`` (Plex
answered a health check: one scene is tried; success closes, failure opens again).

- It opens after ``threshold`` consecutive temporary failures (setting ``breaker_threshold``).
- While open, one process at a time checks Plex's health (lib/health.py), first after
  :data:`PROBE_FIRST` seconds, then after twice as long each time, at most :data:`PROBE_CAP`: 5 s,
  10 s, 20 s, 40 s, 60 s, 60 s... The probe slot is claimed under the lock, so concurrent processes
  never probe twice in one interval.
- After it closes, the drain rate ramps up (settings ``recovery_rates``, default 5, 10, 20 jobs/s,
  each for ``recovery_step_seconds``, then unlimited); a temporary failure during the ramp starts it
  again from the lowest rate.
- Every transition is logged with a sentence a user understands, and the last :data:`HISTORY`
  outages are kept (start, end, duration, jobs affected) for the Outage Summary.

The state is a JSON file in the data folder, written atomically (temp file + ``os.replace``) under an
exclusive lock on a sibling ``.lock`` file (fcntl, msvcrt on Windows, see lib/lock.py). It is written
only on a change (a transition, a failure count, a probe), never for a success while closed.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from lib import log
from lib.lock import FileLock, write_json

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
PROBE_FIRST = 5.0   # seconds
PROBE_CAP = 60.0    # seconds
HISTORY = 30        # outages kept


def _fresh(now: float) -> dict:
    return {"state": CLOSED, "failures": 0, "last_failure": "", "opened_at": None, "closed_at": None,
            "probe_interval": PROBE_FIRST, "next_probe_at": 0.0, "last_check": None,
            "consecutive_successes": 0, "outages": [], "observed_since": now, "ramp_started_at": None}


def duration_text(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``; ``4000`` -> ``1 h 6 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Breaker:
    """The breaker of the plugin folder whose data folder is ``data_dir``.

    ``threshold``: consecutive temporary failures that open it. ``rates``: jobs per second for each
    step of the recovery ramp; ``step``: seconds per step.
    """

    def __init__(self, data_dir: str, threshold: int = 5, rates: tuple = (5.0, 10.0, 20.0), step: float = 60.0):
        self.path = os.path.join(data_dir, "breaker.json")
        self._lock = FileLock(os.path.join(data_dir, "breaker.lock"))
        self.threshold = max(1, int(threshold))
        self.rates = tuple(rates)
        self.step = float(step)
        self._cache: dict | None = None
        self._cache_mtime = None

    def snapshot(self) -> dict:
        """The current state (re-read only when the file changed: one ``stat`` per call)."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            mtime = None
        if self._cache is None or mtime != self._cache_mtime:
            self._cache, self._cache_mtime = self._read(), mtime
        return self._cache

    @property
    def state(self) -> str:
        return self.snapshot()["state"]

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                value = json.load(f)
            if isinstance(value, dict) and value.get("state") in (CLOSED, OPEN, HALF_OPEN):
                return {**_fresh(time.time()), **value}
        except (OSError, ValueError):
            pass
        return _fresh(time.time())

    def _write(self, value: dict) -> None:
        write_json(self.path, value)
        self._cache, self._cache_mtime = value, os.stat(self.path).st_mtime_ns

    @contextmanager
    def _change(self) -> Iterator[dict]:
        """Read-modify-write under the lock; the block edits the dict; written if it changed."""
        with self._lock:
            value = self._read()
            before = json.dumps(value, sort_keys=True)
            yield value
            if json.dumps(value, sort_keys=True) != before:
                self._write(value)

    def record_success(self, pending: Callable[[], int]) -> None:
        """A job reached Plex. Closes a half-open breaker (ending the outage); resets the failure
        count. ``pending()`` gives the queue's pending count for the log and the outage record."""
        snap = self.snapshot()
        if snap["state"] == CLOSED and snap["failures"] == 0:
            return  # the common case writes nothing
        now = time.time()
        with self._change() as s:
            s["failures"] = 0
            s["consecutive_successes"] += 1
            if s["state"] == HALF_OPEN:
                waiting = pending()
                outage = {"start": s["opened_at"], "end": now, "duration": now - (s["opened_at"] or now),
                          "jobs_affected": max(waiting, s.get("jobs_at_open", 0))}
                s["outages"] = (s["outages"] + [outage])[-HISTORY:]
                s.update(state=CLOSED, closed_at=now, ramp_started_at=now, opened_at=None,
                         probe_interval=PROBE_FIRST, next_probe_at=0.0)
                ramp = " → ".join(f"{r:g}" for r in self.rates)
                log.info(f"Plex is back after {duration_text(outage['duration'])}: sync resumes "
                         f"({waiting} jobs waiting), at {ramp} scenes/s for the first "
                         f"{duration_text(self.step * len(self.rates))}, then at full speed.")

    def record_failure(self, message: str, pending: Callable[[], int]) -> bool:
        """A temporary failure. Returns True when the breaker is (now) open."""
        now = time.time()
        with self._change() as s:
            s["failures"] += 1
            s["consecutive_successes"] = 0
            s["last_failure"] = message
            ramping = s["ramp_started_at"] is not None and now - s["ramp_started_at"] < self.step * len(self.rates)
            if s["state"] == CLOSED and ramping:
                s["ramp_started_at"] = now  # errors during the ramp: start it again, slowly
            if s["state"] == HALF_OPEN or (s["state"] == CLOSED and s["failures"] >= self.threshold):
                waiting = pending()
                was_trial = s["state"] == HALF_OPEN
                s.update(state=OPEN, next_probe_at=now + s["probe_interval"], jobs_at_open=waiting)
                if not was_trial:
                    s.update(opened_at=now, probe_interval=PROBE_FIRST, next_probe_at=now + PROBE_FIRST)
                    log.warning(f"Plex looks down ({s['failures']} failures in a row, last: {message}): "
                                f"sync is paused and {waiting} jobs wait without using up retries. "
                                f"Checking Plex again in {PROBE_FIRST:g} s.")
                else:
                    log.warning(f"The trial scene failed ({message}): Plex is not usable yet; "
                                f"next check in {s['probe_interval']:g} s.")
            return s["state"] == OPEN

    def claim_probe(self, now: float | None = None) -> bool:
        """Take the next health-check slot when one is due (open breaker only). At most one
        process gets each slot; the next slot is then scheduled with a doubled interval."""
        now = time.time() if now is None else now
        snap = self.snapshot()
        if snap["state"] != OPEN or snap["next_probe_at"] > now:
            return False
        with self._change() as s:
            if s["state"] != OPEN or s["next_probe_at"] > now:
                return False
            s["next_probe_at"] = now + s["probe_interval"]
            s["probe_interval"] = min(PROBE_CAP, s["probe_interval"] * 2)
            return True

    def record_check(self, health) -> None:
        """Store a health check (lib.health.Health); an open breaker whose check says ``up`` turns
        half-open, so that one scene is tried."""
        with self._change() as s:
            s["last_check"] = {"status": health.status, "detail": health.detail, "at": health.at,
                               "elapsed_ms": round(health.elapsed_ms, 1)}
            if s["state"] == OPEN and health.status == "up":
                s["state"] = HALF_OPEN
                log.info(f"Plex answers again after {duration_text(health.at - (s['opened_at'] or health.at))}: "
                         "trying one scene before resuming.")
            elif s["state"] == OPEN:
                log.debug(f"Plex still unusable ({health.detail}); next check in "
                          f"{max(0.0, s['next_probe_at'] - time.time()):.0f} s")

    def rate(self, now: float | None = None) -> float | None:
        """Jobs per second allowed now by the recovery ramp; None = no limit."""
        snap = self.snapshot()
        started = snap.get("ramp_started_at")
        if snap["state"] != CLOSED or started is None or not self.rates:
            return None if snap["state"] == CLOSED else self.rates[0] if self.rates else None
        step = int(((time.time() if now is None else now) - started) // self.step)
        return self.rates[step] if step < len(self.rates) else None
