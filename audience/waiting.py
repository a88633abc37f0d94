"""Waiting for a job or a workflow to finish, as ``submitjob --wait``, ``submitworkflow
--wait``, ``getstatus --wait`` and ``canceljob --wait`` do, and showing it once it has."""

from __future__ import annotations


from audience import progress, render
from audience.client import Client
from orchestra.cli import write_out
from orchestra.errors import ValidationError
from orchestra.params import JOB_ID_RE, WORKFLOW_ID_RE
from orchestra.wire import audience_pb2



def is_workflow_id(text: str) -> bool:
    return WORKFLOW_ID_RE.fullmatch(text) is not None


def check_id(text: str) -> str:
    """A job's id or a workflow's, as getstatus and canceljob take them."""
    if JOB_ID_RE.fullmatch(text) is None and not is_workflow_id(text):
        raise ValidationError(f"invalid job id {text!r}: expected 32 lower-case hex digits"
                              " (or a workflow id: w and 32 lower-case hex digits)")
    return text


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
    """Print the job (after waiting for it, if asked) and return getstatus's exit code.
    A workflow's id shows the workflow instead."""
    if is_workflow_id(job_id):
        return show_workflow(client, job_id, wait_for_end, timeout, as_json)
    job = wait(client, job_id, timeout, as_json) if wait_for_end else client.get(job_id)
    write_out(render.job_json(job) if as_json else render.job_text(job))
    return int(render.exit_code(job))


def print_workflow(flow: audience_pb2.Workflow, as_json: bool) -> int:
    """Print the workflow; return its exit code (as a job's: 0 ok, 1 failed or cancelled,
    3 not finished)."""
    write_out(render.workflow_json(flow) if as_json else render.workflow_text(flow))
    return int(render.workflow_exit_code(flow))


def show_workflow(client: Client, workflow_id: str, wait_for_end: bool, timeout: float | None,
                  as_json: bool) -> int:
    """Print the workflow (after waiting for it, if asked) and return its exit code."""
    flow = client.wait_workflow(workflow_id, timeout) if wait_for_end else client.get_workflow(workflow_id)
    return print_workflow(flow, as_json)
