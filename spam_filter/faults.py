"""Crash points: the places where the fault tests kill or hold a process in the middle of its work.

With `SPAM_FILTER_CRASH_AT` set to a point's name, the process kills itself with SIGKILL on
reaching that point: no cleanup, no `finally`, no flush, exactly what `kill -9` or the OOM killer
does. With `SPAM_FILTER_HOLD_AT` set to `point:path`, it waits at that point until the file at
`path` exists, so that a test can act while it holds what it holds there. Unset, as everywhere but
in the tests, a point costs two environment lookups.
"""

import os
import signal
import time
from pathlib import Path

CRASH_AT_VARIABLE = "SPAM_FILTER_CRASH_AT"
HOLD_AT_VARIABLE = "SPAM_FILTER_HOLD_AT"

# Where promoting a model can be interrupted, in the order a promotion passes them.
PROMOTION_POINTS = (
    "weights_written",
    "switch_checked",
    "switch_retired_old",
    "switch_inserted_new",
    "switch_committed",
    "switch_closed",
)


def crash_point(name: str) -> None:
    """Die here, at once, if the environment names this point."""
    if os.environ.get(CRASH_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, release_file = os.environ.get(HOLD_AT_VARIABLE, "").partition(":")
    if point == name:
        while not Path(release_file).exists():
            time.sleep(0.05)
