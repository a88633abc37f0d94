"""Test-only fault injection: ``kill -9`` this process at a named point.

``ORCHESTRA_FAULT=NAME`` or ``NAME:N`` makes the N-th passage (default 1st) of
``point(NAME)`` send SIGKILL to the process itself, so fault tests can crash a daemon
exactly between two steps of the protocol. Unset, ``point`` does nothing.
"""

from __future__ import annotations

import os
import signal

_NAME, _, _NTH = os.environ.get("ORCHESTRA_FAULT", "").partition(":")
_remaining = int(_NTH or 1) if _NAME else 0


def point(name: str) -> None:
    global _remaining
    if _remaining and name == _NAME:
        _remaining -= 1
        if _remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
