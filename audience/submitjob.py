"""``submitjob [--all-of | --one-of] [--wait [--timeout S]] [--json] SCORE [KEY=VALUE ...] HOST...``

Also accepts the original Orchestra form ``submitjob [-all-of] SCORE HOST... [! KEY VALUE ...]``
(one-of unless ``-all-of``), so existing scripts keep working (CONTRACT.md §6).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from audience.client import Client
from audience.common import Parser, add_common, positive_seconds, run
from audience.getstatus import show
from orchestra.errors import ExitCode, OrchestraError, UsageError
from orchestra.params import check_certname, check_score_name, normalize_params, parse_key_value
from orchestra.wire import audience_pb2


@dataclass(frozen=True)
class Submission:
    score: str
    scope: int
    targets: list[str]
    params: dict[str, str]


def split_words(words: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Words containing '=' are parameters; the others are target hosts."""
    params, hosts = [], []
    for word in words:
        if "=" in word:
            params.append(parse_key_value(word))
        else:
            hosts.append(word)
    return params, hosts


def parse_legacy(argv: Sequence[str]) -> Submission:
    """``[-all-of] SCORE HOST... [! KEY VALUE ...]`` as the original Orchestra took it."""
    words = list(argv)
    scope = audience_pb2.SCOPE_ONE_OF
    if words and words[0] == "-all-of":
        scope = audience_pb2.SCOPE_ALL_OF
        words = words[1:]
    if "!" in words:
        cut = words.index("!")
        words, pairs = words[:cut], words[cut + 1:]
    else:
        pairs = []
    if len(pairs) % 2:
        raise UsageError(f"parameters after '!' come in KEY VALUE pairs; {pairs[-1]!r} has no value")
    if len(words) < 2:
        raise UsageError("usage: submitjob [-all-of] SCORE HOST... [! KEY VALUE ...]")
    params = normalize_params(list(zip(pairs[0::2], pairs[1::2], strict=True)))
    return Submission(check_score_name(words[0]), scope,
                      [check_certname(h) for h in words[1:]], params)


def is_legacy(argv: Sequence[str]) -> bool:
    return "!" in argv or (bool(argv) and argv[0] == "-all-of")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if is_legacy(argv):
        try:
            submission = parse_legacy(argv)
        except OrchestraError as err:
            sys.stderr.write(f"submitjob: {err}\n")
            return int(err.exit_code)
        return run("submitjob", None, lambda client: submit(client, submission, None, None, False, None, ""))
    parser = Parser(prog="submitjob", description="Submit a job: run SCORE on the given hosts.")
    add_common(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-of", dest="scope", action="store_const", const=audience_pb2.SCOPE_ALL_OF,
                       help="run on every target")
    scope.add_argument("--one-of", dest="scope", action="store_const", const=audience_pb2.SCOPE_ONE_OF,
                       help="run on exactly one connected, least-busy target")
    parser.add_argument("--wait", action="store_true", help="then wait for the job as getstatus --wait")
    parser.add_argument("--timeout", type=positive_seconds, help="with --wait: give up after S seconds (exit 3)")
    parser.add_argument("--expires", type=positive_seconds,
                        help="seconds the job may wait for its players (default: conductor's job_deadline)")
    parser.add_argument("--idempotency-key", default="",
                        help="a repeated key returns the job first submitted with it")
    parser.add_argument("score", metavar="SCORE")
    parser.add_argument("words", nargs="+", metavar="KEY=VALUE|HOST")
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")
    try:
        pairs, hosts = split_words(args.words)
        if not hosts:
            raise UsageError("no target hosts given")
        submission = Submission(check_score_name(args.score), args.scope or audience_pb2.SCOPE_UNSPECIFIED,
                                [check_certname(h) for h in hosts], normalize_params(pairs))
        if len(set(submission.targets)) > 1 and not args.scope:
            raise UsageError("more than one target: choose --all-of or --one-of")
    except OrchestraError as err:
        sys.stderr.write(f"submitjob: {err}\n")
        return int(err.exit_code)
    return run("submitjob", args.config, lambda client: submit(
        client, submission, args.timeout, args.expires, args.json, args.wait or None,
        args.idempotency_key))


def submit(client: Client, sub: Submission, timeout: float | None, expires: float | None,
           as_json: bool, wait: bool | None, idempotency_key: str) -> int:
    reply = client.submit(audience_pb2.SubmitRequest(
        score=sub.score, scope=sub.scope, targets=sub.targets, params=sub.params,  # type: ignore[arg-type]
        expires_seconds=int(expires or 0), idempotency_key=idempotency_key))
    if not wait:
        sys.stdout.write(json.dumps({"job_id": reply.job_id, "existing": reply.existing}) + "\n"
                         if as_json else f"{reply.job_id}\n")
        return int(ExitCode.OK)
    if not as_json:  # --json prints one object only; it carries job_id
        sys.stdout.write(f"{reply.job_id}\n")
        sys.stdout.flush()
    return show(client, reply.job_id, True, timeout, as_json)


if __name__ == "__main__":
    raise SystemExit(main())
