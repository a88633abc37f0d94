"""How jobs and workflows are shown: human text, or one JSON object whose keys are stable (README).

Human text shows every string that came from a user, a score or the conductor through
``visible``, so control characters are printed as escapes rather than obeyed by the
operator's terminal; ``--json`` carries the exact data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestra.cli import visible
from orchestra.errors import ExitCode
from orchestra.joboptions import PRIORITIES, rollout_text, settings_text
from orchestra.outcome import TaskOutcome, iso
from orchestra.wire import audience_pb2, common_pb2

OUTPUT_LINES = 10


def state_name(state: int) -> str:
    return common_pb2.TaskState.Name(state).removeprefix("TASK_STATE_").lower()


SCOPE_NAMES: dict[int, str] = {audience_pb2.SCOPE_ALL_OF: "all-of", audience_pb2.SCOPE_ONE_OF: "one-of"}


def scope_name(scope: int) -> str:
    return SCOPE_NAMES.get(scope, "?")


def exit_code(job: audience_pb2.Job) -> ExitCode:
    if not job.finished:
        return ExitCode.PENDING
    return ExitCode.OK if job.status == "ok" else ExitCode.FAILED


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def rollout_dict(job: audience_pb2.Job) -> dict[str, Any] | None:
    """The job's rollout as ``--json`` shows it; None when it has none."""
    if not job.HasField("rollout"):
        return None
    rollout = job.rollout
    return {
        "canary": rollout.canary,
        "batch": rollout.batch,
        "max_failures": rollout.max_failures if rollout.has_max_failures else None,
        "phase": rollout.phase,
        "phase_reason": rollout.phase_reason,
        "failures": rollout.failures,
    }


def task_dict(task: audience_pb2.Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "player": task.player or None,
        "state": state_name(task.state),
        "attempt": task.attempt,
        "dispatched_at": iso(task.dispatched_at),
        **TaskOutcome.from_wire(task.outcome).to_json(),
        "retries": task.retries,
        "not_before": iso(task.not_before),
        "history": [
            {
                "attempt": earlier.attempt,
                "player": earlier.player or None,
                "state": state_name(earlier.state),
                **TaskOutcome.from_wire(earlier.outcome).to_json(),
            }
            for earlier in task.history
        ],
    }


def job_dict(job: audience_pb2.Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "score": job.score,
        "scope": scope_name(job.scope),
        "targets": list(job.targets),
        "params": dict(sorted(job.params.items())),
        "requester": job.requester,
        "created_at": iso(job.created_at),
        "deadline_at": iso(job.deadline_at),
        "finished_at": iso(job.finished_at),
        "finished": job.finished,
        "status": job.status,
        "name": job.name or None,
        "labels": dict(sorted(job.labels.items())),
        "priority": job.priority,
        "rollout": rollout_dict(job),
        "retries": job.retries,
        "retry_delay": job.retry_delay,
        "concurrency": job.concurrency,
        "exclusive": job.exclusive,
        "workflow_id": job.workflow_id or None,
        "step": job.step or None,
        "tasks": [task_dict(t) for t in job.tasks],
    }


def job_json(job: audience_pb2.Job) -> str:
    import json  # only --json needs it

    return json.dumps(job_dict(job), indent=2, sort_keys=False) + "\n"


def output_lines(data: bytes) -> list[str]:
    """A score's output as lines that are safe to show: split only at newlines (a CRLF
    line ending is one ending), everything else unsafe shown as an escape."""
    lines = _text(data).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [visible(line.removesuffix("\r")) for line in lines]


def tasks_text(count: int) -> str:
    """1 task, 3 tasks."""
    return f"{count} task{'' if count == 1 else 's'}"


def cancel_summary(job: audience_pb2.Job) -> str:
    """What canceljob asked for and what is still under way. Without --wait it returns
    while running tasks are being killed on their players; exit 3 alone would not say
    that a cancel was requested, nor that those tasks are already being stopped."""
    states = [state_name(t.state) for t in job.tasks]
    cancelled = states.count("cancelled")
    stopping = sum(state in ("running", "cancelling") for state in states)
    waiting = sum(state in ("queued", "dispatched") for state in states)
    ended = len(states) - cancelled - stopping - waiting
    parts = [f"{tasks_text(cancelled)} cancelled"]
    if ended:
        parts.append(f"{tasks_text(ended)} had already ended")
    if stopping:
        # "Being stopped", not "stopped": a player that is offline hears of it when it is back.
        where = "its player" if stopping == 1 else "their players"
        parts.append(f"{tasks_text(stopping)} still running (being stopped on {where};"
                     " canceljob --wait waits for that)")
    if waiting:
        parts.append(f"{tasks_text(waiting)} not ended yet")
    return f"cancel requested for job {visible(job.job_id)}: {', '.join(parts)}"


