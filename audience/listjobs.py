# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``listjobs [--state S] [--score S] [--requester R] [--target H|@G] [--name N]
[--label K=V] [--since W] [--limit N] [--mine] [--json]``: recent and open jobs, newest first.

The conductor answers from its job index, a page at a time, and shows each caller only the
jobs ``getstatus`` would show them (CONTRACT.md §6).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from audience import completion, render
from audience.client import Client
from audience.common import Parser, add_common, run_command, with_client
from orchestra.cli import report, visible, write_out
from orchestra.errors import ExitCode, ValidationError
from orchestra.joboptions import check_job_name, check_labels, parse_label, parse_since
from orchestra.outcome import JOB_STATUSES, iso
from orchestra.wire import audience_pb2

DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000


def since_time(text: str, now: float | None = None) -> float:
    """``--since``: an age (``90s``, ``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601 date
    or time (``2026-11-24``, ``2026-11-24T08:00``, UTC unless it names its offset)."""
    try:
        return parse_since(text, now)
    except ValidationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}: {text!r}")
    return value


def build_parser() -> Parser:
    parser = Parser(prog="listjobs", description="List recent and open jobs, newest first.")
    add_common(parser)
    parser.add_argument("--state", action="append", choices=JOB_STATUSES, metavar="STATE",
                        help=f"only jobs in this state ({', '.join(JOB_STATUSES)}); repeat for several")
    completion.attach(parser.add_argument("--score", help="only jobs of this score"), completion.scores)
    parser.add_argument("--requester", help="only jobs submitted by this requester: user:NAME (a local user),"
                                             " cert:NAME (a remote certificate), or a bare NAME for either")
    completion.attach(parser.add_argument("--target", metavar="HOST|@GROUP",
                                          help="only jobs with this host (or @group) among their targets"),
                      completion.hosts)
    completion.attach(parser.add_argument("--name", help="only jobs of this name (submitjob --name)"),
                      completion.nothing)
    completion.attach(parser.add_argument("--label", action="append", metavar="KEY=VALUE",
                                          help="only jobs with this label; repeat for jobs with all of"
                                               " several"),
                      completion.nothing)
    parser.add_argument("--since", type=since_time, metavar="WHEN",
                        help="only jobs submitted since WHEN: an age (30m, 12h, 7d) or an ISO 8601 time")
    parser.add_argument("--limit", type=limit, default=DEFAULT_LIMIT, metavar="N",
                        help=f"at most N jobs (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})")
    parser.add_argument("--mine", action="store_true", help="only jobs I submitted")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        if args.mine and args.requester:
            parser.error("--mine and --requester cannot be used together")
        if args.name is not None:
            check_job_name(args.name)
        check_labels([parse_label(word) for word in args.label or []])
        return with_client(args.config, lambda client: show(client, args))
    return run_command("listjobs", body)


def request_of(args: argparse.Namespace) -> audience_pb2.ListJobsRequest:
    return audience_pb2.ListJobsRequest(
        statuses=args.state or [], score=args.score or "", requester=args.requester or "",
        target=args.target or "", since=args.since or 0.0, limit=args.limit, mine=args.mine,
        name=args.name or "", labels=args.label or [])


def age(seconds: float) -> str:
    """45s, 12m, 3h, 5d: how long ago, to the unit that matters."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def counts_text(job: audience_pb2.JobSummary) -> str:
    return ", ".join(f"{c.count} {render.state_name(c.state)}" for c in job.counts) or "-"


def scope_text(job: audience_pb2.JobSummary) -> str:
    """``all-of p1`` for one target, ``all-of 40 hosts`` for more."""
    scope = render.scope_name(job.scope)
    if job.target_count == 1 and job.targets:
        return f"{scope} {visible(job.targets[0])}"
    return f"{scope} {job.target_count} hosts"


NAME_WIDTH = 32


def short(text: str, width: int = NAME_WIDTH) -> str:
    """Text cut to width (a job name may be 200 characters: the table stays readable)."""
    return text if len(text) <= width else text[:width - 1] + "…"


def status_text(job: audience_pb2.JobSummary) -> str:
    """``pending``, or ``pending (canary)`` while a rollout is under way or stopped."""
    return visible(job.status) + (f" ({visible(job.phase)})" if job.phase else "")


def show(client: Client, args: argparse.Namespace) -> int:
    """One line per job (or one JSON object); a note on stderr when the limit cut it short."""
    reply = client.jobs(request_of(args))
    if args.json:
        import json  # only --json needs it

        write_out(json.dumps({"jobs": [{
            "job_id": j.job_id, "score": j.score, "scope": render.scope_name(j.scope),
            "target_count": j.target_count, "targets": list(j.targets), "requester": j.requester,
            "created_at": iso(j.created_at), "finished_at": iso(j.finished_at), "status": j.status,
            "counts": {render.state_name(c.state): c.count for c in j.counts},
            "name": j.name or None, "labels": dict(sorted(j.labels.items())), "priority": j.priority,
            "phase": j.phase or None, "workflow_id": j.workflow_id or None, "step": j.step or None,
        } for j in reply.jobs], "more": reply.more}, indent=2) + "\n")
        return int(ExitCode.OK)
    now = time.time()
    # A NAME column only when some job listed has a name: most lists stay as they were.
    named = any(j.name for j in reply.jobs)
    rows = [("JOB", "AGE", "REQUESTER", *(("NAME",) if named else ()), "SCORE", "SCOPE", "TASKS", "STATUS")]
    rows += [(visible(j.job_id), age(now - j.created_at), visible(j.requester),
              *((short(visible(j.name)) or "-",) if named else ()), visible(j.score),
              scope_text(j), counts_text(j), status_text(j)) for j in reply.jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    write_out("".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                      + "  " + row[-1] + "\n" for row in rows))
    if reply.more:
        report("listjobs", f"showing the newest {len(reply.jobs)}; more jobs match"
                           " (raise --limit or narrow the filters)")
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
