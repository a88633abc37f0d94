"""How jobs are shown: human text, or one JSON object whose keys are stable (README).

Human text shows every string that came from a user, a score or the conductor through
``visible``, so control characters are printed as escapes rather than obeyed by the
operator's terminal; ``--json`` carries the exact data.
"""

from __future__ import annotations

from typing import Any

from orchestra.cli import visible
from orchestra.errors import ExitCode
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
        "tasks": [
            {
                "task_id": t.task_id,
                "player": t.player or None,
                "state": state_name(t.state),
                "attempt": t.attempt,
                "dispatched_at": iso(t.dispatched_at),
                **TaskOutcome.from_wire(t.outcome).to_json(),
            }
            for t in job.tasks
        ],
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


def _tasks(count: int) -> str:
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
    parts = [f"{_tasks(cancelled)} cancelled"]
    if ended:
        parts.append(f"{_tasks(ended)} had already ended")
    if stopping:
        # "Being stopped", not "stopped": a player that is offline hears of it when it is back.
        where = "its player" if stopping == 1 else "their players"
        parts.append(f"{_tasks(stopping)} still running (being stopped on {where};"
                     " canceljob --wait waits for that)")
    if waiting:
        parts.append(f"{_tasks(waiting)} not ended yet")
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


def job_text(job: audience_pb2.Job) -> str:
    states = [state_name(t.state) for t in job.tasks]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    params = " ".join(f"{k}={v}" for k, v in sorted(job.params.items()))
    lines = [
        f"job        {visible(job.job_id)}",
        f"score      {visible(job.score)} ({scope_name(job.scope)}: {visible(' '.join(job.targets))})",
        f"params     {visible(params) or '-'}",
        f"requester  {visible(job.requester)}",
        f"created    {iso(job.created_at)}   deadline {iso(job.deadline_at)}",
        f"status     {visible(job.status)}   ({counts})"
        + (f"   finished {iso(job.finished_at)}" if job.finished else ""),
    ]
    for task in job.tasks:
        lines += _task_text(task.player, state_name(task.state), TaskOutcome.from_wire(task.outcome))
    return "\n".join(lines) + "\n"


def _task_text(player: str, state: str, outcome: TaskOutcome) -> list[str]:
    facts = []
    if outcome.exit_code is not None:
        facts.append(f"exit {outcome.exit_code}")
    if outcome.signal:
        facts.append(f"signal {outcome.signal}")
    if outcome.started_at and outcome.finished_at:
        facts.append(f"{outcome.finished_at - outcome.started_at:.2f}s")
    lines = [f"  {visible(player) or '(not chosen yet)':<24} {state:<10} {'  '.join(facts)}".rstrip()]
    if outcome.reason:
        lines.append(f"    reason: {visible(outcome.reason)}")
    if outcome.response:
        cut = " (truncated by the player)" if outcome.response_truncated else ""
        response = " ".join(f"{k}={v}" for k, v in sorted(outcome.response.items()))
        lines.append(f"    response: {visible(response)}{cut}")
    lines += _tail("stdout", outcome.stdout, outcome.stdout_truncated)
    lines += _tail("stderr", outcome.stderr, outcome.stderr_truncated)
    return lines
