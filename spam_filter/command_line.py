"""What the project's command lines share: how they report an error a user can act on, and why
they are waiting."""

import os
import sys
from collections.abc import Callable

import duckdb

INTERRUPTED = 130
"""The exit status of a command ended by Ctrl-C, as shells report it (128 + SIGINT)."""


def error_line(error: BaseException) -> str:
    """`error: <message>` on one line (a server's message may take several)."""
    return "error: " + " ".join(str(error).split())


def say_waiting(message: str) -> None:
    """Tell the user why a command is not done yet (another process holds the database)."""
    print(message, file=sys.stderr, flush=True)


def run_command_line(
    work: Callable[[], int], reported: tuple[type[BaseException], ...] = ()
) -> int:
    """`work()`'s exit status. An error of the `reported` kinds ends it with its one line and
    status 1, Ctrl-C with `interrupted` rather than a traceback, and a reader that stopped reading
    (`| head`) quietly, though a closed pipe is an OSError, which commands report otherwise."""
    try:
        status = work()
        # Inside: what stays buffered would meet a closed pipe at exit, past this handler.
        sys.stdout.flush()
        return status
    except (KeyboardInterrupt, duckdb.InterruptException):
        return _interrupted()
    except BrokenPipeError:
        # Python would report the closed pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except reported as error:
        print(error_line(error), file=sys.stderr)
        return 1
    except RuntimeError as error:
        # DuckDB raises this when a Ctrl-C arrives during some of its statements.
        if str(error) != "Query interrupted":
            raise
        return _interrupted()


def _interrupted() -> int:
    print("\ninterrupted", file=sys.stderr, flush=True)
    return INTERRUPTED
