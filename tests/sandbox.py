"""The sandbox: PlexSync end to end on loopback, with nothing real to set up.

Starts the fake Stash and the fake Plex on 127.0.0.1, fills them with a generated library (a few hundred
scenes, hostile names included; a few files not yet indexed by Plex), then runs ``plexsync.py`` exactly as
Stash would (JSON on stdin, framed log lines on stderr, one JSON object on stdout):

1. a scene is edited in Stash and its ``Scene.Update.Post`` hook runs; the background drainer the hook
   started pushes the edit to Plex by itself;
2. the Sync All Scenes task;
3. the Process Queue task;

and prints what reached Plex. Usage: ``python tests/sandbox.py [--scenes N]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import make_world  # noqa: E402
from harness import drainer_log, hook_args, stop_drainer, wait_until  # noqa: E402


def show(label: str, run) -> None:
    print(f"\n== {label}: {run.seconds:.2f} s, output: {run.output!r}" + (f", error: {run.error!r}" if run.error else ""))
    for level, message in run.logs:
        if level in "iwe":
            print(f"   [{level}] {message[:160]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    args = parser.parse_args()
    world = make_world(Path(tempfile.mkdtemp(prefix="plexsync-sandbox-")), n=args.scenes)
    print(f"fake Stash {world.stash.url} ({len(world.stash.scenes)} scenes), fake Plex {world.plex.url} "
          f"({len(world.plex.items)} items indexed, {len(world.lib.missing)} files not indexed yet)")
    print(f"plugin folder {world.plugin_dir}; path_map: {world.lib.path_map}")
    try:
        special = set(world.lib.special.values())
        sid = next(s for s in world.lib.in_plex if s not in special)
        world.stash.update_scene(sid, title="Edited in the sandbox ✓", details="Pushed by the hook.")
        started = time.monotonic()
        run = world.run(hook_args(sid))
        show(f"hook Scene.Update.Post for scene {sid}", run)
        item = world.item(sid)
        reached = wait_until(lambda: item.title == "Edited in the sandbox ✓", timeout=30)
        print(f"   Plex item {item.rating_key} shows the edit {time.monotonic() - started:.2f} s after the edit"
              if reached else "   the edit did NOT reach Plex within 30 s")
        stop_drainer(world.plugin_dir)
        show("task Sync All Scenes", world.run({"mode": "sync_all"}))
        show("task Process Queue", world.run({"mode": "process_queue"}))
        show("task Queue Status", world.run({"mode": "queue_status"}))
        print("\n== what reached Plex (a sample)")
        for label in ("latin", "cjk", "emoji", "percent_underscore", "control", "many_tags", "year_month"):
            scene_id = world.lib.special.get(label)
            if scene_id in world.lib.in_plex:
                it = world.item(scene_id)
                print(f"   scene {scene_id:>4} {label:18} title={it.title[:48]!r} studio={it.studio[:20]!r} "
                      f"date={it.originally_available_at} genres={len(it.tags.get('genre', []))} "
                      f"actors={len(it.tags.get('actor', []))} poster={'yes' if it.poster else 'no'} "
                      f"locked={len(it.locked)}")
        synced = sum(1 for s in world.lib.in_plex if "title" in world.item(s).locked)
        print(f"\n{synced} of {len(world.lib.in_plex)} indexed scenes carry Stash's metadata in Plex; "
              f"{len(world.plex.requests)} Plex requests in all. Drainer log: "
              f"{len(drainer_log(world.plugin_dir).splitlines())} lines in {world.plugin_dir}/data/plexsync.log")
        return 0 if reached and synced == len(world.lib.in_plex) else 1
    finally:
        stop_drainer(world.plugin_dir)
        world.stash.stop()
        world.plex.stop()


if __name__ == "__main__":
    sys.exit(main())
