"""Logging in Stash's plugin protocol, with secrets redacted.

Stash reads a plugin's stderr line by line: ``"\\x01" + level + "\\x02" + message``, levels
``t d i w e``, and ``"\\x01p\\x02" + "0.42"`` for task progress; unprefixed lines become errors and a
line over 64 KiB stops Stash's reader (see reference/stash-plugin-protocol.md §4). The detached
drainer has no Stash to talk to, so it writes the same messages to a size-capped file in the data
folder instead.

Every message passes through :func:`redact` first: the Plex token, the Stash API key and the session
cookie are registered with :func:`add_secret` as soon as they are read and never reach a log line.
"""
from __future__ import annotations

import os
import sys
import time

MAX_LINE = 60000          # characters; Stash's scanner stops at 64 KiB per line
LOG_FILE_MAX = 1_000_000  # bytes; the drainer's log file is rotated once it is larger
_LEVELS = {"t": "TRACE", "d": "DEBUG", "i": "INFO", "w": "WARN", "e": "ERROR"}

_secrets: set[str] = set()
_sink = None  # None = Stash's stderr framing; else a path of the drainer's log file


def add_secret(value: object) -> None:
    """Remember a secret (token, API key, cookie value) so that no later log line shows it."""
    text = str(value or "")
    if len(text) >= 4:
        _secrets.add(text)


def redact(text: object) -> str:
    """Return ``str(text)`` with every registered secret replaced by ``***``."""
    out = str(text)
    for secret in _secrets:
        if secret in out:
            out = out.replace(secret, "***")
    return out


def to_file(path: str) -> None:
    """Send later messages to the log file ``path`` (the detached drainer's log)."""
    global _sink
    _sink = path


def _write(level: str, message: object) -> None:
    lines = redact(message).splitlines() or [""]
    if _sink is None:
        try:
            for line in lines:
                sys.stderr.write(f"\x01{level}\x02{line[:MAX_LINE]}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # Stash stopped reading; nothing useful left to do with a log line
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    text = "".join(f"{stamp} {_LEVELS[level]:5} {line[:MAX_LINE]}\n" for line in lines)
    try:
        if os.path.getsize(_sink) > LOG_FILE_MAX:
            os.replace(_sink, _sink + ".1")
    except OSError:
        pass
    try:
        with open(_sink, "a", encoding="utf-8", errors="replace") as f:
            f.write(text)
    except OSError:
        pass


def debug(message: object) -> None:
    _write("d", message)


def info(message: object) -> None:
    _write("i", message)


def warning(message: object) -> None:
    _write("w", message)


def error(message: object) -> None:
    _write("e", message)


def progress(fraction: float) -> None:
    """Report task progress to Stash (0.0 to 1.0). Stash ignores it for hooks; no-op in the drainer."""
    if _sink is None:
        try:
            sys.stderr.write(f"\x01p\x02{min(max(float(fraction), 0.0), 1.0):.4f}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
