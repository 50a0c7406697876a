"""Runs provider.py as a real process on loopback, the way a user or a container starts it.

``ProviderProcess(env).start()`` launches ``python provider.py`` with only the ``PLEXSYNC_*``
variables given (the caller's own are dropped), waits until ``GET /health`` answers, and keeps the
process's stderr (its log) in a file; ``stop()`` sends SIGTERM and waits, as Docker does.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = os.path.join(ROOT, "provider.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(values: dict) -> dict:
    """The process environment without the caller's PLEXSYNC_* variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    env.update({k: str(v) for k, v in values.items() if v is not None})
    return env


def run_once(values: dict, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run provider.py expecting it to stop by itself (a start-up failure); text output."""
    values = dict({"PLEXSYNC_HOST": "127.0.0.1", "PLEXSYNC_PORT": free_port()}, **values)
    return subprocess.run([sys.executable, ENTRY], env=clean_env(values), capture_output=True, text=True,
                          timeout=timeout, cwd="/")


class ProviderProcess:
    """provider.py on 127.0.0.1 with ``values`` as its PLEXSYNC_* settings (port and data folder
    chosen here unless given)."""

    def __init__(self, values: dict):
        self.port = int(values.get("PLEXSYNC_PORT") or free_port())
        self.data_dir = values.get("PLEXSYNC_DATA_DIR") or tempfile.mkdtemp(prefix="plexsync-provider-")
        self.values = dict({"PLEXSYNC_HOST": "127.0.0.1", "PLEXSYNC_LOG_LEVEL": "debug"}, **values,
                           PLEXSYNC_PORT=self.port, PLEXSYNC_DATA_DIR=self.data_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="provider-log-", suffix=".txt", delete=False)

    def start(self, timeout: float = 30) -> "ProviderProcess":
        self.proc = subprocess.Popen([sys.executable, ENTRY], env=clean_env(self.values), stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd="/")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"provider.py exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(self.url + "/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"provider.py did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then wait; returns the exit status (SIGKILL after ``timeout`` s, status -9)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "ProviderProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
