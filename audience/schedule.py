# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``schedule add NAME --cron EXPR (--file JOB.TOML | --workflow FILE) [KEY=VALUE ...]
[--missed skip|once] [--overlap]``, ``schedule list``, ``schedule pause|resume|remove NAME``:
jobs and workflows the conductor submits on a cron schedule, as the requester who added them.

The job file is read as ``submitjob --file`` reads it (``audience.parse``), the workflow
file as ``submitworkflow`` reads it (``audience.workflowfile``), KEY=VALUE words over
their parameters; the conductor then checks the schedule as it would check its first run,
so a schedule that could not run is refused at once. Cron expressions are in UTC.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from audience import completion, workflowfile
from audience.common import JOB_MEANINGS, Parser, add_common, run_command, with_client
from audience.parse import looks_like_option, parse_submission, split_options, takes_value
from audience.submitjob import request_of
from orchestra.cli import INTERRUPTED_MEANING, ExitMeanings, visible, write_out
from orchestra.errors import ExitCode
from orchestra.outcome import iso
from orchestra.params import normalize_params, parse_key_value
from orchestra.wire import audience_pb2

PROG = "schedule"
EXITS: ExitMeanings = (
    (ExitCode.OK, "done: the schedule was added or changed (and is printed), or the list is printed"),
    (ExitCode.USAGE, "usage error or rejected input (an invalid name or cron expression, a name taken, a"
                     " job or workflow file that cannot be read or is invalid, a job or workflow the"
                     " conductor refuses as it would refuse its submission, denied by policy, a change"
                     " only the schedule's owner may make): nothing was changed"),
    (ExitCode.UNREACHABLE, JOB_MEANINGS[ExitCode.UNREACHABLE]),
    (ExitCode.NO_SUCH_JOB, "no such schedule (or none this requester may see)"),
    (ExitCode.STORAGE, "the conductor cannot write its state now (its disk is full): nothing was"
                       " changed; retry once it has room"),
    INTERRUPTED_MEANING,
)
CRON_HELP = ("when to run, in UTC: five fields (minute hour day-of-month month day-of-week, e.g."
             " '*/15 * * * *'), six with a leading seconds field ('*/30 * * * * *'), or @hourly,"
             " @daily, @weekly, @monthly, @yearly")
EPILOG = ("Each run is an ordinary job (or workflow) of the schedule's owner, labelled"
          " schedule=NAME (listjobs --label schedule=NAME finds them), checked as that owner's"
          " submission at the time it runs: a run the policy no longer allows is recorded"
          " refused. A run the conductor missed (it was down, or more than 60 s late) is skipped,"
          " or with --missed once run once, however many were missed. A run is skipped while"
          " the previous one still runs, unless --overlap. Only a schedule's owner (or root on"
          " the conductor host) may pause, resume or remove it.")
COMMANDS = ("add", "list", "pause", "resume", "remove")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Run jobs and workflows on a cron schedule.", exit_codes=EXITS,
                    epilog=EPILOG)
    add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="add, list, pause, resume or remove (COMMAND --help for its options)")
    add = sub.add_parser("add", help="add a schedule", exit_codes=EXITS, epilog=EPILOG,
                         description="Add a schedule: run a job file's job or a workflow file's workflow"
                                     " at the times a cron expression names.")
    completion.attach(add.add_argument("name", metavar="NAME",
                                       help="the schedule's name: lower-case letters, digits, '.', '_'"
                                            " and '-', at most 63"), completion.nothing)
    completion.attach(add.add_argument("params", nargs="*", metavar="KEY=VALUE",
                                       help="a parameter over the file's (the job's, or the workflow's"
                                            " [params])"), completion.nothing)
    completion.attach(add.add_argument("--cron", required=True, metavar="EXPR", help=CRON_HELP),
                      completion.nothing)
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="JOB.TOML", help="the job to run: a job file, as submitjob --file"
                                                           " takes (it must name the score and targets)")
    source.add_argument("--workflow", metavar="FILE", help="the workflow to run: a workflow file, as"
                                                           " submitworkflow takes")
    add.add_argument("--missed", choices=("skip", "once"), default="skip",
                     help="a run missed while the conductor was down: skip it (the default), or run"
                          " once when it is back, however many were missed")
    add.add_argument("--overlap", action="store_true",
                     help="start a run even while the previous one still runs (by default it is skipped)")
    sub.add_parser("list", help="list the schedules this requester may see", exit_codes=EXITS,
                   description="List the schedules this requester may see: its own, and those whose"
                               " jobs the policy lets it read.")
    for action, doing in (("pause", "pause a schedule: no run until it is resumed"),
                          ("resume", "resume a paused schedule from its next time after now"),
                          ("remove", "remove a schedule (a run under way goes on)")):
        changer = sub.add_parser(action, help=doing, exit_codes=EXITS, description=doing[0].upper() + doing[1:] + ".")
        completion.attach(changer.add_argument("name", metavar="NAME", help="the schedule's name"),
                          completion.nothing)
    for command in sub.choices.values():  # taken before or after COMMAND
        command.add_argument("--config", default=argparse.SUPPRESS,
                             help="audience.toml (default: $ORCHESTRA_CONFIG or /etc/orchestra/audience.toml)")
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    return parser


