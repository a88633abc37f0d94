"""TOML config files -> frozen dataclasses, validated once at start (CONTRACT.md §10).

Every error names the file, the key and the problem. Unknown keys are errors too: a
misspelt ``max_concurent`` must not silently fall back to a default.

Every path in a loaded config is absolute: a relative one is taken relative to the
config file's directory, whatever the working directory or the ``--config`` argument
looked like, because the daemons hand these paths on to places with another working
directory (a score runs in ``/`` and writes its response to a file in the spool).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError
from orchestra.params import MAX_TAIL_BYTES

DEFAULT_PATHS = {
    "conductor": Path("/etc/orchestra/conductor.toml"),
    "player": Path("/etc/orchestra/player.toml"),
    "audience": Path("/etc/orchestra/audience.toml"),
}
# Sized for fleets: an idle session costs one heartbeat each way per HEARTBEAT_SECONDS
# (about 0.14 ms of conductor CPU per message). Measured with 10,000 idle sessions and
# keepalive pings every 30 s: 5.5 % of a core at 60 s, 14.8 % at 30 s (at 5 s, 1,000
# sessions already cost 5.5 %). A frozen or vanished peer is caught sooner by gRPC
# keepalive (30 s ping, 20 s timeout); the heartbeat catches a peer whose process is up
# but no longer handles its stream (README, "Liveness").
HEARTBEAT_SECONDS = 60.0
LIVENESS_TIMEOUT = 180.0

# Upper bounds of the player's sizes. One task result is one gRPC message, and it carries
# both output tails and the response: 1 MiB each keeps the worst case (a response of
# undecodable bytes grows about 3x when decoded) near 5 MiB, well under MAX_MESSAGE_BYTES
# (8 MiB, orchestra/tls.py). tests/test_config_bounds.py builds that worst case.
MAX_CONCURRENT = 1024
MAX_OUTPUT_TAIL_BYTES = MAX_TAIL_BYTES
MAX_RESPONSE_BYTES = 1024 * 1024
# The cap of each output file in the spool while a score runs (disk, not the wire).
MAX_OUTPUT_FILE_BYTES = 1024 * 1024 * 1024
# Conductors a player or the audience may list (one leads, the others stand by).
MAX_CONDUCTORS = 16
STORE_BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class TLSFiles:
    """Paths of one side's CA bundle, certificate and key (and, for the conductor, its CRL)."""

    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None


@dataclass(frozen=True)
class PluginTable:
    """One [[audit_sinks]] or [[notifiers]] table: the plugin it names (a built-in or an
    entry point, see orchestra/plugins.py) and the rest of the table, its options, handed
    on unparsed: only the plugin knows them, and it refuses the ones it does not."""

    name: str
    options: dict[str, Any]
    where: str  # how errors name the table: 'FILE: [[notifiers]] #2 (webhook)'


@dataclass(frozen=True)
class StoreConfig:
    """[store]: where the conductor keeps its queue.

    ``sqlite`` (the default) is a file in state_dir and one conductor. ``postgresql`` is a
    database several conductors share: one leads, holding a lease of ``lease_seconds``
    that it renews, the others stand by and take over when it lapses. ``dsn`` is a libpq
    connection string or URI; TLS to the database is set in it (sslmode, sslrootcert,
    sslcert, sslkey). It may hold a password, so it is never shown: not in errors, not in
    this object's repr. ``advertise`` is the HOST:PORT standbys name to clients as this
    conductor's address while it leads ("" = its certname with the port of ``listen``)."""

    backend: str = "sqlite"
    dsn: str = field(default="", repr=False)
    lease_seconds: float = 5.0
    advertise: str = ""


def _split(conductor: str) -> tuple[str, ...]:
    return tuple(conductor.split(",")) if conductor else ()


def _targets(conductor: str, conductor_name: str) -> tuple[tuple[str, str], ...]:
    return tuple((address, conductor_name or listen_host(address)) for address in _split(conductor))


