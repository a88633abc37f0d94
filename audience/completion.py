"""Tab completion of the audience commands: score and host names from the conductor.

The shell answers a completion by running the command itself (argcomplete; README "Shell
completion"), so this runs in a short-lived process that prints the completions and
exits (``orchestra.cli.offer_completions``). The conductor is asked once, with ListPlayers,
and given LOOKUP_SECONDS to answer: a conductor that is down, slow or refuses us yields
no names, and never an error or a wait the operator would notice.

A completer is any callable argcomplete calls with ``prefix`` (the word so far) and
``parsed_args`` (the line before it); ``attach`` gives one to an argument.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestra.wire import audience_pb2, common_pb2

# The longest a completion waits for the conductor: after that it offers what it has
# without the conductor's names (a shell that stalls on TAB is worse than no names).
LOOKUP_SECONDS = 1.5

Completer = Callable[..., Iterable[str]]


def attach(action: argparse.Action, completer: Completer) -> argparse.Action:
    """Complete action's words with completer (argcomplete looks for this attribute)."""
    setattr(action, "completer", completer)
    return action


def nothing(**_: Any) -> list[str]:
    """For words nothing can be offered for (a job id): not file names either."""
    return []


def scores(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Names of the scores some player has installed and valid, as it last reported."""
    return sorted({score.name for player in _players(parsed_args) for score in player.scores
                   if score.valid and score.name.startswith(prefix)})


def hosts(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Names of the players in the conductor's players file."""
    return sorted(player.name for player in _players(parsed_args) if player.name.startswith(prefix))


def job_words(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """submitjob's words after SCORE: ``KEY=`` for each parameter the score declares (then
    its choices, if it has any, after the '='), and hosts; none already on the line."""
    given = list(getattr(parsed_args, "words", None) or [])
    key, equals, value = prefix.partition("=")
    if equals:
        decl = _declared(parsed_args).get(key.upper())
        return [f"{key}={choice}" for choice in (decl.choices if decl else ()) if choice.startswith(value)]
    taken = {word.partition("=")[0].upper() for word in given if "=" in word}
    return _keys(prefix, parsed_args, taken) + [name for name in hosts(prefix, parsed_args)
                                                if name not in given]


def param_files(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """--param-file KEY=PATH: the score's declared ``KEY=``, then file names after the '='."""
    key, equals, value = prefix.partition("=")
    if not equals:
        return _keys(prefix, parsed_args, set())
    import glob
    import os

    return sorted(f"{key}={path}{os.sep if os.path.isdir(path) else ''}"
                  for path in glob.glob(glob.escape(value) + "*"))


def param_envs(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """--param-env KEY=VAR: the score's declared ``KEY=``, then environment variables."""
    key, equals, value = prefix.partition("=")
    if not equals:
        return _keys(prefix, parsed_args, set())
    import os

    return sorted(f"{key}={name}" for name in os.environ if name.startswith(value))


def priorities(prefix: str, **_: Any) -> list[str]:
    """--priority's names (a number is typed)."""
    from orchestra.joboptions import PRIORITIES

    return sorted(name for name in PRIORITIES if name.startswith(prefix))


def drained(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """What undrain can lift: the drains (names and @groups) covering some player now."""
    return sorted({player.drained for player in _players(parsed_args)
                   if player.drained and player.drained.startswith(prefix)})


def _keys(prefix: str, parsed_args: argparse.Namespace, taken: set[str]) -> list[str]:
    """``KEY=`` for each parameter the score on the line declares, except those taken.
    Keys are case-insensitive (the conductor upper-cases them): offered as the word so
    far spells them, lower-case when it has no capitals (who=ops)."""
    spell = str.upper if any(c.isupper() for c in prefix) else str.lower
    return [f"{spell(name)}=" for name in sorted(_declared(parsed_args))
            if name not in taken and spell(name).startswith(prefix)]


def _declared(parsed_args: argparse.Namespace) -> dict[str, common_pb2.ParamDecl]:
    return _params(_players(parsed_args), getattr(parsed_args, "score", None) or "")


def _params(players: Iterable[audience_pb2.PlayerInfo], score: str) -> dict[str, common_pb2.ParamDecl]:
    """The parameters score declares, by upper-case name, as its players reported them."""
    declared: dict[str, common_pb2.ParamDecl] = {}
    for player in players:
        for info in player.scores:
            if info.name == score and info.valid:
                for decl in info.params:
                    declared.setdefault(decl.name.upper(), decl)
    return declared


_answers: dict[str | None, list[audience_pb2.PlayerInfo]] = {}


def _players(parsed_args: argparse.Namespace) -> list[audience_pb2.PlayerInfo]:
    """The conductor's players, asked once per process (one completion may need names
    twice), through the config the command line names; [] when there is no answer in
    LOOKUP_SECONDS."""
    config: str | None = getattr(parsed_args, "config", None)
    if config not in _answers:
        _answers[config] = _ask_conductor(config)
    return _answers[config]


def _ask_conductor(config: str | None) -> list[audience_pb2.PlayerInfo]:
    import threading

    answer: list[audience_pb2.PlayerInfo] = []

    def ask() -> None:
        from audience.client import Client
        from orchestra import config as configuration

        try:
            cfg = configuration.load_audience(configuration.resolve_path("audience", config),
                                              explicit=bool(config))
            client = Client(cfg)
            try:
                answer.extend(client.players().players)
            finally:
                client.close()
        except Exception:  # no config, no conductor, refused: no names, and nothing printed
            return

    # A thread, so that no step can hold the shell up: loading a remote config's
    # certificate, resolving the conductor's name, a conductor that accepts and never answers.
    # The process ends as soon as the completions are printed, the thread with it.
    worker = threading.Thread(target=ask, name="completion-lookup", daemon=True)
    worker.start()
    worker.join(LOOKUP_SECONDS)
    return list(answer) if not worker.is_alive() else []
