"""Benchmark: one hook-style enqueue into an empty queue vs a queue holding 100,000 jobs.

Command (from the project root)::

    .venv/bin/python tests/bench/enqueue.py [--jobs 100000] [--rounds 5] [--per-round 2000] [--hook-like 200] [--dir DIR]

Target: the median single enqueue into the big queue takes at most 1.5x the median into the empty
one (lib/queue.py promises an indexed upsert that "costs the same with 100,000 queued jobs as with
none"). Not a test: it prints figures and never asserts timings; it exits 1 only when the queue
loses or duplicates a job.

What is timed, per round, sizes alternating (which goes first swaps every round):
- ``enqueue``: ``Queue.enqueue([id], "hook")`` on an open Queue, one transaction per call as the
  hook does, ``--per-round`` fresh scene ids each round. The big queue holds the even ids
  2..2*jobs; the fresh ids are odd ids drawn at random from that range (so they land inside the
  primary-key B-tree, as an edit of an old scene does), the same ids for both sizes. After each
  round the fresh rows are deleted again (untimed), so the sizes stay ~0 and ~``--jobs``.
- ``hook-like``: what one hook process does with the queue, ``--hook-like`` times per round: a new
  ``Queue(path)`` (connect, WAL pragmas, schema check), ``enqueue([id], "hook")``,
  ``get_meta("halt_reason")``, ``close()``. Measured twice: with no other connection open (the
  closing connection checkpoints the WAL, as when no drainer runs) and with another connection held
  open, as a running drainer does.
The databases live in a temp dir (``--dir`` to choose the file system).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import _common as c

from lib.queue import Queue  # noqa: E402  (paths set by _common)

TARGET_RATIO = 1.5


def fs_type(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, timeout=10).stdout.split("\n")[1]
        return out.split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def job_count(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        db.close()


def delete_ids(path: str, ids: list) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("DELETE FROM jobs WHERE scene_id = ?", [(i,) for i in ids])
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs already in the big queue (default 100000)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--per-round", type=int, default=2000, help="single enqueues per size per round (default 2000)")
    ap.add_argument("--hook-like", type=int, default=200,
                    help="open+enqueue+get_meta+close per size per round and variant (default 200)")
    ap.add_argument("--dir", default=None, help="where the databases go (default: a new temp dir)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="plexsync-bench-enqueue-", dir=args.dir)
    failures: list[str] = []
    try:
        paths = {"empty": os.path.join(tmp, "empty", "queue.db"), "big": os.path.join(tmp, "big", "queue.db")}
        t0 = time.perf_counter()
        for name, path in paths.items():
            q = Queue(path)
            if name == "big":
                q.enqueue(range(2, 2 * args.jobs + 1, 2), "sync_all")
            q.close()
        fill_s = time.perf_counter() - t0
        sizes = {name: job_count(path) for name, path in paths.items()}
        print(f"# PlexSync enqueue benchmark  ({c.machine_note()}; sqlite {sqlite3.sqlite_version})")
        print(f"# databases in {tmp} ({fs_type(tmp)}); big queue filled with {sizes['big']} jobs in {fill_s:.1f} s; "
              f"db size {os.path.getsize(paths['big']) / 1e6:.1f} MB")

        rng = random.Random(7)
        odd = list(range(1, 2 * max(args.jobs, 1), 2))
        per_round_ids = args.per_round + 2 * args.hook_like
        need = per_round_ids * (args.rounds + 1)  # + the warm-up round
        if need > len(odd):  # a small --jobs: take fresh ids above the queued range too
            odd = odd + list(range(2 * args.jobs + 1, 2 * args.jobs + 1 + need))
        fresh = rng.sample(odd, need)
        times = {(name, kind): [] for name in paths for kind in ("enqueue", "hook_alone", "hook_drainer")}
        round_medians = {name: [] for name in paths}

        def one_round(r: int, record: bool) -> None:
            ids = fresh[r * per_round_ids:(r + 1) * per_round_ids]
            enq_ids = ids[:args.per_round]
            alone_ids = ids[args.per_round:args.per_round + args.hook_like]
            held_ids = ids[args.per_round + args.hook_like:]
            order = list(paths) if r % 2 == 0 else list(reversed(list(paths)))
            for name in order:
                path = paths[name]
                # hook-style enqueue on an open queue: one transaction per call
                q = Queue(path)
                samples = []
                for sid in enq_ids:
                    t = time.perf_counter_ns()
                    q.enqueue([sid], "hook")
                    samples.append(time.perf_counter_ns() - t)
                q.close()
                # one hook process: open, enqueue, read halt_reason, close; alone, then with a
                # connection held open elsewhere (a running drainer)
                alone = []
                for sid in alone_ids:
                    t = time.perf_counter_ns()
                    hq = Queue(path)
                    hq.enqueue([sid], "hook")
                    hq.get_meta("halt_reason")
                    hq.close()
                    alone.append(time.perf_counter_ns() - t)
                drainer = Queue(path)
                drainer.next_due()
                held = []
                for sid in held_ids:
                    t = time.perf_counter_ns()
                    hq = Queue(path)
                    hq.enqueue([sid], "hook")
                    hq.get_meta("halt_reason")
                    hq.close()
                    held.append(time.perf_counter_ns() - t)
                drainer.close()
                got = job_count(path)
                want = sizes[name] + len(ids)
                if got != want:
                    failures.append(f"round {r} {name}: {got} jobs after enqueueing, expected {want}")
                delete_ids(path, ids)
                if record:
                    times[(name, "enqueue")].extend(samples)
                    times[(name, "hook_alone")].extend(alone)
                    times[(name, "hook_drainer")].extend(held)
                    round_medians[name].append(c.median(samples))

        one_round(args.rounds, record=False)  # warm-up with the spare ids
        for r in range(args.rounds):
            one_round(r, record=True)
        for name, path in paths.items():
            if job_count(path) != sizes[name]:
                failures.append(f"{name}: {job_count(path)} jobs at the end, expected {sizes[name]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    us = lambda ns: ns / 1000  # noqa: E731
    rows = []
    for kind, label in (("enqueue", "enqueue([id]) on an open Queue"),
                        ("hook_alone", "open+enqueue+get_meta+close, alone"),
                        ("hook_drainer", "open+enqueue+get_meta+close, drainer conn open")):
        e, b = times[("empty", kind)], times[("big", kind)]
        rows.append([label, f"{len(e)}", f"{us(c.median(e)):.1f}", f"{us(c.pct(e, 0.9)):.1f}",
                     f"{us(c.median(b)):.1f}", f"{us(c.pct(b, 0.9)):.1f}", f"{c.median(b) / c.median(e):.2f}"])
    print()
    print(f"{args.rounds} interleaved rounds after 1 warm-up; times in microseconds; big queue = {args.jobs} jobs")
    print(c.table(["operation", "n/size", "empty median", "empty p90", "big median", "big p90", "big/empty"], rows))
    ratio = c.median(times[("big", "enqueue")]) / c.median(times[("empty", "enqueue")])
    per_round = [b / e for b, e in zip(round_medians["big"], round_medians["empty"])]
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"enqueue median ratio big / empty = {ratio:.2f}  (target <= {TARGET_RATIO:g}: {verdict}); "
          f"per-round ratios: {', '.join(f'{x:.2f}' for x in per_round)}")
    if failures:
        print()
        print(f"FUNCTIONAL FAILURES ({len(failures)}):")
        for f in failures[:20]:
            print("  " + f)
    r1 = lambda v: round(v, 1)  # noqa: E731
    print(c.result_line({
        "bench": "enqueue", "jobs": args.jobs, "rounds": args.rounds, "per_round": args.per_round,
        "enqueue_empty_median_us": r1(us(c.median(times[("empty", "enqueue")]))),
        "enqueue_empty_p90_us": r1(us(c.pct(times[("empty", "enqueue")], 0.9))),
        "enqueue_big_median_us": r1(us(c.median(times[("big", "enqueue")]))),
        "enqueue_big_p90_us": r1(us(c.pct(times[("big", "enqueue")], 0.9))),
        "ratio_median": round(ratio, 3), "ratio_per_round": [round(x, 3) for x in per_round],
        "target_ratio": TARGET_RATIO, "target_met": ratio <= TARGET_RATIO,
        "hook_like_alone_empty_median_us": r1(us(c.median(times[("empty", "hook_alone")]))),
        "hook_like_alone_big_median_us": r1(us(c.median(times[("big", "hook_alone")]))),
        "hook_like_drainer_empty_median_us": r1(us(c.median(times[("empty", "hook_drainer")]))),
        "hook_like_drainer_big_median_us": r1(us(c.median(times[("big", "hook_drainer")]))),
        "failures": len(failures),
    }))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
