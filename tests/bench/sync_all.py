"""Benchmark: the Sync All task over N scenes, first sync, one field changed, nothing changed.

Command (from the project root)::

    .venv/bin/python tests/bench/sync_all.py [--scenes 2000] [--plex-latency-ms 2] [--stash-latency-ms 0]

Targets (Plex HTTP requests per scene, printed next to the figures):
  (a) first sync, every scene gets its fields and a new poster: <= 4;
  (b) one text field (the title) changed on every scene:         <= 2;
  (c) nothing changed:                                           only the read, 1 per scene, no write.
Not a test: it prints figures and never asserts timings. It exits 1 only when something functionally
breaks: a run fails, or after a phase some scene's Plex title differs from Stash's (or, after the first
sync, a poster is not the scene's cover).

Setup: a FakePlex with ``--plex-latency-ms`` (default 2 ms) per request and a FakeStash (no latency
unless ``--stash-latency-ms``), both on loopback in this process, filled by
``tests/library.build_library(stash, plex, N, hostile=False, missing_from_plex=0)``; plugin settings
stored in the FakeStash as a user would save them (plex_url, plex_token, path_map). The task runs
as Stash runs it: ``python <plugin>/plexsync.py`` with ``{"server_connection": ..., "args": {"mode":
"sync_all"}}`` on stdin, ``PYTHONPATH`` = the project's parent, cwd ``/`` (tests/harness.py).

Per phase: wall seconds, scenes per second, Plex requests per scene broken down by kind (metadata
reads, section listings, ``file=`` lookups, PUT edits, poster POSTs, other), Stash requests per scene
(GraphQL by operation, image downloads), the plugin process's CPU time and its own peak RSS, and the
CPU time of this process, where the fakes' server threads run. The plugin's peak RSS is its own
``ru_maxrss`` from ``os.wait4``, neither RUSAGE_CHILDREN (a maximum over every child ever waited
for) nor a wait4 straight from this process: Linux charges a child at exec with the peak RSS of the
address space it replaced, i.e. this (large) process's. So the plugin is started from a small
helper that forks it and reports its rusage (``_common.RUSAGE_HELPER``; floor ~8 MiB).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter

import _common as c

from fakeplex import FakePlex  # noqa: E402  (paths set by _common)
from fakestash import FakeStash  # noqa: E402
import harness  # noqa: E402
from library import build_library  # noqa: E402

TARGETS = {"a": 4.0, "b": 2.0, "c": 1.0}
PHASES = {"a": "first sync (fields + new poster)", "b": "title changed on every scene", "c": "nothing changed"}
KINDS = ["read", "listing", "file_lookup", "edit", "poster", "other"]

_READ = re.compile(r"^/library/metadata/\d+/?$")
_SECTION_ALL = re.compile(r"^/library/sections/\d+/all/?$")
_UPLOAD = re.compile(r"^/library/metadata/\d+/(posters|arts)/?$")
_SCENE_IMAGE = re.compile(r"^/scene/\d+/screenshot")


def plex_kind(req) -> str:
    """Kind of one FakePlex request: read | listing | file_lookup | edit | poster | other."""
    path = req.path
    if req.method == "GET" and _READ.match(path):
        return "read"
    if _SECTION_ALL.match(path):
        if req.method == "PUT":
            return "edit"
        if req.method == "GET":
            return "file_lookup" if "file" in req.query else "listing"
    m = _UPLOAD.match(path)
    if req.method == "POST" and m:
        return "poster" if m.group(1) == "posters" else "other"
    return "other"


def stash_kind(req) -> str:
    if req.operation_name:
        return req.operation_name
    if _SCENE_IMAGE.match(req.path):
        return "scene image"
    path = re.sub(r"/[0-9]+", "/N", req.path.split("?")[0])
    return f"{req.method} {path}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=2000, help="scenes in Stash and Plex (default 2000)")
    ap.add_argument("--plex-latency-ms", type=float, default=2.0, help="FakePlex latency per request (default 2)")
    ap.add_argument("--stash-latency-ms", type=float, default=0.0, help="FakeStash latency per request (default 0)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one Sync All may take (default 3600)")
    args = ap.parse_args()
    n = args.scenes

    tmp = tempfile.mkdtemp(prefix="plexsync-bench-sync-")
    plugin_dir = os.path.join(tmp, "plugins", "plexsync")
    os.makedirs(os.path.join(plugin_dir, "data"))
    # Hold the drainer lock: the tasks then start no background drainer, which would run the
    # startup reconciliation (each phase's parent process is new, so a "new Stash") and compete
    # with the measured task for requests and CPU.
    from lib.lock import FileLock

    drainer_lock = FileLock(os.path.join(plugin_dir, "data", "drainer.lock"))
    drainer_lock.acquire()
    stash = FakeStash(api_key=c.API_KEY, session_cookie=c.COOKIE, latency_ms=args.stash_latency_ms)
    plex = FakePlex(token=c.PLEX_TOKEN, latency_ms=args.plex_latency_ms)
    stash.start()
    plex.start()
    failures: list[str] = []
    results: dict = {}
    try:
        t0 = time.perf_counter()
        lib = build_library(stash, plex, n, hostile=False, missing_from_plex=0)
        build_s = time.perf_counter() - t0
        stash.plugin_settings = {"plexsync": {"plex_url": plex.url, "plex_token": c.PLEX_TOKEN,
                                              "path_map": lib.path_map}}
        ids = list(lib.scene_ids)
        if len(lib.in_plex) != n:
            failures.append(f"library: {len(lib.in_plex)} of {n} scenes in Plex (expected all)")
        print(f"# PlexSync Sync All benchmark  ({c.machine_note()})")
        print(f"# {n} scenes (library built in {build_s:.1f} s); FakePlex latency {args.plex_latency_ms:g} ms, "
              f"FakeStash latency {args.stash_latency_ms:g} ms; plugin dir {plugin_dir}")
        env = c.plugin_env()
        stdin = harness.stdin_for(stash, plugin_dir, {"mode": "sync_all"}).encode()

        def check_titles(phase: str, posters: bool) -> None:
            items = plex.items
            bad = [sid for sid in ids if items[lib.in_plex[sid]].title != stash.scenes[sid]["title"]]
            if bad:
                failures.append(f"phase {phase}: {len(bad)} scenes' Plex title differs from Stash, e.g. scene "
                                f"{bad[0]}: {items[lib.in_plex[bad[0]]].title!r} != {stash.scenes[bad[0]]['title']!r}")
            if posters:
                bad = [sid for sid in ids if items[lib.in_plex[sid]].poster != stash.scene_cover_bytes(sid)]
                if bad:
                    failures.append(f"phase {phase}: {len(bad)} Plex posters are not the scene cover, e.g. scene {bad[0]}")

        def phase(key: str, expect: str) -> None:
            plex.clear_requests()
            s0 = len(stash.requests)
            cpu0 = c.self_cpu()
            run = c.run_child([sys.executable, harness.ENTRY], stdin, env=env, timeout=args.timeout,
                              measure_rss=True)
            fakes_cpu = c.self_cpu() - cpu0
            output, error, unframed = c.parse_plugin_output(run)
            if run.returncode != 0 or error or not output:
                failures.append(f"phase {key}: rc={run.returncode} error={error!r} output={output!r}")
            if unframed:
                failures.append(f"phase {key}: {len(unframed)} unframed stderr lines, e.g. {unframed[0][:200]!r}")
            if output and expect not in output:
                print(f"note: phase {key} output lacks {expect!r}: {output}")
            check_titles(key, posters=True)
            preqs = plex.requests
            kinds = Counter(plex_kind(r) for r in preqs)
            other = Counter(r.method + " " + re.sub(r"/[0-9]+", "/N", r.path) for r in preqs if plex_kind(r) == "other")
            sreqs = stash.requests[s0:]
            skinds = Counter(stash_kind(r) for r in sreqs)
            errors = sum(1 for r in preqs if r.status >= 400)
            results[key] = {
                "seconds": run.seconds, "scenes_per_s": n / run.seconds, "plex_requests": len(preqs),
                "plex_per_scene": len(preqs) / n, "plex_kinds": {k: kinds.get(k, 0) for k in KINDS},
                "plex_other": dict(other), "plex_errors": errors,
                "stash_requests": len(sreqs), "stash_per_scene": len(sreqs) / n, "stash_kinds": dict(skinds),
                "plugin_cpu_s": run.cpu_seconds, "fakes_cpu_s": fakes_cpu, "peak_rss_mib": (run.maxrss_kib or 0) / 1024,
                "output": output, "error": error,
            }

        phase("a", f"{n} synced")
        for sid in ids:
            stash.update_scene(sid, title=stash.scenes[sid]["title"] + " (edited)")
        phase("b", f"{n} synced")
        phase("c", f"{n} unchanged")
    finally:
        stash.stop()
        plex.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    rows = []
    for key, r in results.items():
        rows.append([f"({key}) {PHASES[key]}", f"{r['seconds']:.2f}", f"{r['scenes_per_s']:.0f}",
                     f"{r['plugin_cpu_s']:.2f}", f"{r['fakes_cpu_s']:.2f}", f"{r['peak_rss_mib']:.1f}"])
    print(c.table(["phase", "wall s", "scenes/s", "plugin CPU s", "fakes CPU s", "plugin peak RSS MiB"], rows))
    print()
    rows = []
    for key, r in results.items():
        k = r["plex_kinds"]
        per_scene = (k["read"] + k["file_lookup"] + k["edit"] + k["poster"]) / n
        r["plex_per_scene_kinds"] = per_scene
        r["plex_fixed"] = k["listing"] + k["other"]
        if key == "c":
            r["target_met"] = k["edit"] == 0 and k["poster"] == 0 and per_scene <= TARGETS["c"]
            target = "1, read only"
        else:
            r["target_met"] = per_scene <= TARGETS[key]
            target = f"<= {TARGETS[key]:g}"
        rows.append([f"({key})", f"{r['plex_per_scene']:.3f}", f"{per_scene:.3f}", target,
                     "met" if r["target_met"] else "NOT met", str(r["plex_fixed"]),
                     *(f"{k[kind] / n:.3f}" for kind in KINDS), f"{r['stash_per_scene']:.3f}"])
    print("Plex requests per scene: 'all' = every request / N; 'per-scene' = reads + file= lookups + edits + "
          "poster POSTs / N,\nwhich the target is about; 'fixed' = requests per run (connect, section list, "
          "index listing pages of 5000):")
    print(c.table(["phase", "Plex all", "per-scene", "target", "", "fixed", "read", "listing", "file=", "PUT edit",
                   "poster POST", "other", "Stash/scene"], rows))
    print()
    for key, r in results.items():
        print(f"({key}) Plex other: {r['plex_other'] or '-'}; Plex error answers: {r['plex_errors']}")
        print(f"    Stash: {dict(sorted(r['stash_kinds'].items()))}")
        print(f"    output: {r['output']}")
    if failures:
        print()
        print(f"FUNCTIONAL FAILURES ({len(failures)}):")
        for f in failures[:20]:
            print("  " + f)

    summary = {"bench": "sync_all", "scenes": n, "plex_latency_ms": args.plex_latency_ms,
               "stash_latency_ms": args.stash_latency_ms, "failures": len(failures)}
    for key, r in results.items():
        summary[key] = {
            "seconds": round(r["seconds"], 3), "scenes_per_s": round(r["scenes_per_s"], 1),
            "plex_per_scene": round(r["plex_per_scene"], 4),
            "plex_per_scene_kinds": round(r["plex_per_scene_kinds"], 4), "plex_fixed": r["plex_fixed"],
            "plex_kinds_per_scene": {k: round(v / n, 4) for k, v in r["plex_kinds"].items()},
            "stash_per_scene": round(r["stash_per_scene"], 4), "plugin_cpu_s": round(r["plugin_cpu_s"], 2),
            "fakes_cpu_s": round(r["fakes_cpu_s"], 2), "peak_rss_mib": round(r["peak_rss_mib"], 1),
            "target": TARGETS[key], "target_met": r["target_met"],
        }
    print(c.result_line(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
