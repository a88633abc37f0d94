"""The Puppet module (packaging/puppet/orchestra), applied for real with ``puppet apply``
into a temporary root, then the daemons run from exactly the files it wrote.

Each apply uses its own confdir, vardir and so on under the test's directory, so nothing
of the machine's Puppet is read or written. ``--ssldir`` is a development PKI laid out as
Puppet's (devtools/pki.py) and ``--certname`` a player in it, so the module's defaults
($settings::ssldir, $trusted['certname']) pick the player's certificate and key as they
would on a real agent. Services are not managed by systemd here: the first applies leave
them out (manage_service => false), and the reload test hands Puppet a service whose
status is the test's own process and whose restart fails, so a restart where a reload
was meant fails the run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from audience.client import Client
from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, REPO_ROOT, Proc, free_port
from orchestra.config import load_audience, load_conductor, load_player
from orchestra.errors import OrchestraError
from orchestra.wire import audience_pb2
from tests.test_units import analyze, directives
from tests.conftest import required_tool

MODULE = REPO_ROOT / "packaging" / "puppet" / "orchestra"
VENV_BIN = Path(sys.executable).parent
PLAYER = "p1.test"
# What a node's manifest would say about its scores: one from a file, one written out.
GREET = '#!/bin/sh\necho "greetings, $ORC_WHO"\necho "who=$ORC_WHO" > "$ORC_RESPONSE_FILE"\n'
SCORES: dict[str, dict[str, object]] = {
    "hello": {"source": str(REPO_ROOT / "scores" / "hello"), "timeout": 30,
              "params": ["WHO optional pattern=^[A-Za-z0-9_.-]{1,64}$ default=world"]},
    "greet": {"content": GREET, "conf": "interface env\nparam WHO required\n"},
}


def puppet() -> str:
    """The puppet command, as root (the module makes files root's)."""
    tool = required_tool("puppet", "puppet")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the Puppet tests must run as root: the module makes files root's")
        pytest.skip("the Puppet tests must run as root: the module makes files root's")
    return tool


def pp(value: object) -> str:
    """A Python value as a Puppet literal (strings single-quoted, so nothing interpolates)."""
    if value is None:
        return "undef"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(pp(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{pp(k)} => {pp(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no Puppet literal for {value!r}")


def declare(kind: str, title: str, params: Mapping[str, object]) -> str:
    body = "".join(f"  {key} => {pp(value)},\n" for key, value in params.items())
    return f"{kind} {{ {pp(title)}:\n{body}}}\n"


@dataclass
class Node:
    """One host's root, the PKI its Puppet agent would have, and the daemons started from
    what Puppet wrote there."""

    home: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ssl = pki.init(self.home / "ssl", CONDUCTOR_NAME, [PLAYER], [])
        self.root = self.home / "root"
        self.etc = self.root / "etc" / "orchestra"
        self.unit_dir = self.root / "etc" / "systemd" / "system"
        self.unit_dir.mkdir(parents=True)  # present on any systemd host
        self.scores_dir = self.root / "usr" / "lib" / "orchestra" / "scores"
        self.state_dir = self.root / "var" / "lib" / "orchestra" / "conductor"
        self.socket = self.root / "run" / "orchestra" / "conductor.sock"
        # The module is used from a copy (symlinks followed): it must need nothing else.
        self.modules = self.home / "modules"
        shutil.copytree(MODULE, self.modules / "orchestra")
        self.puppet_dir = self.home / "puppet"

    # ---- puppet ------------------------------------------------------------------------

    def manifest(self, players: list[str], scores: Mapping[str, Mapping[str, object]],
                 conductor_service: Mapping[str, object] | None = None,
                 player_service: Mapping[str, object] | None = None) -> str:
        """The node's manifest; a service dict (service_options plus reload_command)
        turns service management on."""
        def service(options: Mapping[str, object] | None) -> dict[str, object]:
            return {"manage_service": False} if options is None else {"manage_service": True, **options}
        return "".join([
            declare("class", "orchestra", {
                "config_dir": str(self.etc), "unit_dir": str(self.unit_dir),
                "bin_dir": str(VENV_BIN), "scores_dir": str(self.scores_dir)}),
            declare("class", "orchestra::conductor", {
                "players": players, "listen": f"127.0.0.1:{self.port}",
                "audience_socket": str(self.socket), "state_dir": str(self.state_dir),
                # The same host plays the conductor too, under the conductor's own name.
                "cert": str(self.ssl.cert(CONDUCTOR_NAME)), "key": str(self.ssl.key(CONDUCTOR_NAME)),
                "heartbeat_seconds": 0.5, "liveness_timeout": 4, "reconnect_grace": 5,
                "groups": {"web": ["p*.test"]},
                # A backslash and a nested table: both must reach the conductor intact.
                "policy": [{"name": "greeters", "requesters": ["*"], "scores": ["hello", "greet*"],
                            "targets": ["@web"], "params": {"WHO": "^[a-z\\-]+$"}}],
                **service(conductor_service)}),
            declare("class", "orchestra::player", {
                "conductor": f"127.0.0.1:{self.port}", "conductor_name": CONDUCTOR_NAME,
                "spool_dir": str(self.root / "var" / "lib" / "orchestra" / "player"),
                "max_concurrent": 2, "heartbeat_seconds": 0.5, "liveness_timeout": 4,
                "backoff_initial": 0.1, "backoff_max": 1, "kill_grace": 1,
                **service(player_service)}),
            *(declare("orchestra::score", name, params) for name, params in scores.items()),
        ])

    def apply(self, manifest: str) -> int:
        """puppet apply; its --detailed-exitcodes status, which must be 0 (nothing to do)
        or 2 (changes made): 4 and 6 mean a resource failed."""
        self.puppet_dir.mkdir(exist_ok=True)
        site = self.puppet_dir / "site.pp"
        site.write_text(manifest)
        log = self.puppet_dir / f"apply{len(list(self.puppet_dir.glob('apply*.log')))}.log"
        result = run_puppet("apply", *self.puppet_settings(), "--modulepath", str(self.modules),
                            "--ssldir", str(self.ssl.root), "--certname", PLAYER,
                            "--detailed-exitcodes", "--logdest", str(log), str(site))
        assert result.returncode in (0, 2), (
            f"puppet apply exited {result.returncode}:\n{puppet_log(log)}\n{result.stderr[-3000:]}")
        # Undefined variables, deprecations and the like are warnings: none is expected.
        complaints = [line for line in puppet_log(log).splitlines() if "(warning)" in line or "(err)" in line]
        assert not complaints, "\n".join(complaints)
        return result.returncode

    def puppet_settings(self) -> list[str]:
        """Every directory puppet would otherwise use under /etc, /var or /run."""
        base = self.puppet_dir
        return [f"--{name}={base / name}" for name in
                ("confdir", "codedir", "vardir", "logdir", "rundir", "publicdir")]

    # ---- the daemons, as their units would run them ------------------------------------

    def start(self, unit: str, extra_env: Mapping[str, str] | None = None) -> Proc:
        """Run ExecStart= as the drop-in sets it, with the unit's Environment=."""
        service = directives(self.unit_dir / f"{unit}.service")
        dropin = directives(self.unit_dir / f"{unit}.service.d" / "puppet.conf")
        command = [line for line in dropin["Service.ExecStart"] if line][-1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
        for assignment in service.get("Service.Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = value
        (self.home / "logs").mkdir(exist_ok=True)
        proc = Proc(unit, shlex.split(command), self.home / "logs" / f"{unit}.log")
        proc.start({**env, "PYTHONUNBUFFERED": "1", **(extra_env or {})})
        self.procs[unit] = proc
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def players(self) -> dict[str, audience_pb2.PlayerInfo]:
        """listplayers through the audience.toml Puppet wrote; empty if no answer."""
        client = Client(load_audience(self.etc / "audience.toml", explicit=True))
        try:
            return {p.name: p for p in client.players().players}
        except OrchestraError:
            return {}
        finally:
            client.close()

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for proc in self.procs.values():
                log = proc.log.read_text(errors="replace")[-3000:]
                assert proc.running, f"{proc.name} exited while waiting for {what}:\n{log}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def start_both(self, player_env: Mapping[str, str] | None = None) -> None:
        self.start("orchestra-conductor")
        self.wait_for(lambda: bool(self.players()), "the conductor to answer")
        self.start("orchestra-player", player_env)
        self.wait_for(lambda: self.scores_of(PLAYER) == {"hello": True, "greet": True},
                      f"{PLAYER} connected with both scores")

    def scores_of(self, name: str) -> dict[str, bool]:
        player = self.players().get(name)
        if player is None or not player.connected:
            return {}
        return {score.name: score.valid for score in player.scores}

    def cli(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
        return subprocess.run([sys.executable, "-m", f"audience.{command}", "--config",
                               str(self.etc / "audience.toml"), *args], capture_output=True,
                              text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)


def run_puppet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([puppet(), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def puppet_log(log: Path) -> str:
    """The run's log without Facter's complaints about what a container hides from it."""
    if not log.exists():
        return ""
    return "\n".join(line for line in log.read_text(errors="replace").splitlines()
                     if "Facter" not in line)[-6000:]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path)
    yield made
    made.stop()


def test_manifests_and_templates_pass_puppets_own_validators(tmp_path: Path) -> None:
    manifests = sorted(str(p) for p in MODULE.rglob("*.pp"))
    templates = sorted(str(p) for p in MODULE.rglob("*.epp"))
    assert len(manifests) >= 7 and len(templates) >= 6
    settings = [f"--{name}={tmp_path / name}" for name in
                ("confdir", "codedir", "vardir", "logdir", "rundir", "publicdir")]
    for command in (["parser", "validate", *settings, *manifests],
                    ["epp", "validate", *settings, *templates]):
        result = run_puppet(*command)
        assert result.returncode == 0 and result.stdout + result.stderr == "", result


def test_applied_module_runs_a_job_with_the_files_puppet_wrote(node: Node) -> None:
    manifest = node.manifest([PLAYER], SCORES)
    assert node.apply(manifest) == 2

    # The files, checked as the daemons and the player's score rules read them.
    conductor = load_conductor(node.etc / "conductor.toml")
    assert conductor.players_file == node.etc / "players" and conductor.heartbeat_seconds == 0.5
    assert conductor.tls.crl == node.ssl.crl  # Puppet's crl.pem, by default
    player = load_player(node.etc / "player.toml")
    # Defaults from the agent's settings: $settings::ssldir and $trusted['certname'].
    assert (player.tls.ca, player.tls.cert, player.tls.key) == (
        node.ssl.ca_cert, node.ssl.cert(PLAYER), node.ssl.key(PLAYER))
    assert player.scores_dir == node.scores_dir and player.max_concurrent == 2
    for path, mode in [(node.scores_dir, 0o755), (node.scores_dir / "hello", 0o755),
                       (node.scores_dir / "hello.conf", 0o644), (node.scores_dir / "greet", 0o755),
                       (node.scores_dir / "greet.conf", 0o644)]:
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, mode), path
    assert (node.scores_dir / "greet").read_text() == GREET
    assert "timeout 30" in (node.scores_dir / "hello.conf").read_text()
    # Directories outside the unit's own are made, private, and writable under systemd.
    assert stat.S_IMODE(node.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(node.socket.parent.stat().st_mode) == 0o750
    dropin = directives(node.unit_dir / "orchestra-conductor.service.d" / "puppet.conf")
    assert dropin["Service.ReadWritePaths"] == [f"-{node.state_dir} -{node.socket.parent}"]

    # The units with Puppet's drop-ins pass systemd's own check, binaries included.
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{node.unit_dir}:"}  # ":" keeps the defaults
    for unit in ("orchestra-conductor.service", "orchestra-player.service"):
        assert (node.unit_dir / unit).read_bytes() == (MODULE / "files" / unit).read_bytes()
        result = subprocess.run([analyze(), "verify", "--man=no", str(node.unit_dir / unit)],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0 and result.stdout + result.stderr == "", result

    node.start_both()
    result = node.cli("submitjob", "--json", "--wait", "--timeout", "60", "greet", "who=pup-pet", PLAYER)
    assert result.returncode == 0, result
    job = json.loads(result.stdout)
    [task] = job["tasks"]
    assert task["state"] == "ok" and task["stdout"] == "greetings, pup-pet\n"
    assert task["response"] == {"who": "pup-pet"}
    # The policy Puppet wrote is the one in force: its pattern refuses capitals.
    refused = node.cli("submitjob", "greet", "who=Puppet", PLAYER)
    assert refused.returncode == 2 and "no policy rule allows" in refused.stderr, refused

    # Unchanged input, nothing to do.
    assert node.apply(manifest) == 0


def test_new_players_and_scores_reload_the_running_daemons_and_never_restart_them(
        node: Node) -> None:
    assert node.apply(node.manifest([PLAYER], SCORES)) == 2
    # Only a SIGHUP may make a new score known: the player's own check is off.
    node.start_both(player_env={"ORCHESTRA_SCORES_CHECK_SECONDS": "3600"})
    conductor, player = node.procs["orchestra-conductor"], node.procs["orchestra-player"]
    assert conductor.popen is not None and player.popen is not None

    def puppet_service(proc: Proc) -> dict[str, object]:
        """Puppet's service: running while proc is; a restart (or start, or stop) fails
        the run; a reload is SIGHUP to proc."""
        assert proc.popen is not None
        return {"service_options": {"provider": "base", "enable": None,
                                    "status": f"/bin/kill -0 {proc.popen.pid}",
                                    "start": "/bin/false", "stop": "/bin/false",
                                    "restart": "/bin/false"},
                "reload_command": ["/bin/kill", "-HUP", str(proc.popen.pid)]}

    scores = {**SCORES, "uptime": {"source": str(REPO_ROOT / "scores" / "uptime"),
                                   "interface": "pipe", "timeout": 10}}
    changed = node.manifest([PLAYER, "p2.test"], scores, puppet_service(conductor), puppet_service(player))
    assert node.apply(changed) == 2
    node.wait_for(lambda: "p2.test" in node.players(), "p2.test in the conductor's list")
    node.wait_for(lambda: node.scores_of(PLAYER).get("uptime") is True, "uptime announced")
    assert conductor.running and player.running  # the same processes: reloaded only
    assert "reload_requested" in conductor.log.read_text()
    assert "reload_requested" in player.log.read_text()
    assert node.apply(changed) == 0
