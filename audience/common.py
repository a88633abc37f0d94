"""What every audience command shares: argument errors as one line, config, error exits."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import IO, NoReturn

from audience.client import Client
from orchestra import config as configuration
from orchestra.cli import run_cli, write_out
from orchestra.errors import ExitCode, OrchestraError, UsageError


class HelpRequested(OrchestraError):
    """--help was given: an answer rather than an error, so parsing stays free of output."""

    exit_code = ExitCode.OK

    def __init__(self, text: str) -> None:
        super().__init__("help requested")
        self.text = text


class Parser(argparse.ArgumentParser):
    """argparse that neither prints nor exits: a bad command line raises UsageError
    (reported as one line, exit 2, by run_command) and --help raises HelpRequested."""

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
    parser.add_argument("--timeout", type=positive_seconds, help="with --wait: give up after S seconds (exit 3)")
    parser.add_argument("job_id", metavar="JOBID")


def parse_job_arguments(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.wait:
        parser.error("--timeout needs --wait")
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
