"""A player's score inventory: the scores it has, with their declarations, as data.

The player announces it in its Hello, and again in an Inventory message whenever its
scores change; the conductor decodes it once into :class:`ScoreEntry` values and asks
those, never the wire messages, for declarations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestra.params import ParamDecl, ScoreDecls
from orchestra.wire import common_pb2

# What the player link's messages mean; the conductor refuses any other version.
# 2: results carry a TaskOutcome (common.proto).
# 3: a Hello's spool entries carry no results: each finished result follows the Hello in
#    a TaskResult message of its own; the player may send an Inventory at any time.
PROTOCOL_VERSION = 3


def decls_to_wire(decls: ScoreDecls) -> list[common_pb2.ParamDecl]:
    return [
        common_pb2.ParamDecl(name=d.name, required=d.required, pattern=d.pattern,
                             choices=list(d.choices), default=d.default or "",
                             has_default=d.default is not None, secret=d.secret)
        for d in decls.params
    ]


def decls_from_wire(params: Iterable[common_pb2.ParamDecl]) -> ScoreDecls:
    return ScoreDecls(tuple(
        ParamDecl(name=p.name, required=p.required, pattern=p.pattern, choices=tuple(p.choices),
                  default=p.default if p.has_default else None, secret=p.secret)
        for p in params
    ))


@dataclass(frozen=True)
class ScoreEntry:
    """One score as a player reported it: usable (with its declarations) or why not."""

    name: str
    valid: bool
    error: str = ""
    interface: str = ""
    timeout_seconds: int = 0
    decls: ScoreDecls = field(default_factory=ScoreDecls)
    # What the score's .conf asks of the conductor; a player older than these fields
    # reports zeros, which ask for nothing.
    retries: int = 0  # automatic retries of a failed or timed-out task
    retry_delay: float = 0.0  # seconds before each automatic retry
    concurrency: int = 0  # at most this many tasks of the score at once, fleet-wide; 0 = no limit
    exclusive: bool = False  # never two tasks of the score at once on one host

    def to_wire(self) -> common_pb2.ScoreInfo:
        return common_pb2.ScoreInfo(name=self.name, valid=self.valid, error=self.error,
                                    interface=self.interface, timeout_seconds=self.timeout_seconds,
                                    params=decls_to_wire(self.decls), retries=self.retries,
                                    retry_delay=self.retry_delay, concurrency=self.concurrency,
                                    exclusive=self.exclusive)

    @classmethod
    def from_wire(cls, info: common_pb2.ScoreInfo) -> ScoreEntry:
        return cls(name=info.name, valid=info.valid, error=info.error, interface=info.interface,
                   timeout_seconds=info.timeout_seconds, decls=decls_from_wire(info.params),
                   retries=info.retries, retry_delay=info.retry_delay, concurrency=info.concurrency,
                   exclusive=info.exclusive)


Inventory = tuple[ScoreEntry, ...]


def inventory_from_wire(infos: Iterable[common_pb2.ScoreInfo]) -> Inventory:
    return tuple(ScoreEntry.from_wire(info) for info in infos)


def encode_inventory(inventory: Inventory) -> bytes:
    return common_pb2.Inventory(scores=[entry.to_wire() for entry in inventory]).SerializeToString()


def decode_inventory(blob: bytes) -> Inventory:
    return inventory_from_wire(common_pb2.Inventory.FromString(blob).scores)