def arranged(parser: Parser, argv: Sequence[str]) -> list[str]:
    """``add``'s options (with their values) before its words, so options may stand
    anywhere on the line, as submitjob's do; no parameter name starts with '-', and '--'
    ends the options."""
    index = 0
    while index < len(argv) and looks_like_option(argv[index]):
        index += 2 if takes_value(parser, argv[index]) else 1
    if index >= len(argv) or argv[index] != "add":
        return list(argv)
    options, words = split_options(_subparser(parser, "add"), argv[index + 1:])
    return [*argv[:index + 1], *options, "--", *words]


def _subparser(parser: argparse.ArgumentParser, name: str) -> Parser:
    for action in parser._actions:  # argparse has no public way to reach a subcommand's parser
        if isinstance(action, argparse._SubParsersAction):
            found: Parser = action.choices[name]
            return found
    raise KeyError(name)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(arranged(parser, words))
        if args.command == "add":
            request = schedule_request(args)
            return with_client(args.config, lambda client: show(client.add_schedule(request), args.json))
        if args.command == "list":
            return with_client(args.config, lambda client: show_list(client.list_schedules(), args.json))
        return with_client(args.config,
                           lambda client: show(client.change_schedule(args.name, args.command), args.json))
    return run_command(PROG, body)


def schedule_request(args: argparse.Namespace) -> audience_pb2.ScheduleRequest:
    """The schedule as the command line and its file describe it; the file is read and
    checked here, before the conductor is dialled."""
    request = audience_pb2.ScheduleRequest(name=args.name, cron=args.cron, missed=args.missed,
                                           overlap=args.overlap)
    pairs = [parse_key_value(word) for word in args.params]
    if args.file is not None:
        # Exactly as submitjob --file JOB.TOML KEY=VALUE ... reads it (the words are all
        # parameters: the hosts come from the file).
        words = [f"{key}={value}" for key, value in pairs]
        job = request_of(parse_submission([f"--file={args.file}", "--", *words]))
        job.idempotency_key = ""  # each run is a job of its own
        request.job.CopyFrom(job)
    else:
        flow = workflowfile.load(args.workflow, normalize_params(pairs))
        flow.idempotency_key = ""
        request.workflow.CopyFrom(flow)
    return request


# ---- output --------------------------------------------------------------------------------

def when(ts: float) -> str:
    """A time as the list shows it: ISO 8601 UTC to the second; "-" for none."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def as_json(info: audience_pb2.ScheduleInfo) -> dict[str, Any]:
    return {"name": info.name, "owner": info.owner, "cron": info.cron, "missed": info.missed,
            "overlap": info.overlap, "paused": info.paused, "kind": info.kind, "what": info.what,
            "created_at": iso(info.created_at), "next_at": iso(info.next_at), "last_at": iso(info.last_at),
            "last_id": info.last_id or None, "last_status": info.last_status or None,
            "last_error": info.last_error or None, "removed": info.removed}


def show(info: audience_pb2.ScheduleInfo, json_out: bool) -> int:
    """One schedule after add, pause, resume or remove: a line (or one JSON object)."""
    if json_out:
        import json  # only --json needs it

        write_out(json.dumps(as_json(info)) + "\n")
    elif info.removed:
        write_out(f"{visible(info.name)}: removed\n")
    elif info.paused:
        write_out(f"{visible(info.name)}: paused\n")
    else:
        write_out(f"{visible(info.name)}: next run at {when(info.next_at)}\n")
    return int(ExitCode.OK)


def show_list(reply: audience_pb2.ScheduleList, json_out: bool) -> int:
    """One line per schedule, in aligned columns (or one JSON object)."""
    if json_out:
        import json  # only --json needs it

        write_out(json.dumps({"schedules": [as_json(info) for info in reply.schedules]}, indent=2) + "\n")
        return int(ExitCode.OK)
    rows = [("NAME", "OWNER", "CRON", "KIND", "WHAT", "PAUSED", "NEXT", "LAST", "STATUS")]
    rows += [(visible(s.name), visible(s.owner), visible(s.cron), s.kind, visible(s.what),
              "yes" if s.paused else "no", when(s.next_at), when(s.last_at),
              visible(s.last_error) or visible(s.last_status) or "-") for s in reply.schedules]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    write_out("".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                      + "  " + row[-1] + "\n" for row in rows))
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
