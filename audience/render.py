"""How jobs are shown: human text, or one JSON object whose keys are stable (README)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from orchestra.errors import ExitCode
from orchestra.wire import audience_pb2, common_pb2

OUTPUT_LINES = 10


def state_name(state: int) -> str:
    return common_pb2.TaskState.Name(state).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]


def scope_name(scope: int) -> str:
    return {audience_pb2.SCOPE_ALL_OF: "all-of", audience_pb2.SCOPE_ONE_OF: "one-of"}.get(scope, "?")


def iso(ts: float) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
                "exit_code": t.exit_code if t.has_exit_code else None,
                "signal": t.signal or None,
                "response": dict(sorted(t.response.items())),
                "stdout": _text(t.stdout_tail),
                "stderr": _text(t.stderr_tail),
                "stdout_truncated": t.stdout_truncated,
                "stderr_truncated": t.stderr_truncated,
                "reason": t.reason,
                "dispatched_at": iso(t.dispatched_at),
                "started_at": iso(t.started_at),
                "finished_at": iso(t.finished_at),
            }
            for t in job.tasks
        ],
    }


def job_json(job: audience_pb2.Job) -> str:
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
        outcome = []
        if task.has_exit_code:
            outcome.append(f"exit {task.exit_code}")
        if task.signal:
            outcome.append(f"signal {task.signal}")
        if task.started_at and task.finished_at:
            outcome.append(f"{task.finished_at - task.started_at:.2f}s")
        lines.append(f"  {task.player or '(not chosen yet)':<24} {state_name(task.state):<10} "
                     f"{'  '.join(outcome)}".rstrip())
        if task.reason:
            lines.append(f"    reason: {task.reason}")
        if task.response:
            lines.append("    response: " + " ".join(f"{k}={v}" for k, v in sorted(task.response.items())))
        lines += _tail("stdout", task.stdout_tail, task.stdout_truncated)
        lines += _tail("stderr", task.stderr_tail, task.stderr_truncated)
    return "\n".join(lines) + "\n"
