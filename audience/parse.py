"""submitjob's command line, both forms, as a pure function (CONTRACT.md §6).

Modern: ``[--all-of | --one-of] [options] SCORE [KEY=VALUE ...] HOST [HOST ...]``.
Original Orchestra: ``[-all-of] [options] SCORE HOST... [! KEY VALUE ...]``, one-of unless
``-all-of``, so scripts written for it keep working. Both forms take the same options, and
take them anywhere on the line (trailing ``--wait`` included): see ``sort_words``.

With ``--file job.toml`` the job comes from a job file (``audience.jobfile``) and the
command line may leave out SCORE and the hosts; whatever it gives overrides the file
(``_job``). Secret parameters come from files (``--param-file``) or the environment
(``--param-env``) rather than the command line, which every user of the host can read.

Parsing prints nothing and never exits: bad input raises UsageError or ValidationError
(whose text is the one line submitjob prints), and ``--help`` raises HelpRequested. That
keeps it testable in-process, and the rules it applies are the conductor's own
(``orchestra.params``, ``orchestra.joboptions``), so the CLI refuses exactly what the
conductor would refuse. It reads only what the line points to: the job file and the
files and variables that hold parameter values.

Tab completion follows the modern form (the parser's parse_args answers it): score names,
then ``KEY=`` for the score's declared parameters and host names (``audience.completion``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from audience import completion, jobfile
from audience.common import Parser, add_common, job_exits, positive_seconds
from audience.jobfile import JobFile
from orchestra.errors import UsageError, ValidationError
from orchestra.joboptions import (
    check_job_name, check_labels, parse_amount, parse_label, parse_priority, resolve_rollout,
)
from orchestra.params import (
    check_idempotency_key, check_score_name, check_targets, is_group, normalize_params,
    parse_key_value, resolve_scope,
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
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    priority: int | None = None  # None: not given (the conductor's default, normal)
    canary: int = 0
    batch: str = ""  # "N" or "P%"; "" = no limit
    max_failures: str = ""  # "N" or "P%"; "" = none


def whole_number(text: str) -> int:
    """--canary's N: its range is checked with the rest of the rollout (resolve_rollout)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


