# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``listplayers [--json]``: the players the conductor knows, and certificate expiry dates."""

from __future__ import annotations

import time
from collections.abc import Sequence

from audience.client import Client
from audience.common import Parser, add_common, run_command, with_client
from orchestra.cli import visible, write_out
from orchestra.outcome import iso


def build_parser() -> Parser:
    parser = Parser(prog="listplayers", description="List players and certificate expiry dates.")
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        return with_client(args.config, lambda client: show(client, args.json))
    return run_command("listplayers", body)


def show(client: Client, as_json: bool) -> int:
    """The players, their scores and how long their certificates have left."""
    reply = client.players()
    now = time.time()
    if as_json:
        import json  # only --json needs it

        write_out(json.dumps({
            "conductor_cert_not_after": iso(reply.conductor_cert_not_after),
            "players": [{
                "name": p.name, "connected": p.connected, "connected_since": iso(p.connected_since),
                "last_seen": iso(p.last_seen), "running": p.running,
                "max_concurrent": p.max_concurrent, "cert_not_after": iso(p.cert_not_after),
                "revoked": p.revoked or None,
                "scores": [{"name": s.name, "valid": s.valid, "error": s.error} for s in p.scores],
            } for p in reply.players]}, indent=2) + "\n")
        return 0
    days = (reply.conductor_cert_not_after - now) / 86400
    lines = [f"conductor certificate expires {iso(reply.conductor_cert_not_after)} ({days:.0f} days)"]
    for p in reply.players:
        state = "connected" if p.connected else "revoked" if p.revoked else "offline"
        expiry = (f"cert expires {iso(p.cert_not_after)} ({(p.cert_not_after - now) / 86400:.0f} days)"
                  if p.cert_not_after else "never connected")
        # Names come from the players file and the players' own inventories: shown, never obeyed.
        scores = ", ".join(visible(s.name) + ("" if s.valid else " (invalid)") for s in p.scores) or "-"
        lines.append(f"{visible(p.name):<32} {state:<9} running {p.running}/{p.max_concurrent or '?'}"
                     f"  {expiry}\n    scores: {scores}"
                     + (f"\n    revoked: {visible(p.revoked)}" if p.revoked else ""))
    write_out("\n".join(lines) + "\n")  # one write: a fleet's list is one flush, not thousands
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
