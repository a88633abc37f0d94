"""The conductor's own state: starting, recovering, serving, draining.

Not a task's state (that is :mod:`conductor.states`): this says what the daemon as a
whole is doing, so operators, load balancers and systemd can tell a conductor that is
still gathering its players after a restart, or finishing its last acknowledgements
before it stops, from one that serves normally.

``starting``: the queue is being opened and the listeners are not up yet.
``recovering``: the conductor restarted with tasks in flight (dispatched, running or
cancelling) on players of the players file, and some of those players have not come back
and been reconciled yet; it ends when the last is reconciled or ``reconnect_grace`` has
passed. Skipped when nothing needs recovering. Everything works meanwhile.
``serving``: normal work.
``draining``: after SIGTERM/SIGINT: no new dispatch, no new change to the queue from the
audience, no new message read from players; what was already received is committed and
answered, then the conductor stops.

Pure logic: the legal moves, and the set of players a recovery waits for. The daemon
(``conductor.main``) carries out what a move implies (health, systemd, the log).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum

from orchestra import log

logger = log.get("conductor")


class ConductorState(StrEnum):
    STARTING = "starting"
    STANDBY = "standby"  # another conductor leads the shared queue (conductor/leadership.py)
    RECOVERING = "recovering"
    SERVING = "serving"
    DRAINING = "draining"

    @property
    def serves(self) -> bool:
        """Whether the overall health is SERVING: dispatch and the audience API work."""
        return self in (ConductorState.RECOVERING, ConductorState.SERVING)


S = ConductorState
# Which moves are legal. A stop may come at any point after the signal handlers are set,
# recovering is skipped when nothing needs recovering, and draining is the last state.
MOVES: dict[ConductorState, frozenset[ConductorState]] = {
    S.STARTING: frozenset({S.STANDBY, S.RECOVERING, S.SERVING, S.DRAINING}),
    S.STANDBY: frozenset({S.STARTING}),
    S.RECOVERING: frozenset({S.SERVING, S.DRAINING}),
    S.SERVING: frozenset({S.DRAINING}),
    S.DRAINING: frozenset(),
}


class IllegalMove(RuntimeError):
    """A move the table does not allow: a bug in the caller, never an operator's error."""


class StateMachine:
    """The current state, changed only by :meth:`move`, which logs each change as one
    ``conductor_state`` event (the new state, the previous one, how long that lasted, and
    why)."""

    def __init__(self) -> None:
        self.current = ConductorState.STARTING
        self.since = time.monotonic()

    def move(self, new: ConductorState, reason: str, **fields: object) -> ConductorState:
        """Go to ``new``; returns the previous state. Raises IllegalMove for a move the
        table does not allow."""
        previous = self.current
        if new not in MOVES[previous]:
            raise IllegalMove(f"the conductor cannot go from {previous} to {new}")
        now = time.monotonic()
        lasted = now - self.since
        self.current, self.since = new, now
        logger.info("conductor_state", state=new.value, previous=previous.value, reason=reason,
                    previous_seconds=round(lasted, 3), **fields)
        return previous


class Recovery:
    """The players a restarted conductor waits for: those holding tasks in flight
    according to the queue when it started, and still in the players file. Each is
    crossed off once a session of it has been reconciled (its Hello compared with the
    queue), or once it leaves the players file (it can never come back then)."""

    def __init__(self, players: Iterable[str], roster: Iterable[str]) -> None:
        allowed = frozenset(roster)
        self.awaited = frozenset(name for name in players if name in allowed)
        self.waiting = set(self.awaited)

    @property
    def done(self) -> bool:
        return not self.waiting

    def reconciled(self, player: str) -> bool:
        """A session of ``player`` was reconciled; True if that was the last one awaited."""
        if player not in self.waiting:
            return False
        self.waiting.discard(player)
        return not self.waiting

    def removed(self, players: Iterable[str]) -> bool:
        """These players left the players file; True if no one is awaited any more because
        of it."""
        before = bool(self.waiting)
        self.waiting.difference_update(players)
        return before and not self.waiting