def _tail(label: str, data: bytes, truncated: bool) -> list[str]:
    lines = output_lines(data)
    if not lines:
        return []
    shown = lines[-OUTPUT_LINES:]
    notes = []
    if len(lines) > len(shown):
        notes.append(f"last {len(shown)} of {len(lines)} lines")
    if truncated:
        notes.append("truncated by the player")
    more = f" ({'; '.join(notes)})" if notes else ""
    return [f"    {label}{more}:"] + [f"      | {line}" for line in shown]


def priority_text(priority: int) -> str:
    """``10 (high)``, ``-3``: the number, and its name when it has one."""
    names = [name for name, value in PRIORITIES.items() if value == priority]
    return f"{priority}{f' ({names[0]})' if names else ''}"


def job_text(job: audience_pb2.Job) -> str:
    states = [state_name(t.state) for t in job.tasks]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    params = " ".join(f"{k}={v}" for k, v in sorted(job.params.items()))
    labels = " ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))
    lines = [f"job        {visible(job.job_id)}"]
    if job.name:
        lines.append(f"name       {visible(job.name)}")
    if job.workflow_id:
        lines.append(f"workflow   {visible(job.workflow_id)} step {visible(job.step)}")
    lines += [
        f"score      {visible(job.score)} ({scope_name(job.scope)}: {visible(' '.join(job.targets))})",
        f"params     {visible(params) or '-'}",
    ]
    # What a job may have is shown only when it has it.
    for title, text in (("labels", visible(labels)),
                        ("priority", priority_text(job.priority) if job.priority else ""),
                        ("rollout", rollout_text(job.rollout) if job.HasField("rollout") else ""),
                        ("settings", settings_text(job))):
        if text:
            lines.append(f"{title:<10} {text}")
    lines += [
        f"requester  {visible(job.requester)}",
        f"created    {iso(job.created_at)}   deadline {iso(job.deadline_at)}",
        f"status     {visible(job.status)}   ({counts})"
        + (f"   finished {iso(job.finished_at)}" if job.finished else ""),
    ]
    for task in job.tasks:
        lines += _task_text(task)
    return "\n".join(lines) + "\n"


def _outcome_facts(outcome: TaskOutcome) -> list[str]:
    """``exit 1``, ``signal 9``, ``1.25s``: how an attempt ended, in short."""
    facts = []
    if outcome.exit_code is not None:
        facts.append(f"exit {outcome.exit_code}")
    if outcome.signal:
        facts.append(f"signal {outcome.signal}")
    if outcome.started_at and outcome.finished_at:
        facts.append(f"{outcome.finished_at - outcome.started_at:.2f}s")
    return facts


def _attempt_text(earlier: audience_pb2.Attempt) -> str:
    """One earlier attempt on one line: ``attempt 1 on p1: failed, exit 1 (reason)``."""
    outcome = TaskOutcome.from_wire(earlier.outcome)
    facts = ", ".join([state_name(earlier.state), *_outcome_facts(outcome)])
    where = f" on {visible(earlier.player)}" if earlier.player else ""
    reason = f" ({visible(outcome.reason)})" if outcome.reason else ""
    return f"    attempt {earlier.attempt}{where}: {facts}{reason}"


def _task_text(task: audience_pb2.Task) -> list[str]:
    outcome = TaskOutcome.from_wire(task.outcome)
    facts = _outcome_facts(outcome)
    if task.retries:
        facts.append(f"retried {task.retries} time{'' if task.retries == 1 else 's'}")
    player, state = task.player, state_name(task.state)
    lines = [f"  {visible(player) or '(not chosen yet)':<24} {state:<10} {'  '.join(facts)}".rstrip()]
    if task.not_before:
        lines.append(f"    retry waits until {iso(task.not_before)}")
    lines += [_attempt_text(earlier) for earlier in task.history]
    if outcome.reason:
        lines.append(f"    reason: {visible(outcome.reason)}")
    if outcome.response:
        cut = " (truncated by the player)" if outcome.response_truncated else ""
        response = " ".join(f"{k}={v}" for k, v in sorted(outcome.response.items()))
        lines.append(f"    response: {visible(response)}{cut}")
    lines += _tail("stdout", outcome.stdout, outcome.stdout_truncated)
    lines += _tail("stderr", outcome.stderr, outcome.stderr_truncated)
    return lines


