# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``retryjob [--failed] [--lost] [--expired] [--skipped] [--refused] [--wait [--timeout S]] [--json] JOBID``:
run a job's unsuccessful tasks again, each as a new attempt on the same target.

Which tasks: those in the states the flags name (``--failed``, the default, means failed
and timed out). The conductor decides what may be retried and answers with the tasks it
queued again; the earlier attempts stay in each task's history (``getstatus``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from audience import render
from audience.client import Client
from audience.common import (
    JOB_MEANINGS, Parser, add_job_arguments, parse_job_arguments, run_command, with_client,
)
from audience.waiting import show
from orchestra.cli import INTERRUPTED_MEANING, ExitMeanings, report, visible, write_out
from orchestra.errors import ExitCode, ValidationError
from orchestra.params import check_job_id
from orchestra.wire import common_pb2

PROG = "retryjob"

# Each flag and the task states it asks the conductor to retry.
FLAGS: dict[str, tuple[common_pb2.TaskState, ...]] = {
    "failed": (common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_TIMED_OUT),
    "lost": (common_pb2.TASK_STATE_LOST,),
    "expired": (common_pb2.TASK_STATE_EXPIRED,),
    "skipped": (common_pb2.TASK_STATE_SKIPPED,),
    "refused": (common_pb2.TASK_STATE_REFUSED,),
}
FLAG_HELP = {
    "failed": "retry the tasks that failed or timed out (the default)",
    "lost": "retry the lost tasks (started, and their outcome can no longer be known)",
    "expired": "retry the tasks that expired before they started",
    "skipped": "retry the tasks a stopped rollout skipped",
    "refused": "retry the tasks their player refused (the score was missing or invalid there, say)",
}

EXITS: ExitMeanings = (
    (ExitCode.OK, "tasks were queued again; with --wait: the job finished, succeeded"),
    (ExitCode.FAILED, "with --wait: the job finished, failed"),
    (ExitCode.USAGE, "usage error, or nothing to retry: no task of the job is in the states asked"
                     " for, or the conductor refuses the retry (denied by policy, say): nothing"
                     " was changed"),
    (ExitCode.PENDING, "with --wait: --timeout passed before the job finished"),
    (ExitCode.UNREACHABLE, JOB_MEANINGS[ExitCode.UNREACHABLE]),
    (ExitCode.NO_SUCH_JOB, JOB_MEANINGS[ExitCode.NO_SUCH_JOB]),
    (ExitCode.STORAGE, JOB_MEANINGS[ExitCode.STORAGE]),
    INTERRUPTED_MEANING,
)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Retry a job's unsuccessful tasks.", exit_codes=EXITS,
                    epilog="Without a flag, the failed and timed-out tasks are retried. The job id"
                           " is printed on stdout and one line on stderr says how many tasks are"
                           " retried; with --wait, the job is then shown as getstatus --wait"
                           " shows it.")
    for flag, help_text in FLAG_HELP.items():
        parser.add_argument(f"--{flag}", action="store_true", help=help_text)
    add_job_arguments(parser, "then wait for the job to finish, as getstatus --wait")
    return parser


def states_of(args: argparse.Namespace) -> list[common_pb2.TaskState]:
    """The task states the flags ask for (--failed when none is given), in a stable order."""
    chosen = [flag for flag in FLAGS if getattr(args, flag)] or ["failed"]
    return [state for flag in chosen for state in FLAGS[flag]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parse_job_arguments(parser, argv)
        return with_client(args.config, lambda client: retry(client, args))
    return run_command(PROG, body)


def retry(client: Client, args: argparse.Namespace) -> int:
    """Ask for the retry; say how many tasks it queued again; wait for the job if asked."""
    job_id = check_job_id(args.job_id)
    states = states_of(args)
    reply = client.retry(job_id, states)
    if not reply.task_ids:  # a conductor that answers "none" rather than refusing
        wanted = " or ".join(render.state_name(state) for state in states)
        raise ValidationError(f"nothing to retry: no task of job {job_id} is {wanted}")
    report(PROG, f"retrying {render.tasks_text(len(reply.task_ids))} of {job_id}")
    if not args.wait:
        if args.json:
            import json  # only --json needs it

            write_out(json.dumps({"job_id": job_id, "retried": list(reply.task_ids)}) + "\n")
        else:
            write_out(f"{visible(job_id)}\n")
        return int(ExitCode.OK)
    if not args.json:  # --json prints one object only, the job's; it carries job_id
        write_out(f"{visible(job_id)}\n")
    return show(client, job_id, True, args.timeout, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
