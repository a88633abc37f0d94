"""What happens with time: job deadlines, delayed retries, the grace after a restart, and retention.

Each loop only decides *when*; what the event does to tasks is the lifecycle's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

from conductor.lifecycle import Lifecycle
from conductor.states import TaskState
from orchestra import log
from orchestra.log import throttled

logger = log.get("conductor")
MAX_DEADLINE_SLEEP = 60.0


async def _sleep_until(next_at: float | None, changed: asyncio.Event) -> None:
    """Until ``next_at`` (at most MAX_DEADLINE_SLEEP; None: that long), or until
    ``changed`` says an earlier time may have come."""
    delay = MAX_DEADLINE_SLEEP if next_at is None else min(MAX_DEADLINE_SLEEP, max(0.05, next_at - time.time()))
    changed.clear()
    try:
        await asyncio.wait_for(changed.wait(), delay)
    except TimeoutError:
        pass


async def run_deadlines(lifecycle: Lifecycle) -> None:
    """Expire unstarted tasks at their job's deadline; woken early by a submission whose
    deadline comes before every other (the index keeps the deadlines in a heap)."""
    changed = lifecycle.deadlines_changed
    while True:
        try:
            await lifecycle.expire(time.time())
            next_at = lifecycle.index.next_deadline()
        except sqlite3.OperationalError as err:  # a full disk: tried again shortly
            throttled(logger, "error", "deadline_check_failed", key=str(err), error=str(err))
            next_at = time.time() + 1
        except Exception:
            logger.exception("deadline_check_failed")
            next_at = None
        await _sleep_until(next_at, changed)


async def run_retries(lifecycle: Lifecycle) -> None:
    """Hand retries to dispatch once their delay (the score's retry_delay) has passed;
    woken early when a retry is queued."""
    changed = lifecycle.retries_changed
    while True:
        try:
            await lifecycle.release_retries(time.time())
            next_at = lifecycle.index.next_retry()
        except Exception:
            logger.exception("retry_release_failed")
            next_at = None
        await _sleep_until(next_at, changed)


async def run_startup_grace(lifecycle: Lifecycle, grace: float) -> None:
    """After a restart, players get ``grace`` seconds to come back before failover."""
    await asyncio.sleep(grace)
    for name in await lifecycle.store.players_with(TaskState.DISPATCHED):
        await lifecycle.player_gone(name)


async def run_retention(lifecycle: Lifecycle, keep_seconds: float) -> None:
    """Finished jobs are kept ``keep_seconds``, then forgotten (checked every few minutes)."""
    while True:
        try:
            await lifecycle.forget_finished(keep_seconds)
        except Exception:
            logger.exception("retention_failed")
        await asyncio.sleep(min(300.0, max(1.0, keep_seconds / 10)))
