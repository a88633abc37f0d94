"""A whole Orchestra on loopback: dev PKI, a conductor and players as real processes.

Used by the demo, the test suite and the benchmarks, so all three exercise exactly what
an operator runs: the real daemons and the real CLIs, over real mTLS and a real store
(SQLite, or a PostgreSQL database given as ``store``).
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
from typing import Any

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
    """Write a config: top-level keys, [tls], then every table at any depth ([a], [a.b],
    ...) and arrays of tables ([[a]]), in the order given."""
    lines = _toml_table([], {**({"tls": tls} if tls is not None else {}), **top}, None)
    path.write_text("\n".join(lines).lstrip("\n") + "\n")
    return path


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_table(path: list[str], table: Mapping[str, object], header: str | None) -> list[str]:
    """``header`` (None at the top), the table's own keys, then its tables; a table holding
    only tables gets no header of its own (``[a.b]`` implies ``[a]``), an empty one does."""
    own = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()
           if not isinstance(v, Mapping) and not _is_table_array(v)]
    nested = [(k, v) for k, v in table.items() if isinstance(v, Mapping) or _is_table_array(v)]
    lines: list[str] = []
    if header is not None and (own or not nested or header.startswith("[[")):
        lines += ["", header]
    lines += own
    for key, value in nested:
        inner = [*path, key]
        dotted = ".".join(_toml_key(k) for k in inner)
        if isinstance(value, Mapping):
            lines += _toml_table(inner, value, f"[{dotted}]")
        else:
            assert isinstance(value, list)
            for item in value:
                lines += _toml_table(inner, item, f"[[{dotted}]]")
    return lines


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


FIRST_CONDUCTOR = "conductor"


@dataclass
class ConductorHome:
    """One conductor's own address, files and directories. Several conductors of one
    cluster share the players file, the certificate and the queue ([store])."""

    name: str
    port: int
    web_port: int
    socket: Path
    state_dir: Path
    config: Path
    audience_config: Path  # the audience's config for this conductor's local socket

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Files and processes of one Orchestra on loopback.

    ``store`` becomes the conductor's ``[store]`` table (e.g. ``{"backend": "postgresql",
    "dsn": ...}``); without it the conductor keeps its queue in SQLite under
    ``state_dir``. The first conductor is named ``conductor``; ``add_conductor`` (or
    ``extra_conductors``) adds more on the same queue, and then every player and
    remote audience config lists all their addresses.
    """

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
    # The conductor's [store] table; None: the default (SQLite in state_dir).
    store: dict[str, object] | None = None
    # Names of conductors besides the first, configured up front (see add_conductor).
    extra_conductors: Sequence[str] = ()
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ssl = pki.init(self.root / "ssl", CONDUCTOR_NAME, list(self.player_names),
                            list(self.audience_names), ca_name=self.ca_name)
        self.players_file = self.root / "players"
        self.set_players(self.player_names)
        self._more_conductors: dict[str, ConductorHome] = {}
        # What each player.toml and remote audience config was made from, to write them
        # again when a conductor is added.
        self._player_configs: dict[str, tuple[pki.SSLDir | None, str, dict[str, object]]] = {}
        self._remote_audiences: list[str] = []
        first = ConductorHome(
            FIRST_CONDUCTOR, self.port or free_port(), free_port() if self.web else 0,
            socket=self.root / "run" / "conductor.sock", state_dir=self.root / "state",
            config=self.root / "conductor.toml", audience_config=self.root / "audience.toml")
        self._write_conductor(first, {})
        # The first conductor's, as every single-conductor use knows them; a test may
        # point them elsewhere (conductors() follows).
        self.port, self.web_port, self.socket = first.port, first.web_port, first.socket
        self.state_dir, self.conductor_config = first.state_dir, first.config
        self.audience_config = first.audience_config
        for name in self.player_names:
            self.add_player_config(name)
        for name in self.extra_conductors:
            self.add_conductor(name)

    # ---- conductors --------------------------------------------------------------------

    @property
    def store_table(self) -> dict[str, object]:
        """The [store] table every conductor gets: ``store`` with any ``store`` table of
        ``conductor_settings`` over it; empty for the default store."""
        extra = self.conductor_settings.get("store", {})
        assert isinstance(extra, dict), "conductor_settings['store'] must be a table"
        return {**(self.store or {}), **extra}

    def _write_conductor(self, home: ConductorHome, settings: Mapping[str, object]) -> None:
        own_store = settings.get("store", {})  # e.g. this conductor's advertise
        assert isinstance(own_store, dict), "a conductor's 'store' setting must be a table"
        store = {**self.store_table, **own_store}
        if store.get("backend") == "postgresql":  # standbys name it as clients dial it
            store.setdefault("advertise", home.address)
        own: dict[str, object] = {
            "listen": home.address, "audience_socket": str(home.socket), "state_dir": str(home.state_dir),
            **({"web_listen": f"127.0.0.1:{home.web_port}"} if self.web else {})}
        # conductor_settings may move the first conductor's own files; never a second
        # conductor's onto the first's.
        write_toml(home.config, {
            **own, "players_file": str(self.players_file), **self.conductor_settings,
            **(own if home.name != FIRST_CONDUCTOR else {}), **settings,
            **({"store": store} if store else {}),
        }, {"ca": str(self.ssl.ca_cert), "cert": str(self.ssl.cert(CONDUCTOR_NAME)),
            "key": str(self.ssl.key(CONDUCTOR_NAME)), "crl": str(self.ssl.crl)})
        write_toml(home.audience_config, {"socket": str(home.socket)}, None)

    def add_conductor(self, name: str, **settings: object) -> Path:
        """Configure another conductor on the same queue (its own port, state_dir,
        audience socket and config under ROOT/NAME; ``settings`` over
        ``conductor_settings``, a ``store`` table in them over the shared [store]) and
        list it in every player and remote audience config (running players read theirs
        when restarted). Returns its conductor.toml; start it with
        ``start_conductor(name=NAME)``."""
        home_dir = self.root / name
        if name in self.conductors() or name.startswith("player-") or home_dir.exists():
            raise ValueError(f"a conductor cannot be named {name!r}: the name is taken")
        home_dir.mkdir(parents=True)
        home = ConductorHome(name, free_port(), free_port() if self.web else 0,
                             socket=self.root / "run" / f"{name}.sock", state_dir=home_dir / "state",
                             config=home_dir / "conductor.toml", audience_config=home_dir / "audience.toml")
        self._write_conductor(home, settings)
        self._more_conductors[name] = home
        for player, (ssl, conductor_name, player_settings) in list(self._player_configs.items()):
            self.add_player_config(player, ssl, conductor_name, **player_settings)
        for cert_name in self._remote_audiences:
            self.remote_audience_config(cert_name)
        return home.config

    def conductors(self) -> dict[str, ConductorHome]:
        """Every conductor by name, the first (``conductor``) first."""
        first = ConductorHome(FIRST_CONDUCTOR, self.port, self.web_port, self.socket, self.state_dir,
                              self.conductor_config, self.audience_config)
        return {FIRST_CONDUCTOR: first, **self._more_conductors}

    def conductor_addresses(self) -> list[str]:
        """Every conductor's ``127.0.0.1:PORT``, the first conductor first."""
        return [home.address for home in self.conductors().values()]

    def _conductor_setting(self) -> str | list[str]:
        """player.toml's and audience.toml's ``conductor``: one address, or the list."""
        addresses = self.conductor_addresses()
        return addresses[0] if len(addresses) == 1 else addresses

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
        self._player_configs[name] = (ssl, conductor_name, dict(settings))
        return write_toml(home / "player.toml", {
            "conductor": self._conductor_setting(), "conductor_name": conductor_name,
            "scores_dir": str(self.scores_dir(name)), "spool_dir": str(home / "spool"),
            **self.player_settings, **settings,
        }, {"ca": str(self.ssl.ca_cert), "cert": str(own.cert(name)), "key": str(own.key(name))})

    def remote_audience_config(self, cert_name: str) -> Path:
        """An audience.toml for using the conductor over TCP with mTLS as cert_name."""
        if cert_name not in self._remote_audiences:
            self._remote_audiences.append(cert_name)
        return write_toml(self.root / f"audience-{cert_name}.toml", {
            "conductor": self._conductor_setting(), "conductor_name": CONDUCTOR_NAME,
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
        conductor = next((c for c in self.conductors() if c in self.procs and self.procs[c].running), None)
        if not live or conductor is None:
            return
        for player in live:
            self.player(player).send_signal(signal.SIGHUP)

        def reported() -> bool:
            have = {p.name for p in self.players(via=conductor) or []
                    if any(s.name == name for s in p.scores)}
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
        # Only the config speaks to the daemons: not the caller's ORCHESTRA_* nor libpq's
        # PG* variables (PGSSLMODE and the like would change how a conductor reaches its store).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "PG"))}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None) -> Proc:
        (self.root / "logs").mkdir(exist_ok=True)
        proc = Proc(name, argv, self.root / "logs" / f"{name}.log")
        proc.start({**self.env(), **(extra_env or {})})
        self.procs[name] = proc
        return proc

    def start_conductor(self, wait: bool = True, extra_env: Mapping[str, str] | None = None,
                        prefix: Sequence[str] = (), name: str = FIRST_CONDUCTOR) -> Proc:
        """Start a conductor (the first unless ``name`` says another added by
        add_conductor; under ``prefix``, e.g. a prlimit command, if given); with ``wait``,
        return once it answers on its audience socket. Its log is ``log_text(name)``."""
        home = self.conductors()[name]
        listening = self.log_text(name).count("web_listening")  # of earlier runs
        proc = self._start(name, [*prefix, sys.executable, "-m", "conductor.main", "--config",
                                  str(home.config), "--log-level", self.log_level], extra_env)
        if wait:
            self.wait_for(lambda: self.players(via=name) is not None, f"{name} ready", proc=proc)
            if self.web:
                self.wait_for(lambda: self.log_text(name).count("web_listening") > listening, "the web view",
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

    def conductor(self, name: str = FIRST_CONDUCTOR) -> Proc:
        return self.procs[name]

    def player(self, name: str) -> Proc:
        return self.procs[f"player-{name}"]

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def log_text(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_events(self, name: str, *events: str) -> list[dict[str, Any]]:
        """The JSON log lines of process ``name`` whose event is one of ``events``, in order
        (lines that are not JSON objects, such as a traceback's, are passed over)."""
        found = []
        for line in self.log_text(name).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") in events:
                found.append(record)
        return found

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

    def cli(self, command: str, *args: str, timeout: float = 120, config: Path | None = None,
            via: str = FIRST_CONDUCTOR) -> subprocess.CompletedProcess[str]:
        """Run an audience command (submitjob, getstatus, ...) as a real process, on the
        local socket of conductor ``via`` unless ``config`` names another audience.toml."""
        module, function = AUDIENCE_COMMANDS[command]
        env = self.env()
        env["ORCHESTRA_CONFIG"] = str(config or self.conductors()[via].audience_config)
        call = f"import sys; from {module} import {function}; sys.exit({function}())"
        return subprocess.run([sys.executable, "-c", call, *args], capture_output=True, text=True,
                              env=env, timeout=timeout, stdin=subprocess.DEVNULL)

    def players(self, via: str = FIRST_CONDUCTOR) -> list[audience_pb2.PlayerInfo] | None:
        """The player list of conductor ``via``, or None if it does not answer."""
        client = Client(load_audience(self.conductors()[via].audience_config, explicit=True))
        try:
            return list(client.players().players)
        except OrchestraError:
            return None
        finally:
            client.close()

    def connected(self, via: str = FIRST_CONDUCTOR) -> set[str]:
        return {p.name for p in self.players(via) or [] if p.connected}

    def wait_connected(self, names: Sequence[str], timeout: float = 30, via: str = FIRST_CONDUCTOR) -> None:
        self.wait_for(lambda: set(names) <= self.connected(via), f"players {sorted(names)} connected"
                      + ("" if via == FIRST_CONDUCTOR else f" to {via}"),
                      timeout)

    def wait_disconnected(self, names: Sequence[str], timeout: float = 30, via: str = FIRST_CONDUCTOR) -> None:
        self.wait_for(lambda: not (set(names) & self.connected(via)), f"players {sorted(names)} gone"
                      + ("" if via == FIRST_CONDUCTOR else f" from {via}"),
                      timeout)
