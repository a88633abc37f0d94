"""The one way every Orchestra command ends: a known error is one line and an exit code.

Daemons, audience commands and orchestra-pki all run their body through ``run_cli`` so a
known problem never reaches the user as a traceback, and every command reports it the
same way (``prog: message``) with the exit code the error carries (CONTRACT.md §6).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from orchestra.errors import OrchestraError

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def one_line(text: str) -> str:
    """Fold a message onto one line: scripts read stderr line by line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: {one_line(message) or 'error'}\n")


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run body and return its exit code; an OrchestraError becomes one line on stderr
    and the error's own exit code, Ctrl-C becomes "interrupted" and 130."""
    try:
        return body()
    except OrchestraError as err:
        report(prog, str(err))
        return int(err.exit_code)
    except KeyboardInterrupt:
        report(prog, "interrupted")
        return INTERRUPTED
