"""The plugin's settings: names, types, defaults, coercion and validation.

Stash stores only the values a user has set and has no defaults in the manifest
(reference/stash-plugin-protocol.md §5): ``configuration { plugins(include: ["plexsync"]) }`` returns
``{"plexsync": {...}}`` with JSON-typed values, or omits the id when nothing is stored. Every setting
therefore has its default here, and this table is the one source for ``plexsync.yml`` and README.md
(a test checks all three agree).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from lib.paths import PathMapper, PathRuleError, parse_path_map

PLUGIN_ID = "plexsync"


class Setting(NamedTuple):
    name: str
    type: str  # Stash's setting type: STRING, NUMBER or BOOLEAN
    default: Any
    display: str
    description: str


SETTINGS = [
    Setting("plex_url", "STRING", "", "Plex URL",
            "Required. Address of Plex Media Server, e.g. http://192.168.1.10:32400"),
    Setting("plex_token", "STRING", "", "Plex token",
            "Required. X-Plex-Token of a Plex admin account."),
    Setting("plex_libraries", "STRING", "", "Plex libraries",
            "Comma-separated Plex library (section) titles to sync into. Empty: every movie library."),
    Setting("path_map", "STRING", "", "Path mapping",
            "Rules turning Stash file paths into Plex file paths, e.g. "
            "'media: /data/{rest} => /media/{rest}'. Several rules: separate with ';'. "
            "Empty: both see the same paths. See README."),
    Setting("sync_title", "BOOLEAN", True, "Sync title", "Default on."),
    Setting("sync_summary", "BOOLEAN", True, "Sync summary", "Scene details. Default on."),
    Setting("sync_date", "BOOLEAN", True, "Sync date", "Release date and year. Default on."),
    Setting("sync_studio", "BOOLEAN", True, "Sync studio", "Default on."),
    Setting("sync_performers", "BOOLEAN", True, "Sync performers", "As Plex actors. Default on."),
    Setting("sync_tags", "BOOLEAN", True, "Sync tags", "As Plex genres. Default on."),
    Setting("sync_collection", "BOOLEAN", True, "Studio collection",
            "Put each item in a Plex collection named after its studio. Default on."),
    Setting("sync_poster", "BOOLEAN", True, "Sync poster",
            "Upload the scene cover as the Plex poster when it changed. Default on."),
    Setting("sync_background", "BOOLEAN", False, "Sync background",
            "Upload the scene cover as the Plex background art too. Default off."),
    Setting("preserve_plex_edits", "BOOLEAN", False, "Preserve Plex edits",
            "Never remove performers, tags or collections from Plex and never overwrite a field "
            "changed in Plex since the last sync. Default off: Plex mirrors Stash exactly."),
    Setting("lock_fields", "BOOLEAN", True, "Lock synced fields",
            "Lock every field written so Plex's own metadata refresh cannot overwrite it. Default on."),
    Setting("max_retries", "NUMBER", 5, "Max retries",
            "Attempts after a temporary failure before a job goes to the dead letter queue. Default 5."),
    Setting("plex_connect_timeout", "NUMBER", 5, "Plex connect timeout",
            "Seconds to wait for a connection to Plex. Default 5."),
    Setting("plex_read_timeout", "NUMBER", 30, "Plex read timeout",
            "Seconds to wait for Plex to answer. Default 30."),
    Setting("breaker_threshold", "NUMBER", 5, "Circuit breaker threshold",
            "Temporary Plex failures in a row that pause sync until Plex answers a health check. "
            "Default 5."),
    Setting("recovery_rates", "STRING", "5,10,20", "Recovery ramp (scenes/s)",
            "After an outage, sync at these rates, one step each, then at full speed. Empty: full "
            "speed at once. Default 5,10,20."),
    Setting("recovery_step_seconds", "NUMBER", 60, "Recovery ramp step (seconds)",
            "How long each step of the recovery ramp lasts. Default 60."),
    Setting("reconcile_interval", "STRING", "never", "Automatic reconciliation",
            "How often PlexSync compares all of Stash with Plex by itself and queues repairs: never, "
            "hourly, daily or weekly. Default never (the first run after Stash starts still checks "
            "the last 24 hours)."),
    Setting("reconcile_scope", "STRING", "all", "Automatic reconciliation scope",
            "Which scenes the automatic reconciliation compares: all, 24h or 7days (by Stash's "
            "updated_at). Default all."),
    Setting("plex_scan_wait_hours", "NUMBER", 24, "Wait for Plex scan (hours)",
            "How long a scene whose file Plex has not indexed yet stays queued before it goes to "
            "the dead letter queue. Default 24."),
    Setting("plex_request_scan", "BOOLEAN", True, "Ask Plex to scan",
            "When Plex does not know a scene's file yet, ask it to scan that folder. Default on."),
    Setting("partial_library", "BOOLEAN", False, "Plex holds only part of Stash",
            "Record scenes whose file Plex does not have as unmatched instead of retrying. Default off."),
    Setting("allow_weak_match", "BOOLEAN", False, "Apply weak matches",
            "Sync to a Plex item found by file name only (not by full mapped path). Default off: "
            "weak matches are only logged for review."),
]

DEFAULTS = {s.name: s.default for s in SETTINGS}
INTERVALS = {"never": None, "hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}  # seconds
_TYPES = {s.name: s.type for s in SETTINGS}
_LIMITS = {  # inclusive bounds of NUMBER settings
    "max_retries": (0, 100),
    "plex_connect_timeout": (0.1, 600),
    "plex_read_timeout": (0.1, 3600),
    "plex_scan_wait_hours": (0, 24 * 365),
    "breaker_threshold": (1, 1000),
    "recovery_step_seconds": (0, 3600),
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


class SettingsError(ValueError):
    """Settings that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class Settings(dict):
    """Validated settings: a dict of every setting name to its typed value, plus ``path_mapper``
    (a :class:`lib.paths.PathMapper`), ``libraries`` (list of section titles, empty = all),
    ``rates`` (recovery ramp, jobs per second) and ``raw`` (the values Stash gave)."""

    path_mapper: PathMapper
    libraries: list
    rates: tuple
    raw: dict


