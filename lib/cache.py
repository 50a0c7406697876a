"""A small thread-safe cache whose entries expire: repeated lookups during a Plex scan stay cheap.

PMS asks the provider about every item of a library in a few seconds (a match, then the metadata,
then the extras, then the images: reference/plex-provider-protocol.md §1, §8), so the answers Stash
gave for a scene are kept for ``ttl`` seconds. Only positive answers go in: a file Stash did not
know a moment ago may be scanned now, and caching the miss would hide it (the negative-caching
lesson in reference/peer-lessons.md §2).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional


class TTLCache:
    """Least-recently-used mapping whose entries expire ``ttl`` seconds after they were put.

    ``max_entries`` bounds the number of entries; ``max_weight`` (optional) bounds the sum of
    ``weigh(value)`` over the entries (e.g. bytes of cached images), evicting the least recently
    used first. A ``ttl`` of 0 disables the cache (every ``get`` misses). Safe to share between
    threads.
    """

    def __init__(self, ttl: float, max_entries: int, max_weight: Optional[int] = None,
                 weigh: Callable[[Any], int] = lambda value: 1, clock: Callable[[], float] = time.monotonic):
        self.ttl = float(ttl)
        self.max_entries = int(max_entries)
        self.max_weight = max_weight
        self._weigh = weigh
        self._clock = clock
        self._lock = threading.Lock()
        self._data: "OrderedDict[Hashable, tuple]" = OrderedDict()  # key -> (expires, weight, value)
        self._weight = 0

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key``, or None when absent or expired."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return entry[2]

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` (never None) under ``key`` for ``ttl`` seconds; a value heavier than
        ``max_weight`` on its own is not stored."""
        if self.ttl <= 0 or value is None:
            return
        weight = self._weigh(value)
        if self.max_weight is not None and weight > self.max_weight:
            return
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (self._clock() + self.ttl, weight, value)
            self._weight += weight
            while len(self._data) > self.max_entries or (
                    self.max_weight is not None and self._weight > self.max_weight):
                self._drop(next(iter(self._data)))

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()
            self._weight = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def _drop(self, key: Hashable) -> None:
        self._weight -= self._data.pop(key)[1]
