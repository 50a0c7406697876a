#!/usr/bin/env python3
"""PlexSync's Plex metadata provider: Plex scans pull Stash's metadata from this web service.

Plex Media Server 1.43+ asks a registered provider, during a library scan, to match each file and
then to serve its metadata (reference/plex-provider-protocol.md). This file is the HTTP shell: one
function per route, each parsing the request, calling lib/metadata_provider.py and answering JSON.
Configuration and every route are described in docs/provider.md.

Run: ``python provider.py`` (settings from ``PLEXSYNC_*`` environment variables). A missing or
invalid setting, or a path rule that does not round-trip, stops start-up with one line per problem
on stderr and exit status 2. SIGTERM and SIGINT stop it cleanly.
"""
import json
import logging
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bottle  # noqa: E402  (after the path fix-up above)

from lib import log  # noqa: E402
from lib.metadata_provider import MetadataProvider, ProviderError, error_status  # noqa: E402
from lib.provider_config import ConfigError, load  # noqa: E402

VERSION = "1.0.0"
MAX_BODY = 64 * 1024            # bytes of a match request body; PMS sends well under 1 KiB
WAITRESS_MAX_BODY = 1024 * 1024  # bytes; beyond this Waitress itself refuses the request (413)

logger = logging.getLogger("plexsync.provider")
app = bottle.Bottle()
app.uninstall("json")  # answers_json below renders JSON itself, errors included


def provider() -> MetadataProvider:
    return app.config["plexsync.provider"]


def json_response(body: dict, status: int = 200) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(json.dumps(body, ensure_ascii=False), status,
                               {"Content-Type": "application/json; charset=utf-8"})


def error_response(status: int, message: str) -> bottle.HTTPResponse:
    return json_response({"error": log.redact(message), "status": status}, status)


def answers_json(callback):
    """Route plugin: a dict becomes a JSON answer, a known error a JSON error with its status,
    anything else a JSON 500 without a traceback (which goes, redacted, to the log)."""
    def wrapper(*args, **kwargs):
        try:
            out = callback(*args, **kwargs)
        except bottle.HTTPResponse:
            raise
        except Exception as exc:
            known = error_status(exc)
            if known is None:
                logger.exception("%s %s failed", bottle.request.method, bottle.request.path)
                return error_response(500, f"internal error ({type(exc).__name__}); see the provider's log")
            if known[0] >= 500:
                logger.warning("%s %s: %s", bottle.request.method, bottle.request.path, known[1])
            return error_response(*known)
        return json_response(out) if isinstance(out, dict) else out
    return wrapper


def default_error(error: bottle.HTTPError) -> str:
    """Bottle's own errors (unknown route 404, wrong method 405) as JSON instead of HTML."""
    bottle.response.content_type = "application/json; charset=utf-8"
    known = {404: "no such route", 405: f"method {bottle.request.method} not allowed here"}
    message = known.get(error.status_code, str(error.body or error.status_line))
    return json.dumps({"error": message, "status": error.status_code})


app.install(answers_json)
app.default_error_handler = default_error


def base_url() -> str:
    """The prefix of image URLs: PLEXSYNC_PUBLIC_URL, else how this request reached us."""
    parts = bottle.request.urlparts
    return provider().config.public_url or f"{parts.scheme}://{parts.netloc}"


def query() -> dict:
    return dict(bottle.request.query.decode())


@app.get("/")
def manifest():
    return provider().manifest()


@app.post("/library/metadata/matches")
def match():
    length = bottle.request.content_length
    if length > MAX_BODY:
        raise ProviderError(413, f"match body of {length} bytes is over the {MAX_BODY}-byte limit")
    return provider().match(bottle.request.body.read(MAX_BODY + 1), query(), base_url())


@app.get("/library/metadata/<key>")
def metadata(key):
    return provider().metadata(key, base_url())


@app.get("/library/metadata/<key>/images")
def images(key):
    return provider().images(key, base_url())


@app.get("/library/metadata/<key>/extras")
def extras(key):
    return provider().extras(key)


@app.get("/img/<kind>/<object_id>")
def image(kind, object_id):
    data, mime = provider().image(kind, object_id)
    return bottle.HTTPResponse(data, 200, {"Content-Type": mime, "Cache-Control": "public, max-age=3600",
                                           "X-Content-Type-Options": "nosniff"})


@app.get("/gaps")
def gaps():
    return provider().gap_report(query())


@app.post("/gaps/scan")
def scan():
    return json_response(provider().request_scan(), 202)


@app.get("/health")
def health():
    return provider().health()


class _Redact(logging.Filter):
    """Every log record, whoever writes it, passes lib/log.py's redaction (tokens, API keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = log.redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = log.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redact())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def fail(problems) -> int:
    for problem in problems:
        print(f"plexsync provider: {log.redact(problem)}", file=sys.stderr)
    return 2


def _stop(signum, frame):
    raise SystemExit(0)  # Waitress catches it, stops its threads and returns from serve()


def main() -> int:
    try:
        config = load(os.environ, HERE)
    except ConfigError as exc:
        return fail(exc.problems)
    configure_logging(config.log_level)
    try:
        os.makedirs(config.data_dir, exist_ok=True)
    except OSError as exc:
        return fail([f"PLEXSYNC_DATA_DIR: cannot create {config.data_dir}: {exc.strerror}"])
    from requests.adapters import HTTPAdapter
    import waitress

    from lib.plex import configure_plexapi
    from lib.stash import StashClient

    configure_plexapi(config.data_dir)
    stash = StashClient.from_url(config.stash_url, config.stash_api_key, timeout=(3.0, config.stash_timeout))
    stash.session.mount(stash.url, HTTPAdapter(pool_maxsize=config.threads))  # one connection per thread
    service = MetadataProvider(config, stash, VERSION)
    problems = service.check_paths()
    if problems:
        return fail(f"PLEXSYNC_PATH_MAP: {p}" for p in problems)
    app.config["plexsync.provider"] = service
    signal.signal(signal.SIGTERM, _stop)
    service.scanner.start()
    logger.info("PlexSync provider %s on %s:%d, Stash %s, Plex %s, roots %s, gap scans %s", VERSION, config.host,
                config.port, config.stash_url, config.plex_url or "not configured", service.roots() or "unknown",
                config.gap_schedule)
    try:
        waitress.serve(app, host=config.host, port=config.port, threads=config.threads, ident="PlexSync",
                       max_request_body_size=WAITRESS_MAX_BODY, channel_timeout=60)
    finally:
        service.scanner.stop()
        logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
