# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``listplayers [--json] [NAME|@GROUP ...]``: the conductor's state, the players it knows
(or those named), whether each is drained, and certificate expiry dates."""

from __future__ import annotations

import time
from collections.abc import Sequence

from audience import completion
from audience.client import Client
from audience.common import Parser, add_common, run_command, with_client
from orchestra.cli import visible, write_out
from orchestra.outcome import iso
from orchestra.params import check_target
from orchestra.wire import audience_pb2


def build_parser() -> Parser:
    parser = Parser(prog="listplayers", description="List players and certificate expiry dates.")
    add_common(parser)
    completion.attach(parser.add_argument("targets", nargs="*", metavar="NAME|@GROUP",
                                          help="only these players, or the players of these groups"
                                               " (default: every player)"),
                      completion.hosts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        targets = [check_target(target) for target in args.targets]
        return with_client(args.config, lambda client: show(client, args.json, targets))
    return run_command("listplayers", body)


def state_text(player: audience_pb2.PlayerInfo) -> str:
    """connected, drained (connected, but given no new tasks), offline or revoked."""
    if player.connected:
        return "drained" if player.drained else "connected"
    return "revoked" if player.revoked else "offline"


def show(client: Client, as_json: bool, targets: Sequence[str] = ()) -> int:
    """The players, their scores and how long their certificates have left."""
    reply = client.players(targets) if targets else client.players()
    now = time.time()
    if as_json:
        import json  # only --json needs it

        write_out(json.dumps({
            # None from a conductor too old to say (before the conductor's states).
            "conductor_state": reply.conductor_state or None,
            "conductor_cert_not_after": iso(reply.conductor_cert_not_after),
            "players": [{
                "name": p.name, "connected": p.connected, "connected_since": iso(p.connected_since),
                "last_seen": iso(p.last_seen), "running": p.running,
                "max_concurrent": p.max_concurrent, "cert_not_after": iso(p.cert_not_after),
                "revoked": p.revoked or None,
                "drained": p.drained or None, "drained_reason": p.drained_reason,
                "scores": [{"name": s.name, "valid": s.valid, "error": s.error} for s in p.scores],
            } for p in reply.players]}, indent=2) + "\n")
        return 0
    days = (reply.conductor_cert_not_after - now) / 86400
    # An older conductor does not say its state: the header is then as it always was.
    lines = [f"conductor: {visible(reply.conductor_state)}"] if reply.conductor_state else []
    lines.append(f"conductor certificate expires {iso(reply.conductor_cert_not_after)} ({days:.0f} days)")
    for p in reply.players:
        state = state_text(p)
        expiry = (f"cert expires {iso(p.cert_not_after)} ({(p.cert_not_after - now) / 86400:.0f} days)"
                  if p.cert_not_after else "never connected")
        # Names come from the players file and the players' own inventories: shown, never obeyed.
        scores = ", ".join(visible(s.name) + ("" if s.valid else " (invalid)") for s in p.scores) or "-"
        lines.append(f"{visible(p.name):<32} {state:<9} running {p.running}/{p.max_concurrent or '?'}"
                     f"  {expiry}\n    scores: {scores}"
                     + (f"\n    revoked: {visible(p.revoked)}" if p.revoked else "")
                     + (f"\n    drained: {drained_text(p)}" if p.drained else ""))
    write_out("\n".join(lines) + "\n")  # one write: a fleet's list is one flush, not thousands
    return 0


def drained_text(player: audience_pb2.PlayerInfo) -> str:
    """``by @web: kernel update``: the drain covering the player, and why."""
    reason = f": {visible(player.drained_reason)}" if player.drained_reason else ""
    return f"by {visible(player.drained)}{reason}"


if __name__ == "__main__":
    raise SystemExit(main())
