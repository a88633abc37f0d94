"""Noticing what changes in the scores directory, cheaply, and the inventory it yields.

Puppet installs and changes scores at any time. The player checks a stat signature of
the directory every SCORES_CHECK_SECONDS and re-scans (parses each ``.conf``) only when
it changed; the session then sends the new list to the conductor.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestra.inventory import decls_to_wire
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


def scan_inventory(scores_dir: Path, default_timeout: float) -> list[common_pb2.ScoreInfo]:
    """Every score in the directory as the conductor is told of it (blocking: file I/O)."""
    infos = []
    for item in scores.scan(scores_dir):
        info = common_pb2.ScoreInfo(name=item.name, valid=item.score is not None, error=item.error)
        if item.score is not None:
            info.interface = item.score.conf.interface
            info.timeout_seconds = int(item.score.conf.timeout or default_timeout)
            info.params.extend(decls_to_wire(item.score.conf.decls))
        infos.append(info)
    return infos
