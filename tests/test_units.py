"""The systemd units in packaging/systemd: valid for systemd, and saying what the README
promises (a player restart leaves scores running; the conductor's default paths exist)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devtools.devcluster import REPO_ROOT, write_toml
from orchestra.config import load_conductor, load_player

UNITS = REPO_ROOT / "packaging" / "systemd"
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
    """systemd-analyze, which CI must have (Debian package ``systemd``)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: CI must install the Debian package systemd")
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
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


@pytest.mark.parametrize("name", ["orchestra-player.service", "orchestra-conductor.service"])
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
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.NoNewPrivileges"] == ["yes"]


def test_player_unit_stops_only_the_player_and_never_its_scores() -> None:
    """KillMode=process: stop and restart signal the main process alone, as
    tests/faults/test_player_crash.py::test_player_sigterm_leaves_running_scores_alone
    does to a real player; its scores run on and the next player reports them."""
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
