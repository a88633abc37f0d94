# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``submitjob [--all-of | --one-of] [--wait [--timeout S]] [--json] [--file JOB.TOML] [options]
SCORE [KEY=VALUE ...] HOST|@GROUP...``

Also accepts the original Orchestra form ``submitjob [-all-of] SCORE HOST... [! KEY VALUE ...]``
(one-of unless ``-all-of``), so existing scripts keep working (CONTRACT.md §6). The command
line is parsed and validated by ``audience.parse`` before the conductor is dialled.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from audience.client import Client
from audience.common import run_command, with_client
from audience.waiting import show
from audience.parse import PROG, Submission, parse_submission
from orchestra.cli import visible, write_out
from orchestra.errors import ExitCode
from orchestra.wire import audience_pb2

WIRE_SCOPES = {"all": audience_pb2.SCOPE_ALL_OF, "one": audience_pb2.SCOPE_ONE_OF}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        submission = parse_submission(words)
        return with_client(submission.config, lambda client: submit(client, submission))
    return run_command(PROG, body)


def request_of(sub: Submission) -> audience_pb2.SubmitRequest:
    """The wire request; a fractional --expires rounds up, so it never becomes 0 (= default).
    The priority is set only when given, and the rollout only when asked for: the
    conductor tells "not given" from a value."""
    request = audience_pb2.SubmitRequest(
        score=sub.score, scope=WIRE_SCOPES[sub.scope], targets=sub.targets,
        params=sub.params, expires_seconds=math.ceil(sub.expires or 0),
        idempotency_key=sub.idempotency_key or "", name=sub.name, labels=sub.labels)
    if sub.priority is not None:
        request.priority = sub.priority
    if sub.canary or sub.batch or sub.max_failures:
        request.rollout.CopyFrom(audience_pb2.RolloutRequest(
            canary=sub.canary, batch=sub.batch, max_failures=sub.max_failures))
    return request


def submit(client: Client, sub: Submission) -> int:
    """Submit; print the job id (or one JSON object); with --wait, then act as getstatus --wait."""
    reply = client.submit(request_of(sub))
    if not sub.wait:
        if sub.json:
            import json  # only --json needs it

            write_out(json.dumps({"job_id": reply.job_id, "existing": reply.existing}) + "\n")
        else:
            write_out(f"{visible(reply.job_id)}\n")
        return int(ExitCode.OK)
    if not sub.json:  # --json prints one object only; it carries job_id
        write_out(f"{visible(reply.job_id)}\n")
    return show(client, reply.job_id, True, sub.timeout, sub.json)


if __name__ == "__main__":
    raise SystemExit(main())
