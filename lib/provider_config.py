"""The provider's configuration: names, defaults, parsing and validation, in one table.

Values come from environment variables and, optionally, from a file named by ``PLEXSYNC_CONFIG``
with ``NAME=value`` lines (blank lines and ``#`` comments ignored; the format of Docker's
``env_file``). The environment wins over the file. An unknown ``PLEXSYNC_*`` name is an error, so a
typo cannot silently leave a default in place. :data:`OPTIONS` is the one source for docs/provider.md
(a test checks both agree).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from lib import log
from lib.gap_scanner import SCHEDULES
from lib.paths import PathMapper, PathRuleError, parse_path_map

PREFIX = "PLEXSYNC_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class Option(NamedTuple):
    name: str
    default: str
    description: str


OPTIONS = [
    Option("PLEXSYNC_CONFIG", "", "File with `NAME=value` lines setting any of these names; the "
           "environment wins over it. Empty: environment only."),
    Option("PLEXSYNC_STASH_URL", "http://localhost:9999", "Stash's address, `http(s)://host:port` (no path)."),
    Option("PLEXSYNC_STASH_API_KEY", "", "Stash's API key (Settings → Security). Empty: a Stash without "
           "credentials."),
    Option("PLEXSYNC_STASH_TIMEOUT", "10", "Seconds to wait for Stash to answer (0.5–120); connecting "
           "waits at most 3 s."),
    Option("PLEXSYNC_PLEX_URL", "", "Plex Media Server's address. Optional: used to discover the "
           "libraries' root folders and for gap scans. Empty: no Plex."),
    Option("PLEXSYNC_PLEX_TOKEN", "", "X-Plex-Token of a Plex admin. Required with `PLEXSYNC_PLEX_URL`."),
    Option("PLEXSYNC_PLEX_LIBRARIES", "", "Comma-separated titles of the Plex movie libraries that use the "
           "provider. Empty: every movie library."),
    Option("PLEXSYNC_PLEX_ROOTS", "", "The libraries' root folders as Plex sees them, separated by `;` or "
           "newlines. Empty: read from Plex (`PLEXSYNC_PLEX_URL`)."),
    Option("PLEXSYNC_PATH_MAP", "", "Path rules between Stash and Plex, the syntax of the plugin's `path_map` "
           "(README). Empty: both see the same paths."),
    Option("PLEXSYNC_HOST", "0.0.0.0", "Address to listen on."),
    Option("PLEXSYNC_PORT", "8000", "Port to listen on."),
    Option("PLEXSYNC_PUBLIC_URL", "", "The provider's address as Plex reaches it, for image URLs, e.g. "
           "`http://192.168.1.20:8000`. Empty: the scheme and `Host` of each request."),
    Option("PLEXSYNC_THREADS", "32", "Requests served at once (1–512)."),
    Option("PLEXSYNC_CACHE_SECONDS", "300", "How long Stash's answers are reused (0–86400; 0: never)."),
    Option("PLEXSYNC_GAP_SCHEDULE", "", "`hourly`, `daily`, `weekly` or `manual`. Empty: `daily` with "
           "Plex, `manual` without (a scheduled scan needs Plex)."),
    Option("PLEXSYNC_DATA_DIR", "data", "Folder for the last gap report and Plex's client identifier, "
           "relative to provider.py unless absolute."),
    Option("PLEXSYNC_LOG_LEVEL", "info", "`debug`, `info`, `warning` or `error`."),
]
NAMES = {o.name for o in OPTIONS}
SECRETS = ("PLEXSYNC_STASH_API_KEY", "PLEXSYNC_PLEX_TOKEN")


class ConfigError(ValueError):
    """Configuration that cannot be used; ``problems`` holds one line per problem, each starting
    with the name of the setting."""

    def __init__(self, problems: List[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ProviderConfig:
    """Validated configuration (see :data:`OPTIONS`). Times are seconds."""

    stash_url: str
    stash_api_key: str
    stash_timeout: float
    plex_url: str
    plex_token: str
    plex_libraries: Tuple[str, ...]
    plex_roots: Tuple[str, ...]
    path_map: PathMapper
    host: str
    port: int
    public_url: str
    threads: int
    cache_seconds: float
    gap_schedule: str
    data_dir: str
    log_level: str

    @property
    def gap_interval(self) -> Optional[float]:
        """Seconds between scheduled gap scans; None for ``manual``."""
        return SCHEDULES[self.gap_schedule]


def read_file(path: str) -> Dict[str, str]:
    """``NAME=value`` lines of ``path``. Raises ConfigError naming the line that is not one."""
    values: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"PLEXSYNC_CONFIG: cannot read {path}: {exc.__class__.__name__}"]) from None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, equals, value = text.partition("=")
        if not equals or not name.strip():
            raise ConfigError([f"PLEXSYNC_CONFIG: line {number} of {path} is not NAME=value"])
        values[name.strip()] = value.strip()
    return values


def load(environ: Mapping[str, str], base_dir: str) -> ProviderConfig:
    """Build the configuration from ``environ`` (and the file it names); ``base_dir`` is where a
    relative ``PLEXSYNC_DATA_DIR`` lives. Secrets are registered with lib/log.py at once. Raises
    :class:`ConfigError` listing every problem, one line each, naming the setting."""
    raw = {k: v for k, v in environ.items() if k.startswith(PREFIX)}
    if raw.get("PLEXSYNC_CONFIG", "").strip():
        from_file = read_file(raw["PLEXSYNC_CONFIG"].strip())
        raw = dict(from_file, **raw)
    for name in SECRETS:
        log.add_secret(raw.get(name, "").strip())
    problems = [f"{name}: unknown setting (known: see docs/provider.md)" for name in sorted(raw) if name not in NAMES]
    values = {o.name: raw.get(o.name, o.default).strip() for o in OPTIONS}

    def number(name: str, low: float, high: float, whole: bool = False) -> float:
        text = values[name]
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high or value != value:
            kind = "a whole number" if whole else "a number"
            problems.append(f"{name}: expected {kind} from {low:g} to {high:g}, got {text!r:.40}")
            return low
        return value

    stash_url = _url("PLEXSYNC_STASH_URL", values["PLEXSYNC_STASH_URL"], problems, allow_path=False)
    plex_url = values["PLEXSYNC_PLEX_URL"]
    if plex_url:
        plex_url = _url("PLEXSYNC_PLEX_URL", plex_url, problems, allow_path=True)
        if not values["PLEXSYNC_PLEX_TOKEN"]:
            problems.append("PLEXSYNC_PLEX_TOKEN: required with PLEXSYNC_PLEX_URL (the X-Plex-Token of a Plex admin)")
    else:
        for name in ("PLEXSYNC_PLEX_TOKEN", "PLEXSYNC_PLEX_LIBRARIES"):
            if values[name]:
                problems.append(f"{name}: set, but PLEXSYNC_PLEX_URL is not, so it would do nothing")
    roots = tuple(r.strip() for r in re.split(r"[;\n]", values["PLEXSYNC_PLEX_ROOTS"]) if r.strip())
    for root in roots:
        if not (root.startswith(("/", "\\\\")) or re.match(r"[A-Za-z]:[\\/]", root)):
            problems.append(f"PLEXSYNC_PLEX_ROOTS: {root!r:.80} is not an absolute folder")
    try:
        mapper = parse_path_map(values["PLEXSYNC_PATH_MAP"])
    except PathRuleError as exc:
        problems.extend(f"PLEXSYNC_PATH_MAP: {p}" for p in exc.problems)
        mapper = PathMapper()
    public_url = values["PLEXSYNC_PUBLIC_URL"]
    if public_url:
        public_url = _url("PLEXSYNC_PUBLIC_URL", public_url, problems, allow_path=True)
    schedule = values["PLEXSYNC_GAP_SCHEDULE"].lower() or ("daily" if plex_url else "manual")
    if schedule not in SCHEDULES:
        problems.append(f"PLEXSYNC_GAP_SCHEDULE: expected one of {', '.join(SCHEDULES)}, got {schedule!r:.40}")
        schedule = "manual"
    elif schedule != "manual" and not plex_url:
        problems.append(f"PLEXSYNC_GAP_SCHEDULE: {schedule} scans need Plex; set PLEXSYNC_PLEX_URL or use manual")
    level = values["PLEXSYNC_LOG_LEVEL"].lower()
    if level not in LOG_LEVELS:
        problems.append(f"PLEXSYNC_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {level!r:.40}")
    data_dir = values["PLEXSYNC_DATA_DIR"] or "data"
    config = ProviderConfig(
        stash_url=stash_url,
        stash_api_key=values["PLEXSYNC_STASH_API_KEY"],
        stash_timeout=number("PLEXSYNC_STASH_TIMEOUT", 0.5, 120),
        plex_url=plex_url,
        plex_token=values["PLEXSYNC_PLEX_TOKEN"],
        plex_libraries=tuple(t.strip() for t in values["PLEXSYNC_PLEX_LIBRARIES"].split(",") if t.strip()),
        plex_roots=roots,
        path_map=mapper,
        host=values["PLEXSYNC_HOST"] or "0.0.0.0",
        port=int(number("PLEXSYNC_PORT", 1, 65535, whole=True)),
        public_url=public_url,
        threads=int(number("PLEXSYNC_THREADS", 1, 512, whole=True)),
        cache_seconds=number("PLEXSYNC_CACHE_SECONDS", 0, 86400),
        gap_schedule=schedule,
        data_dir=os.path.join(base_dir, data_dir),
        log_level=level,
    )
    if problems:
        raise ConfigError(problems)
    return config


def _url(name: str, value: str, problems: List[str], allow_path: bool) -> str:
    """``value`` without a trailing ``/`` when it is an http(s) URL with a host and no user info,
    query or fragment (nor path, unless ``allow_path``); else a problem is added."""
    value = value.rstrip("/")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        parts, port = None, None
    shape = "http(s)://host:port" + ("[/path]" if allow_path else "")
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{name}: expected {shape}, got {log.redact(value)!r:.80}")
    elif parts.username or parts.password or parts.query or parts.fragment or (parts.path and not allow_path):
        problems.append(f"{name}: expected {shape} without user, path, query or fragment")
    elif port == 0:
        problems.append(f"{name}: port 0 is not a port")
    return value
