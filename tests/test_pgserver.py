"""The PostgreSQL test server itself: connections, separate databases, crash recovery,
TLS; and the cluster files that point a conductor at it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import psycopg
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from devtools import pki
from devtools.devcluster import Cluster
from devtools.pgserver import DEBIAN_PACKAGE, PgServer, find_bindir
from tests.conftest import missing

DB_HOST = "db.orchestra.test"


def test_the_server_takes_a_durable_write_over_tcp(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.info.host == "127.0.0.1"
        conn.execute("CREATE TABLE notes (id integer PRIMARY KEY, body bytea NOT NULL)")
        conn.execute("INSERT INTO notes VALUES (1, %s)", (b"\x00kept",))
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT id, body FROM notes").fetchall() == [(1, b"\x00kept")]


def test_a_wrong_password_is_refused(pg_server: PgServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.dsn("postgres", password="not-the-password")).close()


def test_each_database_is_separate_and_dropped_with_its_sessions(pg_server: PgServer, pg_dsn: str) -> None:
    other = pg_server.create_database("t_other_of_this_test")
    try:
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("CREATE TABLE only_here (id integer)")
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
        held = psycopg.connect(other)  # a session left open, as a killed conductor's would be
    finally:
        pg_server.drop_database("t_other_of_this_test")
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(other).close()


def test_a_killed_server_recovers_every_committed_row_and_no_other(own_pg_server: PgServer) -> None:
    dsn = own_pg_server.create_database("crash")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE queue (id integer PRIMARY KEY)")
        conn.execute("INSERT INTO queue SELECT generate_series(1, 1000)")
    unfinished = psycopg.connect(dsn)
    unfinished.execute("INSERT INTO queue VALUES (1001)")  # never committed
    pid = own_pg_server.postmaster_pid()
    own_pg_server.kill()
    assert not own_pg_server.running
    unfinished.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()
    own_pg_server.start()
    assert own_pg_server.postmaster_pid() != pid
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM queue").fetchone() == (1000, 1000)
    assert "database system was interrupted" in own_pg_server.log_path.read_text()


def test_stop_removes_everything(own_pg_server: PgServer) -> None:
    root = own_pg_server.root
    assert (root / "data" / "PG_VERSION").exists()
    own_pg_server.stop()
    assert not root.exists() and not own_pg_server.running
    own_pg_server.stop()  # a second stop does nothing


def tls_files(tmp_path: Path, ca_name: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate and key for DB_HOST, from the project's dev PKI."""
    authority = pki.new_authority(ca_name)
    cert, key = pki.issue(authority, DB_HOST, [ExtendedKeyUsageOID.SERVER_AUTH])
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(pki.cert_pem(authority.cert))
    paths[1].write_bytes(pki.cert_pem(cert))
    paths[2].write_bytes(pki.key_pem(key))
    return paths


def test_tls_is_verified_against_the_servers_ca_and_name(tmp_path: Path) -> None:
    if find_bindir() is None:
        missing("PostgreSQL (initdb, pg_ctl, postgres)", DEBIAN_PACKAGE)
    ca, cert, key = tls_files(tmp_path, "Database test CA")
    stranger = pki.new_authority("Some other CA")
    wrong_ca = tmp_path / "other-ca.pem"
    wrong_ca.write_bytes(pki.cert_pem(stranger.cert))
    with PgServer(ssl_cert=cert, ssl_key=key) as server:
        verified = server.dsn("postgres", host=DB_HOST, hostaddr="127.0.0.1", sslmode="verify-full",
                              sslrootcert=str(ca))
        with psycopg.connect(verified) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(server.dsn("postgres", host=DB_HOST, hostaddr="127.0.0.1", sslmode="verify-full",
                                       sslrootcert=str(wrong_ca))).close()
        with pytest.raises(psycopg.OperationalError, match="does not match host name"):
            psycopg.connect(server.dsn("postgres", sslmode="verify-full", sslrootcert=str(ca))).close()


def test_a_cluster_writes_its_store_table_and_every_conductor_address(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, ["p1.test"], ["ops.test"],
                      store={"backend": "postgresql", "dsn": "host=127.0.0.1 dbname=q"},
                      conductor_settings={"store": {"lease_seconds": 3}})
    first = tomllib.loads(cluster.conductor_config.read_text())
    assert first["store"] == {"backend": "postgresql", "dsn": "host=127.0.0.1 dbname=q", "lease_seconds": 3,
                              "advertise": f"127.0.0.1:{cluster.port}"}  # as players dial it
    player = cluster.player_dir("p1.test") / "player.toml"
    assert tomllib.loads(player.read_text())["conductor"] == f"127.0.0.1:{cluster.port}"
    remote = cluster.remote_audience_config("ops.test")

    second = tomllib.loads(cluster.add_conductor("standby", metrics_listen="127.0.0.1:9",
                                                 store={"advertise": "127.0.0.1:2"}).read_text())
    standby = cluster.conductors()["standby"]
    assert second["store"] == {**first["store"], "advertise": "127.0.0.1:2"} and second["tls"] == first["tls"]
    assert second["players_file"] == first["players_file"] and second["metrics_listen"] == "127.0.0.1:9"
    assert (second["listen"], second["state_dir"], second["audience_socket"]) == (
        standby.address, str(standby.state_dir), str(standby.socket))
    assert len({first["listen"], second["listen"]}) == 2
    assert len({first["state_dir"], second["state_dir"], first["audience_socket"], second["audience_socket"]}) == 4
    both = [f"127.0.0.1:{cluster.port}", standby.address]
    assert tomllib.loads(player.read_text())["conductor"] == both
    assert tomllib.loads(remote.read_text())["conductor"] == both
    assert tomllib.loads(standby.audience_config.read_text()) == {"socket": str(standby.socket)}
    with pytest.raises(ValueError, match="taken"):
        cluster.add_conductor("standby")


@pytest.mark.backends("sqlite")
def test_a_test_can_keep_to_one_backend(backend: str) -> None:
    assert backend == "sqlite"
