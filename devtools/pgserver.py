"""A throwaway PostgreSQL server for tests: its own cluster, port, socket and superuser.

``PgServer`` runs the distribution's ``initdb`` and ``pg_ctl`` in a new temporary
directory, with durable commits exactly as in production (``fsync`` and
``synchronous_commit`` on: the conductor refuses a database that does not make commits
durable), and removes the directory again on ``stop()``.

Authentication: the superuser ``orchestra`` has a generated password; TCP connections
(127.0.0.1 only) use SCRAM-SHA-256 with it, the unix socket in the server's own
directory is trusted (only this user, or root, can reach it). ``dsn()`` is the TCP form,
as a conductor would be configured. With a certificate and key the server also speaks
TLS, so a client can insist on ``sslmode=verify-full``.

PostgreSQL refuses to run as root: as root, every server command runs as the
``postgres`` user the Debian package creates, in a directory it owns.

Every command run and everything the server logs go to ``ROOT/server.log``; a failure
raises ``PgServerError`` with the end of it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

SUPERUSER = "orchestra"
# The user PostgreSQL runs as when we are root (created by Debian's postgresql-common).
SYSTEM_USER = "postgres"
DEBIAN_PACKAGE = "postgresql"
LOG_TAIL_CHARS = 4000
START_TIMEOUT = 60
# How long kill() waits for init to reap the dead postmaster before declaring its lock
# file stale.
ZOMBIE_GRACE = 2.0
# Small, as one server runs per test worker; fsync and synchronous_commit are spelled out
# because the conductor checks them.
SETTINGS: Mapping[str, str] = {
    "max_connections": "200",
    "shared_buffers": "16MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_wal_size": "256MB",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


class PgServerError(RuntimeError):
    """The server could not be set up, started or stopped; the message ends with its log."""


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: the newest Debian-style
    ``/usr/lib/postgresql/VERSION/bin``, else wherever ``initdb`` is on PATH."""
    candidates = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if _complete(Path(d))]
    if candidates:
        return Path(max(candidates, key=_version_key))
    initdb = shutil.which("initdb")
    if initdb is not None and _complete(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    return None


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PgServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:``port``.

    ``ssl_cert``/``ssl_key`` (PEM files, e.g. from ``devtools.pki``) turn TLS on; they are
    copied into the server's directory with the ownership and mode PostgreSQL demands.
    """

    def __init__(self, *, bindir: Path | None = None, ssl_cert: Path | None = None,
                 ssl_key: Path | None = None, settings: Mapping[str, str] | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PgServerError("PostgreSQL's initdb, pg_ctl and postgres were not found "
                                f"(Debian package {DEBIAN_PACKAGE})")
        if (ssl_cert is None) != (ssl_key is None):
            raise PgServerError("TLS needs both a certificate and its key")
        self.bindir = found
        self.ssl_cert = ssl_cert
        self.ssl_key = ssl_key
        self.settings = {**SETTINGS, **(settings or {})}
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self._owner = self._run_as()
        self._root: Path | None = None

    # ---- where things are ------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise PgServerError("the server has not been started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from its lock file, or None when there is none."""
        if self._root is None:
            return None
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    # ---- connecting --------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", **options: str) -> str:
        """A libpq keyword/value string for ``dbname`` over TCP as the superuser;
        ``options`` add or replace keywords (``sslmode``, ``sslrootcert``, ``host``...)."""
        return make_conninfo(**{"host": self.host, "port": str(self.port), "user": self.user,
                                "password": self.password, "dbname": dbname, **options})

    def local_dsn(self, dbname: str = "postgres") -> str:
        """Over the unix socket (trusted): for administration, without a TLS or SCRAM handshake."""
        return make_conninfo(host=str(self.socket_dir), port=str(self.port), user=self.user,
                             dbname=dbname)

    def create_database(self, name: str) -> str:
        """Create an empty database owned by the superuser; returns its dsn."""
        with psycopg.connect(self.local_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, ending whatever sessions still use it."""
        with psycopg.connect(self.local_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts
        connections. After ``kill()`` this is a restart with crash recovery."""
        fresh = self._root is None
        if fresh:
            self._create()
        if self.running:
            return
        try:
            for attempt in range(3):
                try:
                    self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT), "-l", str(self.log_path))
                    return
                except PgServerError as err:
                    # Another process may have taken the port between choosing and binding
                    # it: a fresh cluster moves to another one; a restarted one keeps its port.
                    if not fresh or attempt == 2 or "Address already in use" not in str(err):
                        raise
                    self.port = free_port()
                    self._write_settings()
        except PgServerError:
            if fresh:
                self.stop()  # the error carries the log; nothing is left behind
            raise

    def stop(self) -> None:
        """Stop the server (fast: sessions are ended, work is checkpointed) and remove
        its directory. Does nothing if it was never started."""
        if self._root is None:
            return
        try:
            if self.running:
                try:
                    self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(START_TIMEOUT))
                except PgServerError:
                    self.kill()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def kill(self) -> None:
        """SIGKILL the postmaster and every server process (as a crash would), and wait
        until they are gone; the data stays, for ``start()`` to recover."""
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        self._log(f"kill -9 postmaster {pid} and its process group")
        group = os.getpgid(pid)
        # pg_ctl starts the postmaster in a session of its own: the group is the server.
        if group == pid:
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _group_alive(group if group == pid else pid, whole_group=group == pid):
            if time.monotonic() > deadline:
                raise PgServerError(f"server processes of {pid} outlived SIGKILL")
            time.sleep(0.02)
        # The dead postmaster is reparented to init, which may reap it late: until then a
        # new postmaster takes its pid in the lock file for a live server and refuses to
        # start. A zombie holds no shared memory, so its lock file is stale.
        reaped_by = time.monotonic() + ZOMBIE_GRACE
        while _exists(pid) and time.monotonic() < reaped_by:
            time.sleep(0.02)
        if _exists(pid):
            self._log(f"postmaster {pid} killed but not reaped yet: its lock file is stale")
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    # ---- internals ---------------------------------------------------------------------

    def _run_as(self) -> pwd.struct_passwd | None:
        """Who runs the server: None for ourselves, or the postgres user when we are root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PgServerError(f"PostgreSQL refuses to run as root and there is no {SYSTEM_USER!r} "
                                f"user to run it as (Debian package {DEBIAN_PACKAGE} creates it)") from None

    def _give(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _create(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
        try:
            self._give(self._root)
            self.socket_dir.mkdir(mode=0o700)
            self._give(self.socket_dir)
            self.log_path.touch(mode=0o600)
            self._give(self.log_path)
            password_file = self.root / "password"
            password_file.write_text(self.password + "\n")
            password_file.chmod(0o600)
            self._give(password_file)
            self._run([str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                       f"--pwfile={password_file}", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                       # The fresh files need not be flushed: a crash of the machine ends
                       # this throwaway cluster anyway; the server itself runs with fsync.
                       "--no-sync"])
            password_file.unlink()
            if self.ssl_cert is not None and self.ssl_key is not None:
                for source, name in ((self.ssl_cert, "server.crt"), (self.ssl_key, "server.key")):
                    target = self.data_dir / name
                    shutil.copyfile(source, target)
                    target.chmod(0o600)  # PostgreSQL refuses a key others can read
                    self._give(target)
            self.port = free_port()
            self._write_settings()
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            raise

    def _write_settings(self) -> None:
        """Our settings, in a file of their own that postgresql.conf includes."""
        settings = {**self.settings, "listen_addresses": self.host, "port": str(self.port),
                    "unix_socket_directories": str(self.socket_dir)}
        if self.ssl_cert is not None:
            settings |= {"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"}
        target = self.data_dir / "orchestra.conf"
        target.write_text("".join(f"{key} = {_conf_value(value)}\n" for key, value in settings.items()))
        self._give(target)
        main = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'orchestra.conf'" not in main.read_text():
            with main.open("a") as out:
                out.write("\ninclude_if_exists = 'orchestra.conf'\n")

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _env(self) -> dict[str, str]:
        # libpq's and the server's PG* variables would redirect what we run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env |= {"LC_ALL": "C", "TZ": "UTC"}
        if self._owner is not None:
            env |= {"HOME": self._owner.pw_dir, "USER": self._owner.pw_name,
                    "LOGNAME": self._owner.pw_name}
        return env

    def _run(self, argv: Sequence[str]) -> None:
        self._log("$ " + " ".join(argv))
        owner = self._owner
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env(),
                    cwd=self.root, timeout=START_TIMEOUT + 30,
                    user=owner.pw_uid if owner else None, group=owner.pw_gid if owner else None,
                    extra_groups=os.getgrouplist(owner.pw_name, owner.pw_gid) if owner else None)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise PgServerError(f"{argv[0]}: {err}\n{self._log_tail()}") from None
        if result.returncode != 0:
            raise PgServerError(f"{' '.join([Path(argv[0]).name, *argv[1:]])} exited with "
                                f"{result.returncode}; the end of its log:\n{self._log_tail()}")

    def _log(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [pgserver] {line}\n")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


def _exists(pid: int) -> bool:
    """Whether the pid is taken, if only by a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    return _exists(pid) and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _group_alive(pgid: int, whole_group: bool) -> bool:
    """Whether any process of the group (or just ``pgid`` itself) is still running; a
    zombie waiting for its parent to reap it counts as gone."""
    if not whole_group or not Path("/proc/self/stat").exists():
        return _alive(pgid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
