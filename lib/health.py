"""Plex health checks that do not lie.

``GET /identity`` answers without a token (reference/plex-server-api.md §3), so it proves only that
PMS listens. The deep check follows it with a cheap authenticated call, ``GET /`` with the token,
which a bad token answers with 401. PMS answers 503 while its database is still loading after a
start: the port is open but Plex is not usable yet ("loading"), which is not "up".
"""
from __future__ import annotations

import time
from typing import NamedTuple

from lib import log


class Health(NamedTuple):
    status: str        # up | loading | down | unauthorized
    detail: str        # one line for the user
    at: float          # epoch seconds of the check
    elapsed_ms: float  # milliseconds the check took


def check(url: str, token: str, timeout: tuple) -> Health:
    """Check Plex at ``url`` with ``token``; ``timeout`` is (connect, read) seconds. Never raises."""
    import requests

    started = time.monotonic()
    at = time.time()

    def done(status: str, detail: str) -> Health:
        return Health(status, log.redact(detail), at, (time.monotonic() - started) * 1000)

    try:
        with requests.Session() as session:
            identity = session.get(f"{url}/identity", timeout=timeout)
            if identity.status_code == 503:
                return done("loading", "Plex is starting: its database is still loading (HTTP 503)")
            if identity.status_code != 200:
                return done("down", f"Plex /identity answered HTTP {identity.status_code}")
            root = session.get(f"{url}/", headers={"X-Plex-Token": token}, timeout=timeout)
    except requests.RequestException as exc:
        return done("down", f"Plex is unreachable: {type(exc).__name__}")
    if root.status_code == 401:
        return done("unauthorized", "Plex refused plex_token (HTTP 401)")
    if root.status_code == 503:
        return done("loading", "Plex is starting: its database is still loading (HTTP 503)")
    if root.status_code != 200:
        return done("down", f"Plex answered HTTP {root.status_code}")
    return done("up", "Plex answers")
