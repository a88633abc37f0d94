"""``getstatus [--wait [--timeout S]] [--json] JOBID`` (CONTRACT.md §6)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from audience import render
from audience.client import Client
from audience.common import Parser, add_common, positive_seconds, run
from orchestra.params import check_job_id


def show(client: Client, job_id: str, wait: bool, timeout: float | None, as_json: bool) -> int:
    job = client.wait(job_id, timeout) if wait else client.get(job_id)
    sys.stdout.write(render.job_json(job) if as_json else render.job_text(job))
    return int(render.exit_code(job))


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="getstatus", description="Show a job, or wait for it to finish.")
    add_common(parser)
    parser.add_argument("--wait", action="store_true", help="block until the job is finished")
    parser.add_argument("--timeout", type=positive_seconds, help="with --wait: give up after S seconds (exit 3)")
    parser.add_argument("job_id", metavar="JOBID")
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")

    def body(client: Client) -> int:
        return show(client, check_job_id(args.job_id), args.wait, args.timeout, args.json)
    return run("getstatus", args.config, body)


if __name__ == "__main__":
    raise SystemExit(main())
