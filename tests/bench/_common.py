"""Shared helpers of the PlexSync benchmarks (tests/bench/*.py); not a benchmark itself.

Paths: puts tests/ and the project root on ``sys.path`` (like tests/conftest.py), so the fakes,
the harness and ``lib`` import the same way in every benchmark script.
"""
from __future__ import annotations

import json
import os
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

BENCH = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(BENCH)
ROOT = os.path.dirname(TESTS)
for _p in (TESTS, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

PLEX_TOKEN = "plex-BENCH-token-8472"
API_KEY = "stash-BENCH-apikey-1937"
COOKIE = "stash-BENCH-cookie-5521"


def plugin_env() -> dict:
    """The environment harness.run_plugin gives plexsync.py (PYTHONPATH = the project's parent)."""
    return dict(os.environ, PYTHONPATH=os.path.dirname(ROOT))


class ChildRun(NamedTuple):
    seconds: float            # wall time: spawn until exit *and* EOF on stdout/stderr (what Stash waits for)
    stdout: bytes
    stderr: bytes
    returncode: int
    maxrss_kib: int | None    # the child's own peak RSS in KiB; only with run_child(measure_rss=True)
    cpu_seconds: float        # the child's user + system CPU time


# Started as ``python -I -S -c RUSAGE_HELPER <result file> <argv...>``: forks, execs argv in the child
# (which inherits the pipes and the environment), reaps it with wait4 and writes its ru_maxrss and
# CPU seconds to the result file. Needed because Linux charges a process, at exec, with the peak RSS of
# the address space it replaced: a child spawned straight from this (large) benchmark process reports
# *this* process's RSS as its ru_maxrss (a bare ``python -c pass`` shows 200 MiB under a 200 MiB
# parent). Spawned from this small helper, the floor is the helper's few MiB.
RUSAGE_HELPER = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write("%d %.6f" % (ru.ru_maxrss, ru.ru_utime + ru.ru_stime))
os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_child(argv: list, stdin: bytes = b"", env: dict | None = None, cwd: str = "/",
              timeout: float = 3600, measure_rss: bool = False) -> ChildRun:
    """Run ``argv`` with pipes on stdin/stdout/stderr, feed ``stdin``, read both outputs to EOF and
    reap the child with ``os.wait4`` for its own CPU time.

    ``measure_rss``: run it under :data:`RUSAGE_HELPER` to get its true peak RSS (costs the helper's
    start-up, ~10 ms, in ``seconds``: use it for long runs, not for start-up timings)."""
    result_path = None
    if measure_rss:
        fd, result_path = tempfile.mkstemp(prefix="plexsync-bench-rusage-")
        os.close(fd)
        argv = [sys.executable, "-I", "-S", "-c", RUSAGE_HELPER, result_path] + list(argv)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=cwd)
    out, err = bytearray(), bytearray()
    try:
        if stdin:
            proc.stdin.write(stdin)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    deadline = start + timeout
    while sel.get_map():
        left = deadline - time.perf_counter()
        if left <= 0:
            proc.kill()
            raise TimeoutError(f"{argv[:2]} ran longer than {timeout} s")
        for key, _ in sel.select(min(left, 1.0)):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if chunk:
                key.data.extend(chunk)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
    sel.close()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    maxrss, cpu = None, usage.ru_utime + usage.ru_stime
    if result_path:
        try:
            with open(result_path) as f:
                text = f.read().split()
            maxrss, cpu = int(text[0]), float(text[1])
        except (OSError, ValueError, IndexError):
            pass
        finally:
            os.unlink(result_path)
    return ChildRun(seconds, bytes(out), bytes(err), proc.returncode, maxrss, cpu)


def parse_plugin_output(run: ChildRun) -> tuple:
    """(output, error, unframed stderr lines) of a plexsync.py run, read the way Stash reads it."""
    try:
        obj = json.loads(run.stdout.decode())
    except ValueError:
        return None, f"stdout is not one JSON object: {run.stdout[:200]!r}", []
    unframed = [line for line in run.stderr.decode(errors="replace").splitlines()
                if not (len(line) >= 2 and line[0] == "\x01" and line[2:3] == "\x02")]
    return obj.get("output"), obj.get("error"), unframed


def self_cpu() -> float:
    """CPU seconds used so far by this process (the fakes' server threads live here)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def pct(values, q: float) -> float:
    """The q-quantile (0..1) of ``values``, linear interpolation (numpy's default)."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list, rows: list) -> str:
    """A plain aligned text table (first column left-aligned, the others right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r):
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), line] + [fmt(r) for r in cells[1:]])


def machine_note() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs, "
            f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def result_line(data: dict) -> str:
    return "RESULT " + json.dumps(data, sort_keys=True, separators=(",", ":"))
