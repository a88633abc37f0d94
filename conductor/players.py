"""The players file (CONTRACT.md §3): who may connect as a player."""

from __future__ import annotations

from pathlib import Path

from orchestra.errors import ConfigError
from orchestra.params import CERTNAME_RE

MAX_PLAYERS_FILE_BYTES = 16 * 1024 * 1024


def parse_players(text: str, source: str = "players file") -> frozenset[str]:
    """One certname per line; blank lines and # comments ignored; duplicates tolerated.

    Any invalid line rejects the whole file, so a half-written edit never shrinks the list.
    """
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if CERTNAME_RE.fullmatch(line) is None:
            raise ConfigError(f"{source}: line {number}: invalid certname {line[:80]!r}")
        names.add(line)
    return frozenset(names)


def load_players(path: Path) -> frozenset[str]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PLAYERS_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read players file: {err.strerror}") from None
    if len(data) > MAX_PLAYERS_FILE_BYTES:
        raise ConfigError(f"{path}: players file larger than {MAX_PLAYERS_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: players file is not UTF-8") from None
    return parse_players(text, str(path))
