"""submitjob's command line, both forms, as a pure function (CONTRACT.md §6).

Modern: ``[--all-of | --one-of] [options] SCORE [KEY=VALUE ...] HOST [HOST ...]``.
Original Orchestra: ``[-all-of] [options] SCORE HOST... [! KEY VALUE ...]``, one-of unless
``-all-of``, so scripts written for it keep working. Both forms take the same options, and
take them anywhere on the line (trailing ``--wait`` included): see ``sort_words``.

Parsing prints nothing and never exits: bad input raises UsageError or ValidationError
(whose text is the one line submitjob prints), and ``--help`` raises HelpRequested. That
keeps it testable in-process, and the rules it applies are the conductor's own
(``orchestra.params``), so the CLI refuses exactly what the conductor would refuse.

Tab completion follows the modern form (the parser's parse_args answers it): score names,
then ``KEY=`` for the score's declared parameters and host names (``audience.completion``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from audience import completion
from audience.common import Parser, add_common, job_exits, positive_seconds
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
                    exit_codes=job_exits(PROG),
                    epilog=f"The original Orchestra form is accepted too: {LEGACY_USAGE[7:]}"
                           " (one-of unless -all-of). Both forms take these options anywhere"
                           " on the line, also after the '!' pairs.")
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
    for action in (
            parser.add_argument("--timeout", type=positive_seconds,
                                help="with --wait: give up after S seconds (exit 3)"),
            parser.add_argument("--expires", type=positive_seconds,
                                help="seconds the job may wait for its players "
                                     "(default: conductor's job_deadline)"),
            parser.add_argument("--idempotency-key", default="",
                                help="a repeated key returns the job first submitted with it")):
        completion.attach(action, completion.nothing)  # numbers and keys: not file names
    if legacy:
        parser.add_argument("words", nargs="*", metavar="SCORE|HOST",
                            help="SCORE, then the target hosts' certnames "
                                 "(then '!' and KEY VALUE pairs)")
    else:
        completion.attach(parser.add_argument("score", metavar="SCORE", help="the score to run"),
                          completion.scores)
        completion.attach(parser.add_argument(
            "words", nargs="+", metavar="KEY=VALUE|HOST",
            help="a parameter for the score (a word with '=') or a target host's certname"),
            completion.job_words)
        parser.completion_order = completion_order
    return parser


def split_words(words: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Words containing '=' are parameters; the others are target hosts."""
    params, hosts = [], []
    for word in words:
        if "=" in word:
            params.append(parse_key_value(word))
        else:
            hosts.append(word)
    return params, hosts


def looks_like_option(word: str) -> bool:
    """No score, host or parameter name starts with '-' (orchestra.params), so such a word
    is an option wherever it stands; '-' and '--' are not options."""
    return word.startswith("-") and word not in ("-", "--")


def takes_value(parser: Parser, word: str) -> bool:
    """Whether the option spelled `word` consumes the next word as its value. An unknown or
    ambiguous option takes none: argparse then refuses it by name."""
    if "=" in word:  # --config=F carries its value
        return False
    actions = parser._option_string_actions  # argparse has no public way to ask this
    action = actions.get(word)
    if action is None and word.startswith("--"):
        candidates = {a for spelling, a in actions.items() if spelling.startswith(word)}
        action = candidates.pop() if len(candidates) == 1 else None
    return action is not None and action.nargs != 0


@dataclass
class Words:
    """A command line sorted into what argparse must read as options and what it must not."""

    options: list[str] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)  # SCORE, hosts, KEY=VALUE words
    pairs: list[str] = field(default_factory=list)  # the original form's KEY VALUE words
    legacy: bool = False  # the original form's '!' or -all-of was seen


def sort_words(argv: Sequence[str]) -> Words:
    """Sort a command line of either form; options may stand anywhere.

    Before SCORE, among hosts and parameters, at the end, and in the original form also
    between the KEY VALUE pairs after '!' (a key never starts with '-'; a value may be
    anything and is never taken for an option). An option's value is never taken for a
    word of the job, nor for the original form's '!' or -all-of, and '--' ends the
    options for the rest of the line. argparse alone cannot do this: it takes no
    positionals after an option that follows some, and its intermixed mode mishandles '--'.
    """
    parser = build_parser(legacy=True)  # knows every option either form takes
    found = Words()
    options_end = in_pairs = False
    index = 0
    while index < len(argv):
        word, step = argv[index], 1
        if word == LEGACY_SEPARATOR and not in_pairs:
            in_pairs = found.legacy = True
        elif word == "--" and not options_end:
            options_end = True
        elif looks_like_option(word) and not options_end:
            step = 2 if takes_value(parser, word) else 1
            found.options += argv[index:index + step]
            found.legacy = found.legacy or word == LEGACY_ALL_OF
        elif in_pairs:
            step = 2
            found.pairs += argv[index:index + step]
        else:
            found.positionals.append(word)
        index += step
    return found


def completion_order(words: list[str]) -> list[str]:
    """The words of a modern-form line before the one being completed, options first (as
    sort_words sorts them), so that completion knows SCORE and the words after it whatever
    options stand among them. An option waiting for its value (the word being completed)
    stays last; a line of the original form, or with '--', is left as typed."""
    waiting = words[-1:] if words and looks_like_option(words[-1]) \
        and takes_value(build_parser(legacy=True), words[-1]) else []
    found = sort_words(words[:len(words) - len(waiting)])
    if found.legacy or "--" in words:
        return words
    return [*found.options, *found.positionals, *waiting]


def parse_submission(argv: Sequence[str]) -> Submission:
    """Parse and validate a submitjob command line of either form."""
    words = sort_words(argv)
    parser = build_parser(words.legacy)
    # Every option comes before '--', so argparse never reads a job's word as an option.
    args = parser.parse_args([*words.options, "--", *words.positionals])
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")
    if words.legacy:
        score, scope, targets, params = _legacy_job(args.words, words.pairs, args.scope)
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
