"""Deadlines for reading request bodies under gunicorn, which bounds none by itself in a threaded
worker.

A socket timeout bounds each read, not the body: a client that sends a byte now and then keeps
every read short, and would hold a worker's thread until its whole body had come. A thread in each
worker process looks at the open deadlines a few times a second and shuts the reading side of a
socket past its own, which ends the read at once; the request is then answered with a 408.
"""

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from spam_filter.fork_safe_lock import ForkSafeLock

# How often the deadlines are looked at: a body may take this much longer than its deadline.
CHECK_SECONDS = 0.25


@dataclass(eq=False)
class Deadline:
    """When reading `sock` must have ended; `expired` once the watchdog cut the reading off."""

    sock: socket.socket | None
    at: float
    expired: bool = False


class ReadDeadlines:
    """The deadlines of the bodies this process is reading, and the thread that enforces them."""

    def __init__(self, check_seconds: float = CHECK_SECONDS) -> None:
        self.check_seconds = check_seconds
        self._lock = ForkSafeLock()
        self._open: set[Deadline] = set()
        # The process whose thread watches: threads do not survive a fork.
        self._watching_pid: int | None = None

    @contextmanager
    def bounded(self, sock: socket.socket | None, seconds: float) -> Iterator[Deadline]:
        """Cut off reading `sock` `seconds` from now, unless the block has ended by then. Without
        a socket the deadline is never enforced, and never expires."""
        deadline = Deadline(sock, time.monotonic() + seconds)
        if sock is None:
            yield deadline
            return
        with self._lock:
            self._ensure_watching()
            self._open.add(deadline)
        try:
            yield deadline
        finally:
            with self._lock:
                self._open.discard(deadline)

    def cut_off_expired(self) -> None:
        """Shut the reading side of every socket past its deadline (the watchdog's one step)."""
        now = time.monotonic()
        with self._lock:
            for deadline in self._open:
                if not deadline.expired and deadline.at <= now:
                    deadline.expired = True
                    try:
                        # The plain socket's: a TLS socket's own would drop its encryption
                        # before the 408 is written.
                        socket.socket.shutdown(deadline.sock, socket.SHUT_RD)
                    except OSError:  # the client has gone already
                        pass

    def _ensure_watching(self) -> None:
        # The caller holds `_lock`.
        if self._watching_pid != os.getpid():
            threading.Thread(target=self._watch, name="read-deadlines", daemon=True).start()
            self._watching_pid = os.getpid()

    def _watch(self) -> None:
        while True:
            time.sleep(self.check_seconds)
            self.cut_off_expired()


_read_deadlines = ReadDeadlines()


def bounded(sock: socket.socket | None, seconds: float) -> AbstractContextManager[Deadline]:
    """`ReadDeadlines.bounded` of this process's deadlines."""
    return _read_deadlines.bounded(sock, seconds)
