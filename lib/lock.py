"""Inter-process file locks, and atomic JSON files.

Stash runs hook processes concurrently across triggers and never serialises them
(reference/stash-plugin-protocol.md §7), and it kills a cancelled task with SIGKILL. So shared state
is guarded by an OS file lock, which the kernel releases when its holder dies, and state files are
written atomically (:func:`write_json`: temp file, fsync, rename), so a kill never leaves half a file.

``fcntl`` exists only on POSIX; on Windows ``msvcrt.locking`` stands in. Importing this module never
fails on a platform that has neither: locks then degrade to no-ops.
"""
from __future__ import annotations

import os

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

HAVE_LOCKS = fcntl is not None or msvcrt is not None


class FileLock:
    """An exclusive lock on the file ``path``, held until :meth:`release` or process death.

    ``acquire(blocking=False)`` returns False at once when another process holds the lock.
    Usable as a context manager (blocking).
    """

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; return True when held. Raises OSError only for an unusable lock file."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
                fcntl.flock(fd, flags)
            elif msvcrt is not None:
                mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
                while True:
                    try:
                        msvcrt.locking(fd, mode, 1)
                        break
                    except OSError:
                        if not blocking:
                            raise
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire_soon(self, tries: int = 10, pause: float = 0.01) -> bool:
        """Non-blocking acquire, tried ``tries`` times ``pause`` seconds apart: a
        :meth:`held_elsewhere` probe holds the lock for an instant, and must not make a starting
        drainer believe another one runs."""
        import time

        for attempt in range(tries):
            if self.acquire(blocking=False):
                return True
            if attempt < tries - 1:
                time.sleep(pause)
        return False

    def release(self) -> None:
        """Give the lock up (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            elif msvcrt is not None:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)

    def note(self, text: str) -> None:
        """Write ``text`` (e.g. the holder's pid) into the held lock file, for status displays."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, text.encode())

    def holder_note(self) -> str:
        """What the holder wrote with :meth:`note` ("" when nothing)."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read(100).strip()
        except OSError:
            return ""

    def held_elsewhere(self) -> bool:
        """True when another process holds the lock right now (a cheap probe: lock, then unlock)."""
        if self.acquire(blocking=False):
            self.release()
            return False
        return True

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def write_json(path: str, value) -> None:
    """Write ``value`` as JSON to ``path`` atomically: a temp file in the same folder, fsynced,
    then renamed over ``path``. Raises OSError (the temp file is removed)."""
    import json
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
