"""Noticing what changes in the scores directory, cheaply, and the inventory it yields.

Puppet installs and changes scores at any time. The player checks a stat signature of
the directory every SCORES_CHECK_SECONDS and re-scans (parses each ``.conf``) only when
it changed; the session then sends the new list to the conductor.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestra.inventory import ScoreEntry
from orchestra.wire import common_pb2
from player import scores

# How often the scores directory is checked for changes. A check is one stat of the
# directory and one or two of each file in it; the directory is re-scanned (each .conf
# parsed) only when that signature changed, so a short interval costs next to nothing.
SCORES_CHECK_SECONDS = 3.0


def _stat_key(path: str, follow: bool) -> tuple[int, ...]:
    try:
        info = os.stat(path, follow_symlinks=follow)
    except OSError:
        return ()
    return (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_mode, info.st_uid)


def scores_signature(scores_dir: Path) -> tuple[object, ...]:
    """What changes whenever anything :func:`scores.scan` reads may have changed: the
    directory's names, and each entry's own stat and (through a symlink) its target's:
    inode, mtime, ctime, size, mode and owner. Cheap: no file is opened."""
    try:
        names = sorted(os.listdir(scores_dir))
    except OSError as err:
        return ("unreadable", err.errno)
    return (_stat_key(str(scores_dir), True),
            *((name, _stat_key(str(scores_dir / name), False), _stat_key(str(scores_dir / name), True))
              for name in names))


def inventory_entry(item: scores.InventoryEntry, default_timeout: float) -> ScoreEntry:
    """One scanned score as the conductor is told of it: its .conf, with the effective
    timeout on this player, or why it is invalid."""
    if item.score is None:
        return ScoreEntry(name=item.name, valid=False, error=item.error)
    conf = item.score.conf
    return ScoreEntry(name=item.name, valid=True, interface=conf.interface,
                      timeout_seconds=int(conf.timeout or default_timeout), decls=conf.decls,
                      retries=conf.retries, retry_delay=conf.retry_delay,
                      concurrency=conf.concurrency, exclusive=conf.exclusive)


def scan_inventory(scores_dir: Path, default_timeout: float) -> list[common_pb2.ScoreInfo]:
    """Every score in the directory as the conductor is told of it (blocking: file I/O)."""
    return [inventory_entry(item, default_timeout).to_wire() for item in scores.scan(scores_dir)]