def load(raw: dict | None) -> Settings:
    """Build :class:`Settings` from the map Stash returns for the plugin (values the user set).

    Unknown keys are ignored (Stash keeps values of settings a newer version removed). Raises
    :class:`SettingsError` listing every problem, each naming the setting.
    """
    raw = raw or {}
    problems: list[str] = []
    out = Settings(DEFAULTS)
    for name, value in raw.items():
        if name not in _TYPES or value is None:
            continue
        kind = _TYPES[name]
        try:
            out[name] = _coerce(kind, value)
        except ValueError:
            problems.append(f"setting {name}: expected {kind.lower()}, got {value!r:.60}")
            continue
        if name in _LIMITS:
            low, high = _LIMITS[name]
            if not low <= out[name] <= high:
                problems.append(f"setting {name}: {out[name]} is outside {low}..{high}")
    out["max_retries"] = int(out["max_retries"])
    out["breaker_threshold"] = int(out["breaker_threshold"])
    out.raw = dict(raw)
    try:
        out.rates = tuple(float(r) for r in out["recovery_rates"].replace(" ", "").split(",") if r)
        if any(not 0 < r < 1e6 for r in out.rates):
            raise ValueError
    except ValueError:
        out.rates = ()
        problems.append(f"setting recovery_rates: expected positive numbers separated by commas, "
                        f"got {out['recovery_rates']!r:.60}")
    url = out["plex_url"]
    if not url:
        problems.append("setting plex_url: required (e.g. http://192.168.1.10:32400)")
    elif not url.lower().startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        problems.append(f"setting plex_url: must start with http:// or https://, got {url!r:.80}")
    out["plex_url"] = url.rstrip("/")
    if not out["plex_token"]:
        problems.append("setting plex_token: required (the X-Plex-Token of a Plex admin)")
    choices = {"reconcile_interval": INTERVALS, "reconcile_scope": ("all", "24h", "7days")}
    for name, allowed in choices.items():
        out[name] = out[name].lower() or DEFAULTS[name]
        if out[name] not in allowed:
            problems.append(f"setting {name}: expected one of {', '.join(allowed)}, got {out[name]!r:.40}")
    out.libraries = [t.strip() for t in out["plex_libraries"].split(",") if t.strip()]
    try:
        out.path_mapper = parse_path_map(out["path_map"])
    except PathRuleError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SettingsError(problems)
    return out


def _coerce(kind: str, value: Any) -> Any:
    if kind == "STRING":
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value).strip()
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value) if not isinstance(value, int) else value
