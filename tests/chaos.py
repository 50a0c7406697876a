"""Chaos: scene edits arrive as hooks while Plex flaps and the drainer is SIGKILLed; nothing is lost.

Loopback only, bounded in time (about two minutes). While ``--edits`` scene edits (default 500) arrive as
``Scene.Update.Post`` hook runs of ``plexsync.py`` (real subprocesses, stdin as Stash writes it), the fake
Plex flaps for ``--flap-seconds`` (default 60): refused connections, TCP resets and "database loading"
503s, alternating with short up periods; the background drainer is SIGKILLed at random moments. Then
Plex stays up and the script waits for the queue to empty and checks:

- every scene's Plex title, summary and locks equal Stash's final state; changed covers arrived;
- the dead letter queue is empty (an outage never dead-letters a job);
- the circuit breaker's transitions were logged ("Plex looks down", "answers again", "is back");
- while Plex was down, health checks (``GET /identity``) came at most once per backoff interval.

Prints the figures: jobs, Plex requests during the outage, time from recovery to empty queue, peak drain
rate. Exit status 0 when every check passed. Usage: ``python tests/chaos.py [--seed N] [--edits N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import make_world  # noqa: E402
from fakeplex import ResetFault  # noqa: E402
from harness import ENTRY, drainer_log, drainer_pid, hook_args, stdin_for, stop_drainer  # noqa: E402

from lib.breaker import PROBE_FIRST  # noqa: E402


def hook(world, scene_id: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(ENTRY)))
    proc = subprocess.run([sys.executable, ENTRY], input=stdin_for(world.stash, world.plugin_dir,
                          hook_args(scene_id)).encode(), capture_output=True, timeout=60, env=env, cwd="/")
    return json.loads(proc.stdout)


class Flapper(threading.Thread):
    """Takes Plex down in turns (refused, reset, 503) for ``seconds``, recording the down windows."""

    def __init__(self, plex, seconds: float, rng: random.Random):
        super().__init__(daemon=True)
        self.plex, self.seconds, self.rng = plex, seconds, rng
        self.windows: list = []  # (start, end, mode)

    def run(self) -> None:
        end = time.time() + self.seconds
        modes = ["refused", "reset", "loading"]
        while time.time() < end:
            mode = modes[len(self.windows) % 3]
            start = time.time()
            if mode == "refused":
                self.plex.down()
            elif mode == "reset":
                self.plex.add_fault(ResetFault())
            else:
                self.plex.fail(503)
            time.sleep(min(self.rng.uniform(6, 14), max(0.0, end - time.time())))
            if mode == "refused":
                self.plex.up()
            else:
                self.plex.clear_faults()
            self.windows.append((start, time.time(), mode))
            time.sleep(min(self.rng.uniform(2, 5), max(0.0, end - time.time())))


class Killer(threading.Thread):
    """SIGKILLs the background drainer at random moments for ``seconds``."""

    def __init__(self, plugin_dir: str, seconds: float, rng: random.Random):
        super().__init__(daemon=True)
        self.plugin_dir, self.seconds, self.rng, self.kills = plugin_dir, seconds, rng, 0

    def run(self) -> None:
        end = time.time() + self.seconds
        while time.time() < end:
            time.sleep(self.rng.uniform(3, 9))
            pid = drainer_pid(self.plugin_dir)
            if pid and pid > 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--edits", type=int, default=500)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--flap-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=180.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    world = make_world(Path(tempfile.mkdtemp(prefix="plexsync-chaos-")), n=args.scenes, hostile=False,
                       missing_from_plex=0)
    world.settings()
    ids = [int(s) for s in world.lib.scene_ids]
    problems: list = []
    try:
        first = world.run({"mode": "sync_all"})  # a synced library before the storm
        if first.error:
            problems.append(f"the first Sync All failed: {first.error}")
        world.plex.clear_requests()
        flapper = Flapper(world.plex, args.flap_seconds, rng)
        killer = Killer(world.plugin_dir, args.flap_seconds, rng)
        started = time.time()
        flapper.start()
        killer.start()
        covers = set()
        spacing = args.flap_seconds * 0.9 / args.edits
        for n in range(args.edits):
            sid = rng.choice(ids)
            cover = rng.random() < 0.1
            world.stash.update_scene(str(sid), title=f"chaos edit {n} of scene {sid}", details=f"edit {n}", cover=cover)
            if cover:
                covers.add(str(sid))
            out = hook(world, sid)
            if out.get("output") != f"queued scene {sid}":
                problems.append(f"hook for scene {sid} answered {out}")
            time.sleep(max(0.0, started + (n + 1) * spacing - time.time()))
        flapper.join()
        killer.join()
        recovered = time.time()
        hook(world, ids[0])  # an edit after the storm: this run makes sure a drainer exists
        q = world.queue()
        deadline = recovered + args.settle_seconds
        while time.time() < deadline and q.pending():
            time.sleep(0.2)
        emptied = time.time()
        if q.pending():
            problems.append(f"{q.pending()} jobs still queued {args.settle_seconds:.0f} s after recovery")
        counts = q.counts()
        if counts["dead_letters"]:
            problems.append(f"{counts['dead_letters']} dead letters: {q.dead_letters()[:3]}")
        for sid in map(str, ids):
            rec, item = world.stash.scenes[sid], world.item(sid)
            if (item.title, item.summary) != (rec["title"], rec["details"]) or "title" not in item.locked:
                problems.append(f"scene {sid}: Plex shows {item.title!r} / {item.summary!r}, Stash {rec['title']!r}")
            if sid in covers and item.poster != world.stash.scene_cover_bytes(sid):
                problems.append(f"scene {sid}: Plex poster is not Stash's cover")
        log = drainer_log(world.plugin_dir)
        for sentence in ("Plex looks down", "Plex answers again", "Plex is back after"):
            if sentence not in log:
                problems.append(f"the drainer log lacks {sentence!r}")
        during = [r for r in world.plex.requests if any(s <= r.t <= e for s, e, _ in flapper.windows)]
        probes = sorted(r.t for r in during if r.path == "/identity")
        tight = [round(b - a, 2) for a, b in zip(probes, probes[1:]) if b - a < PROBE_FIRST - 0.5
                 and any(s <= a <= e and s <= b <= e for s, e, _ in flapper.windows)]
        if tight:
            problems.append(f"probes closer than one backoff interval while Plex was down: gaps {tight[:5]} s")
        puts = Counter(int(r.t) for r in world.plex.requests if r.method == "PUT")
        print(f"jobs: {args.edits} hook edits of {len({*ids})} scenes; drainer SIGKILLed {killer.kills} times; "
              f"{len(flapper.windows)} outages ({', '.join(m for *_, m in flapper.windows)}) in {args.flap_seconds:.0f} s")
        print(f"Plex requests received during outages: {len(during)} ({len(probes)} health probes; refused "
              f"connections never reach Plex); breaker transitions logged: "
              f"{log.count('Plex looks down')} opened, {log.count('Plex is back after')} closed")
        print(f"time from recovery to empty queue: {emptied - recovered:.1f} s; peak drain rate: "
              f"{max(puts.values()) if puts else 0} edits/s; dead letters: {counts['dead_letters']}")
        for p in problems[:20]:
            print("PROBLEM:", p)
        print("RESULT", json.dumps({"ok": not problems, "kills": killer.kills, "outages": len(flapper.windows),
                                    "requests_during_outage": len(during), "probes": len(probes),
                                    "recovery_to_empty_s": round(emptied - recovered, 1),
                                    "peak_edits_per_s": max(puts.values()) if puts else 0}))
        return 0 if not problems else 1
    finally:
        stop_drainer(world.plugin_dir, timeout=0)
        world.stash.stop()
        world.plex.stop()


if __name__ == "__main__":
    sys.exit(main())
