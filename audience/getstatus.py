# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``getstatus [--wait | --follow [--host H]] [--timeout S] [--json] JOBID|WORKFLOWID`` (CONTRACT.md §6).

``--follow`` prints the live output of the job's running tasks, a line at a time prefixed
by host (:mod:`audience.following`), until the job ends; then the usual report and exit
code, as ``--wait`` gives them.

A workflow's id (``w`` and 32 hex digits, as submitworkflow prints it) shows the workflow
and its steps, with the same exit codes as a job: one command answers "how is it going?"
for whatever id the operator holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from audience import completion, render
from audience.client import Client
from audience.common import (
    Parser, add_job_arguments, job_exits, parse_job_arguments, run_command, with_client,
)
from audience.following import Lines
from audience.waiting import check_id, is_workflow_id, show
from orchestra.cli import write_out
from orchestra.errors import ValidationError
from orchestra.params import CERTNAME_RE

WORKFLOW_NOTE = ("JOBID may be a workflow's id (w and 32 hex digits, as submitworkflow printed it): the"
                 " workflow is shown, a line per step, with the exit codes a job has (0 ok; 1 failed or"
                 " cancelled; 3 not finished; 5 no such workflow).")


def build_parser() -> Parser:
    parser = Parser(prog="getstatus", description="Show a job or a workflow, or wait for it to finish.",
                    exit_codes=job_exits("getstatus"), epilog=WORKFLOW_NOTE)
    add_job_arguments(parser, "block until the job (or workflow) is finished")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="print the live output of the job's running tasks, each line prefixed by its"
                             " host, until the job is finished; then the report, as --wait")
    completion.attach(parser.add_argument("--host", metavar="HOST",
                                          help="with --follow: only this host's output"),
                      completion.nothing)
    return parser


def follow(client: Client, job_id: str, host: str, timeout: float | None, as_json: bool) -> int:
    """Print the job's live output until it ends, then the job; getstatus's exit code."""
    lines = Lines(as_json)
    try:
        job = client.follow(job_id, host, timeout, lines.event, lines.gap)
    finally:
        lines.finish()
    write_out(render.job_json(job) if as_json else render.job_text(job))
    return int(render.exit_code(job))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parse_job_arguments(parser, argv, also_waits=("follow",))
        if args.host is not None and not args.follow:
            parser.error("--host needs --follow")
        if args.follow and args.wait:
            parser.error("--follow waits already: give --follow or --wait, not both")
        job_id = check_id(args.job_id)
        if args.follow:
            if is_workflow_id(job_id):
                raise ValidationError("--follow takes a job's id, not a workflow's: follow one of its"
                                      " steps' jobs (getstatus WORKFLOWID lists them)")
            if args.host is not None and CERTNAME_RE.fullmatch(args.host) is None:
                raise ValidationError(f"invalid host name {args.host!r}")
            return with_client(args.config, lambda client: follow(
                client, job_id, args.host or "", args.timeout, args.json))
        return with_client(args.config, lambda client: show(
            client, job_id, args.wait, args.timeout, args.json))
    return run_command("getstatus", body)


if __name__ == "__main__":
    raise SystemExit(main())
