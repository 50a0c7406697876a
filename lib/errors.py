"""Failure classification: every error the drainer meets is classified here, once.

Classes (stored on the job as ``error_class``):
- ``transient``: a later try may work: connection refused/reset, timeouts, HTTP 429 and 5xx (PMS
  answers 503 while its database loads), Stash unreachable. Retried with backoff.
- ``permanent``: retrying cannot help: HTTP 400 and other 4xx, data Plex rejects. Dead letter queue.
- ``auth``: Plex refused the token (401). Neither: the drainer stops and the jobs wait for the user
  to fix ``plex_token``.
- ``stash_auth``: Stash refused our cookie (it expired after an hour and Stash has no API key): the
  drainer stops; the next hook or task starts it again with a fresh cookie.

plexapi raises ``Unauthorized`` (a subclass of ``BadRequest``) for 401, ``NotFound`` for 404,
``BadRequest("(code) ...")`` for other statuses, ``TypeError`` for a status requests does not know,
and requests' own exceptions unwrapped for network failures (reference/plex-server-api.md §1).
"""
from __future__ import annotations

import re
from typing import NamedTuple

from lib import log

_STATUS = re.compile(r"^\((\d{3})\)")


class Failure(NamedTuple):
    kind: str      # transient | permanent | auth | stash_auth
    message: str   # one line, secrets redacted


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised while processing a job."""
    import requests
    from plexapi.exceptions import BadRequest, NotFound, Unauthorized

    from lib.stash import StashAuthError, StashError

    text = log.redact(str(exc)).splitlines()[0][:500] if str(exc) else type(exc).__name__
    if isinstance(exc, StashAuthError):
        return Failure("stash_auth", text)
    if isinstance(exc, StashError):
        return Failure("transient" if exc.transient else "permanent", text)
    if isinstance(exc, Unauthorized):
        return Failure("auth", "Plex refused plex_token (HTTP 401): set a valid X-Plex-Token in the "
                               "plugin settings; queued scenes wait until then")
    if isinstance(exc, requests.RequestException):
        return Failure("transient", f"Plex is unreachable: {type(exc).__name__}")
    if isinstance(exc, NotFound):
        return Failure("permanent", f"Plex: not found: {text}")
    if isinstance(exc, BadRequest):
        m = _STATUS.match(str(exc))
        status = int(m.group(1)) if m else 0
        if status == 429 or status >= 500:
            return Failure("transient", f"Plex answered HTTP {status}")
        return Failure("permanent", f"Plex rejected the request: {text}")
    if isinstance(exc, TypeError) and "NoneType" in str(exc):
        return Failure("transient", "Plex answered with an unknown HTTP status")
    return Failure("permanent", f"{type(exc).__name__}: {text}")
