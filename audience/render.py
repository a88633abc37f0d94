"""How jobs are shown: human text, or one JSON object whose keys are stable (README)."""

from __future__ import annotations

from typing import Any

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


def _tail(label: str, data: bytes, truncated: bool) -> list[str]:
    lines = _text(data).splitlines()
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
    lines = [
        f"job        {job.job_id}",
        f"score      {job.score} ({scope_name(job.scope)}: {' '.join(job.targets)})",
        f"params     {' '.join(f'{k}={v}' for k, v in sorted(job.params.items())) or '-'}",
        f"requester  {job.requester}",
        f"created    {iso(job.created_at)}   deadline {iso(job.deadline_at)}",
        f"status     {job.status}   ({counts})"
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
    lines = [f"  {player or '(not chosen yet)':<24} {state:<10} {'  '.join(facts)}".rstrip()]
    if outcome.reason:
        lines.append(f"    reason: {outcome.reason}")
    if outcome.response:
        cut = " (truncated by the player)" if outcome.response_truncated else ""
        lines.append("    response: " + " ".join(f"{k}={v}" for k, v in sorted(outcome.response.items())) + cut)
    lines += _tail("stdout", outcome.stdout, outcome.stdout_truncated)
    lines += _tail("stderr", outcome.stderr, outcome.stderr_truncated)
    return lines
