"""How a conductor that does not lead says so, and where the leader is.

Several conductors may share one database: one leads, the others stand by. A standby
answers every PlayerLink and Audience call with ``UNAVAILABLE``, details beginning
``not the leader`` ("not the leader: the leader is c1.example:2258", "not the leader: no
conductor leads yet"), and, when it knows, the leader's advertised HOST:PORT in the
trailing metadata under LEADER_METADATA. Its health service reports
``orchestra.v1.PlayerLink`` NOT_SERVING until it leads.

A client follows a hint only to an address it was configured with: a name taken from
the network never decides where a player or the audience sends its certificate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

LEADER_METADATA = "orchestra-leader"
NOT_LEADER = "not the leader"
# The health service name a conductor reports SERVING for while it leads: the PlayerLink
# service's full name (spelt out: the audience commands do not load the player's wire code).
PLAYER_LINK = "orchestra.v1.PlayerLink"
# Longer than any HOST:PORT worth following (253 for the name, brackets, a port).
MAX_HINT_CHARS = 270


def refusal_details(leader: str | None) -> str:
    """The details of a standby's refusal, naming the leader when it is known."""
    return f"{NOT_LEADER}: the leader is {leader}" if leader else f"{NOT_LEADER}: no conductor leads yet"


def refusal_metadata(leader: str | None) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a standby's refusal: the leader's HOST:PORT, when known."""
    return ((LEADER_METADATA, leader),) if leader else ()


def is_refusal(err: grpc.RpcError) -> bool:
    """Whether the call was refused by a conductor that does not lead (nothing was done)."""
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    if code is None or details is None:
        return False
    return bool(code() == grpc.StatusCode.UNAVAILABLE and (details() or "").startswith(NOT_LEADER))


def leader_hint(err: grpc.RpcError) -> str | None:
    """The leader's HOST:PORT a refusing standby named in the trailing metadata, if any.

    Works with the errors of sync and asyncio calls alike; anything but one short
    printable value is ignored."""
    trailing = getattr(err, "trailing_metadata", None)
    if trailing is None:
        return None
    try:
        metadata: Iterable[Any] = trailing() or ()
        values = [value for key, value in metadata if key == LEADER_METADATA]
    except (TypeError, ValueError):
        return None
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    hint = values[0].strip()
    if not hint or len(hint) > MAX_HINT_CHARS or not hint.isprintable() or " " in hint:
        return None
    return hint


def same_address(first: str, second: str) -> bool:
    """Two HOST:PORT strings naming the same address (host names are case-insensitive)."""
    return first.lower() == second.lower()