@cache
def build_parser(legacy: bool, job_file: bool = False) -> Parser:
    """The options both forms take; only the positionals differ (and with a job file,
    SCORE and the hosts may come from it). Built once per form: parsing does not change
    a parser."""
    parser = Parser(prog=PROG, description="Submit a job: run SCORE on the given hosts.",
                    exit_codes=job_exits(PROG),
                    epilog=f"The original Orchestra form is accepted too: {LEGACY_USAGE[7:]}"
                           " (one-of unless -all-of). Both forms take these options anywhere"
                           " on the line, also after the '!' pairs.\n\n"
                           "With --file, SCORE and the hosts may be left out: the job file"
                           " gives them. What the command line gives overrides the file: its"
                           " options, SCORE, and its hosts (which replace the file's targets);"
                           " parameters and labels are merged, key by key, the command line's"
                           " winning. A job file's keys: score, targets (a list), scope (\"all\" or"
                           " \"one\"), name, priority, expires, canary, batch, max_failures,"
                           " idempotency_key, and the tables [params] (each value a string,"
                           " { file = \"PATH\" } relative to the job file, or { env = \"VAR\" })"
                           " and [labels].")
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
            parser.add_argument("--idempotency-key",
                                help="a repeated key returns the job first submitted with it"),
            parser.add_argument("--name", help="a name for the job, shown with it (listjobs --name"
                                               " finds it)"),
            parser.add_argument("--label", action="append", metavar="KEY=VALUE",
                                help="a label for the job (listjobs --label finds it); repeat for"
                                     " several"),
            parser.add_argument("--canary", type=whole_number, metavar="N",
                                help="all-of: run on the first N targets first, the rest only once"
                                     " they all succeed"),
            parser.add_argument("--batch", metavar="N|P%",
                                help="all-of: at most N tasks (or P percent of the targets) at once"),
            parser.add_argument("--max-failures", metavar="N|P%",
                                help="all-of: start no more tasks once N (or P percent of the"
                                     " targets) have failed")):
        completion.attach(action, completion.nothing)  # numbers, names and keys: not file names
    completion.attach(parser.add_argument(
        "--priority", metavar="low|normal|high|N",
        help="queue order among the jobs waiting for a player: low, normal (the default),"
             " high, or a number from -100 to 100 (higher first)"), completion.priorities)
    completion.attach(parser.add_argument(
        "--param-file", action="append", metavar="KEY=PATH",
        help="parameter KEY's value is the content of file PATH (one trailing newline"
             " stripped): keeps secrets off the command line; repeat for several"),
        completion.param_files)
    completion.attach(parser.add_argument(
        "--param-env", action="append", metavar="KEY=VAR",
        help="parameter KEY's value is environment variable VAR's; repeat for several"),
        completion.param_envs)
    parser.add_argument("--file", metavar="JOB.TOML",
                        help="read the job from a TOML job file (score, targets, scope, params,"
                             " labels and options); the command line overrides it")
    if legacy:
        parser.add_argument("words", nargs="*", metavar="SCORE|HOST",
                            help="SCORE, then the target hosts' certnames or @groups "
                                 "(then '!' and KEY VALUE pairs)")
    else:
        completion.attach(parser.add_argument("score", metavar="SCORE", nargs="?" if job_file else None,
                                              help="the score to run"),
                          completion.scores)
        completion.attach(parser.add_argument(
            "words", nargs="*" if job_file else "+", metavar="KEY=VALUE|HOST",
            help="a parameter for the score (a word with '='), a target host's certname,"
                 " or @GROUP: a group of hosts named in the conductor's config"),
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


def option_action(parser: Parser, word: str) -> argparse.Action | None:
    """The option the word spells (``--conf`` for ``--config``, ``--config=F`` too); None
    for an unknown or ambiguous one."""
    spelling = word.partition("=")[0] if word.startswith("--") else word
    actions = parser._option_string_actions  # argparse has no public way to ask this
    action = actions.get(spelling)
    if action is None and spelling.startswith("--"):
        candidates = {a for name, a in actions.items() if name.startswith(spelling)}
        action = candidates.pop() if len(candidates) == 1 else None
    return action


def takes_value(parser: Parser, word: str) -> bool:
    """Whether the option spelled `word` consumes the next word as its value. An unknown or
    ambiguous option takes none: argparse then refuses it by name."""
    if "=" in word:  # --config=F carries its value
        return False
    action = option_action(parser, word)
    return action is not None and action.nargs != 0


def split_options(parser: Parser, words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options (each with its value) apart from the other words, so options may stand
    anywhere on a line: no score, host or parameter name starts with '-', and '--' ends
    the options."""
    options: list[str] = []
    others: list[str] = []
    index, options_end = 0, False
    while index < len(words):
        word, step = words[index], 1
        if word == "--" and not options_end:
            options_end = True
        elif looks_like_option(word) and not options_end:
            step = 2 if takes_value(parser, word) else 1
            options += words[index:index + step]
        else:
            others.append(word)
        index += step
    return options, others


@dataclass
class Words:
    """A command line sorted into what argparse must read as options and what it must not."""

    options: list[str] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)  # SCORE, hosts, KEY=VALUE words
    pairs: list[str] = field(default_factory=list)  # the original form's KEY VALUE words
    legacy: bool = False  # the original form's '!' or -all-of was seen
    job_file: bool = False  # --file was given: SCORE and the hosts may come from it


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
            action = option_action(parser, word)
            found.job_file = found.job_file or (action is not None and action.dest == "file")
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


def parse_submission(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Submission:
    """Parse and validate a submitjob command line of either form, with the job file and
    the parameter values it points to (``environ``: the environment, for --param-env and
    a job file's ``env`` parameters)."""
    words = sort_words(argv)
    parser = build_parser(words.legacy, words.job_file)
    # Every option comes before '--', so argparse never reads a job's word as an option.
    args = parser.parse_args([*words.options, "--", *words.positionals])
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")
    if words.legacy:
        given = _legacy_words(args.words, words.pairs, args.file is not None)
    else:
        given = _modern_words(args.score, args.words, args.file is not None)
    if args.file is None and not given.hosts:
        check_targets(given.hosts)  # "no target hosts given" comes before any other complaint
    job = jobfile.load(args.file, environ) if args.file is not None else JobFile(path="")
    return _job(args, given, job, words.legacy, environ)


@dataclass(frozen=True)
class Given:
    """What the command line's words say of the job: SCORE (None if left to the job file),
    the hosts, and KEY=VALUE parameters."""

    score: str | None
    hosts: list[str]
    pairs: list[tuple[str, str]]


def _modern_words(score: str | None, words: Sequence[str], job_file: bool) -> Given:
    if job_file and score is not None and "=" in score:
        # No score name has an '=': the job file's score, and this word a parameter.
        words = [score, *words]
        score = None
    pairs, hosts = split_words(words)
    return Given(score, hosts, pairs)


def _legacy_words(words: Sequence[str], pairs: Sequence[str], job_file: bool) -> Given:
    if len(pairs) % 2:
        raise UsageError(f"parameters after '!' come in KEY VALUE pairs; {pairs[-1]!r} has no value")
    if len(words) < 2 and not job_file:  # a job file may give SCORE and the hosts
        raise UsageError(LEGACY_USAGE)
    return Given(words[0] if words else None, list(words[1:]),
                 list(zip(pairs[0::2], pairs[1::2], strict=True)))


def _job(args: argparse.Namespace, given: Given, file: JobFile, legacy: bool,
         environ: Mapping[str, str] | None) -> Submission:
    """The job the command line and the job file describe together, the command line's
    word winning; each value checked by the conductor's own rules."""
    if given.score is not None:
        score = check_score_name(given.score)
    elif file.score is not None:
        score = file.score
    else:
        raise ValidationError(f"{file.path}: score: not given, neither in the file nor as SCORE"
                              " on the command line")
    targets = tuple(check_targets(given.hosts) if given.hosts or file.targets is None else file.targets)
    params = _params(given.pairs, args.param_file or [], args.param_env or [], file.params, environ)
    requested = args.scope or file.scope
    # The original form meant one-of unless told -all-of.
    scope = resolve_scope(requested or ("one" if legacy else None), targets)
    labels = check_labels([parse_label(word) for word in args.label or []])
    canary = args.canary if args.canary is not None else file.canary or 0
    batch = _amount(args.batch, "--batch") if args.batch is not None else file.batch or ""
    max_failures = (_amount(args.max_failures, "--max-failures") if args.max_failures is not None
                    else file.max_failures or "")
    # A group's size is the conductor's to know: here, assume it leaves room for the canary.
    known = len(targets) if not any(is_group(t) for t in targets) else max(len(targets), canary + 1)
    resolve_rollout(canary, batch, max_failures, scope, known)
    return Submission(
        score=score, scope=scope, targets=targets, params=params, config=args.config,
        wait=args.wait, timeout=args.timeout, json=args.json,
        expires=args.expires if args.expires is not None else file.expires,
        idempotency_key=check_idempotency_key(
            args.idempotency_key if args.idempotency_key is not None else file.idempotency_key or ""),
        name=check_job_name(args.name) if args.name is not None else file.name or "",
        labels=check_labels({**file.labels, **labels}),
        priority=parse_priority(args.priority) if args.priority is not None else file.priority,
        canary=canary, batch=batch, max_failures=max_failures)


def _amount(text: str, option: str) -> str:
    """--batch or --max-failures as the wire carries it: ``N`` or ``P%``."""
    amount = parse_amount(text, option)
    return str(amount) if amount is not None else ""


def _params(pairs: list[tuple[str, str]], from_files: Sequence[str], from_env: Sequence[str],
            file_params: Mapping[str, str], environ: Mapping[str, str] | None) -> dict[str, str]:
    """The command line's parameters (KEY=VALUE words, --param-file, --param-env: a key
    given twice among them is refused) over the job file's, key by key."""
    pairs = list(pairs)
    for word in from_files:
        key, path = _source(word, "--param-file", "PATH")
        pairs.append((key, _secret(key, "--param-file", lambda: jobfile.secret_from_file(Path(path)))))
    for word in from_env:
        key, var = _source(word, "--param-env", "VAR")
        pairs.append((key, _secret(key, "--param-env", lambda: jobfile.secret_from_env(var, environ))))
    given = normalize_params(pairs)
    return normalize_params({**file_params, **given})


def _source(word: str, option: str, what: str) -> tuple[str, str]:
    key, sep, where = word.partition("=")
    if not sep or not key or not where:
        raise ValidationError(f"{option} takes KEY={what}, not {word!r}")
    return key, where


def _secret(key: str, option: str, read: Callable[[], str]) -> str:
    try:
        return read()
    except ValidationError as err:
        raise ValidationError(f"{option} {key}: {err}") from None
