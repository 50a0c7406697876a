"""Benchmark: the Reconcile Library (All) task at 10,000 and 100,000 scenes (issue 4, item 5 "Scale").

Command (from the project root)::

    .venv/bin/python tests/bench/reconcile.py [--sizes 10000,100000] [--plex-latency-ms 2] [--stash-latency-ms 5]
        [--both-up-to 10000] [--repeat 3] [--crosscheck 120] [--profile] [--tracemalloc]

Targets (issue 4): 100,000 scenes in under 60 seconds, peak memory under 300 MB, time growing
linearly from 10,000 to 100,000 (the ratio time(100k) / time(10k) is printed; linear = 10). Not a
test: it prints figures and never asserts timings. It exits 1 only when a run fails (error, non-zero
exit, unframed stderr) or its gap counts are wrong.

Setup, per size N: a FakeStash (``--stash-latency-ms`` per request, default 5) and a FakePlex
(``--plex-latency-ms``, default 2) on loopback in this process, filled by
``tests/library.build_library(stash, plex, N, hostile=False, missing_from_plex=0)``: every scene is
in the Plex section. Plugin settings as a user saves them (plex_url, plex_token, path_map). The task
runs as Stash runs it: ``python <plugin>/plexsync.py`` with ``{"server_connection": ..., "args":
{"mode": "reconcile_all"}}`` on stdin, ``PYTHONPATH`` = the project's parent, cwd ``/``
(tests/harness.py), each variant with its own plugin folder.

Two library states ("variants"):
- ``synced`` (realistic; every size): the library as one Sync All leaves it. For each scene the
  benchmark computes what the plugin's push computes (``desired_state`` / ``plan_edit`` of
  lib/fields.py against the fresh Plex item), applies those edit parameters and a poster upload to
  the FakePlex item through the fake's own PUT / POST handlers, and stores the plugin's
  ``scene_state`` row with ``lib.queue.Queue.save_scene_state`` (pushed values, ``updated_at``,
  refs). Stand-in: the poster bytes and ``poster_sha`` are a per-scene digest rather than the
  scene's rendered cover PNG (rendering costs 2.4 ms a scene; reconciliation only checks that a
  poster was pushed to this item). ``--crosscheck N`` (default 120; 0 skips) first proves on two
  identical N-scene libraries that this equals what a real Sync All run leaves (Plex fields, tags,
  locks and ``scene_state``), and that both reconcile to zero gaps. Expected: every count 0.
- ``fresh`` (sizes <= ``--both-up-to``, default 10000): never synced; each Plex item shows only its
  file name, so every scene is an ``empty_metadata`` gap and is queued for repair.

While the task runs this process holds the plugin folder's ``data/drainer.lock``, so the plugin
sees "a drainer runs" and starts none (a drainer would begin repairing and compete for the CPUs).
Before each measured run the fakes are warmed in-process (untimed, no request logged): FakePlex
renders every listing page once (it reuses an item's rendered XML while the item is unchanged) and
FakeStash builds its id-ordered scene list, so the run does not pay the fakes' one-off rendering.

Each size and variant runs ``--repeat`` times (default 3; a 10,000-scene run varies by +-15 % here)
and the run with the median wall time is reported. Printed per run: wall seconds (spawn until exit
and EOF, what Stash waits for), scenes per second,
the plugin process's CPU time and its own peak RSS (``_common.run_child(measure_rss=True)``: a small
helper forks it, because ru_maxrss of a child started from this large process would report this
process's RSS), the CPU time of this process during the run (the fakes' server threads; the
plugin's requests are sequential, so the fakes' CPU adds to the wall time instead of overlapping),
Stash and Plex requests by kind, a phase breakdown (start-up, Plex listing, Stash pages, tail) and
the gap counts from ``data/reconcile-report.json``.

``--profile`` / ``--tracemalloc``: after the measured runs, run the largest synced case once more
under cProfile (the plugin's compute split by part of the engine, top functions) or tracemalloc
(live memory by allocation site once the Plex listing is held and once every scene was compared,
with the peak in between). Their timings are not the measured ones.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pstats
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter

import _common as c

from fakeplex import FakePlex  # noqa: E402  (paths set by _common)
from fakestash import FakeStash  # noqa: E402
import harness  # noqa: E402
from library import build_library  # noqa: E402
from lib.fields import desired_state, plan_edit  # noqa: E402
from lib.lock import FileLock  # noqa: E402
from lib.plex import INDEX_PAGE  # noqa: E402
from lib.queue import Queue  # noqa: E402
from lib.settings import load as load_settings  # noqa: E402
from lib.stash import RECONCILE_SCENES_AFTER  # noqa: E402
from lib.sync import refs  # noqa: E402

KINDS = ("missing_from_plex", "stale", "empty_metadata", "different_metadata", "missing_from_stash")
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 300.0      # MB = 10^6 bytes
LINEAR_SLACK = 1.25        # "linear" when time ratio <= size ratio * this

_SECTION_ALL = re.compile(r"^/library/sections/\d+/all/?$")


# --------------------------------------------------------------------------- library states

def gql_scene(stash: FakeStash, rec: dict) -> dict:
    """A scene shaped as the plugin reads it from GraphQL (the fields desired_state and refs use)."""
    studio = stash.studios.get(rec["studio_id"]) if rec["studio_id"] else None
    return {
        "id": rec["id"], "title": rec["title"], "details": rec["details"], "date": rec["date"],
        "updated_at": rec["updated_at"],
        "studio": {"id": studio["id"], "name": studio["name"]} if studio else None,
        "performers": [{"id": p, "name": stash.performers[p]["name"]} for p in rec["performer_ids"]],
        "tags": [{"id": t, "name": stash.tags[t]["name"]} for t in rec["tag_ids"]],
        "files": [{"path": f["path"], "basename": f["basename"]} for f in rec["files"]],
    }


def fake_item_state(item) -> tuple:
    """(current, locked) of a FakePlex Item, shaped like lib.fields.current_state of its detail view."""
    return ({"title": item.title or "", "summary": item.summary or "", "studio": item.studio or "",
             "originallyAvailableAt": item.originally_available_at or "", "year": item.year,
             "actor": list(item.tags["actor"]), "genre": list(item.tags["genre"]),
             "collection": list(item.tags["collection"])}, set(item.locked))


def stand_in_poster(rec: dict) -> bytes:
    return b"poster:" + hashlib.sha256(f"scene-cover-{rec['id']}-v{rec['cover_version']}".encode()).digest()


def mark_synced(stash: FakeStash, plex: FakePlex, lib, queue: Queue, settings, poster=stand_in_poster) -> None:
    """Leave Plex and the plugin's scene_state as one Sync All of every scene in Plex leaves them
    (lib/sync.py ``Syncer._push`` on a fresh item: poster upload, one edit, save_scene_state)."""
    items = plex._items  # the live Items
    for sid, rk in lib.in_plex.items():
        rec = stash.scenes[sid]
        scene = gql_scene(stash, rec)
        item = items[rk]
        current, locked = fake_item_state(item)
        params, pushed = plan_edit(desired_state(scene, settings), current, locked, {}, settings)
        data = poster(rec)
        sha = hashlib.sha256(data).hexdigest()
        with plex._lock:
            if settings["sync_poster"]:
                plex._upload(rk, "posters", {}, data)
                if settings["lock_fields"] and "thumb" not in locked:
                    params["thumb.locked"] = 1
            if params:  # what plexapi's item.edit(**params) sends: id, type and str() values
                query = {k: [str(v)] for k, v in params.items()}
                query.update(id=[rk], type=["1"])
                plex._edit(str(item.section_key), query)
        queue.save_scene_state(int(sid), rk, item.section_key, item.files[0] if item.files else "",
                               sha if settings["sync_poster"] else None, None, pushed, rec["updated_at"],
                               refs(scene))


def warm_fakes(stash: FakeStash, plex: FakePlex, n: int) -> float:
    """Untimed, in-process: render every listing page once (FakePlex keeps each item's rendered
    text and the title order while nothing changes) and build FakeStash's id-ordered scene list
    (kept until the next write), so the measured run is not charged with the fakes' one-off
    rendering. Requests made here are not logged. Returns seconds."""
    t0 = time.perf_counter()
    with plex._lock:
        for sid in plex._sections:
            for start in range(0, max(n, 1), INDEX_PAGE):
                plex._list(str(sid), {"type": ["1"], "includeGuids": ["0"]},
                           {"X-Plex-Container-Start": str(start), "X-Plex-Container-Size": str(INDEX_PAGE)})
    stash.execute(RECONCILE_SCENES_AFTER, {"filter": {"id": {"value": 0, "modifier": "GREATER_THAN"}}, "perPage": 1})
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- fakes instrumentation

class Probe:
    """Times the fakes' request handling: per-request (start, end, kind) and handler-thread CPU."""

    def __init__(self, stash: FakeStash, plex: FakePlex):
        self.lock = threading.Lock()
        self.stash_calls: list = []
        self.plex_calls: list = []
        self.stash_cpu = 0.0
        self.plex_cpu = 0.0
        orig_handle, orig_route = stash._handle, plex._route

        def handle(h):
            t0, c0 = time.time(), time.thread_time()
            out = orig_handle(h)
            dt = time.thread_time() - c0
            with self.lock:
                self.stash_cpu += dt
                self.stash_calls.append((t0, time.time(), out[4][0] or h.path.split("?")[0]))
            return out

        def route(method, path, q, headers, body):
            t0, c0 = time.time(), time.thread_time()
            try:
                return orig_route(method, path, q, headers, body)
            finally:
                dt = time.thread_time() - c0
                kind = ("listing" if method == "GET" and _SECTION_ALL.match(path) and "file" not in q
                        else f"{method} {re.sub(r'/[0-9]+', '/N', path)}")
                with self.lock:
                    self.plex_cpu += dt
                    self.plex_calls.append((t0, time.time(), kind))

        stash._handle = handle
        plex._route = route

    def reset(self) -> None:
        with self.lock:
            self.stash_calls, self.plex_calls = [], []
            self.stash_cpu = self.plex_cpu = 0.0


