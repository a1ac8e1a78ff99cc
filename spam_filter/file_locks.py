"""Exclusive file locks (flock) that wait politely: they say that they wait, and they give up.

The kernel releases such a lock when its holder dies, however it dies, so a crash never leaves a
stale lock behind.
"""

import fcntl
import time
from collections.abc import Callable
from pathlib import Path


class LockTimeout(RuntimeError):
    """The lock stayed taken for longer than the caller would wait."""


def lock_exclusively(
    descriptor: int,
    path: Path,
    timeout_seconds: float,
    on_wait: Callable[[str], None] | None = None,
    holder: str = "another process",
) -> None:
    """Take the exclusive lock of the open file `descriptor`, polling until `timeout_seconds`.

    Args:
        descriptor: An open file descriptor of `path`.
        path: The lock file, for the messages.
        timeout_seconds: How long to wait before raising `LockTimeout`.
        on_wait: Told once, if the lock is taken, that this process waits.
        holder: Who holds the lock, for the messages.
    """
    deadline = time.monotonic() + timeout_seconds
    waiting = False
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LockTimeout(
                    f"{holder} has held {path} for over {timeout_seconds:.0f} s"
                ) from None
            if not waiting and on_wait is not None:
                on_wait(f"waiting for {holder} to release {path}")
            waiting = True
            time.sleep(0.2)
