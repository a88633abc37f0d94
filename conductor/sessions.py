"""Who is connected: live player sessions, the players file (roster) and inventories.

Pure bookkeeping, no task state: a session knows which tasks it holds in flight so
dispatch can count free slots, and the roster knows each player's inventory, decoded
once from its Hello (and from each Inventory message after it), so submissions can be
checked against score declarations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from conductor.store import PlayerRecord
from orchestra import log
from orchestra.inventory import Inventory
from orchestra.params import ScoreDecls
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2

logger = log.get("conductor")


@dataclass(eq=False)
class PlayerSession:
    """One live player stream. ``ready`` only after its Hello has been reconciled."""

    name: str
    identity: PeerIdentity
    max_concurrent: int
    connected_since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    ready: bool = False
    in_flight: set[str] = field(default_factory=set)
    outbox: asyncio.Queue[player_pb2.ConductorMessage] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: grpc.StatusCode | None = None
    close_details: str = ""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    heard_at: float = field(default_factory=time.monotonic)
    sent_at: float = field(default_factory=time.monotonic)

    def heard(self) -> None:
        self.heard_at = time.monotonic()
        self.last_seen = time.time()

    def beat(self) -> None:
        self.send(heartbeat=player_pb2.Heartbeat(sent_at=time.time()))

    def silent(self, seconds: float) -> None:
        if not self.closed.is_set():
            logger.warning("player_silent", player=self.name, seconds=round(seconds, 1))
        self.close(grpc.StatusCode.UNAVAILABLE, "no message within the liveness timeout")

    def record(self, inventory: Inventory) -> PlayerRecord:
        """The player as it stands now, with the inventory it just reported: what the
        conductor stores and remembers, from a Hello and from each Inventory alike."""
        return PlayerRecord(self.name, time.time(), self.max_concurrent, self.identity.not_after, inventory,
                            self.identity.issuer, self.identity.serial)

    @property
    def free_slots(self) -> int:
        return self.max_concurrent - len(self.in_flight)

    @property
    def serial(self) -> str:
        return f"{self.identity.serial:x}"

    def send(self, **body: object) -> None:
        self.outbox.put_nowait(player_pb2.ConductorMessage(**body))  # type: ignore[arg-type]

    def tell_cancel(self, task_id: str, attempt: int, reason: str) -> None:
        """Tell the player to kill the task (or forget it if it never started)."""
        self.send(cancel=player_pb2.CancelTask(task_id=task_id, attempt=attempt, reason=reason))

    def drop(self, task_id: str, attempt: int, reason: str) -> None:
        """The task no longer belongs here: free its slot and tell the player."""
        self.in_flight.discard(task_id)
        self.tell_cancel(task_id, attempt, reason)

    def close(self, code: grpc.StatusCode, details: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_details = code, details
            self.closed.set()


class Sessions:
    """The roster (players file), the live sessions and what each player last reported."""

    def __init__(self, roster: frozenset[str], known: dict[str, PlayerRecord]) -> None:
        self.roster = roster
        self.known = known
        self._live: dict[str, PlayerSession] = {}

    def __iter__(self) -> Iterator[PlayerSession]:
        return iter(list(self._live.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._live

    def connected(self) -> int:
        """How many players have a live session."""
        return len(self._live)

    def offline(self) -> int:
        """How many players of the players file have no live session."""
        return len(self.roster) - sum(1 for name in self._live if name in self.roster)

    def get(self, name: str | None) -> PlayerSession | None:
        return self._live.get(name) if name is not None else None

    def attach(self, session: PlayerSession) -> None:
        """A newer session of the same player replaces the older one."""
        previous = self._live.get(session.name)
        if previous is not None:
            previous.close(grpc.StatusCode.ABORTED, "replaced by a newer session of the same player")
        self._live[session.name] = session

    def detach(self, session: PlayerSession) -> None:
        if self._live.get(session.name) is session:
            del self._live[session.name]

    def is_current(self, session: PlayerSession) -> bool:
        return not session.closed.is_set() and self._live.get(session.name) is session

    def can_take(self, session: PlayerSession) -> bool:
        """Current, reconciled, still in the players file, with a free slot."""
        return (session.ready and session.free_slots > 0 and session.name in self.roster
                and self.is_current(session))

    def remember(self, player: PlayerRecord) -> None:
        self.known[player.name] = player

    def declarations(self, player: str, score: str) -> ScoreDecls | None:
        """The score's declarations as the player last reported them; None if unknown."""
        record = self.known.get(player)
        if record is None:
            return None
        for entry in record.inventory:
            if entry.name == score and entry.valid:
                return entry.decls
        return None

    def set_roster(self, roster: frozenset[str]) -> frozenset[str]:
        """Swap in a new players file; returns the names that left it."""
        removed, added = self.roster - roster, roster - self.roster
        self.roster = roster
        logger.info("players_reloaded", players=len(roster), added=sorted(added), removed=sorted(removed))
        return removed

    def close_failing(self, refuses: Callable[[PeerIdentity], str | None]) -> list[tuple[PlayerSession, str]]:
        """Close the sessions whose certificate is now refused; returns them with why."""
        closed = []
        for session in self:
            reason = refuses(session.identity)
            if reason is not None:
                session.close(grpc.StatusCode.UNAUTHENTICATED, reason)
                closed.append((session, reason))
        return closed
