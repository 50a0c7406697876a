#!/usr/bin/env python3
"""PlexSync, the Stash plugin: keeps Plex's metadata in step with Stash.

Stash runs this file once per hook or task (raw interface, reference/stash-plugin-protocol.md §2-§4):
one JSON object on stdin (``server_connection``, ``args``), log lines on stderr in Stash's framing,
and exactly one JSON object ``{"output": ..., "error": ...}`` on stdout.

- A hook (``args`` has ``hookContext``) only queues the scene id in SQLite and makes sure the
  background drainer runs: no plexapi, no requests, no network. Stash waits for every hook process
  inside the user's save, so this path also avoids the ``json`` package (its ``re`` and ``enum``
  imports cost more than the hook's work) and uses the C scanner and encoder behind it directly.
- A task (``args.mode``) runs in the foreground; see lib/tasks.py.
- ``plexsync.py --drain`` is the detached background drainer the hook starts (lib/drainer.py).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from lib import log  # noqa: E402  (after the path fix-up above)

SCENE_HOOKS = ("Scene.Update.Post", "Scene.Create.Post")
OBJECT_HOOKS = {  # hook type -> (kind, op): a change that reaches Plex through the object's scenes
    "Performer.Update.Post": ("performer", "update"), "Performer.Destroy.Post": ("performer", "destroy"),
    "Studio.Update.Post": ("studio", "update"), "Studio.Destroy.Post": ("studio", "destroy"),
    "Tag.Update.Post": ("tag", "update"), "Tag.Destroy.Post": ("tag", "destroy"),
    "Tag.Merge.Post": ("tag", "merge"),
}


def loads(text: str):
    """Parse a JSON document. Raises ValueError with json's own message."""
    try:
        import _json

        class Context:  # what the C scanner reads from json.JSONDecoder
            strict, object_hook, object_pairs_hook = True, None, None
            parse_float, parse_int, memo = float, int, {}

            @staticmethod
            def parse_constant(name):
                raise ValueError(name)

        start = len(text) - len(text.lstrip())
        value, end = _json.make_scanner(Context())(text, start)
        if not text[end:].strip():
            return value
    except Exception:  # noqa: BLE001 - any trouble of the fast path: json decides, with its message
        pass
    import json  # slow path: other interpreters, or bad input

    return json.loads(text)


def dumps_reply(output, error) -> str:
    """Stash's stdout object ``{"output": ..., "error": ...}`` (strings or null)."""
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:
        from json import dumps as quote

    def value(v):
        return "null" if v is None else quote(str(v))

    return '{"output": %s, "error": %s}' % (value(output), value(error))


def respond(output=None, error=None) -> int:
    """Write Stash's one stdout object and return the exit status."""
    sys.stdout.write(dumps_reply(output, log.redact(error) if error else None))
    sys.stdout.flush()
    return 0


