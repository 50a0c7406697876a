"""Processing queued scenes: read the scene from Stash now, find its Plex item, push one edit.

Data flows one way: Stash scene -> desired Plex state (lib/fields.py) -> diff against the item's
detail view -> one batched, locked edit (plus poster/background uploads when their bytes changed).

Outcomes of a job (``Outcome.result``):
``synced`` (Plex changed), ``unchanged`` (Plex already right: one read), ``unmatched`` (recorded in
the unmatched list: weak/ambiguous match, no file, bad path rule, or not in a partial library),
``waiting`` (Plex has not indexed the file yet: retried), ``retry`` (temporary failure), ``paused``
(Plex down: back in the queue, no attempt spent), ``dead`` (dead letter queue), ``deleted`` (the scene
is gone from Stash).

Failures are classified once (lib/errors.py) and fed to the circuit breaker (lib/breaker.py):
- Plex down (``server_down``): the job goes back to the queue without spending an attempt; after
  ``breaker_threshold`` such failures in a row the breaker opens and no job is tried until Plex
  answers a health check, so an outage never sends a job to the dead letter queue;
- temporary failures (``transient``): full-jitter exponential backoff,
  ``uniform(0, min(RETRY_CAP, RETRY_BASE * 2**n))`` seconds after the n-th failure, up to
  ``max_retries`` attempts, then the dead letter queue;
- permanent failures: the dead letter queue at once;
- Stash unreachable: the job goes back to the queue and the batch stops (``StashError`` raised);
- a file Plex has not indexed yet: retried after as long again as it has been waiting (30 s, 1, 2,
  4, 8 min, then every 15 min) until ``plex_scan_wait_hours`` passed, then the dead letter queue.
"""
from __future__ import annotations

import hashlib
import random
import time
from typing import NamedTuple

from lib import log
from lib.breaker import HALF_OPEN, OPEN, Breaker
from lib.errors import classify
from lib.fields import current_state, desired_state, plan_edit
from lib.matcher import find_item
from lib.paths import PathRuleError
from lib.plex import Plex
from lib.queue import Job, Queue, worker_id
from lib.settings import PLUGIN_ID, Settings, load
from lib.stash import StashClient, StashError

BATCH = 25            # jobs claimed (and scenes read from Stash) at once
LEASE = 300.0         # seconds a claimed job belongs to its worker
RETRY_BASE = 5.0      # seconds
RETRY_CAP = 600.0     # seconds
SCAN_FIRST = 30.0     # seconds before the first re-check of a file Plex has not indexed
SCAN_CAP = 900.0      # seconds between later re-checks


def refs(scene: dict) -> str:
    """The performers, tags and studio a scene refers to, as stored for rename hooks:
    ``" p12 p13 t5 s3 "`` (see ``Queue.scenes_referring``)."""
    ids = [f"p{p['id']}" for p in scene.get("performers") or []] + [f"t{t['id']}" for t in scene.get("tags") or []]
    if scene.get("studio"):
        ids.append(f"s{scene['studio']['id']}")
    return f" {' '.join(ids)} "


class Halt(Exception):
    """Processing must stop and the jobs wait: Plex refused the token or Stash refused our
    credentials. The message is one line for the user."""


class Outcome(NamedTuple):
    scene_id: int
    result: str
    detail: str = ""


def read_settings(stash: StashClient) -> Settings:
    """The plugin's validated settings, read from Stash now.

    Raises ``lib.settings.SettingsError`` (every problem, one line each), ``lib.stash.StashError``.
    """
    raw = stash.plugin_settings(PLUGIN_ID)
    log.add_secret(raw.get("plex_token"))
    return load(raw)


def open_breaker(settings: Settings, data_dir: str) -> Breaker:
    """The data folder's circuit breaker, configured from the settings."""
    return Breaker(data_dir, settings["breaker_threshold"], settings.rates, settings["recovery_step_seconds"])