# ---- workflows ----------------------------------------------------------------------------

def workflow_exit_code(flow: audience_pb2.Workflow) -> ExitCode:
    """As for a job: 0 ok, 1 failed or cancelled (a cancelled workflow did not do its
    work), 3 not finished yet."""
    if not flow.finished:
        return ExitCode.PENDING
    return ExitCode.OK if flow.status == "ok" else ExitCode.FAILED


def counts_dict(counts: Iterable[audience_pb2.TaskCount]) -> dict[str, int]:
    return {state_name(c.state): c.count for c in counts}


def step_dict(step: audience_pb2.WorkflowStepStatus) -> dict[str, Any]:
    return {
        "name": step.name,
        "state": step.state,
        "reason": step.reason,
        "job_id": step.job_id or None,
        "after": list(step.after),
        "on_failure": step.on_failure or "stop",
        "score": step.score,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "counts": counts_dict(step.counts),
        "params": dict(sorted(step.params.items())),
    }


def workflow_dict(flow: audience_pb2.Workflow) -> dict[str, Any]:
    return {
        "workflow_id": flow.workflow_id,
        "name": flow.name or None,
        "labels": dict(sorted(flow.labels.items())),
        "requester": flow.requester,
        "status": flow.status,
        "finished": flow.finished,
        "created_at": iso(flow.created_at),
        "finished_at": iso(flow.finished_at),
        "reason": flow.reason,
        "steps": [step_dict(step) for step in flow.steps],
    }


def workflow_json(flow: audience_pb2.Workflow) -> str:
    import json  # only --json needs it

    return json.dumps(workflow_dict(flow), indent=2, sort_keys=False) + "\n"


def workflow_text(flow: audience_pb2.Workflow) -> str:
    """A header, then one line per step in the workflow's order: what it is, where it
    stands, its job and its tasks, and why it failed or was skipped."""
    labels = " ".join(f"{k}={v}" for k, v in sorted(flow.labels.items()))
    lines = [f"workflow   {visible(flow.workflow_id)}"]
    if flow.name:
        lines.append(f"name       {visible(flow.name)}")
    if labels:
        lines.append(f"labels     {visible(labels)}")
    lines += [
        f"requester  {visible(flow.requester)}",
        f"created    {iso(flow.created_at)}" + (f"   finished {iso(flow.finished_at)}" if flow.finished else ""),
        f"status     {visible(flow.status)}",
    ]
    if flow.reason:
        lines.append(f"reason     {visible(flow.reason)}")
    rows = [("STEP", "STATE", "JOB", "SCORE", "AFTER", "TASKS", "REASON")]
    rows += [(visible(step.name), visible(step.state), visible(step.job_id) or "-", visible(step.score) or "-",
              visible(",".join(step.after)) or "-",
              ", ".join(f"{c.count} {state_name(c.state)}" for c in step.counts) or "-",
              visible(step.reason)) for step in flow.steps]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  " + ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                      + "  " + row[-1]).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def steps_text(count: int) -> str:
    """1 step, 3 steps."""
    return f"{count} step{'' if count == 1 else 's'}"


def workflow_cancel_summary(flow: audience_pb2.Workflow) -> str:
    """What canceljob did to a workflow: steps that will not run, and steps whose jobs are
    being cancelled (the workflow ends once they have)."""
    states = [step.state for step in flow.steps]
    cancelled = states.count("cancelled")
    running = states.count("running")
    ended = len(states) - cancelled - running - states.count("waiting")
    parts = [f"{steps_text(cancelled)} cancelled"]
    if ended:
        parts.append(f"{steps_text(ended)} had already ended")
    if running:
        whose = "its job" if running == 1 else "their jobs"
        parts.append(f"{steps_text(running)} still running ({whose} being cancelled;"
                     " canceljob --wait waits for that)")
    return f"cancel requested for workflow {visible(flow.workflow_id)}: {', '.join(parts)}"
