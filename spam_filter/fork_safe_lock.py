"""A thread lock that every forked child starts with unheld.

gunicorn's `--preload` builds the app, and so starts the database watcher's thread, in the master,
then forks the workers. A lock that thread held at the fork is copied held into the worker, where
no thread is left to release it: the worker's first request to need it would wait forever.
"""

import os
import threading
import weakref
from types import TracebackType

# Every lock alive in this process, to renew in a forked child.
_LOCKS: "weakref.WeakSet[ForkSafeLock]" = weakref.WeakSet()


class ForkSafeLock:
    """A `threading.Lock`, used as a context manager, that is replaced by a fresh one in each
    child this process forks.

    A fresh lock is only safe for state a child can use as it finds it: the report inbox and the
    PostgreSQL pool open their own connections in each process (they check the pid), and the
    rate limiter's buckets and the watcher's start are plain values. Never fork while holding
    one: the child would find it unheld and fail to release it.
    """

    __slots__ = ("_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _LOCKS.add(self)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _renew(self) -> None:
        self._lock = threading.Lock()


def _renew_all_locks() -> None:
    # The child has one thread, the one that forked: nothing else can hold a lock yet.
    for lock in list(_LOCKS):
        lock._renew()


os.register_at_fork(after_in_child=_renew_all_locks)