def parse_stdin(text: str) -> dict:
    """The object Stash wrote on stdin. Raises ValueError with a one-line reason."""
    try:
        payload = loads(text)
    except ValueError as exc:
        raise ValueError(f"stdin is not the JSON object Stash sends ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("server_connection"), dict):
        raise ValueError("stdin has no server_connection object; is this being run by Stash?")
    if not isinstance(payload.get("args") or {}, dict):
        raise ValueError("stdin args is not an object")
    cookie = payload["server_connection"].get("SessionCookie") or {}
    log.add_secret(cookie.get("Value") if isinstance(cookie, dict) else None)
    return payload


def open_queue(data_dir: str):
    from lib.queue import Queue

    return Queue(os.path.join(data_dir, "queue.db"))


def _id(value, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValueError(f"{kind} hook without a valid id ({value!r:.40})")
    return int(value)


def process_instance(pid: int) -> str:
    """A process's id and, where /proc tells it, its start time: unique across restarts."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f"{pid}:{f.read().rsplit(b')', 1)[1].split()[19].decode()}"
    except (OSError, IndexError):
        return str(pid)


def note_stash_instance(queue, known) -> None:
    """Flag the startup reconciliation when Stash (our parent process) started since the last
    run: one meta write then, nothing otherwise."""
    now = process_instance(os.getppid())
    if now != known:
        queue.set_meta("stash_instance", now)
        queue.set_meta("reconcile_startup_due", "1")


def hook(args: dict, stdin: bytes, data_dir: str) -> str:
    """Queue the scene (or the changed performer, studio or tag) of a hook and make sure the
    drainer runs. Nearly free by design: no network, one small SQLite transaction."""
    from lib import drainer

    context = args.get("hookContext") or {}
    kind = context.get("type")
    if kind in SCENE_HOOKS:
        scene_id = _id(context.get("id"), kind)
        queue = open_queue(data_dir)
        queue.enqueue([scene_id], "hook")
        done = f"queued scene {scene_id}"
    elif kind in OBJECT_HOOKS:
        what, op = OBJECT_HOOKS[kind]
        ids = [_id(context.get("id"), kind)]
        if op == "merge":  # the merged-away tags: their scenes now carry the destination tag
            ids += [_id(i, kind) for i in ((context.get("input") or {}).get("source") or [])]
        queue = open_queue(data_dir)
        for object_id in ids:
            queue.enqueue_object(what, object_id, op)
        done = f"queued the scenes of {what} {', '.join(map(str, ids))}"
    else:
        return f"ignored {kind}"
    meta = queue.get_metas("halt_reason", "stash_instance")
    note_stash_instance(queue, meta.get("stash_instance"))
    if meta.get("halt_reason"):
        log.warning(f"PlexSync is not syncing: {meta['halt_reason']}. The change is queued and waits.")
    drainer.ensure_running(data_dir, stdin)
    return done


def task(args: dict, conn: dict, stdin: bytes, data_dir: str) -> str:
    from lib import drainer, reconcile, tasks
    from lib.plex import configure_plexapi

    mode = args.get("mode")
    if mode not in tasks.TASKS:
        raise tasks.TaskError(f"unknown task mode {mode!r:.40}; expected one of {', '.join(tasks.TASKS)}")
    function, needs_packages = tasks.TASKS[mode]
    if needs_packages:
        tasks.require_packages()
    os.makedirs(data_dir, exist_ok=True)
    configure_plexapi(data_dir)
    queue = open_queue(data_dir)
    note_stash_instance(queue, queue.get_meta("stash_instance"))
    try:
        return function(conn, queue, args)
    finally:
        # recovery on every invocation: queued work, or a reconciliation due, always has a drainer
        if queue.pending() or reconcile.due(queue) is not None:
            drainer.ensure_running(data_dir, stdin)


def main(argv: list) -> int:
    stdin = sys.stdin.buffer.read()
    try:
        payload = parse_stdin(stdin.decode("utf-8", errors="replace"))
    except ValueError as exc:
        return respond(error=f"PlexSync: {exc}")
    conn = payload["server_connection"]
    args = payload.get("args") or {}
    data_dir = os.path.join(conn.get("PluginDir") or HERE, "data")
    if "--drain" in argv:
        from lib import drainer
        from lib.plex import configure_plexapi

        os.makedirs(data_dir, exist_ok=True)
        log.to_file(os.path.join(data_dir, "plexsync.log"))
        configure_plexapi(data_dir)
        drainer.run(data_dir, conn, open_queue(data_dir))
        return 0
    try:
        if "hookContext" in args:
            respond(output=hook(args, stdin, data_dir))
            # The queue is committed and the reply flushed: skip the interpreter's teardown and the
            # WAL checkpoint SQLite runs when its last connection closes (a few milliseconds of a
            # hook Stash waits for). The next connection finds the WAL as it was.
            sys.stderr.flush()
            os._exit(0)
        return respond(output=task(args, conn, stdin, data_dir))
    except Exception as exc:  # one clear line for Stash, never a traceback
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if type(exc).__name__ not in ("TaskError", "ValueError"):
            message = f"{type(exc).__name__}: {message}"
        log.error(message)
        return respond(error=f"PlexSync: {message}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
