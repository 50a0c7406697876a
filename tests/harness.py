"""Runs plexsync.py exactly as Stash does, and waits for its background drainer.

Stash (reference/stash-plugin-protocol.md §1-§4) starts ``python <pluginDir>/plexsync.py`` with its own
working directory, ``PYTHONPATH`` set to the plugin folder's parent, one JSON object on stdin, and reads
stderr lines framed ``\\x01<level>\\x02`` and one JSON object from stdout.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = os.path.join(ROOT, "plexsync.py")
_FRAME = re.compile(r"^\x01([tdiwep])\x02(.*)$")


class Run(NamedTuple):
    output: object
    error: str | None
    logs: list          # (level, message) of framed stderr lines
    progress: list      # floats from \x01p\x02 lines
    unframed: list      # stderr lines without Stash's framing (must stay empty)
    returncode: int
    seconds: float


def stdin_for(stash, plugin_dir: str, args: dict) -> str:
    """The exact stdin object Stash writes for a plugin run."""
    conn = stash.server_connection(plugin_dir=plugin_dir, config_dir=os.path.dirname(plugin_dir))
    return json.dumps({"server_connection": conn, "args": args})


def hook_args(scene_id: int, kind: str = "Scene.Update.Post", fields=("title", "id")) -> dict:
    """``args`` of a hook run for ``sceneUpdate(input: {id, title})``, as Stash writes it."""
    return {"hookContext": {"id": int(scene_id), "type": kind,
                            "input": {"clientMutationId": None, "id": str(scene_id), "title": "x"},
                            "inputFields": list(fields)}}


def run_plugin(stdin: str, timeout: float = 300, python: str | None = None, cwd: str | None = None) -> Run:
    """Run plexsync.py once with ``stdin``; parse stdout and stderr as Stash does."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(ROOT))
    start = time.monotonic()
    proc = subprocess.run([python or sys.executable, ENTRY], input=stdin.encode(), capture_output=True,
                          timeout=timeout, env=env, cwd=cwd or "/")
    seconds = time.monotonic() - start
    out = json.loads(proc.stdout.decode())  # Stash unmarshals the whole stdout as one object
    logs, progress, unframed = [], [], []
    for line in proc.stderr.decode(errors="replace").splitlines():
        m = _FRAME.match(line)
        if not m:
            unframed.append(line)
        elif m.group(1) == "p":
            progress.append(float(m.group(2)))
        else:
            logs.append((m.group(1), m.group(2)))
    return Run(out.get("output"), out.get("error"), logs, progress, unframed, proc.returncode, seconds)


def drainer_pid(plugin_dir: str) -> int | None:
    """The pid of the running background drainer of ``plugin_dir``, or None."""
    sys.path.insert(0, ROOT)
    from lib.lock import FileLock

    lock = FileLock(os.path.join(plugin_dir, "data", "drainer.lock"))
    if not os.path.exists(lock.path) or not lock.held_elsewhere():
        return None
    note = lock.holder_note()
    return int(note) if note.isdigit() else -1


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def stop_drainer(plugin_dir: str, timeout: float = 20.0) -> None:
    """Wait up to ``timeout`` seconds for the drainer to go idle and exit; then kill it, and any
    drainer that takes its place (one started meanwhile waits for the lock), until none is left."""
    if wait_until(lambda: drainer_pid(plugin_dir) is None, timeout):
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = drainer_pid(plugin_dir)
        if pid is None:
            return
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def drainer_log(plugin_dir: str) -> str:
    try:
        with open(os.path.join(plugin_dir, "data", "plexsync.log"), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""
