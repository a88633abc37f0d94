"""Fixtures: real daemons as subprocesses on loopback, a fresh PKI and state per test.

Every test that makes a cluster (``make_cluster``, ``cluster3``) runs once per store
backend: ``test_x[sqlite]`` and ``test_x[postgresql]``, the latter on a database of its
own in a PostgreSQL server started once per worker (``pg_server``). A module or test
keeps to some backends with ``pytest.mark.backends("sqlite")``; a run keeps to some
with ``--backend sqlite`` (or ``-k``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import sqlite_utils
from psycopg import sql
from psycopg.rows import dict_row

from conductor.store import Store, open_store
from devtools.devcluster import Cluster
from devtools.pgserver import DEBIAN_PACKAGE, PgServer, find_bindir

# Short liveness settings keep fault scenarios quick; the defaults are documented.
FAST_CONDUCTOR = {"heartbeat_seconds": 0.5, "liveness_timeout": 4, "reconnect_grace": 5}
FAST_PLAYER = {"heartbeat_seconds": 0.5, "liveness_timeout": 4, "backoff_initial": 0.1,
               "backoff_max": 1, "kill_grace": 1}

MakeCluster = Callable[..., Cluster]

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", action="append", choices=BACKENDS, default=[],
                     help="run cluster tests on this store backend only (repeatable; default: all)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run this test's clusters on these store backends only "
                   f"(of {', '.join(BACKENDS)})")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One variant per backend of every test whose fixtures include ``backend``."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    wanted = tuple(marker.args) if marker is not None else BACKENDS
    unknown = set(wanted) - set(BACKENDS)
    if unknown or not wanted:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: backends() takes some of "
                                f"{', '.join(BACKENDS)}, not {sorted(unknown) or 'nothing'}")
    chosen = metafunc.config.getoption("backend") or BACKENDS
    metafunc.parametrize("backend", [name for name in wanted if name in chosen], indirect=True)


def missing(what: str, package: str) -> NoReturn:
    """CI must have what a test drives for real (``.ci/run`` installs the Debian
    ``package``), so there its absence fails the test; elsewhere it is skipped."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: CI must install the Debian package {package}")
    pytest.skip(f"{what} is not installed (Debian package {package})")


def required_tool(command: str, package: str) -> str:
    """The path of a real tool a test drives (see ``missing``)."""
    tool = shutil.which(command)
    if tool is None:
        missing(command, package)
    return tool


def tls_attempt(port: int, certificate: tuple[Path, Path] | None) -> None:
    """One TLS client (with this certificate and key, or none) that the conductor is
    expected to refuse; returns once the refusal has arrived."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(*certificate)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.recv(1)  # TLS 1.3: the refusal arrives after the client's last flight
        except (ssl.SSLError, OSError):
            pass


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of this worker's own, started when a test first needs one."""
    if find_bindir() is None:
        missing("PostgreSQL (initdb, pg_ctl, postgres)", DEBIAN_PACKAGE)
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for this test alone, for one that hurts it (``kill()``,
    ``stop()``): the worker's shared ``pg_server`` stays up for every other test."""
    if find_bindir() is None:
        missing("PostgreSQL (initdb, pg_ctl, postgres)", DEBIAN_PACKAGE)
    with PgServer() as server:
        yield server


def fresh_database_name() -> str:
    return f"t_{secrets.token_hex(8)}"


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """The dsn of a new, empty database, dropped after the test."""
    name = fresh_database_name()
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend of this variant (see pytest_generate_tests)."""
    return str(getattr(request, "param", "sqlite"))


OpenQueue = Callable[[Path], Store]


@pytest.fixture
def open_queue(backend: str, request: pytest.FixtureRequest) -> Iterator[OpenQueue]:
    """``open_queue(state_dir)`` opens this test's queue on its backend: SQLite in
    state_dir, or one new PostgreSQL database (the same each call, so a test can reopen
    it), dropped afterwards."""
    if backend == "sqlite":
        yield open_store
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = fresh_database_name()
    dsn = server.create_database(name)
    try:
        yield lambda state_dir: open_store(state_dir, "postgresql", dsn)
    finally:
        server.drop_database(name)


@pytest.fixture
def make_cluster(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[MakeCluster]:
    """Make (and start, unless ``start=False``) clusters on this test's backend: with
    postgresql each gets a new database of its own, unless ``store=`` is given."""
    made: list[Cluster] = []
    databases: list[str] = []
    server: PgServer | None = request.getfixturevalue("pg_server") if backend == "postgresql" else None

    def make(players: list[str] | None = None, *, start: bool = True, **kwargs: object) -> Cluster:
        conductor_settings: dict[str, object] = {
            **FAST_CONDUCTOR, **kwargs.pop("conductor_settings", {})}  # type: ignore[dict-item]
        player_settings: dict[str, object] = {
            **FAST_PLAYER, **kwargs.pop("player_settings", {})}  # type: ignore[dict-item]
        if server is not None and "store" not in kwargs:
            databases.append(fresh_database_name())
            kwargs["store"] = {"backend": "postgresql", "dsn": server.create_database(databases[-1])}
        cluster = Cluster(tmp_path / f"cluster{len(made)}", players or ["p1.test"],
                          conductor_settings=conductor_settings, player_settings=player_settings,
                          **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        if start:
            cluster.start()
        return cluster

    yield make
    try:
        for cluster in made:
            cluster.stop()
    finally:
        for name in databases:
            assert server is not None
            server.drop_database(name)


@pytest.fixture
def cluster3(make_cluster: MakeCluster) -> Cluster:
    return make_cluster(["p1.test", "p2.test", "p3.test"])


def store_dsn(cluster: Cluster) -> str | None:
    """The dsn of the cluster's PostgreSQL database, or None when its queue is SQLite."""
    store = cluster.store_table
    return str(store["dsn"]) if store.get("backend") == "postgresql" else None


def queue_rows(cluster: Cluster, table: str) -> list[dict[str, object]]:
    """Read the conductor's queue directly (read-only) to check what was stored: each
    row a dict in the table's column order, blobs as bytes, on either backend."""
    dsn = store_dsn(cluster)
    if dsn is None:
        return read_rows(cluster.state_dir / "queue.db", table)
    return pg_rows(dsn, table)


def read_rows(path: Path, table: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(sqlite_utils.Database(conn)[table].rows)
    finally:
        conn.close()


# A table's primary key columns, in the key's order.
PRIMARY_KEY = """SELECT a.attname FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = %s::regclass AND i.indisprimary
    ORDER BY array_position(i.indkey::int2[], a.attnum)"""


def pg_rows(dsn: str, table: str) -> list[dict[str, object]]:
    """Every row of a PostgreSQL table, in primary key order (SQLite's rowid order has
    no equivalent), read in a read-only transaction."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.read_only = True
        key = [str(row["attname"]) for row in conn.execute(PRIMARY_KEY, (table,))]
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))
        if key:
            query = sql.SQL("{} ORDER BY {}").format(query, sql.SQL(", ").join(map(sql.Identifier, key)))
        return [dict(row) for row in conn.execute(query)]


def submit(cluster: Cluster, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    result = cluster.cli("submitjob", *args, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def job_json(cluster: Cluster, *args: str) -> tuple[int, dict[str, object]]:
    """Run submitjob/getstatus with --json and parse the single object it prints."""
    command, rest = args[0], args[1:]
    result = cluster.cli(command, "--json", *rest)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)
