# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``getstatus [--wait [--timeout S]] [--json] JOBID`` (CONTRACT.md §6)."""

from __future__ import annotations

from collections.abc import Sequence

from audience.common import (
    Parser, add_job_arguments, job_exits, parse_job_arguments, run_command, with_client,
)
from audience.waiting import show
from orchestra.params import check_job_id


def build_parser() -> Parser:
    parser = Parser(prog="getstatus", description="Show a job, or wait for it to finish.",
                    exit_codes=job_exits("getstatus"))
    add_job_arguments(parser, "block until the job is finished")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parse_job_arguments(parser, argv)
        return with_client(args.config, lambda client: show(
            client, check_job_id(args.job_id), args.wait, args.timeout, args.json))
    return run_command("getstatus", body)


if __name__ == "__main__":
    raise SystemExit(main())
