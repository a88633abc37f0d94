"""The systemd units in packaging/systemd: valid for systemd, and saying what the README
promises (a player restart leaves scores running; the conductor's default paths exist).

The canonical files live in the Puppet module (packaging/puppet/orchestra/files), so a
copy of the module is complete; packaging/systemd holds relative symlinks to them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from devtools.devcluster import CONDUCTOR_NAME, REPO_ROOT, write_toml
from orchestra.config import load_conductor, load_player
from tests.conftest import MakeCluster, job_json, required_tool, submit

UNITS = REPO_ROOT / "packaging" / "systemd"
MODULE_FILES = REPO_ROOT / "packaging" / "puppet" / "orchestra" / "files"
NAMES = ["orchestra-player.service", "orchestra-conductor.service"]
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
VENV_BIN = Path(sys.executable).parent


def directives(unit: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value given, in order (keys may repeat in a unit)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def analyze() -> str:
    return required_tool("systemd-analyze", "systemd")

def setpriv() -> str:
    """setpriv (Debian package util-linux), run as root: it sets what systemd would."""
    tool = shutil.which("setpriv")
    problem = ("setpriv is missing (Debian package util-linux)" if tool is None else
               "changing the capability bounding set needs root" if os.geteuid() != 0 else "")
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert tool is not None
    return tool


def installed_copy(unit: Path, into: Path) -> Path:
    """The unit with ExecStart pointing at this virtualenv's console script: verify checks
    that the binary exists, and /usr/local/bin/player does not on a test machine."""
    command = directives(unit)["Service.ExecStart"][0].split()[0]
    script = VENV_BIN / Path(command).name
    assert script.exists(), f"{script} missing: install the project (pip install -e .)"
    copy = into / unit.name
    copy.write_text(unit.read_text().replace(f"ExecStart={command} ", f"ExecStart={script} "))
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([analyze(), "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60, cwd=unit.parent)


@pytest.mark.parametrize("name", NAMES)
def test_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path, name: str) -> None:
    result = verify(installed_copy(UNITS / name, tmp_path))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result


def test_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on unknown keys and bad values: only its output tells."""
    copy = installed_copy(UNITS / "orchestra-player.service", tmp_path)
    copy.write_text(copy.read_text().replace("KillMode=process", "KillMode=proces"))
    result = verify(copy)
    assert "KillMode" in result.stderr or "kill mode" in result.stderr, result


@pytest.mark.parametrize("name, script", [("orchestra-player.service", "player"),
                                          ("orchestra-conductor.service", "conductor")])
