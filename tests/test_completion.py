"""Tab completion, through the real shell: bash loads what ``register-python-argcomplete``
prints for a command (as an operator's ~/.bashrc does) and calls its completion function
as readline would on TAB; the command itself answers, from its parser and, for score and
host names, from a real conductor.

Without a conductor, or with one that never answers, a completion still offers the
options, offers no names, prints nothing else and comes back within the lookup budget.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audience.completion import LOOKUP_SECONDS
from audience.parse import completion_order
from devtools.devcluster import Cluster
from tests.conftest import MakeCluster

BIN = Path(sys.executable).parent  # the virtualenv's console scripts and register-python-argcomplete

# $1 is the command, $2 the line typed so far (the cursor at its end). The words are
# split on blanks only: argcomplete reads the line itself from COMP_LINE and COMP_POINT.
COMPLETE = r"""
eval "$(register-python-argcomplete "$1")"
COMP_LINE=$2
COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_python_argcomplete "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(line: str, config: Path) -> tuple[list[str], float]:
    """What TAB offers at the end of line, and how long the shell took to answer."""
    command = line.split()[0]
    if not (BIN / command).exists() or not (BIN / "register-python-argcomplete").exists():
        pytest.fail(f"{BIN} lacks {command} or register-python-argcomplete: install the package "
                    "(pip install -e '.[dev]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "_ARC"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ORCHESTRA_CONFIG=str(config))
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", COMPLETE, "bash", command, line], capture_output=True,
                            text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert (result.returncode, result.stderr) == (0, ""), result
    # A single completion carries the space that readline would insert after it.
    return sorted(word.rstrip(" ") for word in result.stdout.splitlines() if word), elapsed


def audience_config(tmp_path: Path, socket_path: Path) -> Path:
    config = tmp_path / "audience.toml"
    config.write_text(f'socket = "{socket_path}"\n')
    return config


def test_without_a_conductor_completion_offers_options_and_no_names_at_once(tmp_path: Path) -> None:
    config = audience_config(tmp_path, tmp_path / "no-conductor.sock")
    options, asking_nobody = complete("submitjob --w", config)
    assert options == ["--wait"]
    assert complete("submitjob --", config)[0] == [
        "--all-of", "--batch", "--canary", "--config", "--expires", "--file", "--help",
        "--idempotency-key", "--json", "--label", "--max-failures", "--name", "--one-of",
        "--param-env", "--param-file", "--priority", "--timeout", "--wait"]
    names, elapsed = complete("submitjob ", config)
    assert names == []
    # Refused at once: the lookup budget is not spent (the rest is starting the processes).
    assert elapsed < asking_nobody + LOOKUP_SECONDS * 2 / 3
    assert complete("submitjob hello ", config)[0] == []
    assert complete("getstatus --", config)[0] == ["--config", "--follow", "--help", "--host", "--json", "--timeout",
                                                  "--wait"]
    assert complete("getstatus ", config)[0] == []  # a job id: neither names nor file names
    assert complete("canceljob --w", config)[0] == ["--wait"]
    assert complete("listplayers --j", config)[0] == ["--json"]


def test_the_new_options_and_commands_complete_without_a_conductor(tmp_path: Path) -> None:
    config = audience_config(tmp_path, tmp_path / "no-conductor.sock")
    assert complete("submitjob --priority ", config)[0] == ["high", "low", "normal"]
    assert complete("submitjob --canary ", config)[0] == []  # a number: neither names nor files
    assert complete("submitjob hello p1 --param-env ", config)[0] == []  # no declared keys known
    assert complete("retryjob --", config)[0] == [
        "--config", "--expired", "--failed", "--help", "--json", "--lost", "--refused", "--skipped",
        "--timeout", "--wait"]
    assert complete("retryjob ", config)[0] == []  # a job id
    assert complete("deletejob --", config)[0] == ["--cancel", "--config", "--help", "--json", "--timeout"]
    assert complete("drain --", config)[0] == ["--config", "--help", "--json", "--reason"]
    assert complete("drain ", config)[0] == []  # host names, from the conductor: none here
    assert complete("undrain --", config)[0] == ["--config", "--help", "--json"]
    assert complete("listjobs --l", config)[0] == ["--label", "--limit"]
    assert complete("listplayers ", config)[0] == []


def test_a_conductor_that_never_answers_holds_completion_up_no_longer_than_the_budget(
        tmp_path: Path) -> None:
    # A socket that takes connections (the kernel's backlog) and never says a word.
    path = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.bind(str(path))
        silent.listen(16)
        config = audience_config(tmp_path, path)
        names, elapsed = complete("submitjob ", config)
        assert names == []
        assert LOOKUP_SECONDS <= elapsed < LOOKUP_SECONDS + 5
        assert complete("submitjob --one", config)[0] == ["--one-of"]  # options ask nobody
    finally:
        silent.close()


def test_daemons_and_orchestra_pki_complete_their_options_without_running(tmp_path: Path) -> None:
    config = tmp_path / "missing.toml"
    # A daemon run for a completion answers and exits: it never starts serving.
    assert complete("conductor --log-level ", config)[0] == ["critical", "debug", "error", "info", "warning"]
    assert complete("player --", config)[0] == ["--config", "--help", "--log-level"]
    assert complete("orchestra-pki ", config)[0] == ["export", "init", "issue", "revoke"]
    assert complete("orchestra-pki issue ssl ops --role ", config)[0] == ["audience", "conductor", "player"]
    assert complete("orchestra-pki init ssl --j", config)[0] == ["--json"]
    assert not (tmp_path / "ssl").exists()


DEPLOY_CONF = "interface env\nparam ENV required choices=staging,production\nparam VERSION optional\n"


def test_submitjob_completes_scores_hosts_and_parameters_from_the_conductor(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.add_score("deploy", "#!/bin/sh\nexit 0\n", DEPLOY_CONF)
    cluster.start()
    cluster.wait_for(lambda: all("deploy" in names for names in inventory(cluster).values()),
                     "deploy in every player's inventory")
    inventories = inventory(cluster)
    config = cluster.audience_config

    assert complete("submitjob ", config)[0] == sorted(set().union(*inventories.values()))
    assert complete("submitjob he", config)[0] == ["hello"]
    assert complete("submitjob --all-of h", config)[0] == ["hello"]
    # After the score: its declared parameters (lower-case unless typed otherwise) and hosts.
    assert complete("submitjob hello ", config)[0] == ["p1.test", "p2.test", "who="]
    assert complete("submitjob hello W", config)[0] == ["WHO="]
    assert complete("submitjob deploy ", config)[0] == ["env=", "p1.test", "p2.test", "version="]
    # Nothing already on the line is offered again.
    assert complete("submitjob deploy env=staging p1.test ", config)[0] == ["p2.test", "version="]
    assert complete("submitjob --wait deploy p", config)[0] == ["p1.test", "p2.test"]
    # Options may stand anywhere on the line, as when the command runs.
    assert complete("submitjob deploy env=staging --wait --timeout 30 p", config)[0] == ["p1.test", "p2.test"]
    assert complete("submitjob hello p1.test --one-of ", config)[0] == ["p2.test", "who="]
    # A parameter's declared choices, after its '=' (bash replaces only what follows it).
    assert complete("submitjob deploy env=", config)[0] == ["production", "staging"]
    assert complete("submitjob deploy ENV=s", config)[0] == ["staging"]
    # A score that declares no parameters: hosts only.
    assert complete("submitjob showenv ", config)[0] == ["p1.test", "p2.test"]
    # Secret parameters: the declared keys, then files or variables after the '='.
    assert complete("submitjob deploy p1.test --param-env e", config)[0] == ["env="]
    assert complete("submitjob --param-file V", config)[0] == []  # no SCORE yet: no keys
    # Hosts for the other commands that name players.
    assert complete("drain ", config)[0] == ["p1.test", "p2.test"]
    assert complete("drain p1.test p", config)[0] == ["p1.test", "p2.test"]
    assert complete("listplayers p2", config)[0] == ["p2.test"]


def test_completion_asks_the_conductor_named_by_config_on_the_line(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"])
    nowhere = audience_config(tmp_path, tmp_path / "no-conductor.sock")
    assert complete("submitjob hello p", nowhere)[0] == []
    assert complete(f"submitjob --config {cluster.audience_config} hello p", nowhere)[0] == ["p1.test"]
    assert complete(f"submitjob hello --config {cluster.audience_config} p", nowhere)[0] == ["p1.test"]
    # The word after --config is a file, wherever --config stands.
    assert complete(f"submitjob hello p1.test --config {cluster.audience_config.parent}/aud",
                    nowhere)[0] == [str(cluster.audience_config)]


def inventory(cluster: Cluster) -> dict[str, set[str]]:
    """Each player's valid scores, as the conductor has them."""
    return {p.name: {s.name for s in p.scores if s.valid} for p in cluster.players() or []}


@pytest.mark.parametrize("words, arranged", [
    (["hello", "p1", "--wait"], ["--wait", "hello", "p1"]),
    (["hello", "--timeout", "30", "p1", "--json"], ["--timeout", "30", "--json", "hello", "p1"]),
    # An option whose value is the word being completed stays beside it.
    (["hello", "p1", "--config"], ["hello", "p1", "--config"]),
    (["hello", "--wait", "p1", "--config"], ["--wait", "hello", "p1", "--config"]),
    # Already in order, the original form, or '--': as typed.
    (["--wait", "hello", "p1"], ["--wait", "hello", "p1"]),
    (["-all-of", "hello", "p1", "--wait"], ["-all-of", "hello", "p1", "--wait"]),
    (["hello", "p1", "!", "who", "x"], ["hello", "p1", "!", "who", "x"]),
    (["hello", "--", "p1"], ["hello", "--", "p1"]),
])
def test_completion_reads_a_submitjob_line_with_its_options_first(words: list[str],
                                                                  arranged: list[str]) -> None:
    assert completion_order(words) == arranged