@dataclass(frozen=True)
class ConductorConfig:
    """conductor.toml, validated."""

    path: Path
    listen: str
    audience_socket: Path
    state_dir: Path
    players_file: Path
    job_deadline: float
    job_retention: float
    heartbeat_seconds: float
    liveness_timeout: float
    reconnect_grace: float
    # Seconds a stopping conductor waits for the player messages it has read (their
    # commits and answers) before it closes the sessions anyway.
    drain_timeout: float
    # Seconds a connection to the public port may take to finish its TLS handshake.
    handshake_timeout: float
    # Cap on connections to the public port; 0 = derived from the open-files limit.
    max_connections: int
    audit_log: Path
    tls: TLSFiles
    # Raw [[policy]], [groups] and [audience] tables; conductor.policy parses them.
    policy: list[Any]
    groups: dict[str, Any]
    audience: dict[str, Any]
    # Prometheus metrics: HOST:PORT of their HTTP listener ("" = none), and whether it
    # serves HTTPS with client certificates (required off loopback).
    metrics_listen: str = ""
    metrics_tls: bool = False
    # The read-only web view: HOST:PORT of its HTTPS listener ("" = none). Always TLS with
    # the [tls] certificate, and a client certificate of the CA required.
    web_listen: str = ""
    # [[audit_sinks]] (none: one "file" sink at audit_log) and [[notifiers]]: plugins by
    # name with their options, checked by each plugin at start (orchestra/plugins.py).
    audit_sinks: tuple[PluginTable, ...] = ()
    notifiers: tuple[PluginTable, ...] = ()
    store: StoreConfig = field(default_factory=StoreConfig)


@dataclass(frozen=True)
class PlayerConfig:
    """player.toml, validated."""

    path: Path
    conductor: str
    conductor_name: str
    scores_dir: Path
    spool_dir: Path
    max_concurrent: int
    default_timeout: float
    kill_grace: float
    output_tail_bytes: int
    max_output_bytes: int
    response_max_bytes: int
    heartbeat_seconds: float
    liveness_timeout: float
    backoff_initial: float
    backoff_max: float
    tls: TLSFiles
    metrics_listen: str = ""
    metrics_tls: bool = False

    # ``conductor`` holds every conductor's address, comma-separated, in the order they
    # are dialled (one address in the usual case of one conductor); ``conductor_name`` the
    # name each one's certificate must carry, or "" for each address's own host (with one
    # address, that host is filled in). Both are read through these two:
    @property
    def conductors(self) -> tuple[str, ...]:
        """Every conductor's HOST:PORT, in the order they are dialled."""
        return _split(self.conductor)

    def targets(self) -> tuple[tuple[str, str], ...]:
        """(HOST:PORT, name its certificate must carry) of each conductor, in order."""
        return _targets(self.conductor, self.conductor_name)


@dataclass(frozen=True)
class AudienceConfig:
    """audience.toml, validated; ``conductor`` empty (``conductors`` empty) means the
    local socket."""

    path: Path | None
    socket: Path
    conductor: str
    conductor_name: str
    tls: TLSFiles | None

    # As in PlayerConfig: ``conductor`` holds every address, comma-separated.
    @property
    def conductors(self) -> tuple[str, ...]:
        """Every conductor's HOST:PORT, in order; none for the local socket."""
        return _split(self.conductor)

    def targets(self) -> tuple[tuple[str, str], ...]:
        """(HOST:PORT, name its certificate must carry) of each conductor, in order;
        none for the local socket."""
        return _targets(self.conductor, self.conductor_name)


