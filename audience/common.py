"""What every audience command shares: argument errors as one line, config, error exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from audience.client import Client
from orchestra import config as configuration
from orchestra.errors import ExitCode, OrchestraError


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(int(ExitCode.USAGE))


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


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 10**9:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def run(prog: str, config_arg: str | None, body: Callable[[Client], int]) -> int:
    """Load config, open the client, run body; OrchestraError -> one line + its exit code."""
    try:
        cfg = configuration.load_audience(configuration.resolve_path("audience", config_arg),
                                          explicit=bool(config_arg))
        client = Client(cfg)
        try:
            return body(client)
        finally:
            client.close()
    except OrchestraError as err:
        sys.stderr.write(f"{prog}: {err}\n")
        return int(err.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130

