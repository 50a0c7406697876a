import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

from fakeplex import FakePlex  # noqa: E402
from fakestash import FakeStash  # noqa: E402
from harness import run_plugin, stdin_for, stop_drainer, wait_until  # noqa: E402
from library import build_library  # noqa: E402

PLEX_TOKEN = "plex-SECRET-token-8472"
API_KEY = "stash-SECRET-apikey-1937"
COOKIE = "stash-SECRET-cookie-5521"


class World:
    """A fake Stash and a fake Plex on loopback, a generated library, and a plugin folder."""

    def __init__(self, stash, plex, lib, plugin_dir):
        self.stash, self.plex, self.lib, self.plugin_dir = stash, plex, lib, plugin_dir

    def settings(self, **values):
        base = {"plex_url": self.plex.url, "plex_token": PLEX_TOKEN, "path_map": self.lib.path_map}
        base.update(values)
        self.stash.plugin_settings = {"plexsync": {k: v for k, v in base.items() if v is not None}}

    def run(self, args, **kw):
        """Run plexsync.py as Stash does. After a task, also wait for the background drainer to
        settle any batch it claimed meanwhile, so that the test sees the queue's final word."""
        result = run_plugin(stdin_for(self.stash, self.plugin_dir, args), **kw)
        if "mode" in args:
            q = self.queue()
            wait_until(lambda: q.counts()["claimed"] == 0, 15)
            q.close()
        return result

    def item(self, scene_id):
        return self.plex.items[self.lib.in_plex[str(scene_id)]]

    def seen_by_stash(self):
        """Record this process (the plugin's parent, as Stash is) as the Stash instance the plugin
        already ran under, so that no startup reconciliation runs unless a test asks for it."""
        import plexsync

        q = self.queue()
        q.set_meta("stash_instance", plexsync.process_instance(os.getpid()))
        q.close()

    def queue(self):
        from lib.queue import Queue

        return Queue(os.path.join(self.plugin_dir, "data", "queue.db"))


def make_world(tmp_path, n=60, **lib_kw):
    stash = FakeStash(api_key=API_KEY, session_cookie=COOKIE)
    plex = FakePlex(token=PLEX_TOKEN)
    stash.start()
    plex.start()
    lib = build_library(stash, plex, n, **lib_kw)
    plugin_dir = str(tmp_path / "plugins" / "plexsync")
    os.makedirs(plugin_dir)
    world = World(stash, plex, lib, plugin_dir)
    world.settings()
    world.seen_by_stash()
    return world


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    stop_drainer(w.plugin_dir, timeout=0)
    w.stash.stop()
    w.plex.stop()
    # every GraphQL document the plugin sent validated against the Stash schema (the real one
    # when ../shared/stash-schema exists)
    assert w.stash.invalid_queries == []
