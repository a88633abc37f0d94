"""Waiting for a job to finish, as ``submitjob --wait``, ``getstatus --wait`` and
``canceljob --wait`` do, and showing the job once it has."""

from __future__ import annotations

from audience import progress, render
from audience.client import Client
from orchestra.cli import write_out
from orchestra.wire import audience_pb2


def wait(client: Client, job_id: str, timeout: float | None, as_json: bool) -> audience_pb2.Job:
    """The job once it has finished, or as it is when ``timeout`` runs out; meanwhile, on
    a terminal, a live progress line streamed from the conductor."""
    if not progress.wanted(as_json):
        return client.wait(job_id, timeout)
    line = progress.LiveLine()
    try:
        return client.wait(job_id, timeout, progress=line.update)
    finally:
        line.close()


def show(client: Client, job_id: str, wait_for_end: bool, timeout: float | None, as_json: bool) -> int:
    """Print the job (after waiting for it, if asked) and return getstatus's exit code."""
    job = wait(client, job_id, timeout, as_json) if wait_for_end else client.get(job_id)
    write_out(render.job_json(job) if as_json else render.job_text(job))
    return int(render.exit_code(job))