def plex_timeout(settings: Settings) -> tuple:
    """(connect, read) seconds for every request to Plex, as requests takes them."""
    return settings["plex_connect_timeout"], settings["plex_read_timeout"]


def connect(settings: Settings) -> Plex:
    """Connect to Plex. Raises :class:`Halt` when Plex refuses the token, ``PlexConfigError`` for
    an unknown library, and what plexapi / requests raise when Plex is unreachable or failing."""
    from plexapi.exceptions import Unauthorized

    try:
        return Plex(settings["plex_url"], settings["plex_token"], settings.libraries, plex_timeout(settings))
    except Unauthorized as exc:
        raise Halt(classify(exc).message) from None


def check_plex(settings: Settings, breaker: Breaker):
    """Check Plex's health now (lib/health.py) and record it in the breaker, which an open
    breaker's ``up`` turns half-open. Returns the ``lib.health.Health``; never raises."""
    from lib import health

    result = health.check(settings["plex_url"], settings["plex_token"], plex_timeout(settings))
    breaker.record_check(result)
    return result


class Pacer:
    """Spaces job starts to the breaker's recovery rate (no pause at all outside the ramp)."""

    def __init__(self, breaker: Breaker):
        self.breaker = breaker
        self._next = 0.0

    def wait(self) -> None:
        rate = self.breaker.rate()
        if rate is None:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + 1.0 / rate


