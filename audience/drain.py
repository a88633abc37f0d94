# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``drain [--reason TEXT] [--json] NAME|@GROUP...`` and ``undrain [--json] NAME|@GROUP...``:
take hosts out of dispatch (for maintenance, say) and put them back.

A drained player keeps its session and finishes what it runs, but is given no new task;
an all-of task for it waits in the queue, a one-of job goes to another target. A drain
names a host or a group (``@name`` of the conductor's ``[groups]``); the conductor keeps
the list and answers with every entry drained now and the hosts they cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from audience import completion
from audience.client import Client
from audience.common import JOB_MEANINGS, Parser, add_common, run_command, with_client
from orchestra.cli import INTERRUPTED_MEANING, ExitMeanings, visible, write_out
from orchestra.errors import ExitCode, NoSuchJobError, ValidationError
from orchestra.params import check_targets
from orchestra.wire import audience_pb2

EXITS: ExitMeanings = (
    (ExitCode.OK, "done: the entries drained now and the hosts they cover are printed"),
    (ExitCode.USAGE, "usage error, or the conductor refuses: an unknown player or group, or the"
                     " policy does not let this requester drain: nothing was changed"),
    (ExitCode.UNREACHABLE, JOB_MEANINGS[ExitCode.UNREACHABLE]),
    (ExitCode.STORAGE, "the conductor cannot write its state now (its disk is full): nothing was"
                       " changed; retry once it has room"),
    INTERRUPTED_MEANING,
)


def build_parser(undrain: bool = False) -> Parser:
    prog = "undrain" if undrain else "drain"
    if undrain:
        parser = Parser(prog=prog, description="Give drained hosts new tasks again.", exit_codes=EXITS,
                        epilog="Lifts the drains named: a host drained through a group is given new"
                               " tasks again once that group is undrained. Prints what stays drained.")
    else:
        parser = Parser(prog=prog, description="Drain hosts: give them no new tasks.", exit_codes=EXITS,
                        epilog="Running tasks go on to their end. Prints every entry drained now"
                               " and the hosts they cover (with --json, one object).")
    add_common(parser)
    if not undrain:
        completion.attach(parser.add_argument("--reason", default="", metavar="TEXT",
                                              help="why, shown by listplayers"),
                          completion.nothing)
    completion.attach(parser.add_argument("names", nargs="+", metavar="NAME|@GROUP",
                                          help="a player's certname, or @GROUP: a group of hosts"
                                               " named in the conductor's config"),
                      completion.drained if undrain else completion.hosts)
    return parser


def main(argv: Sequence[str] | None = None, undrain: bool = False) -> int:
    parser = build_parser(undrain)

    def body() -> int:
        args = parser.parse_args(argv)
        names = check_targets(args.names)
        return with_client(args.config, partial(drain, names=names, undrain=undrain,
                                                reason=getattr(args, "reason", ""), as_json=args.json))
    return run_command(parser.prog, body)


def main_undrain(argv: Sequence[str] | None = None) -> int:
    return main(argv, undrain=True)


def drain(client: Client, names: Sequence[str], undrain: bool, reason: str, as_json: bool) -> int:
    """Drain or undrain; print what is drained now."""
    try:
        reply = client.drain(names, undrain, reason)
    except NoSuchJobError as err:  # "not found" here is a name, not a job: exit 2 as documented
        raise ValidationError(str(err)) from None
    write_out(reply_text(reply, as_json))
    return int(ExitCode.OK)


def reply_text(reply: audience_pb2.DrainReply, as_json: bool) -> str:
    """``drained: @db web1`` and ``hosts: db1 db2 web1`` (or one JSON object)."""
    if as_json:
        import json  # only --json needs it

        return json.dumps({"drained": list(reply.names), "hosts": list(reply.hosts)}) + "\n"
    return (f"drained: {visible(' '.join(reply.names)) or '-'}\n"
            f"hosts:   {visible(' '.join(reply.hosts)) or '-'}\n")


if __name__ == "__main__":
    raise SystemExit(main())
