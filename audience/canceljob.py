# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``canceljob [--wait [--timeout S]] [--json] JOBID``: cancel a job; exit codes as getstatus.

Queued and not-yet-started tasks end ``cancelled`` at once. Running tasks are killed on
their player (the whole process group) and end ``cancelled`` once the player confirms;
``--wait`` waits for that. Without it the job is usually not finished yet (exit 3), so a
line on stderr says what was cancelled and what is still being stopped.
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
from orchestra.params import check_job_id


def build_parser() -> Parser:
    parser = Parser(prog="canceljob", description="Cancel a job.", exit_codes=job_exits("canceljob"))
    add_job_arguments(parser, "block until every task has ended")
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
    job_id = check_job_id(args.job_id)
    job = client.cancel(job_id)
    if args.wait and not job.finished:
        job = waiting.wait(client, job_id, args.timeout, args.json)
    write_out(render.job_json(job) if args.json else render.job_text(job))
    report("canceljob", render.cancel_summary(job))
    return int(render.exit_code(job))


if __name__ == "__main__":
    raise SystemExit(main())
