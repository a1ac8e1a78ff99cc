"""What the project's command lines share: how they report an error a user can act on, and why
they are waiting."""

import sys


def error_line(error: BaseException) -> str:
    """`error: <message>` on one line (a server's message may take several)."""
    return "error: " + " ".join(str(error).split())


def say_waiting(message: str) -> None:
    """Tell the user why a command is not done yet (another process holds the database)."""
    print(message, file=sys.stderr, flush=True)
