# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``canceljob [--wait [--timeout S]] [--json] JOBID|WORKFLOWID``: cancel a job or a
workflow; exit codes as getstatus.

Queued and not-yet-started tasks end ``cancelled`` at once. Running tasks are killed on
their player (the whole process group) and end ``cancelled`` once the player confirms;
``--wait`` waits for that. Without it the job is usually not finished yet (exit 3), so a
line on stderr says what was cancelled and what is still being stopped.

A workflow starts no step any more: its waiting steps end ``cancelled`` at once and the
jobs of its running steps are cancelled as above; it ends ``cancelled`` once they have.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from audience import render, waiting
from audience.client import Client
from audience.common import (
    Parser, add_job_arguments, job_exits, parse_job_arguments, run_command, with_client,
)
from orchestra.cli import report, write_out

WORKFLOW_NOTE = ("JOBID may be a workflow's id (w and 32 hex digits, as submitworkflow printed it): no"
                 " step of the workflow starts any more, the jobs of its running steps are cancelled,"
                 " and it is shown as getstatus shows it, with the same exit codes.")


def build_parser() -> Parser:
    parser = Parser(prog="canceljob", description="Cancel a job or a workflow.", exit_codes=job_exits("canceljob"),
                    epilog=WORKFLOW_NOTE)
    add_job_arguments(parser, "block until every task (of a workflow: every step) has ended")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parse_job_arguments(parser, argv)
        return with_client(args.config, lambda client: cancel(client, args))
    return run_command("canceljob", body)


def cancel(client: Client, args: argparse.Namespace) -> int:
    """Cancel, wait for the tasks to end if asked, and show the job as getstatus does,
    then say on stderr what was requested and what is still running."""
    job_id = waiting.check_id(args.job_id)
    if waiting.is_workflow_id(job_id):
        return cancel_workflow(client, job_id, args)
    job = client.cancel(job_id)
    if args.wait and not job.finished:
        job = waiting.wait(client, job_id, args.timeout, args.json)
    write_out(render.job_json(job) if args.json else render.job_text(job))
    report("canceljob", render.cancel_summary(job))
    return int(render.exit_code(job))


def cancel_workflow(client: Client, workflow_id: str, args: argparse.Namespace) -> int:
    """As for a job: cancel, wait if asked, show the workflow, say what is still running."""
    flow = client.cancel_workflow(workflow_id)
    if args.wait and not flow.finished:
        flow = client.wait_workflow(workflow_id, args.timeout)
    code = waiting.print_workflow(flow, args.json)
    report("canceljob", render.workflow_cancel_summary(flow))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