# --------------------------------------------------------------------------- one run

def new_plugin_dir(root: str, name: str) -> tuple:
    plugin_dir = os.path.join(root, name, "plugins", "plexsync")
    os.makedirs(os.path.join(plugin_dir, "data"))
    lock = FileLock(os.path.join(plugin_dir, "data", "drainer.lock"))
    lock.acquire()
    lock.note(str(os.getpid()))
    return plugin_dir, lock


def read_report(plugin_dir: str) -> dict | None:
    try:
        with open(os.path.join(plugin_dir, "data", "reconcile-report.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_task(stash, plex, probe, plugin_dir, timeout, argv=None):
    """Run Reconcile Library (All) once; returns (ChildRun, window start, window end)."""
    stdin = harness.stdin_for(stash, plugin_dir, {"mode": "reconcile_all"}).encode()
    argv = argv or [sys.executable, harness.ENTRY]
    plex.clear_requests()
    probe.reset()
    t0 = time.time()
    run = c.run_child(argv, stdin, env=c.plugin_env(), timeout=timeout, measure_rss=True)
    return run, t0, time.time()


def measure(stash, plex, probe, plugin_dir, n, variant, expected, timeout, failures) -> dict:
    s0 = len(stash.requests)
    cpu0 = c.self_cpu()
    run, t_start, t_end = run_task(stash, plex, probe, plugin_dir, timeout)
    fakes_cpu = c.self_cpu() - cpu0
    output, error, unframed = c.parse_plugin_output(run)
    label = f"{n} {variant}"
    if run.returncode != 0 or error or not output:
        failures.append(f"{label}: rc={run.returncode} error={error!r} output={output!r}")
    if unframed:
        failures.append(f"{label}: {len(unframed)} unframed stderr lines, e.g. {unframed[0][:200]!r}")
    report = read_report(plugin_dir) or {}
    counts = report.get("counts") or {}
    got = {k: counts.get(k) for k in KINDS}
    want_counts = {k: expected.get(k, 0) for k in KINDS}
    if got != want_counts:
        failures.append(f"{label}: gap counts {got}, expected {want_counts}")
    for key in ("scenes_compared", "plex_items", "queued"):
        if report.get(key) != expected[key]:
            failures.append(f"{label}: report {key} = {report.get(key)!r}, expected {expected[key]}")
    if output and f"queued {expected['queued']} repairs" not in output:
        failures.append(f"{label}: output lacks 'queued {expected['queued']} repairs': {output[:300]}")

    sreqs = stash.requests[s0:]
    preqs = plex.requests
    skinds = Counter(r.operation_name or r.path.split("?")[0] for r in sreqs)
    pkinds = Counter(("listing" if r.method == "GET" and _SECTION_ALL.match(r.path) and "file" not in r.query
                      else f"{r.method} {re.sub(r'/[0-9]+', '/N', r.path)}") for r in preqs)
    errors = sum(1 for r in preqs if r.status >= 400) + sum(1 for r in sreqs if r.status >= 400)

    # phases from the fakes' own timestamps
    listing = [(a, b) for a, b, k in probe.plex_calls if k == "listing"]
    pages = [(a, b) for a, b, k in probe.stash_calls if k == "ReconcileScenesAfter"]
    phases = {}
    if listing and pages:
        phases = {"start-up (spawn .. first listing request)": listing[0][0] - t_start,
                  "Plex listing (first .. last listing answer)": listing[-1][1] - listing[0][0],
                  "between (last listing .. first Stash page)": pages[0][0] - listing[-1][1],
                  "Stash pages (first .. last page answer)": pages[-1][1] - pages[0][0],
                  "tail (last page .. exit)": t_end - pages[-1][1]}
    served = {"listing": sum(b - a for a, b in listing), "stash pages": sum(b - a for a, b in pages)}
    return {
        "variant": variant, "n": n, "seconds": run.seconds, "scenes_per_s": n / run.seconds,
        "plugin_cpu_s": run.cpu_seconds, "fakes_cpu_s": fakes_cpu, "stash_fake_cpu_s": probe.stash_cpu,
        "plex_fake_cpu_s": probe.plex_cpu, "peak_rss_mib": (run.maxrss_kib or 0) / 1024,
        "stash_requests": len(sreqs), "stash_kinds": dict(skinds), "plex_requests": len(preqs),
        "plex_kinds": dict(pkinds), "http_errors": errors, "counts": got, "queued": report.get("queued"),
        "scenes_compared": report.get("scenes_compared"), "plex_items": report.get("plex_items"),
        "engine_seconds": report.get("seconds"), "phases": phases, "served": served,
        "output": output, "error": error,
    }


def measure_median(repeat: int, *args) -> dict:
    """``measure`` ``repeat`` times: the run with the median wall time, with every run's wall and
    plugin CPU seconds and the highest peak RSS of all runs."""
    runs = [measure(*args) for _ in range(max(1, repeat))]
    ordered = sorted(runs, key=lambda r: r["seconds"])
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["all_seconds"] = [r["seconds"] for r in runs]
    mid["all_cpu"] = [r["plugin_cpu_s"] for r in runs]
    mid["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    return mid


# --------------------------------------------------------------------------- cross-check

def snapshot(plex: FakePlex, queue: Queue, lib, stash: FakeStash) -> dict:
    """What a sync leaves, comparable between two identical libraries (no times, no image bytes)."""
    out = {}
    items = plex.items
    states = queue.scene_state(int(s) for s in lib.scene_ids)
    for sid in lib.scene_ids:
        it = items[lib.in_plex[sid]]
        st = dict(states.get(int(sid)) or {})
        row = queue._conn.execute("SELECT refs FROM scene_state WHERE scene_id = ?", (int(sid),)).fetchone()
        out[sid] = {
            "item": (it.rating_key, it.title, it.summary, it.studio, it.originally_available_at, it.year,
                     {k: list(v) for k, v in it.tags.items() if v}, sorted(it.locked),
                     hashlib.sha256(it.poster).hexdigest() if it.poster is not None else None),
            "state": (st.get("rating_key"), st.get("section_id"), st.get("plex_file"), st.get("poster_sha"),
                      st.get("art_sha"), st.get("pushed"), st.get("stash_updated_at") == stash.scenes[sid]["updated_at"],
                      row[0] if row else None),
        }
    return out


def crosscheck(n: int, root: str, timeout: float, failures: list) -> str:
    """Two identical n-scene libraries: real Sync All in one, mark_synced in the other; compare."""
    worlds = []
    for name in ("real", "marked"):
        stash = FakeStash(api_key=c.API_KEY, session_cookie=c.COOKIE)
        plex = FakePlex(token=c.PLEX_TOKEN)
        stash.start()
        plex.start()
        lib = build_library(stash, plex, n, hostile=False, missing_from_plex=0)
        stash.plugin_settings = {"plexsync": {"plex_url": plex.url, "plex_token": c.PLEX_TOKEN,
                                              "path_map": lib.path_map}}
        plugin_dir, lock = new_plugin_dir(root, f"crosscheck-{name}")
        worlds.append((stash, plex, lib, plugin_dir, lock))
    try:
        (s1, p1, l1, d1, _), (s2, p2, l2, d2, _) = worlds
        env = c.plugin_env()
        run = c.run_child([sys.executable, harness.ENTRY],
                          harness.stdin_for(s1, d1, {"mode": "sync_all"}).encode(), env=env, timeout=timeout)
        output, error, _ = c.parse_plugin_output(run)
        if error or run.returncode:
            failures.append(f"crosscheck: Sync All failed: rc={run.returncode} {error!r}")
            return "Sync All failed"
        q2 = Queue(os.path.join(d2, "data", "queue.db"))
        settings = load_settings(s2.plugin_settings["plexsync"])
        mark_synced(s2, p2, l2, q2, settings, poster=lambda rec: s2.scene_cover_bytes(rec["id"]))
        q1 = Queue(os.path.join(d1, "data", "queue.db"))
        a, b = snapshot(p1, q1, l1, s1), snapshot(p2, q2, l2, s2)
        diff = [sid for sid in a if a[sid] != b.get(sid)]
        if diff:
            failures.append(f"crosscheck: {len(diff)} of {n} scenes differ between a real Sync All and "
                            f"mark_synced, e.g. scene {diff[0]}: real {a[diff[0]]} marked {b.get(diff[0])}")
        gaps = []
        for stash, plex, lib, plugin_dir, _ in worlds:
            run = c.run_child([sys.executable, harness.ENTRY],
                              harness.stdin_for(stash, plugin_dir, {"mode": "reconcile_all"}).encode(),
                              env=env, timeout=timeout)
            _, error, _ = c.parse_plugin_output(run)
            report = read_report(plugin_dir) or {}
            gaps.append((error, report.get("counts"), report.get("queued")))
        zero = dict.fromkeys(KINDS, 0)
        for name, (error, counts, queued) in zip(("real", "marked"), gaps):
            if error or counts != zero or queued != 0:
                failures.append(f"crosscheck: reconcile after the {name} sync: error={error!r} counts={counts} "
                                f"queued={queued} (expected no gap)")
        q1.close()
        q2.close()
        return (f"{n} scenes: real Sync All ({output}) vs mark_synced: {n - len(diff)}/{n} identical "
                f"(Plex fields, tags, locks, scene_state); reconcile after each: {gaps[0][1]} / {gaps[1][1]}")
    finally:
        for stash, plex, _, _, lock in worlds:
            lock.release()
            stash.stop()
            plex.stop()


# --------------------------------------------------------------------------- diagnostics copies

PROFILE_WRAPPER = """
import cProfile, runpy, sys
out, entry = sys.argv[1], sys.argv[2]
sys.argv = [entry]
prof = cProfile.Profile()
code = 0
prof.enable()
try:
    runpy.run_path(entry, run_name="__main__")
except SystemExit as exc:
    code = exc.code
finally:
    prof.disable()
    prof.dump_stats(out)
sys.exit(code)
"""

TRACEMALLOC_WRAPPER = """
import os, runpy, sys, tracemalloc
out, entry = sys.argv[1], sys.argv[2]
sys.argv = [entry]
sys.path.insert(0, os.path.dirname(entry))
tracemalloc.start(1)
import lib.reconcile, lib.stash
lines = []

def status():
    with open("/proc/self/status") as f:
        d = dict(l.split(":", 1) for l in f if l.startswith(("VmRSS", "VmHWM")))
    return " ".join(k + " " + v.strip() for k, v in d.items())

def mark(label):
    cur, peak = tracemalloc.get_traced_memory()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    lines.append(f"== {label}: traced {cur / 2**20:.1f} MiB (peak since the previous mark {peak / 2**20:.1f} MiB); {status()}")
    lines.append("   live memory by allocating file:")
    for s in snap.statistics("filename")[:7]:
        lines.append(f"   {s.size / 2**20:8.1f} MiB {s.count:9d} blocks  {s.traceback[0].filename}")
    lines.append("   live memory by allocating line:")
    for s in snap.statistics("lineno")[:9]:
        f = s.traceback[0]
        lines.append(f"   {s.size / 2**20:8.1f} MiB {s.count:9d} blocks  {f.filename}:{f.lineno}")
    tracemalloc.reset_peak()

orig_scenes = lib.stash.StashClient.reconcile_scenes
def reconcile_scenes(self, *a, **k):
    mark("Plex listing read (rows and files held), before the first Stash page")
    return orig_scenes(self, *a, **k)
lib.stash.StashClient.reconcile_scenes = reconcile_scenes
orig_write = lib.reconcile.write_json
def write_json(path, value):
    if path.endswith("reconcile-report.json"):
        mark("every scene compared, before writing the report")
    return orig_write(path, value)
lib.reconcile.write_json = write_json
code = 0
try:
    runpy.run_path(entry, run_name="__main__")
except SystemExit as exc:
    code = exc.code
finally:
    cur, peak = tracemalloc.get_traced_memory()
    lines.append(f"== end: traced {cur / 2**20:.1f} MiB, traced peak since the last mark {peak / 2**20:.1f} MiB; {status()}")
    with open(out, "w") as f:
        f.write("\\n".join(lines) + "\\n")
sys.exit(code)
"""


def _stat(st: pstats.Stats, file_end: str, name: str, field: int = 3) -> float:
    """Sum of a pstats field (2 = own time, 3 = cumulative) over functions ``name`` in files
    ending with ``file_end`` ("~" = C functions, matched by substring of their name)."""
    total = 0.0
    for (filename, _line, fn), v in st.stats.items():
        if (file_end == "~" and filename == "~" and name in fn) or (filename.endswith(file_end) and fn == name):
            total += v[field]
    return total


def _from_callers(st: pstats.Stats, file_end: str, name: str, caller_file_end: str) -> float:
    """Cumulative time of ``name`` spent on behalf of callers in files ending with ``caller_file_end``."""
    total = 0.0
    for (filename, _line, fn), v in st.stats.items():
        if filename.endswith(file_end) and fn == name:
            for (cfile, _cl, _cfn), cv in v[4].items():
                if cfile.endswith(caller_file_end):
                    total += cv[3]
    return total


def profile_copy(stash, plex, probe, plugin_dir, timeout) -> str:
    path = os.path.join(os.path.dirname(plugin_dir), "profile.out")
    run, _, _ = run_task(stash, plex, probe, plugin_dir, timeout,
                         [sys.executable, "-c", PROFILE_WRAPPER, path, harness.ENTRY])
    st = pstats.Stats(path)
    total = max(1e-9, st.total_tt)
    waiting = _stat(st, "~", "recv_into", 2)
    compute = max(1e-9, total - waiting)
    parts = [
        ("Plex listing: XML parse of the pages (expat, in plexapi's query)", _stat(st, "~", "XMLParser' objects>", 2)
         or _stat(st, "~", "'feed' of 'xml.etree", 2)),
        ("Plex listing: PlexRow per item (reconcile._row)", _stat(st, "/lib/reconcile.py", "_row")),
        ("Plex listing: PlexFiles.add + part_file", _stat(st, "/lib/gaps.py", "add") + _stat(st, "/lib/plex.py", "part_file")),
        ("Stash pages: JSON decode (requests .json())", _from_callers(st, "json/__init__.py", "loads", "requests/models.py")),
        ("queue.scene_state (SQLite + json.loads of pushed)", _stat(st, "/lib/queue.py", "scene_state")),
        ("fields.desired_state (clean_line/_unique/clean_text/plex_date)", _stat(st, "/lib/fields.py", "desired_state")),
        ("reconcile.metadata_gap", _stat(st, "/lib/reconcile.py", "metadata_gap")),
        ("path mapping + file lookup (PathMapper.to_plex, PlexFiles.find)",
         _stat(st, "/lib/paths.py", "to_plex") + _stat(st, "/lib/gaps.py", "find")),
        ("reconcile._judge own time", _stat(st, "/lib/reconcile.py", "_judge", 2)),
        ("report: write_json + queue.enqueue", _stat(st, "/lib/lock.py", "write_json") + _stat(st, "/lib/queue.py", "enqueue")),
    ]
    rest = compute - sum(t for _, t in parts)
    buf = io.StringIO()
    buf.write(f"profiled copy: wall {run.seconds:.2f} s (profiler overhead included), plugin CPU {run.cpu_seconds:.2f} s; "
              f"profiled {total:.2f} s = waiting for the servers (socket recv_into) {waiting:.2f} s + plugin "
              f"compute {compute:.2f} s\n")
    buf.write("where the plugin's compute goes (profiled seconds, share of compute; the profiler inflates "
              "Python-heavy parts more than C parts):\n")
    for label, t in parts + [("everything else (start-up imports, HTTP client, reconcile loop, ...)", rest)]:
        buf.write(f"  {t:7.2f} s {100 * t / compute:5.1f}%  {label}\n")
    st.stream = buf
    buf.write("top functions by own time:\n")
    st.sort_stats("tottime").print_stats(18)
    buf.write("top plugin functions by cumulative time:\n")
    st.sort_stats("cumulative").print_stats(r"/lib/", 16)
    return "\n".join(line for line in buf.getvalue().splitlines()
                     if line.strip() and not line.startswith(("   Ordered by", "   List reduced"))
                     and "function calls" not in line and not line.endswith("profile.out"))


def tracemalloc_copy(stash, plex, probe, plugin_dir, timeout) -> str:
    path = os.path.join(os.path.dirname(plugin_dir), "tracemalloc.txt")
    run, _, _ = run_task(stash, plex, probe, plugin_dir, timeout,
                         [sys.executable, "-c", TRACEMALLOC_WRAPPER, path, harness.ENTRY])
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = "(no tracemalloc output)\n"
    return (f"tracemalloc copy: wall {run.seconds:.2f} s, peak RSS {(run.maxrss_kib or 0) / 1024:.1f} MiB "
            f"(tracing overhead included)\n" + text.rstrip())


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="scene counts, comma-separated (default 10000,100000)")
    ap.add_argument("--plex-latency-ms", type=float, default=2.0, help="FakePlex latency per request (default 2)")
    ap.add_argument("--stash-latency-ms", type=float, default=5.0, help="FakeStash latency per request (default 5)")
    ap.add_argument("--both-up-to", type=int, default=10000,
                    help="sizes up to this also run the never-synced variant (default 10000)")
    ap.add_argument("--crosscheck", type=int, default=120,
                    help="scenes of the mark_synced vs real Sync All cross-check (default 120; 0 skips)")
    ap.add_argument("--profile", action="store_true", help="also profile the largest synced run (cProfile)")
    ap.add_argument("--tracemalloc", action="store_true", help="also trace the largest synced run's memory")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per size and variant; the median wall time is reported (default 3)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one task may take (default 1800)")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})

    root = tempfile.mkdtemp(prefix="plexsync-bench-reconcile-")
    failures: list[str] = []
    results: list[dict] = []
    diagnostics: list[str] = []
    print(f"# PlexSync Reconcile Library (All) benchmark  ({c.machine_note()})")
    print(f"# sizes {', '.join(map(str, sizes))}; FakePlex latency {args.plex_latency_ms:g} ms, FakeStash latency "
          f"{args.stash_latency_ms:g} ms; library hostile=False, every scene in Plex; work dir {root}")
    print("# fakes warmed before each run (untimed): every listing page rendered once, Stash's id-ordered list built")
    print("# variants: 'synced' = the library as one Sync All leaves it (Plex items edited through the fake's "
          "PUT/POST handlers,\n#   scene_state rows via Queue.save_scene_state; poster bytes are a per-scene "
          "stand-in); 'fresh' = never synced\n#   (every Plex item shows only its file name: all empty_metadata "
          f"gaps, all queued), run for sizes <= {args.both_up_to}")
    try:
        if args.crosscheck > 0:
            t0 = time.perf_counter()
            note = crosscheck(args.crosscheck, root, args.timeout, failures)
            print(f"# cross-check ({time.perf_counter() - t0:.1f} s): {note}")
        for n in sizes:
            stash = FakeStash(api_key=c.API_KEY, session_cookie=c.COOKIE, latency_ms=args.stash_latency_ms)
            plex = FakePlex(token=c.PLEX_TOKEN, latency_ms=args.plex_latency_ms)
            stash.start()
            plex.start()
            locks = []
            try:
                t0 = time.perf_counter()
                lib = build_library(stash, plex, n, hostile=False, missing_from_plex=0)
                build_s = time.perf_counter() - t0
                if len(lib.in_plex) != n:
                    failures.append(f"{n}: library has {len(lib.in_plex)} of {n} scenes in Plex (expected all)")
                stash.plugin_settings = {"plexsync": {"plex_url": plex.url, "plex_token": c.PLEX_TOKEN,
                                                      "path_map": lib.path_map}}
                probe = Probe(stash, plex)
                setup = f"library built in {build_s:.1f} s"
                if n <= args.both_up_to:
                    setup += f", fakes warmed in {warm_fakes(stash, plex, n):.1f} s (fresh)"
                    plugin_dir, lock = new_plugin_dir(root, f"{n}-fresh")
                    locks.append(lock)
                    expected = {"empty_metadata": n, "scenes_compared": n, "plex_items": n, "queued": n}
                    results.append(measure_median(args.repeat, stash, plex, probe, plugin_dir, n, "fresh", expected,
                                                  args.timeout, failures))
                plugin_dir, lock = new_plugin_dir(root, f"{n}-synced")
                locks.append(lock)
                t0 = time.perf_counter()
                queue = Queue(os.path.join(plugin_dir, "data", "queue.db"))
                mark_synced(stash, plex, lib, queue, load_settings(stash.plugin_settings["plexsync"]))
                queue.close()
                setup += f", marked synced in {time.perf_counter() - t0:.1f} s"
                setup += f", fakes warmed in {warm_fakes(stash, plex, n):.1f} s (synced)"
                print(f"# {n} scenes: {setup}")
                expected = {"scenes_compared": n, "plex_items": n, "queued": 0}
                results.append(measure_median(args.repeat, stash, plex, probe, plugin_dir, n, "synced", expected,
                                              args.timeout, failures))
                if n == sizes[-1] and args.profile:
                    diagnostics.append(f"[{n} synced] " + profile_copy(stash, plex, probe, plugin_dir, args.timeout))
                if n == sizes[-1] and args.tracemalloc:
                    diagnostics.append(f"[{n} synced] " + tracemalloc_copy(stash, plex, probe, plugin_dir,
                                                                          args.timeout))
            finally:
                for lock in locks:
                    lock.release()
                stash.stop()
                plex.stop()
                del stash, plex
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    rows = []
    for r in results:
        rows.append([f"{r['n']} {r['variant']}", f"{r['seconds']:.2f}", f"{r['scenes_per_s']:.0f}",
                     f"{r['plugin_cpu_s']:.2f}", f"{r['fakes_cpu_s']:.2f}", f"{r['stash_fake_cpu_s']:.2f}",
                     f"{r['plex_fake_cpu_s']:.2f}", f"{r['seconds'] - r['fakes_cpu_s']:.2f}",
                     f"{r['peak_rss_mib']:.1f}", str(r["stash_requests"]), str(r["plex_requests"])])
    print("wall = spawn until exit; fakes CPU = this process during the run (Stash and Plex fakes; of which "
          "the handlers:\nStash / Plex); wall - fakes = the time left if both servers answered in no CPU "
          "(latencies still in):")
    print(c.table(["run", "wall s", "scenes/s", "plugin CPU s", "fakes CPU s", "Stash h. s", "Plex h. s",
                   "wall - fakes s", "plugin peak RSS MiB", "Stash req", "Plex req"], rows))
    print(f"median of {max(1, args.repeat)} runs each (peak RSS: the highest); every run's wall s / plugin CPU s:")
    for r in results:
        print(f"  {r['n']} {r['variant']}: wall " + " ".join(f"{x:.2f}" for x in r["all_seconds"])
              + "; plugin CPU " + " ".join(f"{x:.2f}" for x in r["all_cpu"]))
    print()
    print("gap counts (data/reconcile-report.json):")
    print(c.table(["run", *KINDS, "queued", "compared", "plex items", "engine s"],
                  [[f"{r['n']} {r['variant']}", *(str(r["counts"][k]) for k in KINDS), str(r["queued"]),
                    str(r["scenes_compared"]), str(r["plex_items"]), str(r["engine_seconds"])] for r in results]))
    print()
    for r in results:
        print(f"{r['n']} {r['variant']}: Stash {dict(sorted(r['stash_kinds'].items()))}; Plex "
              f"{dict(sorted(r['plex_kinds'].items()))}; HTTP errors {r['http_errors']}")
        if r["phases"]:
            print("    phases: " + "; ".join(f"{k} {v:.2f} s" for k, v in r["phases"].items()))
            print(f"    fakes busy answering: listing pages {r['served']['listing']:.2f} s, Stash pages "
                  f"{r['served']['stash pages']:.2f} s (wall, incl. waiting for the CPU)")
        print(f"    output: {r['output']}")

    synced = {r["n"]: r for r in results if r["variant"] == "synced"}
    summary: dict = {"bench": "reconcile", "sizes": sizes, "repeat": max(1, args.repeat),
                     "plex_latency_ms": args.plex_latency_ms,
                     "stash_latency_ms": args.stash_latency_ms, "failures": len(failures),
                     "crosscheck_scenes": args.crosscheck,
                     "targets": {"seconds_100k": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB, "linear": True}}
    summary["runs"] = {f"{r['n']}_{r['variant']}": {
        "seconds": round(r["seconds"], 3), "scenes_per_s": round(r["scenes_per_s"], 1),
        "plugin_cpu_s": round(r["plugin_cpu_s"], 2), "fakes_cpu_s": round(r["fakes_cpu_s"], 2),
        "stash_fake_cpu_s": round(r["stash_fake_cpu_s"], 2), "plex_fake_cpu_s": round(r["plex_fake_cpu_s"], 2),
        "wall_minus_fakes_s": round(r["seconds"] - r["fakes_cpu_s"], 2),
        "peak_rss_mib": round(r["peak_rss_mib"], 1), "stash_requests": r["stash_requests"],
        "all_seconds": [round(x, 2) for x in r["all_seconds"]],
        "plex_requests": r["plex_requests"], "counts": r["counts"], "queued": r["queued"]} for r in results}
    print()
    if len(synced) >= 2:
        lo, hi = min(synced), max(synced)
        ratio = synced[hi]["seconds"] / synced[lo]["seconds"]
        ratio_plugin = ((synced[hi]["seconds"] - synced[hi]["fakes_cpu_s"])
                        / max(1e-9, synced[lo]["seconds"] - synced[lo]["fakes_cpu_s"]))
        ratio_cpu = synced[hi]["plugin_cpu_s"] / max(1e-9, synced[lo]["plugin_cpu_s"])
        linear = hi / lo
        summary.update(ratio=round(ratio, 2), ratio_wall_minus_fakes=round(ratio_plugin, 2),
                       ratio_plugin_cpu=round(ratio_cpu, 2), linear_ratio=round(linear, 2),
                       linear_met=ratio <= linear * LINEAR_SLACK)
        print(f"ratio time({hi})/time({lo}), synced: {ratio:.2f} (linear = {linear:g}); wall - fakes: "
              f"{ratio_plugin:.2f}; plugin CPU: {ratio_cpu:.2f}  -> "
              f"{'linear' if ratio <= linear * LINEAR_SLACK else 'NOT linear'} (within x{LINEAR_SLACK:g})")
    big = synced.get(max(synced)) if synced else None
    if big:
        mb = big["peak_rss_mib"] * 2**20 / 1e6
        t_ok, m_ok = big["seconds"] < TARGET_SECONDS, mb < TARGET_RSS_MB
        summary.update(largest=big["n"], seconds_met=t_ok, rss_met=m_ok)
        print(f"largest ({big['n']} synced): {big['seconds']:.2f} s ({'met' if t_ok else 'NOT met'}: "
              f"< {TARGET_SECONDS:g} s{'' if big['n'] == 100000 else ', target is for 100000'}; "
              f"wall - fakes {big['seconds'] - big['fakes_cpu_s']:.2f} s), plugin peak RSS "
              f"{big['peak_rss_mib']:.1f} MiB = {mb:.1f} MB ({'met' if m_ok else 'NOT met'}: < {TARGET_RSS_MB:g} MB)")
    for d in diagnostics:
        print()
        print(d)
    if failures:
        print()
        print(f"FUNCTIONAL FAILURES ({len(failures)}):")
        for f in failures[:20]:
            print("  " + f)
    print(c.result_line(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