class _Table:
    """Typed, path-aware reads of one TOML table; remembers which keys were used."""

    def __init__(self, data: dict[str, Any], file: Path, prefix: str = "") -> None:
        self.data, self.file, self.prefix = data, file, prefix
        # Relative paths are relative to the file's directory, made absolute now: the
        # daemon may hand them to a process running elsewhere (a score runs in /).
        self.base = file.absolute().parent
        self.used: set[str] = set()

    def _fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.prefix}{key}: {problem}")

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self._fail(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self._fail(key, f"must be {what}, not {value!r}")
        return value

    def string(self, key: str, default: Any = None) -> str:
        value: str = self._get(key, default if default is not None else _REQUIRED, (str,), "a string")
        return value

    def path(self, key: str, default: str | None = None, optional: bool = False) -> Path | None:
        raw = self._get(key, "" if optional else (default if default is not None else _REQUIRED),
                        (str,), "a path string")
        if raw == "":
            if optional:
                return None
            raise self._fail(key, "must not be empty")
        path = Path(raw).expanduser()
        return path if path.is_absolute() else (self.base / path)

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = float(self._get(key, default, (int, float), "a number"))
        if value < minimum or value != value:
            raise self._fail(key, f"must be >= {minimum}, not {value}")
        return value

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self._get(key, default, (int,), "an integer")
        if value < minimum:
            raise self._fail(key, f"must be >= {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise self._fail(key, f"must be <= {maximum}, not {value}")
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        self.used.add(key)
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"must be true or false, not {value!r}")
        return value

    def raw(self, key: str, kind: type, default: Any) -> Any:
        """A value handed on unparsed (for sections another module validates)."""
        self.used.add(key)
        value = self.data.get(key, default)
        if not isinstance(value, kind):
            raise self._fail(key, f"must be a {'table' if kind is dict else 'list of tables'}")
        return value

    def table(self, key: str, required: bool = True) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self._fail(key, "table is required")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self._fail(key, "must be a table")
        return _Table(value, self.file, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self._fail(unknown[0], "unknown key")


_REQUIRED = object()


def resolve_path(kind: str, given: str | None) -> Path:
    """--config beats ORCHESTRA_CONFIG beats the default path for this kind."""
    if given:
        return Path(given)
    env = os.environ.get("ORCHESTRA_CONFIG")
    return Path(env) if env else DEFAULT_PATHS[kind]


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def _tls(root: _Table, with_crl: bool) -> TLSFiles:
    table = root.table("tls")
    assert table is not None
    files = TLSFiles(
        ca=table.path("ca"), cert=table.path("cert"), key=table.path("key"),  # type: ignore[arg-type]
        crl=table.path("crl", optional=True) if with_crl else None,
    )
    table.finish()
    return files


def _check_address(table: _Table, key: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise table._fail(key, f"must be HOST:PORT, not {value!r}")
    return value


def _conductors(table: _Table, key: str, required: bool) -> tuple[str, ...]:
    """``conductor``: one HOST:PORT, or a list of 1 to MAX_CONDUCTORS different ones (the
    conductors that may lead, dialled in that order). Not required: "" or no key is none."""
    table.used.add(key)
    if key not in table.data:
        if required:
            raise table._fail(key, "is required")
        return ()
    value = table.data[key]
    if isinstance(value, str):
        if not value and not required:
            return ()
        value = [value]
    if not isinstance(value, list):
        raise table._fail(key, f"must be HOST:PORT or a list of them, not {value!r}")
    if not 1 <= len(value) <= MAX_CONDUCTORS:
        raise table._fail(key, f"must list 1 to {MAX_CONDUCTORS} addresses, not {len(value)}")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise table._fail(key, f"must list HOST:PORT strings, not {item!r}")
        _check_address(table, key, item)
        if "," in item:  # no host name has one; the addresses are kept comma-separated
            raise table._fail(key, f"must be HOST:PORT, not {item!r}")
        if item.lower() in seen:
            raise table._fail(key, f"lists {item!r} twice")
        seen.add(item.lower())
    return tuple(value)


def _expected_name(table: _Table, conductors: tuple[str, ...]) -> str:
    """conductor_name: the name every conductor's certificate must carry when set; unset,
    each address's own host ("" with several addresses, the host itself with one)."""
    name = table.string("conductor_name", "")
    if not name and len(conductors) == 1:
        return listen_host(conductors[0])
    return name


def listen_host(address: str) -> str:
    """The host part of HOST:PORT, without the brackets of an IPv6 address."""
    return address.rpartition(":")[0].strip("[]")


def is_loopback(host: str) -> bool:
    """A loopback IP address (127.0.0.0/8, ::1) or ``localhost``. Names are not looked up:
    the listener checks the address it was given once bound."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metrics(table: _Table) -> dict[str, Any]:
    """metrics_listen and metrics_tls. Plain HTTP only on loopback: anything else needs
    TLS with a client certificate of the CA, so a host on the network cannot read it
    (nor, without a certificate, keep the listener busy)."""
    listen = table.string("metrics_listen", "")
    tls = table.boolean("metrics_tls", False)
    if listen:
        _check_address(table, "metrics_listen", listen)
        if not tls and not is_loopback(listen_host(listen)):
            raise table._fail("metrics_listen", f"{listen!r} is not a loopback address: serving metrics"
                                                " beyond this host needs metrics_tls = true")
    return {"metrics_listen": listen, "metrics_tls": tls}


def _plugin_tables(table: _Table, key: str) -> tuple[PluginTable, ...]:
    """[[audit_sinks]] or [[notifiers]]: tables, each with the ``name`` of a plugin."""
    tables = []
    for number, item in enumerate(table.raw(key, list, []), start=1):
        where = f"{table.file}: [[{key}]] #{number}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: name: is required: the plugin's name, a string")
        options = {option: value for option, value in item.items() if option != "name"}
        tables.append(PluginTable(name, options, f"{where} ({name})"))
    return tuple(tables)


def load_conductor(path: Path) -> ConductorConfig:
    top = _Table(_read(path), path)
    state_dir: Path = top.path("state_dir", "/var/lib/orchestra/conductor")  # type: ignore[assignment]
    config = ConductorConfig(
        path=path.absolute(),
        listen=_check_address(top, "listen", top.string("listen", "0.0.0.0:2258")),
        audience_socket=top.path("audience_socket", "/run/orchestra/conductor.sock"),  # type: ignore[arg-type]
        state_dir=state_dir,
        players_file=top.path("players_file", "/etc/orchestra/players"),  # type: ignore[arg-type]
        job_deadline=top.number("job_deadline", 86400, minimum=1),
        job_retention=top.number("job_retention", 30 * 86400, minimum=1),
        heartbeat_seconds=top.number("heartbeat_seconds", HEARTBEAT_SECONDS, minimum=0.1),
        liveness_timeout=top.number("liveness_timeout", LIVENESS_TIMEOUT, minimum=0.5),
        reconnect_grace=top.number("reconnect_grace", 30, minimum=0),
        drain_timeout=top.number("drain_timeout", 10, minimum=0),
        handshake_timeout=top.number("handshake_timeout", 30, minimum=0.1),
        max_connections=top.integer("max_connections", 0, minimum=0),
        audit_log=top.path("audit_log", optional=True) or state_dir / "audit.log",
        tls=_tls(top, with_crl=True),
        policy=top.raw("policy", list, []),
        groups=top.raw("groups", dict, {}),
        audience=top.raw("audience", dict, {}),
        audit_sinks=_plugin_tables(top, "audit_sinks"),
        notifiers=_plugin_tables(top, "notifiers"),
        **_metrics(top),
        web_listen=_optional_address(top, "web_listen"),
        store=_store(top),
    )
    top.finish()
    if config.liveness_timeout <= config.heartbeat_seconds:
        raise ConfigError(f"{path}: liveness_timeout: must be greater than heartbeat_seconds")
    return config


def _optional_address(table: _Table, key: str) -> str:
    """A HOST:PORT listener that is off when empty (the default)."""
    value = table.string(key, "")
    return _check_address(table, key, value) if value else ""


def _store(top: _Table) -> StoreConfig:
    """[store]. The dsn's value never appears in an error: it may hold a password."""
    table = top.table("store", required=False)
    if table is None:
        return StoreConfig()
    backend = table.string("backend", "sqlite")
    if backend not in STORE_BACKENDS:
        raise table._fail("backend", f"must be one of {', '.join(STORE_BACKENDS)}, not {backend!r}")
    table.used.add("dsn")
    dsn = table.data.get("dsn", "")
    if not isinstance(dsn, str):
        raise table._fail("dsn", "must be a string (a libpq connection string or URI)")
    if backend == "postgresql" and not dsn.strip():
        raise table._fail("dsn", 'is required with backend = "postgresql": a libpq connection string'
                                 " or URI")
    if backend != "postgresql" and dsn:
        raise table._fail("dsn", f'is only for backend = "postgresql", not {backend!r}')
    store = StoreConfig(
        backend=backend, dsn=dsn,
        lease_seconds=table.number("lease_seconds", StoreConfig.lease_seconds, minimum=1),
        advertise=_optional_address(table, "advertise"),
    )
    table.finish()
    return store


def load_player(path: Path) -> PlayerConfig:
    top = _Table(_read(path), path)
    conductors = _conductors(top, "conductor", required=True)
    config = PlayerConfig(
        path=path.absolute(),
        conductor=",".join(conductors),
        conductor_name=_expected_name(top, conductors),
        scores_dir=top.path("scores_dir", "/usr/lib/orchestra/scores"),  # type: ignore[arg-type]
        spool_dir=top.path("spool_dir", "/var/lib/orchestra/player"),  # type: ignore[arg-type]
        max_concurrent=top.integer("max_concurrent", 1, minimum=1, maximum=MAX_CONCURRENT),
        default_timeout=top.number("default_timeout", 3600, minimum=1),
        kill_grace=top.number("kill_grace", 5, minimum=0),
        output_tail_bytes=top.integer("output_tail_bytes", 65536, minimum=0,
                                      maximum=MAX_OUTPUT_TAIL_BYTES),
        max_output_bytes=top.integer("max_output_bytes", 16 * 1024 * 1024, minimum=1024,
                                     maximum=MAX_OUTPUT_FILE_BYTES),
        response_max_bytes=top.integer("response_max_bytes", 65536, minimum=0,
                                       maximum=MAX_RESPONSE_BYTES),
        heartbeat_seconds=top.number("heartbeat_seconds", HEARTBEAT_SECONDS, minimum=0.1),
        liveness_timeout=top.number("liveness_timeout", LIVENESS_TIMEOUT, minimum=0.5),
        backoff_initial=top.number("backoff_initial", 0.5, minimum=0.01),
        backoff_max=top.number("backoff_max", 30, minimum=0.01),
        tls=_tls(top, with_crl=False),
        **_metrics(top),
    )
    top.finish()
    if config.liveness_timeout <= config.heartbeat_seconds:
        raise ConfigError(f"{path}: liveness_timeout: must be greater than heartbeat_seconds")
    return config


def load_audience(path: Path, explicit: bool) -> AudienceConfig:
    """Read audience.toml; a missing default file means "local socket, defaults"."""
    if not path.exists() and not explicit:
        return AudienceConfig(path=None, socket=Path("/run/orchestra/conductor.sock"),
                              conductor="", conductor_name="", tls=None)
    top = _Table(_read(path), path)
    conductors = _conductors(top, "conductor", required=False)
    config = AudienceConfig(
        path=path.absolute(),
        socket=top.path("socket", "/run/orchestra/conductor.sock"),  # type: ignore[arg-type]
        conductor=",".join(conductors),
        conductor_name=_expected_name(top, conductors),
        tls=_tls(top, with_crl=False) if "tls" in top.data else None,
    )
    top.used.add("tls")
    top.finish()
    if config.conductor and config.tls is None:
        raise ConfigError(f"{path}: tls: table is required when conductor is set")
    return config
