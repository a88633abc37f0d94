"""``getstatus [--wait [--timeout S]] [--json] JOBID`` (CONTRACT.md §6)."""

from __future__ import annotations

from collections.abc import Sequence

from audience import render
from audience.client import Client
from audience.common import Parser, add_job_arguments, parse_job_arguments, run_command, with_client
from orchestra.cli import write_out
from orchestra.params import check_job_id


def show(client: Client, job_id: str, wait: bool, timeout: float | None, as_json: bool) -> int:
    job = client.wait(job_id, timeout) if wait else client.get(job_id)
    write_out(render.job_json(job) if as_json else render.job_text(job))
    return int(render.exit_code(job))


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="getstatus", description="Show a job, or wait for it to finish.")
    add_job_arguments(parser, "block until the job is finished")

    def body() -> int:
        args = parse_job_arguments(parser, argv)
        return with_client(args.config, lambda client: show(
            client, check_job_id(args.job_id), args.wait, args.timeout, args.json))
    return run_command("getstatus", body)


if __name__ == "__main__":
    raise SystemExit(main())
