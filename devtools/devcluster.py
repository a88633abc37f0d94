"""A whole Orchestra on loopback: dev PKI, a conductor and players as real processes.

Used by the demo, the test suite and the benchmarks, so all three exercise exactly what
an operator runs: the real daemons and the real CLIs, over real mTLS and real SQLite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audience.client import Client
from devtools import pki
from orchestra.config import load_audience
from orchestra.errors import OrchestraError
from orchestra.wire import audience_pb2

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCORES = REPO_ROOT / "scores"
CONDUCTOR_NAME = "conductor.orchestra.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def write_toml(path: Path, top: Mapping[str, object], tls: Mapping[str, object] | None) -> Path:
    """Write a config: top-level keys, [tls], then tables, sub-tables and [[arrays]]."""
    lines: list[str] = []
    sections: list[tuple[str, Mapping[str, object]]] = []
    if tls is not None:
        sections.append(("[tls]", tls))
    for key, value in top.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            sections += [(f"[{_toml_key(key)}.{_toml_key(name)}]", sub) for name, sub in value.items()]
        elif isinstance(value, dict):
            sections.append((f"[{_toml_key(key)}]", value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            sections += [(f"[[{_toml_key(key)}]]", item) for item in value]
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for header, table in sections:
        lines += ["", header] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str]) -> None:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=handle,
                                      stderr=handle, env=dict(env), start_new_session=True)
        handle.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running:
            assert self.popen is not None
            os.kill(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGCONT)
                os.kill(self.popen.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
            except ProcessLookupError:
                pass
        return self.popen.returncode


# Each audience command as its console script runs it (pyproject.toml [project.scripts]).
AUDIENCE_COMMANDS = {
    "submitjob": ("audience.submitjob", "main"), "getstatus": ("audience.getstatus", "main"),
    "canceljob": ("audience.canceljob", "main"), "listplayers": ("audience.listplayers", "main"),
    "listjobs": ("audience.listjobs", "main"), "retryjob": ("audience.retryjob", "main"),
    "deletejob": ("audience.deletejob", "main"), "drain": ("audience.drain", "main"),
    "undrain": ("audience.drain", "main_undrain"),
    "submitworkflow": ("audience.submitworkflow", "main"), "schedule": ("audience.schedule", "main"),
}


@dataclass
class Cluster:
    root: Path
    player_names: Sequence[str]
    audience_names: Sequence[str] = ()
    conductor_settings: dict[str, object] = field(default_factory=dict)
    player_settings: dict[str, object] = field(default_factory=dict)
    scores_src: Path = SAMPLE_SCORES
    log_level: str = "info"
    port: int = 0
    # Serve the web view (web_listen) on a free loopback port: see web_url.
    web: bool = False
    ca_name: str = "Orchestra development CA"
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ssl = pki.init(self.root / "ssl", CONDUCTOR_NAME, list(self.player_names),
                            list(self.audience_names), ca_name=self.ca_name)
        self.port = self.port or free_port()
        self.web_port = free_port() if self.web else 0
        self.players_file = self.root / "players"
        self.set_players(self.player_names)
        self.socket = self.root / "run" / "conductor.sock"
        self.state_dir = self.root / "state"
        self.conductor_config = write_toml(self.root / "conductor.toml", {
            "listen": f"127.0.0.1:{self.port}", "audience_socket": str(self.socket),
            "state_dir": str(self.state_dir), "players_file": str(self.players_file),
            **({"web_listen": f"127.0.0.1:{self.web_port}"} if self.web else {}),
            **self.conductor_settings,
        }, {"ca": str(self.ssl.ca_cert), "cert": str(self.ssl.cert(CONDUCTOR_NAME)),
            "key": str(self.ssl.key(CONDUCTOR_NAME)), "crl": str(self.ssl.crl)})
        self.audience_config = write_toml(self.root / "audience.toml", {"socket": str(self.socket)}, None)
        for name in self.player_names:
            self.add_player_config(name)

    # ---- files -------------------------------------------------------------------------

    def set_players(self, names: Sequence[str]) -> None:
        tmp = self.players_file.with_suffix(".tmp")
        tmp.write_text("# players allowed to connect\n" + "".join(f"{n}\n" for n in names))
        tmp.replace(self.players_file)

    def player_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

    def scores_dir(self, name: str) -> Path:
        return self.player_dir(name) / "scores"

    def add_player_config(self, name: str, ssl: pki.SSLDir | None = None,
                          conductor_name: str = CONDUCTOR_NAME, **settings: object) -> Path:
        """player.toml for name; its certificate and key may come from another ssl dir."""
        home = self.player_dir(name)
        (home / "spool").mkdir(parents=True, exist_ok=True)
        if not self.scores_dir(name).exists():
            shutil.copytree(self.scores_src, self.scores_dir(name))
            # Modes as Puppet would set them, whatever the checkout's umask: the player
            # refuses a score or directory writable by its group or others.
            self.scores_dir(name).chmod(0o755)
            for path in self.scores_dir(name).iterdir():
                path.chmod(0o644 if path.suffix == ".conf" else 0o755)
        own = ssl or self.ssl
        return write_toml(home / "player.toml", {
            "conductor": f"127.0.0.1:{self.port}", "conductor_name": conductor_name,
            "scores_dir": str(self.scores_dir(name)), "spool_dir": str(home / "spool"),
            **self.player_settings, **settings,
        }, {"ca": str(self.ssl.ca_cert), "cert": str(own.cert(name)), "key": str(own.key(name))})

    def remote_audience_config(self, cert_name: str) -> Path:
        """An audience.toml for using the conductor over TCP with mTLS as cert_name."""
        return write_toml(self.root / f"audience-{cert_name}.toml", {
            "conductor": f"127.0.0.1:{self.port}", "conductor_name": CONDUCTOR_NAME,
        }, {"ca": str(self.ssl.ca_cert), "cert": str(self.ssl.cert(cert_name)),
            "key": str(self.ssl.key(cert_name))})

    def add_score(self, name: str, body: str, conf: str, players: Sequence[str] | None = None) -> None:
        """Install a score; running players are told at once (SIGHUP), and this returns
        once the conductor knows (it refuses a job no target is known to be able to run)."""
        names = list(players or self.player_names)
        for player in names:  # each file whole at once: a player may scan the directory meanwhile
            self._install(self.scores_dir(player) / name, body, 0o755)
            self._install(self.scores_dir(player) / f"{name}.conf", conf, 0o644)
        live = [n for n in names if f"player-{n}" in self.procs and self.procs[f"player-{n}"].running]
        conductor = self.procs.get("conductor")
        if not live or conductor is None or not conductor.running:
            return
        for player in live:
            self.player(player).send_signal(signal.SIGHUP)

        def reported() -> bool:
            have = {p.name for p in self.players() or [] if any(s.name == name for s in p.scores)}
            return set(live) <= have
        self.wait_for(reported, f"{name} in the inventory of {', '.join(live)}")

    def _install(self, path: Path, text: str, mode: int) -> None:
        """Write ``path`` by renaming a finished copy over it, as Puppet does: a reader
        never sees half of it."""
        staged = self.root / f".{path.name}.{os.getpid()}.staged"
        staged.write_text(text)
        staged.chmod(mode)
        staged.replace(path)

    # ---- processes ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None) -> Proc:
        (self.root / "logs").mkdir(exist_ok=True)
        proc = Proc(name, argv, self.root / "logs" / f"{name}.log")
        proc.start({**self.env(), **(extra_env or {})})
        self.procs[name] = proc
        return proc

    def start_conductor(self, wait: bool = True, extra_env: Mapping[str, str] | None = None,
                        prefix: Sequence[str] = ()) -> Proc:
        """Start the conductor (under ``prefix``, e.g. a prlimit command, if given)."""
        listening = self.log_text("conductor").count("web_listening")  # of earlier runs
        proc = self._start("conductor", [*prefix, sys.executable, "-m", "conductor.main", "--config",
                                         str(self.conductor_config), "--log-level", self.log_level],
                           extra_env)
        if wait:
            self.wait_for(lambda: self.players() is not None, "conductor ready", proc=proc)
            if self.web:
                self.wait_for(lambda: self.log_text("conductor").count("web_listening") > listening, "the web view",
                              proc=proc)
        return proc

    @property
    def web_url(self) -> str:
        """The web view's address (``web=True``), e.g. ``https://127.0.0.1:PORT/``."""
        return f"https://127.0.0.1:{self.web_port}/"

    def start_player(self, name: str, config: Path | None = None,
                     extra_env: Mapping[str, str] | None = None) -> Proc:
        return self._start(f"player-{name}", [
            sys.executable, "-m", "player.main", "--config",
            str(config or self.player_dir(name) / "player.toml"), "--log-level", self.log_level],
            extra_env)

    def start(self, players: Sequence[str] | None = None) -> None:
        self.start_conductor()
        names = list(self.player_names if players is None else players)
        for name in names:
            self.start_player(name)
        self.wait_connected(names)

    def conductor(self) -> Proc:
        return self.procs["conductor"]

    def player(self, name: str) -> Proc:
        return self.procs[f"player-{name}"]

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def log_text(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, check: object, what: str, timeout: float = 30, proc: Proc | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return
            if proc is not None and not proc.running:
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n"
                                   + self.log_text(proc.name)[-3000:])
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}")

    # ---- audience ----------------------------------------------------------------------

    def cli(self, command: str, *args: str, timeout: float = 120,
            config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run an audience command (submitjob, getstatus, ...) as a real process."""
        module, function = AUDIENCE_COMMANDS[command]
        env = self.env()
        env["ORCHESTRA_CONFIG"] = str(config or self.audience_config)
        call = f"import sys; from {module} import {function}; sys.exit({function}())"
        return subprocess.run([sys.executable, "-c", call, *args], capture_output=True, text=True,
                              env=env, timeout=timeout, stdin=subprocess.DEVNULL)

    def players(self) -> list[audience_pb2.PlayerInfo] | None:
        """The conductor's player list, or None if it does not answer."""
        client = Client(load_audience(self.audience_config, explicit=True))
        try:
            return list(client.players().players)
        except OrchestraError:
            return None
        finally:
            client.close()

    def connected(self) -> set[str]:
        return {p.name for p in self.players() or [] if p.connected}

    def wait_connected(self, names: Sequence[str], timeout: float = 30) -> None:
        self.wait_for(lambda: set(names) <= self.connected(), f"players {sorted(names)} connected",
                      timeout)

    def wait_disconnected(self, names: Sequence[str], timeout: float = 30) -> None:
        self.wait_for(lambda: not (set(names) & self.connected()), f"players {sorted(names)} gone",
                      timeout)
