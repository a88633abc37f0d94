"""A workflow described in a TOML file (``submitworkflow wf.toml``): steps, each a job, run
in the order their ``after`` lists give, with values passed on from one step to the next.

The file mirrors a job file (``audience.jobfile``): each ``[steps.NAME]`` table takes a job
file's keys, read by the job file's own reader, so a step refuses exactly what a job file
(and the command line) refuses, with the same messages under the step's key path
(``wf.toml: steps.upgrade.priority: invalid priority 'urgent': …``). Only the keys a
workflow adds are read here: ``after`` and ``on_failure`` of a step, and the workflow's
``name``, ``labels``, ``idempotency_key``, ``[params]`` and ``[steps]``.

The workflow's shape (step names, ``after`` naming known steps, no cycle) and its
templates (``{{ params.KEY }}``, ``{{ steps.NAME.response.KEY }}``, …) are checked by the
conductor when it is submitted, and nowhere else, so the two can never disagree; this
module checks what only the file knows: its keys and their types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audience import jobfile
from audience.jobfile import JobFile, _Reader
from audience.parse import Submission
from audience.submitjob import request_of
from orchestra.errors import ValidationError
from orchestra.joboptions import resolve_rollout
from orchestra.params import is_group, normalize_params, resolve_scope
from orchestra.wire import audience_pb2

KEYS = ("name", "labels", "idempotency_key", "params", "steps")
# A step is a job (every job file key but the idempotency key: the workflow's covers its
# steps) and its place in the workflow.
JOB_KEYS = tuple(key for key in jobfile.KEYS if key != "idempotency_key")
STEP_KEYS = (*JOB_KEYS, "after", "on_failure")
REQUIRED = ("score", "targets")  # what a step's job cannot do without


def load(path: str, params: Mapping[str, str] = {}, environ: Mapping[str, str] | None = None,
         ) -> audience_pb2.WorkflowRequest:
    """Read and check the workflow file at ``path`` (and the secrets it points to).
    ``params`` (KEY=VALUE from the command line) override the file's ``[params]``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(jobfile.MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ValidationError(f"{path}: cannot read workflow file: {err.strerror or err}") from None
    return parse(data, path, params, environ)


def parse(data: bytes, path: str, params: Mapping[str, str] = {},
          environ: Mapping[str, str] | None = None) -> audience_pb2.WorkflowRequest:
    """A workflow file's content, checked, as the request the conductor takes; ``path``
    names it in errors, and relative ``file`` parameters are read from its directory."""
    table = jobfile.read_toml(data, path, "workflow file")
    return _Workflow(_Reader(path, environ)).request(table, params)


class _Workflow:
    """The workflow's own keys and each step's; the job keys go to the job file's reader."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader

    def request(self, table: dict[str, Any], overrides: Mapping[str, str]) -> audience_pb2.WorkflowRequest:
        reader = self.reader
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise reader.fail(unknown[0], "unknown key")
        name = reader.name("name", table["name"]) if "name" in table else ""
        labels = reader.labels("labels", table["labels"]) if "labels" in table else {}
        key = reader.idempotency_key("idempotency_key", table["idempotency_key"]) if "idempotency_key" in table \
            else None
        params = reader.params("params", table["params"]) if "params" in table else {}
        params = self.overridden(params, overrides)
        if "steps" not in table:
            raise reader.fail("steps", "missing: a workflow needs at least one [steps.NAME] table")
        steps: dict[str, Any] = reader.typed("steps", table["steps"], (dict,), "a table of steps ([steps.NAME])")
        if not steps:
            raise reader.fail("steps", "empty: a workflow needs at least one [steps.NAME] table")
        return audience_pb2.WorkflowRequest(
            name=name, labels=labels, params=params, idempotency_key=key or "",
            steps=[self.step(step, value) for step, value in steps.items()])

    def overridden(self, params: dict[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
        """The file's params with the command line's KEY=VALUE over them, key by key (keys
        are case-insensitive). A key the file does not declare is refused: a misspelt
        override must not leave the file's value silently in force."""
        given = normalize_params(overrides)
        undeclared = sorted(set(given) - set(params))
        if undeclared:
            declared = ", ".join(sorted(params)) or "none"
            raise ValidationError(f"parameter {undeclared[0]} is not one of the workflow's [params] in"
                                  f" {self.reader.path} (declared: {declared})")
        return normalize_params({**params, **given})

    def step(self, name: str, value: Any) -> audience_pb2.WorkflowStep:
        reader = self.reader
        prefix = f"steps.{name}"
        table: dict[str, Any] = reader.typed(prefix, value, (dict,), f"a table ([{prefix}])")
        unknown = sorted(set(table) - set(STEP_KEYS))
        if unknown:
            why = ("unknown key (the workflow's idempotency_key covers its steps)"
                   if unknown[0] == "idempotency_key" else "unknown key")
            raise reader.fail(f"{prefix}.{unknown[0]}", why)
        for key in REQUIRED:
            if key not in table:
                raise reader.fail(f"{prefix}.{key}", "missing: every step needs a score and its targets")
        # One method of the job file's reader per key, named as the key (as its job() does).
        found = {key: getattr(reader, key)(f"{prefix}.{key}", given)
                 for key, given in table.items() if key in JOB_KEYS}
        job = JobFile(path=reader.path, **found)
        after = self.after(f"{prefix}.after", table.get("after", []))
        on_failure = reader.typed(f"{prefix}.on_failure", table.get("on_failure", ""), (str,),
                                  '"stop" or "continue"')
        return audience_pb2.WorkflowStep(name=name, after=after, on_failure=on_failure,
                                         job=request_of(self.submission(prefix, job)))

    def after(self, key: str, value: Any) -> list[str]:
        items: list[Any] = self.reader.typed(key, value, (list,), "a list of step names")
        for index, item in enumerate(items):
            self.reader.typed(f"{key}[{index}]", item, (str,), "a step name")
        return items

    def submission(self, prefix: str, job: JobFile) -> Submission:
        """The step's job as submitjob would submit it from this job file alone: its
        scope and rollout checked against its targets by the command line's rules."""
        assert job.score is not None and job.targets is not None  # REQUIRED
        targets = job.targets
        scope = self.reader.checked(f"{prefix}.scope", lambda: _scope(job.scope, targets))
        canary = job.canary or 0
        # A group's size is the conductor's to know: here, assume it leaves room for the canary.
        known = len(targets) if not any(is_group(t) for t in targets) else max(len(targets), canary + 1)
        self.reader.checked(prefix, lambda: resolve_rollout(canary, job.batch or "", job.max_failures or "",
                                                            scope, known))
        return Submission(score=job.score, scope=scope, targets=targets, params=job.params,
                          expires=job.expires, name=job.name or "", labels=job.labels,
                          priority=job.priority, canary=canary, batch=job.batch or "",
                          max_failures=job.max_failures or "")


def _scope(given: str | None, targets: tuple[str, ...]) -> str:
    try:
        return resolve_scope(given, targets)
    except ValidationError as err:
        if given is None:  # the rule speaks of the command line's options; say the file's key
            raise ValidationError(f'{err} (in a workflow file: scope = "all" or "one")') from None
        raise