class Syncer:
    """Applies queued jobs with one settings snapshot, one Stash client, one Plex connection and the
    data folder's circuit breaker."""

    def __init__(self, settings: Settings, stash: StashClient, plex: Plex, queue: Queue, breaker: Breaker,
                 worker: str | None = None):
        self.settings = settings
        self.stash = stash
        self.plex = plex
        self.queue = queue
        self.breaker = breaker
        self.pacer = Pacer(breaker)
        self.worker = worker or worker_id()
        self.mapper = settings.path_mapper

    def run_batch(self, limit: int = BATCH) -> list[Outcome]:
        """Claim up to ``limit`` due jobs and process them; ``[]`` when none is due or the breaker
        is open. A half-open breaker allows one job (the trial).

        Raises :class:`Halt` and ``StashError`` (Stash unreachable), after giving unprocessed jobs
        back to the queue.
        """
        state = self.breaker.state
        if state == OPEN:
            return []
        self.expand_objects()
        jobs = self.queue.claim(1 if state == HALF_OPEN else limit, LEASE, self.worker)
        if not jobs:
            return []
        try:
            scenes = self.stash.find_scenes([j.scene_id for j in jobs])
        except StashError:
            self.queue.release(self.worker)
            raise
        outcomes = []
        try:
            for job in jobs:
                if self.breaker.state == OPEN:
                    break
                self.pacer.wait()
                outcomes.append(self.process(job, scenes.get(str(job.scene_id))))
        finally:
            self.queue.release(self.worker)  # whatever this batch did not settle
        return outcomes

    def expand_objects(self) -> int:
        """Queue every scene that refers to a performer, studio or tag a hook reported changed:
        those Stash links to it now, and those whose last push named it (after a destroy or merge
        Stash links them no more). Returns how many scenes were queued. Raises StashError."""
        queued = 0
        for kind, object_id, op, enqueued_at in self.queue.object_jobs():
            linked = set() if op == "destroy" else {int(s) for s in self.stash.scene_ids(refers_to=(kind, object_id))}
            scenes = linked | set(self.queue.scenes_referring(kind, object_id))
            queued += self.queue.expand_object(kind, object_id, enqueued_at, sorted(scenes))
            log.info(f"{kind} {object_id} {op}: queued its {len(scenes)} scenes")
        return queued

    def process(self, job: Job, scene: dict | None) -> Outcome:
        """Bring Plex in line with ``scene`` (None: deleted in Stash) and settle the job: done,
        retried, dead-lettered, or back in the queue untouched (Plex or Stash down)."""
        try:
            outcome = self._sync(job, scene)
        except Halt:
            raise
        except Exception as exc:  # classified, stored on the job; nothing escapes unrecorded
            return self._failed(job, exc)
        self.breaker.record_success(self.queue.pending)
        return outcome

    def _failed(self, job: Job, exc: Exception) -> Outcome:
        failure = classify(exc)
        if failure.kind in ("auth", "stash_auth"):
            raise Halt(failure.message) from None
        if failure.kind == "stash_down":
            self.queue.retry(job, self.worker, 0.0, failure.kind, failure.message, job.attempts, job.not_found_since)
            raise exc
        if failure.kind == "server_down":
            self.queue.retry(job, self.worker, 0.0, failure.kind, failure.message, job.attempts, job.not_found_since)
            self.breaker.record_failure(failure.message, self.queue.pending)
            return Outcome(job.scene_id, "paused", failure.message)
        attempts = job.attempts + 1
        if failure.kind == "transient":
            self.breaker.record_failure(failure.message, self.queue.pending)
            if attempts <= self.settings["max_retries"]:
                delay = random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2 ** attempts))
                self.queue.retry(job, self.worker, delay, failure.kind, failure.message, attempts,
                                 job.not_found_since)
                log.warning(f"scene {job.scene_id}: {failure.message}; retry {attempts} of "
                            f"{self.settings['max_retries']} in {delay:.0f} s")
                return Outcome(job.scene_id, "retry", failure.message)
        reason = "retries_exhausted" if failure.kind == "transient" else "permanent_error"
        self.queue.dead(job, self.worker, reason, failure.kind, failure.message, attempts)
        log.error(f"scene {job.scene_id}: {failure.message}; moved to the dead letter queue ({reason})")
        return Outcome(job.scene_id, "dead", failure.message)

    def _settle_unmatched(self, job: Job, reason: str, path: str | None, detail: str) -> Outcome:
        self.queue.mark_unmatched(job.scene_id, reason, path, detail)
        self.queue.complete(job, self.worker)
        return Outcome(job.scene_id, "unmatched", f"{reason}: {detail or path}")

    def _sync(self, job: Job, scene: dict | None) -> Outcome:
        sid = job.scene_id
        if scene is None:
            self.queue.forget_scene(sid)
            self.queue.clear_unmatched(sid)
            self.queue.complete(job, self.worker)
            return Outcome(sid, "deleted")
        files = [f["path"] for f in scene.get("files") or [] if f.get("path")]
        if not files:
            return self._settle_unmatched(job, "no_file", None, "the scene has no file")
        try:
            mapped = [self.mapper.to_plex(p) for p in files]
        except PathRuleError as exc:
            log.warning(f"scene {sid}: {exc}")
            return self._settle_unmatched(job, "path_map", files[0], str(exc))
        state = self.queue.scene_state([sid]).get(sid) or {}
        allow_weak = self.settings["allow_weak_match"]
        match = find_item(self.plex, self.mapper, mapped, state.get("rating_key"), fetch_weak=allow_weak)
        if match.confidence == "ambiguous" or (match.confidence == "weak" and not allow_weak):
            log.warning(f"scene {sid}: {match.confidence} match for {mapped[0].path} not applied, review: "
                        f"{match.detail}")
            return self._settle_unmatched(job, match.confidence, mapped[0].path, match.detail)
        if match.item is None:
            return self._not_in_plex(job, mapped[0].path)
        if match.confidence == "weak":
            log.warning(f"scene {sid}: applying weak match (allow_weak_match): {match.detail}")
        return self._push(job, scene, match.item, state)

    def _not_in_plex(self, job: Job, path: str) -> Outcome:
        settings = self.settings
        if settings["partial_library"]:
            return self._settle_unmatched(job, "not_in_plex", path, "Plex has no item for this file")
        now = time.time()
        since = job.not_found_since or now
        waited = now - since
        if waited >= settings["plex_scan_wait_hours"] * 3600:
            message = f"Plex did not index {path} within {settings['plex_scan_wait_hours']:g} h"
            self.queue.mark_unmatched(job.scene_id, "not_in_plex", path, message)
            self.queue.dead(job, self.worker, "not_in_plex", "not_indexed", message, job.attempts)
            log.error(f"scene {job.scene_id}: {message}; moved to the dead letter queue")
            return Outcome(job.scene_id, "dead", message)
        if job.not_found_since is None and settings["plex_request_scan"]:
            self.plex.scan_folder(path)
        delay = min(SCAN_CAP, max(SCAN_FIRST, waited))
        self.queue.mark_unmatched(job.scene_id, "waiting_for_plex", path,
                                  "Plex has not indexed this file yet")
        self.queue.retry(job, self.worker, delay, "not_indexed", f"Plex has no item for {path} yet",
                         job.attempts, since)
        return Outcome(job.scene_id, "waiting", path)

    def _push(self, job: Job, scene: dict, item, state: dict) -> Outcome:
        settings = self.settings
        rating_key = str(item.ratingKey)
        same_item = state.get("rating_key") == rating_key
        current, locked = current_state(item)
        params, pushed = plan_edit(desired_state(scene, settings), current, locked,
                                   state.get("pushed", {}) if same_item else {}, settings)
        shas = {"poster": state.get("poster_sha") if same_item else None,
                "art": state.get("art_sha") if same_item else None}
        uploaded = False
        wanted = [kind for kind, on in (("poster", settings["sync_poster"]), ("art", settings["sync_background"])) if on]
        if wanted:
            data = self.stash.fetch_image((scene.get("paths") or {}).get("screenshot") or "")
            sha = hashlib.sha256(data).hexdigest() if data else None
            for kind in wanted:
                if sha and sha != shas[kind]:
                    self.plex.upload(item, kind, data)
                    shas[kind] = sha
                    uploaded = True
                lock_name = "thumb" if kind == "poster" else "art"
                if settings["lock_fields"] and shas[kind] and lock_name not in locked:
                    params[f"{lock_name}.locked"] = 1
        if params:
            item.edit(**params)
        parts = [p.file for p in item.iterParts()]
        self.queue.save_scene_state(job.scene_id, rating_key, int(item.librarySectionID),
                                    parts[0] if parts else "", shas["poster"], shas["art"], pushed,
                                    scene.get("updated_at"), refs(scene))
        self.queue.complete(job, self.worker)
        changed = bool(params) or uploaded
        log.debug(f"scene {job.scene_id} -> ratingKey {rating_key}: "
                  f"{'updated ' + ', '.join(sorted({k.split('.')[0].split('[')[0] for k in params})) if changed else 'unchanged'}")
        return Outcome(job.scene_id, "synced" if changed else "unchanged", rating_key)


def drain(syncer: Syncer, progress: bool = False) -> dict:
    """Process due jobs in the foreground until none is due; returns counts by outcome and the
    lists ``unmatched`` / ``dead`` of (scene_id, detail). Reports progress to Stash when asked
    (at most every 0.5 s). Raises :class:`Halt`."""
    totals: dict = {"unmatched": [], "dead": [], "waiting": []}
    done = 0
    last_report = 0.0
    while True:
        outcomes = syncer.run_batch()
        if not outcomes:
            break
        for o in outcomes:
            totals[o.result + "_count"] = totals.get(o.result + "_count", 0) + 1
            if o.result in ("unmatched", "dead", "waiting"):
                totals[o.result].append((o.scene_id, o.detail))
        done += len(outcomes)
        if progress and time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            due = syncer.queue.counts()["due"]
            log.progress(done / (done + due) if done + due else 1.0)
    if progress:
        log.progress(1.0)
    return totals
