"""One small error hierarchy: each error carries the exit code and the one line users see."""

from __future__ import annotations

from enum import IntEnum

# Trailing metadata the conductor sets on a PERMISSION_DENIED that is a policy decision,
# so the audience CLI can tell "the policy says no" (exit 2) from "you are not let in" (4).
POLICY_REFUSAL: tuple[str, str] = ("orchestra-refusal", "policy")
# ... and on a RESOURCE_EXHAUSTED that is its own storage failing (a full disk), so the
# CLI says so (exit 6) instead of calling the request too large.
STORAGE_FAILURE: tuple[str, str] = ("orchestra-failure", "storage")


class ExitCode(IntEnum):
    """Exit codes of the audience commands (CONTRACT.md §6) and the daemons."""

    OK = 0
    FAILED = 1  # audience: job failed; daemons: could not start or run
    USAGE = 2  # usage error, bad config or rejected input: nothing was queued
    PENDING = 3
    UNREACHABLE = 4
    NO_SUCH_JOB = 5
    STORAGE = 6  # the conductor cannot write its queue now (disk full): nothing changed


class OrchestraError(Exception):
    """Base class. ``str(err)`` is the one-line message shown to the user."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(OrchestraError):
    """A config file is missing, unreadable or invalid (names file, key and problem)."""

    exit_code = ExitCode.USAGE


class UsageError(OrchestraError):
    """The command line is wrong; nothing was sent anywhere."""

    exit_code = ExitCode.USAGE


class ValidationError(OrchestraError):
    """Input was rejected before anything was queued or run."""

    exit_code = ExitCode.USAGE


class PolicyDenied(OrchestraError):
    """The policy refused a request; ``rule`` names the rule that decided ("" = none matched)."""

    exit_code = ExitCode.USAGE

    def __init__(self, reason: str, rule: str = "") -> None:
        super().__init__(reason)
        self.rule = rule


class StartupError(OrchestraError):
    """A daemon cannot start (lock held, port taken, unreadable certificate)."""

    exit_code = ExitCode.FAILED


class UnreachableError(OrchestraError):
    exit_code = ExitCode.UNREACHABLE


class NoSuchJobError(OrchestraError):
    exit_code = ExitCode.NO_SUCH_JOB


class StorageError(OrchestraError):
    """The conductor could not commit the request (its disk is full): retry later."""

    exit_code = ExitCode.STORAGE
