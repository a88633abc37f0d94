"""submitjob's command line, both forms, as a pure function (CONTRACT.md §6).

Modern: ``[--all-of | --one-of] [options] SCORE [KEY=VALUE ...] HOST [HOST ...]``.
Original Orchestra: ``[-all-of] [options] SCORE HOST... [! KEY VALUE ...]``, one-of unless
``-all-of``, so scripts written for it keep working.

Parsing prints nothing and never exits: bad input raises UsageError or ValidationError
(whose text is the one line submitjob prints), and ``--help`` raises HelpRequested. That
keeps it testable in-process, and the rules it applies are the conductor's own
(``orchestra.params``), so the CLI refuses exactly what the conductor would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from audience.common import Parser, add_common, positive_seconds
from orchestra.errors import UsageError
from orchestra.params import (
    check_idempotency_key, check_score_name, check_targets, normalize_params, parse_key_value,
    resolve_scope,
)

PROG = "submitjob"
LEGACY_SEPARATOR = "!"
LEGACY_ALL_OF = "-all-of"
LEGACY_USAGE = "usage: submitjob [-all-of] SCORE HOST... [! KEY VALUE ...]"


@dataclass(frozen=True)
class Submission:
    """Everything submitjob needs to submit and then, optionally, wait."""

    score: str
    scope: str  # "all" | "one"
    targets: tuple[str, ...]
    params: dict[str, str]
    config: str | None = None
    wait: bool = False
    timeout: float | None = None
    json: bool = False
    expires: float | None = None
    idempotency_key: str | None = None


@cache
def build_parser(legacy: bool) -> Parser:
    """The options both forms take; only the positionals differ. Built once per form:
    parsing does not change a parser."""
    parser = Parser(prog=PROG, description="Submit a job: run SCORE on the given hosts.",
                    epilog=f"The original Orchestra form is accepted too: {LEGACY_USAGE[7:]}"
                           " (one-of unless -all-of).")
    add_common(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-of", dest="scope", action="store_const", const="all",
                       help="run on every target")
    scope.add_argument("--one-of", dest="scope", action="store_const", const="one",
                       help="run on exactly one connected, least-busy target")
    if legacy:
        scope.add_argument(LEGACY_ALL_OF, dest="scope", action="store_const", const="all",
                           help="the original form's --all-of")
    parser.add_argument("--wait", action="store_true", help="then wait for the job as getstatus --wait")
    parser.add_argument("--timeout", type=positive_seconds, help="with --wait: give up after S seconds (exit 3)")
    parser.add_argument("--expires", type=positive_seconds,
                        help="seconds the job may wait for its players (default: conductor's job_deadline)")
    parser.add_argument("--idempotency-key", default="",
                        help="a repeated key returns the job first submitted with it")
    if legacy:
        parser.add_argument("words", nargs="*", metavar="SCORE|HOST")
    else:
        parser.add_argument("score", metavar="SCORE")
        parser.add_argument("words", nargs="+", metavar="KEY=VALUE|HOST")
    return parser


def is_legacy(argv: Sequence[str]) -> bool:
    """The original form is recognised by its '!' separator or its -all-of flag, neither of
    which can be a score, a host or a KEY=VALUE word of the modern form."""
    return LEGACY_SEPARATOR in argv or LEGACY_ALL_OF in argv


def split_words(words: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Words containing '=' are parameters; the others are target hosts."""
    params, hosts = [], []
    for word in words:
        if "=" in word:
            params.append(parse_key_value(word))
        else:
            hosts.append(word)
    return params, hosts


def parse_submission(argv: Sequence[str]) -> Submission:
    """Parse and validate a submitjob command line of either form."""
    legacy = is_legacy(argv)
    if legacy and LEGACY_SEPARATOR in argv:
        cut = list(argv).index(LEGACY_SEPARATOR)
        options, pairs = list(argv[:cut]), list(argv[cut + 1:])
    else:
        options, pairs = list(argv), []
    parser = build_parser(legacy)
    args = parser.parse_args(options)
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")
    if legacy:
        score, scope, targets, params = _legacy_job(args.words, pairs, args.scope)
    else:
        score, scope, targets, params = _modern_job(args.score, args.words, args.scope)
    return Submission(score=score, scope=scope, targets=targets, params=params,
                      config=args.config, wait=args.wait, timeout=args.timeout, json=args.json,
                      expires=args.expires,
                      idempotency_key=check_idempotency_key(args.idempotency_key))


Job = tuple[str, str, tuple[str, ...], dict[str, str]]


def _modern_job(score: str, words: Sequence[str], requested: str | None) -> Job:
    pairs, hosts = split_words(words)
    if not hosts:
        check_targets(hosts)  # "no target hosts given" comes before any other complaint
    name = check_score_name(score)
    targets = check_targets(hosts)
    params = normalize_params(pairs)
    return name, resolve_scope(requested, targets), tuple(targets), params


def _legacy_job(words: Sequence[str], pairs: Sequence[str], requested: str | None) -> Job:
    if len(pairs) % 2:
        raise UsageError(f"parameters after '!' come in KEY VALUE pairs; {pairs[-1]!r} has no value")
    if len(words) < 2:
        raise UsageError(LEGACY_USAGE)
    params = normalize_params(list(zip(pairs[0::2], pairs[1::2], strict=True)))
    name = check_score_name(words[0])
    targets = check_targets(words[1:])
    # The original form meant one-of unless told -all-of.
    return name, resolve_scope(requested or "one", targets), tuple(targets), params