def test_units_run_the_installed_console_scripts_with_the_default_config(name: str, script: str) -> None:
    unit = directives(UNITS / name)
    [exec_start] = unit["Service.ExecStart"]
    command, *args = exec_start.split()
    assert Path(command).name == script and script in SCRIPTS
    assert args == ["--config", f"/etc/orchestra/{script}.toml"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.NoNewPrivileges"] == ["yes"]


@pytest.mark.parametrize("name", NAMES)
def test_units_wait_for_ready_and_reload_with_sighup(name: str) -> None:
    """Type=notify: "systemctl start" returns once the daemon said READY=1, and only the
    main process may say it (a score of the player never can). Reload is SIGHUP to the
    main process, which both daemons handle without dropping anything (README, SIGHUP)."""
    unit = directives(UNITS / name)
    assert unit["Service.Type"] == ["notify"] and unit["Service.NotifyAccess"] == ["main"]
    [reload] = unit["Service.ExecReload"]
    command, sig, target = shlex.split(reload)
    assert Path(command).name == "kill" and signal.Signals["SIG" + sig.lstrip("-")] == signal.SIGHUP
    assert target == "$MAINPID"


@pytest.mark.parametrize("name", NAMES)
def test_packaging_units_are_relative_links_to_the_puppet_modules_copy(name: str) -> None:
    """One copy of each unit: git stores the links, and cp or install follow them."""
    link = UNITS / name
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (MODULE_FILES / name).resolve() and (MODULE_FILES / name).is_file()


def test_player_unit_stops_only_the_player_and_never_its_scores() -> None:
    """KillMode=process: stop and restart signal the main process alone (see
    test_stopping_the_player_as_its_unit_does_leaves_the_score_running_to_its_end)."""
    unit = directives(UNITS / "orchestra-player.service")
    assert unit["Service.KillMode"] == ["process"]
    assert "GRPC_ENABLE_FORK_SUPPORT=0" in unit["Service.Environment"]
    assert int(unit["Service.LimitNOFILE"][0]) > 1024
    # Scores administer the system: nothing may make it read-only or hide parts of it.
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths"):
        assert f"Service.{key}" not in unit


def test_units_provide_the_default_paths_of_the_configs(tmp_path: Path) -> None:
    tls = {"ca": "/ca.pem", "cert": "/cert.pem", "key": "/key.pem"}
    conductor = load_conductor(write_toml(tmp_path / "conductor.toml", {}, tls))
    player = load_player(write_toml(tmp_path / "player.toml", {"conductor": "c.test:2258"}, tls))
    unit = directives(UNITS / "orchestra-conductor.service")
    assert unit["Service.StateDirectory"] == [str(conductor.state_dir.relative_to("/var/lib"))]
    assert unit["Service.RuntimeDirectory"] == [str(conductor.audience_socket.parent.relative_to("/run"))]
    assert conductor.audit_log.parent == conductor.state_dir
    assert unit["Service.ProtectSystem"] == ["strict"]
    writable = unit["Service.ReadWritePaths"][0].split()
    assert str(conductor.state_dir) in writable and str(conductor.audience_socket.parent) in writable
    assert unit["Service.LimitNOFILE"] == ["65536"]
    assert unit["Service.ProtectHome"] == ["yes"] and unit["Service.PrivateTmp"] == ["yes"]
    assert "Service.KillMode" not in unit  # control-group: the conductor spawns nothing
    player_unit = directives(UNITS / "orchestra-player.service")
    assert player_unit["Service.StateDirectory"] == [str(player.spool_dir.relative_to("/var/lib"))]


def test_stopping_the_player_as_its_unit_does_leaves_the_score_running_to_its_end(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    """What "systemctl stop/restart orchestra-player" does, without systemd: with
    KillMode=process, the unit's KillSignal= (SIGTERM by default) goes to the main PID
    only, never to its process group or cgroup. The README promises that the score runs
    on, that the next player finds it in its spool, waits for it and reports it lost
    with its output, and that it never runs twice."""
    unit = directives(UNITS / "orchestra-player.service")
    assert unit["Service.KillMode"] == ["process"]
    kill_signal = signal.Signals[unit.get("Service.KillSignal", ["SIGTERM"])[0]]
    cluster = make_cluster()
    pid_file, go = tmp_path / "score.pid", tmp_path / "go"
    # Runs until the test says go (or 30 s, so that a failed test leaves nothing behind).
    cluster.add_score("long", f"#!/bin/sh\necho $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}\n"
                              f"echo started\nfor i in $(seq 300); do [ -e {go} ] && break; sleep 0.1; done\n"
                              "echo done\n", "interface env\n")
    code, out, err = submit(cluster, "long", "p1.test")
    assert code == 0, err
    job_id = out.strip()
    cluster.wait_for(pid_file.exists, "the score started")
    score = int(pid_file.read_text())
    player = cluster.player("p1.test")
    assert player.popen is not None
    # Its own session and process group: a signal to the player's group would miss it too.
    assert os.getsid(score) == os.getpgid(score) == score != os.getsid(player.popen.pid)

    os.kill(player.popen.pid, kill_signal)
    assert player.popen.wait(15) == 0  # a clean stop, as systemd expects of SIGTERM
    assert alive(score), "the score must outlive the player"

    cluster.start_player("p1.test")  # Restart=, or the "start" half of "restart"
    cluster.wait_connected(["p1.test"])
    code, job = job_json(cluster, "getstatus", job_id)
    assert code == 3 and job["tasks"][0]["state"] == "running"  # type: ignore[index]
    assert alive(score), "the new player must leave the score alone too"
    go.touch()
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    tasks: list[dict[str, Any]] = job["tasks"]  # type: ignore[assignment]
    [task] = tasks
    assert code == 1 and task["state"] == "lost", task
    assert "player restarted while the score ran" in task["reason"]
    # Reported once the score had ended by itself, with all its output, from its one run.
    assert not alive(score)
    assert task["stdout"] == "started\ndone\n" and task["attempt"] == 1


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (new) parent to reap it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def test_conductor_works_with_only_the_capability_its_unit_leaves_root(make_cluster: MakeCluster) -> None:
    """CapabilityBoundingSet= leaves the conductor (root by default) reading files it does
    not own, which Puppet's key needs where the agent hands it to the puppet user (Debian:
    0640 in a 0750 directory, both the puppet user's). setpriv applies the unit's bounding
    set and NoNewPrivileges= as systemd would: the conductor then serves a job, and
    without that one capability it cannot even read its key."""
    unit = directives(UNITS / "orchestra-conductor.service")
    assert unit["Service.NoNewPrivileges"] == ["yes"]
    [capabilities] = unit["Service.CapabilityBoundingSet"]
    bounding = ",".join(["-all", *("+" + c.lower().removeprefix("cap_") for c in capabilities.split())])
    limited = [setpriv(), "--no-new-privs", "--bounding-set"]
    cluster = make_cluster(start=False)
    nobody = 65534  # stands for the puppet user
    for path, mode in ((cluster.ssl.keys, 0o750), (cluster.ssl.key(CONDUCTOR_NAME), 0o640)):
        os.chown(path, nobody, nobody)
        path.chmod(mode)

    bare = cluster.start_conductor(wait=False, prefix=[*limited, "-all", "--"])
    assert bare.popen is not None and bare.popen.wait(30) == 1
    assert "cannot read private key" in cluster.log_text("conductor")

    cluster.start_conductor(prefix=[*limited, bounding, "--"])
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"])
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "who=caps", "p1.test")
    assert code == 0 and job["tasks"][0]["response"]["greeting"] == "hello caps", job  # type: ignore[index]
