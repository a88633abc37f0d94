"""From a submission to a job: every check a job passes before it is queued, in one place.

``submitjob`` (the Audience's Submit), a workflow's step when it starts, and a schedule's
run all turn a ``SubmitRequest`` and a requester into a :class:`NewJob` here, so each is
held to the same rules: the shared validation of :mod:`orchestra.params` and
:mod:`orchestra.joboptions`, the conductor's groups and players file, the score's
declarations as its targets reported them, and the policy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from conductor.lifecycle import Lifecycle
from conductor.policy import Policy, Requester, requester_now
from conductor.store import NewJob, ScoreRules
from orchestra.errors import PolicyDenied, ValidationError
from orchestra.joboptions import check_job_name, check_labels, parse_amount, parse_priority, resolve_rollout
from orchestra.params import (
    ScoreDecls, apply_decls, check_idempotency_key, check_score_name, check_targets, normalize_params,
    resolve_scope,
)
from orchestra.wire import audience_pb2

SCOPES = {audience_pb2.SCOPE_ALL_OF: "all", audience_pb2.SCOPE_ONE_OF: "one"}
WIRE_SCOPES = {name: wire for wire, name in SCOPES.items()}


class Submissions:
    def __init__(self, lifecycle: Lifecycle, job_deadline: float, policy: Callable[[], Policy]) -> None:
        self.lifecycle = lifecycle
        self.job_deadline = job_deadline
        self.policy = policy
        # Why a certificate is refused now (the CRL), None if it is not: set by main.
        self.revoked: Callable[[Requester], str | None] = lambda who: None

    def owner(self, record: Mapping[str, object]) -> Requester:
        """The requester a workflow's steps or a schedule's runs are submitted as, as it
        stands now: its groups read again, and refused (PolicyDenied) when it is a user
        that no longer exists, a certificate the CRL revokes, or one ``[audience]`` no
        longer admits, as its own calls would be."""
        who = requester_now(record)
        if who.kind == "cert":
            if not self.policy().admits_cert(who.name):
                raise PolicyDenied(f"{who.name} is no longer an audience identity")
            why = self.revoked(who)
            if why is not None:
                raise PolicyDenied(f"the certificate of {who.name} is refused: {why}")
        return who

    def job(self, request: audience_pb2.SubmitRequest, who: Requester) -> NewJob:
        """:meth:`parse` then :meth:`check`: raises ValidationError or PolicyDenied."""
        return self.check(self.parse(request, who), who)

    def parse(self, request: audience_pb2.SubmitRequest, who: Requester) -> NewJob:
        """The request as sent, checked on its own (names, sizes, scope): what an
        idempotency key stands for. Raises ValidationError."""
        score = check_score_name(request.score)
        params = normalize_params(dict(request.params))
        targets = check_targets(request.targets)
        scope = resolve_scope(SCOPES.get(request.scope), targets)
        key = check_idempotency_key(request.idempotency_key)
        expires = request.expires_seconds or self.job_deadline
        name = check_job_name(request.name)
        labels = check_labels(dict(request.labels))
        priority = parse_priority(request.priority) if request.HasField("priority") else 0
        rollout = request.rollout
        parse_amount(rollout.batch, "--batch")  # checked now; resolved against the targets later
        parse_amount(rollout.max_failures, "--max-failures")
        sent = {"name": name, "labels": labels, "priority": priority, "canary": rollout.canary,
                "batch": rollout.batch.strip(), "max_failures": rollout.max_failures.strip()}
        return NewJob(score=score, scope=scope, targets=tuple(targets), params=params, secret_keys=(),
                      requester=who.label, deadline_at=time.time() + expires, idempotency_key=key,
                      request_params=params, request_targets=tuple(targets),
                      request_options={k: v for k, v in sent.items() if v}, name=name, labels=labels,
                      priority=priority)

    def check(self, draft: NewJob, who: Requester, deferred: frozenset[str] = frozenset()) -> NewJob:
        """The request against what the conductor knows now: its groups and the players
        file, what the targets reported (the score's declarations) and the policy.

        ``deferred`` params are not known yet (a workflow step's templates of earlier
        steps, filled in and checked when the step starts): each must be declared by
        the score (when it declares any), but its value is not checked, and it counts
        as given; the rest is checked as for a job."""
        score, params = draft.score, {k: v for k, v in draft.params.items() if k not in deferred}
        targets = self.lifecycle.clusters.expand(draft.targets, self.lifecycle.sessions.roster)
        unknown = [t for t in targets if t not in self.lifecycle.sessions.roster]
        if unknown:
            raise ValidationError(f"not in the players file: {', '.join(unknown[:10])}")
        options = draft.request_options
        canary = options.get("canary", 0)
        assert isinstance(canary, int)
        rollout = resolve_rollout(canary, str(options.get("batch", "")), str(options.get("max_failures", "")),
                                  draft.scope, len(targets))
        self._check_runnable(score, targets)
        # Enforce the score's declarations as the targets last reported them; a player
        # checks again before it runs anything.
        secret: set[str] = set()
        checked = params
        by_decls: dict[ScoreDecls, dict[str, str]] = {}  # a fleet mostly shares one .conf
        for target in targets:
            decls = self.lifecycle.sessions.declarations(target, score)
            if decls is not None:
                if decls not in by_decls:
                    by_decls[decls] = apply_decls(params, decls, score) if not deferred else \
                        _apply_known(params, deferred, decls, score)
                    secret |= {d.name for d in decls.params if d.secret}
                checked = by_decls[decls]
        decision = self.policy().decide(who, score, targets, checked)
        if not decision.allowed:
            raise PolicyDenied(decision.reason, decision.rule)
        return dataclasses.replace(draft, targets=tuple(targets), params=checked, secret_keys=tuple(sorted(secret)),
                                   rollout=rollout, rules=self._score_rules(score, targets))

    def _score_rules(self, score: str, targets: list[str]) -> ScoreRules:
        """What the score's .conf asks of the conductor (retries, limits), as the targets
        reported it. When they disagree, the strictest: the fewest retries with the
        longest delay, the smallest concurrency, exclusive if any says so."""
        entries = set()
        for target in targets:
            record = self.lifecycle.sessions.known.get(target)
            entry = next((e for e in record.inventory if e.name == score and e.valid), None) if record else None
            if entry is not None:
                entries.add((entry.retries, entry.retry_delay, entry.concurrency, entry.exclusive))
        if not entries:
            return ScoreRules()
        limits = [entry[2] for entry in entries if entry[2]]
        return ScoreRules(min(entry[0] for entry in entries), max(entry[1] for entry in entries),
                          min(limits) if limits else 0, any(entry[3] for entry in entries))

    def _check_runnable(self, score: str, targets: list[str]) -> None:
        """Refuse now what every target would refuse later: each has reported its scores,
        and none has this one installed and valid. A target that never reported may have
        it, so then the job is queued as before."""
        why: dict[str, str] = {}
        for target in targets:
            record = self.lifecycle.sessions.known.get(target)
            if record is None:
                return
            entry = next((e for e in record.inventory if e.name == score), None)
            if entry is not None and entry.valid:
                return
            why[target] = "not installed" if entry is None else f"invalid: {entry.error}"
        shown = "; ".join(f"{target}: {reason}" for target, reason in list(why.items())[:5])
        more = f"; and {len(why) - 5} more" if len(why) > 5 else ""
        raise ValidationError(f"no target can run {score}, as they last reported ({shown}{more})")


def _apply_known(params: dict[str, str], deferred: frozenset[str], decls: ScoreDecls, score: str) -> dict[str, str]:
    """:func:`apply_decls` for a job some of whose params are known only later: every
    param must be declared (when the score declares any), and those known later count
    as given, their values checked once known."""
    if not decls.params:
        return dict(params)
    declared = decls.by_name()
    for key in sorted({*params, *deferred}):
        if key not in declared:
            raise ValidationError(f"score {score} does not declare parameter {key}")
    known = ScoreDecls(tuple(decl for decl in decls.params if decl.name not in deferred))
    return apply_decls(params, known, score) if known.params else dict(params)
