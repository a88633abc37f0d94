"""The command-line shell both daemons share: --config, logging, one-line fatal errors."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from orchestra import config as configuration
from orchestra import log
from orchestra.cli import run_cli

C = TypeVar("C")


def run_daemon(kind: str, argv: Sequence[str] | None, load: Callable[[Path], C],
               serve: Callable[[C], Awaitable[None]]) -> int:
    """Parse arguments, load the config, run serve(config) until it returns.

    An OrchestraError (bad config: 2, cannot start: 1) becomes one line on stderr and
    the exit code; the daemon never dies with a traceback for a known problem.
    """
    parser = argparse.ArgumentParser(prog=kind, description=f"Orchestra {kind} daemon")
    parser.add_argument("--config", help=f"{kind}.toml (default: $ORCHESTRA_CONFIG or "
                                          f"{configuration.DEFAULT_PATHS[kind]})")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    log.setup(args.log_level)

    def body() -> int:
        asyncio.run(serve(load(configuration.resolve_path(kind, args.config))))  # type: ignore[arg-type]
        return 0
    return run_cli(kind, body)
