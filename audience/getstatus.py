# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``getstatus [--wait [--timeout S]] [--json] JOBID|WORKFLOWID`` (CONTRACT.md §6).

A workflow's id (``w`` and 32 hex digits, as submitworkflow prints it) shows the workflow
and its steps, with the same exit codes as a job: one command answers "how is it going?"
for whatever id the operator holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from audience.common import (
    Parser, add_job_arguments, job_exits, parse_job_arguments, run_command, with_client,
)
from audience.waiting import check_id, show

WORKFLOW_NOTE = ("JOBID may be a workflow's id (w and 32 hex digits, as submitworkflow printed it): the"
                 " workflow is shown, a line per step, with the exit codes a job has (0 ok; 1 failed or"
                 " cancelled; 3 not finished; 5 no such workflow).")


def build_parser() -> Parser:
    parser = Parser(prog="getstatus", description="Show a job or a workflow, or wait for it to finish.",
                    exit_codes=job_exits("getstatus"), epilog=WORKFLOW_NOTE)
    add_job_arguments(parser, "block until the job (or workflow) is finished")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parse_job_arguments(parser, argv)
        return with_client(args.config, lambda client: show(
            client, check_id(args.job_id), args.wait, args.timeout, args.json))
    return run_command("getstatus", body)


if __name__ == "__main__":
    raise SystemExit(main())
