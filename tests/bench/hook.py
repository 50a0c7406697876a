"""Benchmark: wall time of one hook run of plexsync.py, against a bare interpreter start.

Command (from the project root)::

    .venv/bin/python tests/bench/hook.py [--rounds 30] [--warmup 3] [--spawn-rounds 10] [--scenes 50]

Target: the median hook run takes at most 2x the median of ``python -c pass`` (same interpreter,
``sys.executable``, same environment), both measured interleaved in this run. Not a test: it prints
figures and never asserts timings. It exits 1 only when something functionally breaks (a hook run
fails, touches the network while a drainer runs, or an edit never reaches Plex).

Each run is done the way Stash does it (tests/harness.py): ``python <plugin>/plexsync.py`` with the
stdin object Stash writes (``harness.stdin_for`` + ``harness.hook_args``, ``server_connection`` from a
running FakeStash), ``PYTHONPATH`` = the project's parent, cwd ``/``, a plugin folder in a temp dir;
the time is taken until the process exited and its stdout/stderr reached EOF (what Stash waits for).

1. Hook, no drainer spawned: this benchmark holds ``<plugin>/data/drainer.lock`` (lib.lock.FileLock)
   and keeps the queue database open, as a running drainer does, so the hook only queues the scene
   (its common case during a bulk edit).
   ``--rounds`` rounds, each one bare run and one hook run, the order alternating, after ``--warmup``.
   When the environment has ``PYTHONDONTWRITEBYTECODE=1`` (this workplace sets it, so lib/*.py is
   compiled on every run), a second pair is measured the same way with bytecode cached in a temp
   ``PYTHONPYCACHEPREFIX``, as on a usual Stash install whose plugin folder gets a ``__pycache__``.
   Then the hook's top-level imports are listed (``-X importtime``), to show where the time goes.
2. Hook that spawns a drainer: the lock is free, ``plex_url`` points at a FakePlex, the scene's title
   was just changed in the FakeStash. Reported: the hook's own wall time (fork of the detached drainer
   included), the time until Plex shows the new title (hook start to edit applied), and the time until
   the drainer logged its exit. The drainer is waited for (through its log, never by probing its
   lock) and stopped (harness.stop_drainer) between rounds; a bare run is interleaved every round.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time

import _common as c

from fakeplex import FakePlex  # noqa: E402  (paths set by _common)
from fakestash import FakeStash  # noqa: E402
import harness  # noqa: E402
from library import build_library  # noqa: E402
from lib.lock import FileLock  # noqa: E402
from lib.queue import Queue  # noqa: E402

TARGET_RATIO = 2.0


def import_breakdown(argv: list, stdin: bytes, env: dict, runs: int = 5) -> list:
    """(top-level module, median cumulative ms) of what a hook run imports, slowest first, from
    ``python -X importtime``; modules the bare interpreter already imports at startup are left out."""
    def top_level(extra_argv, data):
        run = c.run_child([argv[0], "-X", "importtime"] + extra_argv, data, env=env)
        out, pending = {}, []
        for line in run.stderr.decode(errors="replace").splitlines():
            if line.startswith("import time:") and "|" in line:
                _, cumulative, name = line.split("|", 2)
                if not cumulative.strip().isdigit():
                    continue
                depth = (len(name) - len(name.lstrip(" ")) + 1) // 2  # " a" = 1, "   a" = 2, ...
                ms = int(cumulative) / 1000
                if depth == 2:  # printed before its parent (importtime lists a module once loaded)
                    pending.append((name.strip(), ms))
                elif depth == 1:
                    out[name.strip()] = ms
                    for child, child_ms in pending:
                        out[f"{name.strip()}  > {child}"] = child_ms
                    pending = []
        return out

    startup = set(top_level(["-c", "pass"], b""))
    samples: dict = {}
    for _ in range(runs):
        for name, ms in top_level(argv[1:], stdin).items():
            if name not in startup:
                samples.setdefault(name, []).append(ms)
    top = {k: c.median(v) for k, v in samples.items() if "  > " not in k}
    rows = [(k, c.median(v)) for k, v in samples.items()]
    rows.sort(key=lambda kv: (-top.get(kv[0].split("  > ")[0], 0), "  > " in kv[0], -kv[1]))
    return [(k.replace(k.split("  > ")[0] + "  > ", "    ") if "  > " in k else k, ms) for k, ms in rows
            if ms >= 0.5]


def drainer_events(plugin_dir: str) -> tuple:
    """(pids in "drainer N started" order, pids that logged "idle, exiting", "sync stopped" count)."""
    text = harness.drainer_log(plugin_dir)
    return (re.findall(r"drainer (\d+) started", text), set(re.findall(r"drainer (\d+) idle, exiting", text)),
            text.count("sync stopped"))


def wait_drainer(plugin_dir: str, before: tuple, timeout: float) -> bool:
    """Wait until a drainer started after the ``before = drainer_events(...)`` snapshot, and every
    drainer started since has logged its end (idle, or a halt). True when that happened in time."""
    deadline = time.monotonic() + timeout

    def done() -> bool:
        started, ended, stopped = drainer_events(plugin_dir)
        new = started[len(before[0]):]
        return bool(new) and sum(1 for pid in new if pid not in ended) <= stopped - before[2]

    return bool(harness.wait_until(done, timeout=max(0.0, deadline - time.monotonic()), interval=0.005))


def queue_dump(path: str) -> list:
    """The queue's jobs and meta rows, for the failure report (read-only)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        lines = [f"jobs row: {r}" for r in db.execute("SELECT * FROM jobs ORDER BY scene_id LIMIT 30")]
        lines += [f"meta row: {r}" for r in db.execute("SELECT * FROM meta")]
        db.close()
        return lines
    except sqlite3.Error as exc:
        return [f"(queue unreadable: {exc})"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds with the drainer lock held (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs of each kind first (default 3)")
    ap.add_argument("--spawn-rounds", type=int, default=10, help="timed rounds that spawn a drainer (default 10)")
    ap.add_argument("--scenes", type=int, default=50, help="scenes in the generated library (default 50)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="plexsync-bench-hook-")
    stash = FakeStash(api_key=c.API_KEY, session_cookie=c.COOKIE)
    plex = FakePlex(token=c.PLEX_TOKEN)
    stash.start()
    plex.start()
    failures: list[str] = []
    drainer_log_tail: list[str] = []
    plugin_dir = os.path.join(tmp, "plugins", "plexsync")
    try:
        lib = build_library(stash, plex, args.scenes, hostile=False, missing_from_plex=0)
        os.makedirs(os.path.join(plugin_dir, "data"))
        stash.plugin_settings = {"plexsync": {"plex_url": plex.url, "plex_token": c.PLEX_TOKEN,
                                              "path_map": lib.path_map}}
        env = c.plugin_env()
        # Stash's own environment rarely has PYTHONDONTWRITEBYTECODE, and a plugin folder is writable,
        # so lib/*.pyc are normally cached after the first run. This variant keeps them in a temp
        # cache (PYTHONPYCACHEPREFIX) so the project tree is never written to.
        env_cached = dict(env, PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
        env_cached.pop("PYTHONDONTWRITEBYTECODE", None)
        variants = [{"name": "harness env", "env": env, "bare": [], "hook": []}]
        if env.get("PYTHONDONTWRITEBYTECODE"):
            variants.append({"name": "pyc cached", "env": env_cached,
                             "bare": [], "hook": []})
        bare_argv = [sys.executable, "-c", "pass"]
        hook_argv = [sys.executable, harness.ENTRY]
        ids = list(lib.in_plex)

        def stdin(sid) -> bytes:
            return harness.stdin_for(stash, plugin_dir, harness.hook_args(int(sid))).encode()

        def bare(env):
            run = c.run_child(bare_argv, env=env)
            if run.returncode != 0:
                failures.append(f"bare python exited {run.returncode}")
            return run

        def hook(sid, env=env):
            run = c.run_child(hook_argv, stdin(sid), env=env)
            output, error, unframed = c.parse_plugin_output(run)
            if run.returncode != 0 or error or output != f"queued scene {sid}" or unframed:
                failures.append(f"hook for scene {sid}: rc={run.returncode} output={output!r} error={error!r} "
                                f"unframed={unframed[:3]!r}")
            return run

        print(f"# PlexSync hook benchmark  ({c.machine_note()})")
        print(f"# plugin dir {plugin_dir}; library of {args.scenes} scenes; FakeStash {stash.url}, "
              f"FakePlex {plex.url}")

        # -- 1: drainer lock held by this process: the hook only queues ---------------------------
        lock = FileLock(os.path.join(plugin_dir, "data", "drainer.lock"))
        if not lock.acquire(blocking=False):
            print("cannot take the drainer lock", file=sys.stderr)
            return 1
        lock.note(str(os.getpid()))
        # a running drainer also keeps the queue database open, so a hook's close does not checkpoint
        # the WAL (tests/bench/enqueue.py measures that difference)
        drainer_conn = Queue(os.path.join(plugin_dir, "data", "queue.db"))
        net_before = (len(stash.requests), len(plex.requests))
        for k in range(args.warmup):
            for v in variants:
                bare(v["env"])
                hook(ids[k % len(ids)], v["env"])
        for r in range(args.rounds):
            sid = ids[r % len(ids)]
            for v in variants:
                if r % 2 == 0:
                    v["bare"].append(bare(v["env"]))
                    v["hook"].append(hook(sid, v["env"]))
                else:
                    v["hook"].append(hook(sid, v["env"]))
                    v["bare"].append(bare(v["env"]))
        imports = import_breakdown(hook_argv, stdin(ids[0]), env, runs=5)
        net_after = (len(stash.requests), len(plex.requests))
        if net_after != net_before:
            failures.append(f"hook runs made network requests while a drainer 'ran' (stash, plex): "
                            f"{net_before} -> {net_after}")
        drainer_conn.close()
        lock.release()
        for v in variants:
            v["bare_ms"] = [x.seconds * 1000 for x in v["bare"]]
            v["hook_ms"] = [x.seconds * 1000 for x in v["hook"]]
            v["ratio"] = c.median(v["hook_ms"]) / c.median(v["bare_ms"])
            v["paired"] = c.median([h / b for h, b in zip(v["hook_ms"], v["bare_ms"])])

        # -- 2: lock free: the hook spawns a detached drainer, which syncs the edit -----------------
        spawn_failures_before = len(failures)
        # Drainer starts and ends are read from its log, not by probing drainer.lock: a probe takes the
        # lock for an instant and would make a drainer starting (or re-taking it) right then give up.
        before = drainer_events(plugin_dir)
        hook(ids[0])  # untimed: a drainer syncs what part 1 queued
        if not wait_drainer(plugin_dir, before, timeout=120):
            failures.append("warm-up: no drainer started, or it did not finish within 120 s")
        harness.stop_drainer(plugin_dir)
        spawn_hook_ms, spawn_bare_ms, e2e_ms, life_ms, spawn_cpu_ms = [], [], [], [], []
        extra_starts = 0
        for r in range(args.spawn_rounds):
            sid = ids[(r * 7 + 3) % len(ids)]
            want = f"Bench hook round {r} scene {sid}"
            stash.update_scene(sid, title=want)
            item = plex.items[lib.in_plex[sid]]
            if r % 2 == 0:
                spawn_bare_ms.append(bare(env).seconds * 1000)
            before = drainer_events(plugin_dir)
            t0 = time.perf_counter()
            run = hook(sid)
            spawn_hook_ms.append(run.seconds * 1000)
            spawn_cpu_ms.append(run.cpu_seconds * 1000)
            if harness.wait_until(lambda: item.title == want, timeout=60, interval=0.005):
                e2e_ms.append((time.perf_counter() - t0) * 1000)
            else:
                failures.append(f"spawn round {r}: scene {sid} did not reach Plex within 60 s (title {item.title!r})")
            if wait_drainer(plugin_dir, before, timeout=60):
                life_ms.append((time.perf_counter() - t0) * 1000)
            else:
                failures.append(f"spawn round {r}: no drainer started, or it did not log its end within 60 s")
            extra_starts += max(0, len(drainer_events(plugin_dir)[0]) - len(before[0]) - 1)
            harness.stop_drainer(plugin_dir)
            if r % 2 == 1:
                spawn_bare_ms.append(bare(env).seconds * 1000)
        if extra_starts:
            print(f"note: {extra_starts} more drainer start(s) than hook rounds in part 2")
        spawn_ok = len(failures) == spawn_failures_before
        if not spawn_ok:
            drainer_log_tail = harness.drainer_log(plugin_dir).splitlines()[-40:]
            drainer_log_tail += queue_dump(os.path.join(plugin_dir, "data", "queue.db"))
    finally:
        harness.stop_drainer(plugin_dir, timeout=5)
        stash.stop()
        plex.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def row(name, ms, cpu=None):
        return [name, len(ms), f"{c.median(ms):.1f}", f"{c.pct(ms, 0.9):.1f}", f"{min(ms):.1f}" if ms else "-",
                f"{c.median(cpu):.1f}" if cpu else "-"]

    v0, v1 = variants[0], (variants[1] if len(variants) > 1 else None)
    print()
    print(f"## 1. hook, drainer lock held (no spawn): {args.rounds} interleaved rounds after {args.warmup} warm-up")
    rows = []
    for v in variants:
        rows.append(row(f"python -c pass, {v['name']}", v["bare_ms"], [x.cpu_seconds * 1000 for x in v["bare"]]))
        rows.append(row(f"hook (queue only), {v['name']}", v["hook_ms"], [x.cpu_seconds * 1000 for x in v["hook"]]))
    print(c.table(["run", "n", "median ms", "p90 ms", "min ms", "cpu median ms"], rows))
    print("harness env = os.environ + PYTHONPATH" + (" (has PYTHONDONTWRITEBYTECODE=1: lib/*.py compiled on every run)"
                                                     if v0["env"].get("PYTHONDONTWRITEBYTECODE") else ""))
    if v1:
        print("pyc cached  = the same without PYTHONDONTWRITEBYTECODE, bytecode in a temp PYTHONPYCACHEPREFIX "
              "(a usual install)")
    for v in variants:
        verdict = "met" if v["ratio"] <= TARGET_RATIO else "NOT met"
        print(f"[{v['name']}] median ratio hook / bare = {v['ratio']:.2f}  (target <= {TARGET_RATIO:g}: {verdict}); "
              f"median of per-round ratios = {v['paired']:.2f}")
    if imports:
        print()
        print("imports of the hook run (python -X importtime, harness env, median of 5; importtime inflates them):")
        print(c.table(["top-level import", "cumulative ms"], [[k, f"{ms:.1f}"] for k, ms in imports]))
    print()
    print(f"## 2. hook that spawns the detached drainer (lock free): {args.spawn_rounds} rounds")
    print(c.table(["what", "n", "median ms", "p90 ms", "min ms", "cpu median ms"], [
        row("python -c pass (interleaved)", spawn_bare_ms),
        row("hook incl. drainer fork", spawn_hook_ms, spawn_cpu_ms),
        row("hook start -> title in Plex", e2e_ms),
        row("hook start -> drainer logged exit", life_ms),
    ]))
    spawn_ratio = c.median(spawn_hook_ms) / c.median(spawn_bare_ms) if spawn_hook_ms and spawn_bare_ms else None
    if spawn_ratio is not None:
        print(f"median ratio spawning hook / bare = {spawn_ratio:.2f} (informational; Stash waits this long)")
    if failures:
        print()
        print(f"FUNCTIONAL FAILURES ({len(failures)}):")
        for f in failures[:20]:
            print("  " + f)
        if drainer_log_tail:
            print("drainer log (last lines):")
            for line in drainer_log_tail:
                print("  | " + line)

    r2 = lambda v: round(v, 2) if v is not None else None  # noqa: E731
    print(c.result_line({
        "bench": "hook", "rounds": args.rounds, "warmup": args.warmup,
        "bare_median_ms": r2(c.median(v0["bare_ms"])), "bare_p90_ms": r2(c.pct(v0["bare_ms"], 0.9)),
        "hook_median_ms": r2(c.median(v0["hook_ms"])), "hook_p90_ms": r2(c.pct(v0["hook_ms"], 0.9)),
        "hook_cpu_median_ms": r2(c.median([x.cpu_seconds * 1000 for x in v0["hook"]])),
        "ratio_median": r2(v0["ratio"]), "ratio_paired_median": r2(v0["paired"]),
        "target_ratio": TARGET_RATIO, "target_met": v0["ratio"] <= TARGET_RATIO,
        "env_dont_write_bytecode": bool(v0["env"].get("PYTHONDONTWRITEBYTECODE")),
        "cached_bare_median_ms": r2(c.median(v1["bare_ms"])) if v1 else None,
        "cached_hook_median_ms": r2(c.median(v1["hook_ms"])) if v1 else None,
        "cached_hook_p90_ms": r2(c.pct(v1["hook_ms"], 0.9)) if v1 else None,
        "cached_ratio_median": r2(v1["ratio"]) if v1 else None,
        "spawn_rounds": args.spawn_rounds,
        "spawn_hook_median_ms": r2(c.median(spawn_hook_ms)), "spawn_hook_p90_ms": r2(c.pct(spawn_hook_ms, 0.9)),
        "spawn_bare_median_ms": r2(c.median(spawn_bare_ms)), "spawn_ratio_median": r2(spawn_ratio),
        "spawn_e2e_median_ms": r2(c.median(e2e_ms)), "spawn_drainer_exit_median_ms": r2(c.median(life_ms)),
        "spawn_ok": spawn_ok, "failures": len(failures),
    }))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
