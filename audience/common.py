"""What every audience command shares: argument errors as one line, config, error exits,
the exit codes its --help lists, and the shell's tab completion."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from audience import completion
from audience.client import Client
from orchestra import config as configuration
from orchestra.cli import (
    INTERRUPTED_MEANING, ExitMeanings, document_exits, offer_completions, run_cli, write_out,
)
from orchestra.errors import ExitCode, OrchestraError, UsageError

# What the exit codes of submitjob, getstatus and canceljob mean (README "Exit codes",
# CONTRACT.md §6); job_exits picks those one command can return, for its --help and man page.
JOB_MEANINGS: dict[int, str] = {
    ExitCode.OK: "job finished, succeeded (all-of: every task ok; one-of: the task ok)",
    ExitCode.FAILED: "job finished, failed",
    ExitCode.USAGE: "usage error or rejected input (bad parameter, unknown host, invalid score "
                    "name, a score no target can run, denied by policy, an idempotency key "
                    "reused for another request): nothing was queued",
    ExitCode.PENDING: "job not finished yet (no --wait, or --timeout passed)",
    ExitCode.UNREACHABLE: "cannot reach or authenticate to the conductor (including a "
                          "certificate it does not admit, or one revoked while waiting)",
    ExitCode.NO_SUCH_JOB: "no such job (or none this requester may see)",
    ExitCode.STORAGE: "the conductor cannot write its queue now (its disk is full): nothing was "
                      "queued or changed; retry once it has room",
}


def job_exits(command: str) -> ExitMeanings:
    """JOB_MEANINGS as command (submitjob, getstatus or canceljob) can return them: only the
    two that write to the queue can meet a full disk (6); submitjob exits 0 as soon as the
    job is queued unless it waits (so 3 only when --timeout passes); the other two refuse a
    job id rather than a job (and canceljob, a cancel the policy does not allow)."""
    meanings = dict(JOB_MEANINGS)
    if command == "submitjob":
        meanings[ExitCode.OK] = f"without --wait: the job is queued; with --wait: {meanings[ExitCode.OK]}"
        meanings[ExitCode.USAGE] = (
            "usage error or rejected input (bad parameter, unknown host or group, invalid score name,"
            " a job file or parameter file that cannot be read or is invalid, an environment"
            " variable not set, a score no target can run, denied by policy, an idempotency key"
            " reused for another request): nothing was queued")
        meanings[ExitCode.PENDING] = "with --wait: --timeout passed before the job finished"
    else:
        refused = ", or the policy does not let this requester cancel it" if command == "canceljob" else ""
        meanings[ExitCode.USAGE] = f"usage error (an invalid job id, say){refused}: nothing was changed"
    if command == "getstatus":
        del meanings[ExitCode.STORAGE]
    return (*meanings.items(), INTERRUPTED_MEANING)


# ... and of the commands that list what the conductor knows (listplayers, listjobs).
LIST_EXITS: ExitMeanings = (
    (ExitCode.OK, "the list is printed"),
    (ExitCode.USAGE, "usage error, or a filter the conductor refuses (an unknown @group)"),
    (ExitCode.UNREACHABLE, "cannot reach or authenticate to the conductor"),
    INTERRUPTED_MEANING,
)


class HelpRequested(OrchestraError):
    """--help was given: an answer rather than an error, so parsing stays free of output."""

    exit_code = ExitCode.OK

    def __init__(self, text: str) -> None:
        super().__init__("help requested")
        self.text = text


class Parser(argparse.ArgumentParser):
    """argparse that neither prints nor exits: a bad command line raises UsageError
    (reported as one line, exit 2, by run_command) and --help raises HelpRequested.

    Its --help ends with what the command's exit codes mean (``exit_codes``: LIST_EXITS
    unless told), and parse_args first answers the shell's tab completion when that is
    what the command was run for (``orchestra.cli.offer_completions``)."""

    # For completion: the words before the cursor in the order this parser reads them
    # (see orchestra.cli.offer_completions); None leaves them as typed.
    completion_order: Callable[[list[str]], list[str]] | None = None

    def __init__(self, *args: Any, exit_codes: ExitMeanings = LIST_EXITS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        document_exits(self, exit_codes)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: None = None) -> argparse.Namespace:
        offer_completions(self, self.completion_order)
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def print_help(self, file: IO[str] | None = None) -> NoReturn:  # type: ignore[override]
        raise HelpRequested(self.format_help())


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="audience.toml (default: $ORCHESTRA_CONFIG or /etc/orchestra/audience.toml)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_job_arguments(parser: Parser, wait_help: str) -> None:
    """--wait, --timeout and JOBID, as getstatus and canceljob take them."""
    add_common(parser)
    parser.add_argument("--wait", action="store_true", help=wait_help)
    completion.attach(parser.add_argument("--timeout", type=positive_seconds,
                                          help="with --wait (or --follow): give up after S seconds"
                                               " (exit 3)"),
                      completion.nothing)
    completion.attach(parser.add_argument("job_id", metavar="JOBID",
                                          help="the job's id, as submitjob printed it"),
                      completion.nothing)


def parse_job_arguments(parser: Parser, argv: Sequence[str] | None,
                        also_waits: Sequence[str] = ()) -> argparse.Namespace:
    """The arguments; --timeout only with --wait (or another option that waits)."""
    args = parser.parse_args(argv)
    waits = ["--wait", *(f"--{name}" for name in also_waits)]
    if args.timeout is not None and not any(getattr(args, name.lstrip("-")) for name in waits):
        parser.error(f"--timeout needs {' or '.join(waits)}")
    return args


# The longest --timeout or --expires taken: about 31 years, far beyond any job's life, and
# well inside what the wire's uint32 expires_seconds carries.
MAX_SECONDS = 10**9


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds up to MAX_SECONDS; each way to be wrong gets
    its own message (1e30 is too large, not "not positive")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    if math.isinf(value):
        raise argparse.ArgumentTypeError(
            f"not a finite number of seconds: {text!r} (at most {MAX_SECONDS})")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"too large: {text!r} seconds (at most {MAX_SECONDS}, about 31 years)")
    return value


def with_client(config_arg: str | None, body: Callable[[Client], int]) -> int:
    """Load the audience config, open a client, run body, and always close the client."""
    cfg = configuration.load_audience(configuration.resolve_path("audience", config_arg),
                                      explicit=bool(config_arg))
    client = Client(cfg)
    try:
        return body(client)
    finally:
        client.close()


def run_command(prog: str, body: Callable[[], int]) -> int:
    """run_cli for an audience command: errors are one line and an exit code, and --help
    is printed on stdout with exit 0."""
    def answered() -> int:
        try:
            return body()
        except HelpRequested as answer:
            write_out(answer.text)
            return int(ExitCode.OK)
    return run_cli(prog, answered)
