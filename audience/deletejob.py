# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``deletejob [--cancel [--timeout S]] [--json] JOBID``: forget a finished job and its tasks
now, rather than when ``job_retention`` purges it.

The conductor deletes only a finished job. ``--cancel`` first cancels the job and waits
for its tasks to end (as ``canceljob --wait``), then deletes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from audience import completion, waiting
from audience.client import Client
from audience.common import (
    JOB_MEANINGS, Parser, add_common, positive_seconds, run_command, with_client,
)
from orchestra.cli import INTERRUPTED_MEANING, ExitMeanings, report, write_out
from orchestra.errors import ExitCode
from orchestra.params import check_job_id

PROG = "deletejob"

EXITS: ExitMeanings = (
    (ExitCode.OK, "the job is deleted"),
    (ExitCode.USAGE, "usage error, or the conductor refuses: the job is not finished (give"
                     " --cancel), or the policy does not let this requester delete it: nothing"
                     " was deleted"),
    (ExitCode.PENDING, "with --cancel: --timeout passed before the job's tasks ended: the job is"
                       " cancelled but not deleted"),
    (ExitCode.UNREACHABLE, JOB_MEANINGS[ExitCode.UNREACHABLE]),
    (ExitCode.NO_SUCH_JOB, JOB_MEANINGS[ExitCode.NO_SUCH_JOB]),
    (ExitCode.STORAGE, JOB_MEANINGS[ExitCode.STORAGE]),
    INTERRUPTED_MEANING,
)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Delete a finished job and its tasks.", exit_codes=EXITS,
                    epilog="Prints 'deleted JOBID' (with --json, one object). A job that is not"
                           " finished is refused unless --cancel is given.")
    add_common(parser)
    parser.add_argument("--cancel", action="store_true",
                        help="cancel the job first and wait for its tasks to end, then delete it")
    completion.attach(parser.add_argument("--timeout", type=positive_seconds,
                                          help="with --cancel: give up waiting after S seconds (exit 3)"),
                      completion.nothing)
    completion.attach(parser.add_argument("job_id", metavar="JOBID",
                                          help="the job's id, as submitjob printed it"),
                      completion.nothing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        if args.timeout is not None and not args.cancel:
            parser.error("--timeout needs --cancel")
        return with_client(args.config, lambda client: delete(client, args))
    return run_command(PROG, body)


def delete(client: Client, args: argparse.Namespace) -> int:
    """Cancel and wait if asked, then delete; print what was deleted."""
    job_id = check_job_id(args.job_id)
    if args.cancel:
        job = client.cancel(job_id)
        if not job.finished:
            job = waiting.wait(client, job_id, args.timeout, args.json)
        if not job.finished:
            report(PROG, f"job {job_id} is cancelled, but its tasks have not all ended yet"
                         " (--timeout passed): not deleted")
            return int(ExitCode.PENDING)
    client.delete(job_id)
    if args.json:
        import json  # only --json needs it

        write_out(json.dumps({"job_id": job_id, "deleted": True}) + "\n")
    else:
        write_out(f"deleted {job_id}\n")
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
