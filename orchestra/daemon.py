"""The command-line shell both daemons share: --config, logging, one-line fatal errors."""

from __future__ import annotations

import argparse
import asyncio
import resource
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from orchestra import config as configuration
from orchestra import log
from orchestra.cli import (
    INTERRUPTED, ExitMeanings, document_exits, offer_completions, one_line, run_cli,
)
from orchestra.errors import ExitCode, OrchestraError

logger = log.get("orchestra")
# One descriptor per player session, plus the queue, logs and audience calls. The soft
# limit is raised to the hard one, but never past Linux's default ceiling for one
# process: the connection cap is derived from it, and must stay a real cap.
UNLIMITED_FDS = 1_048_576

C = TypeVar("C")


# What a daemon's exit codes mean (README "Running it for real"); its --help and man page
# list them.
DAEMON_EXITS: ExitMeanings = (
    (ExitCode.OK, "stopped cleanly (SIGTERM or SIGINT)"),
    (ExitCode.FAILED, "could not start or could not go on (state directory locked by another "
                      "daemon, port in use, unreadable certificate, a key that is not the "
                      "certificate's, ...): one daemon_failed event on stderr says why"),
    (ExitCode.USAGE, "bad option, or a bad or missing config file (the daemon_failed event names "
                     "the file, key and problem)"),
    (INTERRUPTED, "interrupted (Ctrl-C) before it had started; once started, SIGINT stops it "
                  "cleanly (0)"),
)
DESCRIPTIONS = {
    "conductor": "Orchestra's conductor daemon: the durable job queue, the players allowed to "
                 "connect, dispatch, and the audience API.",
    "player": "Orchestra's player daemon, on every managed host: dials the conductor and runs "
              "the scores installed here.",
}


def build_parser(kind: str) -> argparse.ArgumentParser:
    """The command line of the daemon ``kind`` ("conductor" or "player")."""
    parser = argparse.ArgumentParser(prog=kind, description=DESCRIPTIONS[kind])
    parser.add_argument("--config", help=f"{kind}.toml (default: $ORCHESTRA_CONFIG or "
                                          f"{configuration.DEFAULT_PATHS[kind]})")
    # Checked here, not in log.setup: a misspelt level would otherwise log at info silently.
    parser.add_argument("--log-level", default="info", type=str.lower,
                        choices=("debug", "info", "warning", "error", "critical"),
                        help="least severe events to log (default: info; case-insensitive)")
    document_exits(parser, DAEMON_EXITS)
    return parser


def run_daemon(kind: str, argv: Sequence[str] | None, load: Callable[[Path], C],
               serve: Callable[[C], Awaitable[None]]) -> int:
    """Parse arguments, load the config, run serve(config) until it returns.

    An OrchestraError (bad config: 2, cannot start: 1) becomes one structured line on
    stderr (``daemon_failed``) and the exit code; the daemon never dies with a traceback
    for a known problem.
    """
    parser = build_parser(kind)

    def body() -> int:
        offer_completions(parser)  # a completion answers and exits: the daemon never starts
        args = parser.parse_args(argv)  # in here, so --help into a closed pipe ends quietly
        # From here on every line on stderr is one structured event, gRPC core's included.
        log.setup(args.log_level, capture_stderr=True)
        try:
            asyncio.run(serve(load(configuration.resolve_path(kind, args.config))))  # type: ignore[arg-type]
        except OrchestraError as err:  # one structured line, like everything else it logs
            logger.error("daemon_failed", daemon=kind, error=one_line(str(err)), exit_code=int(err.exit_code))
            return int(err.exit_code)
        return 0
    try:
        return run_cli(kind, body)
    finally:
        log.release_stderr()  # the one-line reason for a failed start is written out


def raise_fd_limit(kind: str) -> int:
    """Raise the soft limit on open files to the hard limit (at most UNLIMITED_FDS): a conductor holds one socket
    per player, and the usual soft limit of 1024 would cap a fleet at about a thousand
    hosts (and let a thousand idle connections shut everyone out). Returns the limit now
    in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_FDS if hard == resource.RLIM_INFINITY else min(hard, UNLIMITED_FDS)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as err:
            logger.warning("fd_limit_unchanged", daemon=kind, soft=soft, hard=hard, error=str(err))
    return UNLIMITED_FDS if soft == resource.RLIM_INFINITY else int(soft)


def usage() -> dict[str, float]:
    """This process's CPU seconds and peak/current memory, for the stats log line."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    rss_kib = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cpu_seconds": round(own.ru_utime + own.ru_stime, 3), "rss_mib": round(rss_kib / 1024, 1),
            "max_rss_mib": round(own.ru_maxrss / 1024, 1)}
