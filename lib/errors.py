"""Failure classification: every error the drainer meets is classified here, once.

Kinds (stored on the job as ``error_class``, and on dead letters):
- ``server_down``: Plex is not there: connection refused or reset, DNS failure, connect or read
  timeout, HTTP 502/503/504 (PMS answers 503 while its database loads). Counts toward the circuit
  breaker; the job does NOT spend an attempt and waits for Plex (lib/breaker.py).
- ``transient``: a later try may work: HTTP 429, other 5xx, malformed XML. Counts toward the breaker
  and is retried with backoff, spending an attempt (``max_retries``).
- ``permanent``: retrying cannot help: HTTP 400 and other 4xx, an item gone after a fresh re-match,
  data Plex rejects. Dead letter queue at once.
- ``auth``: Plex refused the token (401). The drainer stops and tells the user; the jobs wait.
- ``stash_down``: Stash is unreachable or failing: the job waits, no attempt spent.
- ``stash_auth``: Stash refused our cookie (it expired after an hour and Stash has no API key): the
  drainer stops; the next hook or task starts it again with a fresh cookie.

plexapi raises ``Unauthorized`` (a subclass of ``BadRequest``) for 401, ``NotFound`` for 404,
``BadRequest("(code) ...")`` for other statuses, ``TypeError`` for a status requests does not know,
and requests' own exceptions unwrapped for network failures (reference/plex-server-api.md §1).
"""
from __future__ import annotations

import re
from typing import NamedTuple
from xml.etree.ElementTree import ParseError

from lib import log

_STATUS = re.compile(r"^\((\d{3})\)")
SERVER_DOWN_STATUS = (502, 503, 504)


class Failure(NamedTuple):
    kind: str      # server_down | transient | permanent | auth | stash_down | stash_auth
    message: str   # one line, secrets redacted


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised while talking to Plex or Stash."""
    import requests
    from plexapi.exceptions import BadRequest, NotFound, Unauthorized

    from lib.stash import StashAuthError, StashError

    text = log.redact(str(exc)).splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, StashAuthError):
        return Failure("stash_auth", text)
    if isinstance(exc, StashError):
        return Failure("stash_down" if exc.transient else "permanent", text)
    if isinstance(exc, Unauthorized):
        return Failure("auth", "Plex refused plex_token (HTTP 401): set a valid X-Plex-Token in the "
                               "plugin settings; queued scenes wait until then")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return Failure("server_down", f"Plex is unreachable: {type(exc).__name__}")
    if isinstance(exc, requests.RequestException):
        return Failure("transient", f"Plex request failed: {type(exc).__name__}")
    if isinstance(exc, NotFound):
        return Failure("permanent", f"Plex: not found: {text}")
    if isinstance(exc, BadRequest):
        m = _STATUS.match(str(exc))
        status = int(m.group(1)) if m else 0
        if status in SERVER_DOWN_STATUS:
            return Failure("server_down", f"Plex answered HTTP {status}")
        if status == 429 or status >= 500:
            return Failure("transient", f"Plex answered HTTP {status}")
        return Failure("permanent", f"Plex rejected the request: {text}")
    if isinstance(exc, ParseError):
        return Failure("transient", "Plex answered with malformed XML")
    if isinstance(exc, TypeError) and "NoneType" in str(exc):
        return Failure("transient", "Plex answered with an HTTP status requests does not know")
    return Failure("permanent", f"{type(exc).__name__}: {text}")
