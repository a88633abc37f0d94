"""A score interface, kv0: params as NUL-terminated KEY=VALUE records on stdin, the
response as NUL-terminated KEY=VALUE records on stdout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from player.interfaces import Response

# Set (to 1) in a player's environment, the interface "broken" fails to start.
BREAK_VARIABLE = "ORCHESTRA_TESTPLUGINS_BREAK"


class Kv0:
    params_in_environment = False
    response_from = "stdout"

    def __init__(self, options: Mapping[str, Any]) -> None:
        if options:
            raise ValueError("kv0 takes no options")

    def stdin(self, params: Mapping[str, str]) -> bytes | None:
        return b"".join(f"{key}={value}\0".encode() for key, value in sorted(params.items()))

    def parse(self, data: bytes, truncated: bool) -> Response:
        records = data.split(b"\0")
        records = records[:-1]  # what follows the last NUL is not a whole record
        pairs = {}
        for record in records:
            key, sep, value = record.decode("utf-8", "replace").partition("=")
            if sep and key:
                pairs[key] = value
        return Response(pairs, truncated)


class Broken(Kv0):
    """kv0, unless BREAK_VARIABLE is set: then it fails to start (every player loads every
    installed interface, so it may only break where a test asks it to)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        if os.environ.get(BREAK_VARIABLE) == "1":
            raise RuntimeError("the broken interface fails to start (on purpose)")
        super().__init__(options)
